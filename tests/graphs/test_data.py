"""Data: generators, real-format loaders on files written here, splits and dense conversion."""

import json
import pickle
from collections import defaultdict

import networkx as nx
import pytest
import torch
from rdkit import Chem

from domaindiff_graphs import data as D
from domaindiff_graphs import graphs as G
from domaindiff_graphs import mol as M


def test_community_small_matches_gdss_recipe(tmp_path):
    graphs = G.community_small_graphs(100, seed=0)
    assert len(graphs) == 100
    for g in graphs:
        n = g.number_of_nodes()
        assert 12 <= n <= 20 and n % 2 == 0
        half = set(range(n // 2))
        inter = [e for e in g.edges() if (e[0] in half) != (e[1] in half)]
        assert len(inter) >= 1  # a bridge is forced when none is drawn
    again = G.community_small_graphs(100, seed=0)
    assert all(nx.utils.graphs_equal(a, b) for a, b in zip(graphs, again))
    dm = D.CommunitySmall(root=str(tmp_path / "cs"))
    dm.setup()
    assert (len(dm.train_data), len(dm.test_data)) == (80, 20)
    cached = list((tmp_path / "cs").glob("*.json"))
    assert len(cached) == 1
    back = D.read_graph_list(cached[0])
    assert all(nx.utils.graphs_equal(a, b) for a, b in zip(back[:20], dm.test_graphs()))


def test_grid_graphs():
    graphs = G.grid_graphs(seed=0)
    sizes = sorted(g.number_of_nodes() for g in graphs)
    assert len(graphs) == 100 and sizes[0] == 100 and sizes[-1] == 361
    g = graphs[0]
    degs = {d for _, d in g.degree()}
    assert degs == {2, 3, 4}


def _write_planetoid(path, adjacency):
    with open(path, "wb") as fh:
        pickle.dump(defaultdict(list, adjacency), fh, protocol=2)


def test_ego_small_reads_citeseer_planetoid_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    big = nx.connected_watts_strogatz_graph(300, 4, 0.1, seed=1)
    folder = tmp_path / "ego_small"
    folder.mkdir()
    _write_planetoid(folder / "ind.citeseer.graph", {u: list(big[u]) for u in big})
    assert nx.utils.graphs_equal(G.read_planetoid_graph(folder / "ind.citeseer.graph"), big)
    dm = D.EgoSmall(source="citeseer", num_graphs=50)
    dm.setup()
    assert len(dm.train_data) + len(dm.test_data) == 50
    assert all(4 <= n <= 18 for n in dm.node_counts())


def test_planetoid_reader_refuses_code(tmp_path):
    path = tmp_path / "ind.bad.graph"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path.write_bytes(pickle.dumps({0: Evil()}))
    with pytest.raises(ValueError, match="ind.bad.graph"):
        G.read_planetoid_graph(path)


def _write_tu(folder, graphs):
    folder.mkdir(parents=True)
    ind, edges, labels, offset = [], [], [], 0
    for gid, g in enumerate(graphs, 1):
        for _ in g.nodes():
            ind.append(gid)
            labels.append(1)
        for u, v in g.edges():
            edges += [(u + 1 + offset, v + 1 + offset), (v + 1 + offset, u + 1 + offset)]
        offset += g.number_of_nodes()
    (folder / "ENZYMES_graph_indicator.txt").write_text("\n".join(map(str, ind)) + "\n")
    (folder / "ENZYMES_A.txt").write_text("\n".join(f"{a}, {b}" for a, b in edges) + "\n")
    (folder / "ENZYMES_node_labels.txt").write_text("\n".join(map(str, labels)) + "\n")


def test_enzymes_tu_format(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    graphs = [nx.cycle_graph(12), nx.path_graph(5), nx.complete_graph(10)]
    _write_tu(tmp_path / "enzymes" / "ENZYMES", graphs)
    read = G.read_tu_graphs(tmp_path / "enzymes" / "ENZYMES")
    assert len(read) == 2  # the 5-node graph is below GraphRNN's 10-node minimum
    assert nx.is_isomorphic(read[0], graphs[0]) and nx.is_isomorphic(read[1], graphs[2])
    dm = D.Enzymes(test_split=0.5)
    dm.setup()
    assert sorted(dm.node_counts() + [d.num_nodes for d in dm.test_data]) == [10, 12]


def test_tu_bad_line_names_file_and_line(tmp_path):
    _write_tu(tmp_path / "E", [nx.cycle_graph(12)])
    (tmp_path / "E" / "ENZYMES_A.txt").write_text("1, 2\n2, x\n")
    with pytest.raises(ValueError, match=r"ENZYMES_A.txt:2"):
        G.read_tu_graphs(tmp_path / "E")


QM9_SMILES = ["C", "CC", "CO", "C#N", "OC=O", "CC(C)=O", "c1ccccc1", "CCl", "CCCCCCCCCC"]


def _write_qm9(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"{i},{s},{s},0.1" for i, s in enumerate(QM9_SMILES))
    (folder / "qm9.csv").write_text("index,SMILES1,SMILES2,A\n" + rows + "\n")
    (folder / "valid_idx_qm9.json").write_text(json.dumps({"valid_idxs": ["000001", "000004"]}))


def test_qm9_csv_and_index_json(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    _write_qm9(tmp_path / "qm9")
    dm = D.QM9(source="csv")
    dm.setup()
    # CCl (Cl) and the 10-carbon chain break QM9's rules; rows 1 and 4 are the test set
    assert dm.test_smiles() == ["CC", "O=CO"]
    assert set(dm.train_smiles()) == {"C", "CO", "C#N", "CC(C)=O", "C1=CC=CC=C1"}
    d = next(iter(dm.train_dataloader()))
    st = D.to_dense_state(d, 9)
    assert st["x"].shape[-1] == 4 and set(st["adj"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert torch.equal(st["x"].sum(-1), st["mask"])


def test_zinc_index_list_and_bad_column(tmp_path):
    csv = tmp_path / "zinc250k.csv"
    csv.write_text("smiles,logP\nCCS,1\nCCBr,2\nCCI,3\n")
    idx = tmp_path / "valid_idx_zinc250k.json"
    idx.write_text("[2]")
    train, test = D.read_molecule_csv(csv, idx, "smiles")
    assert (train, test) == (["CCS", "CCBr"], ["CCI"])
    with pytest.raises(ValueError, match="no column 'SMILES1'"):
        D.read_molecule_csv(csv, idx, "SMILES1")
    idx.write_text("[7]")
    with pytest.raises(ValueError, match="valid_idx_zinc250k.json: index 7 out of range"):
        D.read_molecule_csv(csv, idx, "smiles")


def test_offline_nci_molecules_follow_the_rules():
    train, test = D.nci_split("qm9", M.QM9_ATOMS, 9)
    assert len(train) > 300 and len(test) > 30
    for mol in train + test:
        assert mol.GetNumAtoms() <= 9
        assert {a.GetSymbol() for a in mol.GetAtoms()} <= set(M.QM9_ATOMS)
        assert all(b.GetBondTypeAsDouble() in (1.0, 2.0, 3.0) for b in mol.GetBonds())
    ztrain, _ = D.nci_split("zinc250k", M.ZINC_ATOMS, 38)
    assert len(ztrain) > 3000 and max(m.GetNumAtoms() for m in ztrain) <= 38
    assert not {Chem.MolToSmiles(m) for m in train} & {Chem.MolToSmiles(m) for m in test}


def test_dense_round_trip():
    graphs = [nx.path_graph(4), nx.cycle_graph(6)]
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([D.graph_to_data(g, 5) for g in graphs])
    st = D.to_dense_state(batch, 8)
    assert st["adj"].shape == (2, 8, 8) and st["mask"].sum().item() == 10
    assert torch.equal(st["adj"], st["adj"].transpose(1, 2))
    back = D.dense_to_graphs(st["adj"], st["mask"])
    assert all(nx.is_isomorphic(a, b) for a, b in zip(back, graphs))
    pyg = D.dense_to_pyg(st)
    assert pyg.num_graphs == 2 and pyg.edge_index.shape[1] == 2 * (3 + 6)
    # one-hot degree features
    assert torch.equal(st["x"][0, :4].argmax(-1), torch.tensor([1, 2, 2, 1]))
