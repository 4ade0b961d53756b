"""Data: generators, real-format loaders on files written here, splits and dense conversion."""

import json
import pickle
import re
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
    entry = tmp_path / "cs" / "community_small_gdss_100_seed0"
    assert sorted(p.name for p in entry.iterdir()) == ["MANIFEST.json", "graphs.json"]
    back = D.read_graph_list(entry / "graphs.json")
    assert all(nx.utils.graphs_equal(a, b) for a, b in zip(back[:20], dm.test_graphs()))


def test_community_small_cache_altered_is_rebuilt_not_trusted(tmp_path):
    D.CommunitySmall(root=str(tmp_path)).setup()
    path = tmp_path / "community_small_gdss_100_seed0" / "graphs.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # a torn write from an older version, or tampering
    dm = D.CommunitySmall(root=str(tmp_path))
    with pytest.warns(UserWarning, match="graphs.json has size"):
        dm.setup()
    assert path.read_text() == good and len(dm.train_data) == 80


def test_grid_graphs():
    graphs = G.grid_graphs(seed=0)
    sizes = sorted(g.number_of_nodes() for g in graphs)
    assert len(graphs) == 100 and 100 <= sizes[0] and sizes[-1] <= 361
    g = graphs[0]
    degs = {d for _, d in g.degree()}
    assert degs == {2, 3, 4}


def _write_planetoid(path, adjacency):
    with open(path, "wb") as fh:
        pickle.dump(defaultdict(list, adjacency), fh, protocol=2)


def test_ego_small_reads_citeseer_planetoid_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    monkeypatch.setattr(D.EgoSmall, "SHA256", None)  # a small file in the real format
    monkeypatch.setattr(D.EgoSmall, "SIZE", None)
    big = nx.connected_watts_strogatz_graph(300, 4, 0.1, seed=1)
    folder = tmp_path / "ego_small"
    folder.mkdir()
    _write_planetoid(folder / "ind.citeseer.graph", {u: list(big[u]) for u in big})
    assert nx.utils.graphs_equal(G.read_planetoid_graph(folder / "ind.citeseer.graph"), big)
    dm = D.EgoSmall(source="citeseer", num_graphs=50)
    dm.setup()
    assert len(dm.train_data) + len(dm.test_data) == 50
    assert all(4 <= n <= 18 for n in dm.node_counts())


def test_citeseer_file_is_checked_against_the_published_checksum(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    (tmp_path / "ego_small").mkdir()
    _write_planetoid(tmp_path / "ego_small" / "ind.citeseer.graph", {0: [1], 1: [0]})
    with pytest.raises(D.DatasetUnavailableError, match=r"ind.citeseer.graph: size \d+ != 61987"):
        D.EgoSmall(source="citeseer").setup()


def test_planetoid_self_loops_are_removed_and_counted(tmp_path):
    path = tmp_path / "ind.citeseer.graph"
    _write_planetoid(path, {0: [1, 0], 1: [0, 2], 2: [1, 2]})
    with pytest.warns(UserWarning, match="removed 2 self-loops of 3 nodes"):
        g = G.read_planetoid_graph(path)
    assert sorted(g.edges()) == [(0, 1), (1, 2)]
    _write_planetoid(path, {0: [1], 1: "0"})
    with pytest.raises(ValueError, match="node 1: expected an integer id with a list"):
        G.read_planetoid_graph(path)


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
    (folder / "ENZYMES_graph_labels.txt").write_text("\n".join("1" for _ in graphs) + "\n")
    (folder / "ENZYMES_node_attributes.txt").write_text(
        "\n".join("0.5, -1.25e1" for _ in ind) + "\n")


ENZ_GRAPHS = [nx.cycle_graph(12), nx.path_graph(5), nx.complete_graph(10)]


def _write_tu_zip(zpath, graphs, tmp):
    """A TU zip as TU Dortmund ships it: ENZYMES/ENZYMES_*.txt plus a README."""
    import zipfile

    _write_tu(tmp / "ENZYMES", graphs)
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted((tmp / "ENZYMES").iterdir()):
            zf.write(f, f"ENZYMES/{f.name}")
        zf.writestr("ENZYMES/README.txt", "ENZYMES")


def test_enzymes_tu_format(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    _write_tu(tmp_path / "E", ENZ_GRAPHS)
    with pytest.warns(UserWarning, match=r"kept 2 of 3 graphs.* 1 graphs outside 10..1000"):
        read = G.read_tu_graphs(tmp_path / "E")
    # the 5-node graph is below GraphRNN's 10-node minimum
    assert nx.is_isomorphic(read[0], ENZ_GRAPHS[0]) and nx.is_isomorphic(read[1], ENZ_GRAPHS[2])
    dm = D.Enzymes(test_split=0.5, folder=str(tmp_path / "E"))
    with pytest.warns(UserWarning, match="kept 2 of 3"):
        dm.setup()
    assert sorted(dm.node_counts() + [d.num_nodes for d in dm.test_data]) == [10, 12]
    assert not (tmp_path / "enzymes" / "ENZYMES").exists()  # a user's folder is only read


def test_enzymes_zip_unpacks_into_a_verified_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    (tmp_path / "enzymes").mkdir()
    _write_tu_zip(tmp_path / "enzymes" / "ENZYMES.zip", ENZ_GRAPHS, tmp_path / "src")
    dm = D.Enzymes(test_split=0.5)
    with pytest.warns(UserWarning, match="kept 2 of 3"):
        dm.setup()
    entry = tmp_path / "enzymes" / "ENZYMES"
    manifest = json.loads((entry / "MANIFEST.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {
        f"ENZYMES_{k}.txt" for k in ("A", "graph_indicator", "graph_labels", "node_labels",
                                     "node_attributes")}
    # a truncated file in the entry (an old killed extraction): found, rebuilt from the zip
    a = entry / "ENZYMES_A.txt"
    full = a.read_text()
    a.write_text(full[: len(full) // 3])
    with pytest.warns(UserWarning, match="ENZYMES_A.txt has size .* rebuilding"):
        D.Enzymes(test_split=0.5).setup()
    assert a.read_text() == full


def test_enzymes_extraction_killed_midway_leaves_no_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    (tmp_path / "enzymes").mkdir()
    _write_tu_zip(tmp_path / "enzymes" / "ENZYMES.zip", ENZ_GRAPHS, tmp_path / "src")
    calls = []

    def killed(src, dst, *args, **kwargs):  # the process dies while copying the second file
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    import shutil

    real = shutil.copyfileobj
    monkeypatch.setattr(shutil, "copyfileobj", killed)
    with pytest.raises(KeyboardInterrupt):
        D.Enzymes(test_split=0.5).setup()
    assert not (tmp_path / "enzymes" / "ENZYMES").exists()
    assert [p.name for p in (tmp_path / "enzymes").iterdir()] == ["ENZYMES.zip"]
    monkeypatch.setattr(shutil, "copyfileobj", real)
    with pytest.warns(UserWarning, match="kept 2 of 3"):
        D.Enzymes(test_split=0.5).setup()


def test_enzymes_inconsistent_zip_is_never_installed(tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    (tmp_path / "enzymes").mkdir()
    _write_tu(tmp_path / "src" / "ENZYMES", ENZ_GRAPHS)
    (tmp_path / "src" / "ENZYMES" / "ENZYMES_graph_labels.txt").write_text("1\n1\n")
    with zipfile.ZipFile(tmp_path / "enzymes" / "ENZYMES.zip", "w") as zf:
        for f in (tmp_path / "src" / "ENZYMES").iterdir():
            zf.write(f, f"ENZYMES/{f.name}")
    with pytest.raises(ValueError, match=r"ENZYMES.zip!ENZYMES/ENZYMES_graph_labels.txt: ends "
                                         r"after line 2; expected 3 lines"):
        D.Enzymes().setup()
    assert not (tmp_path / "enzymes" / "ENZYMES").exists()


def test_gdss_pickled_graph_lists_load_with_the_allow_list():
    """GDSS's own data/<name>.pkl (read-only shared copy) load; ENZYMES.pkl holds subgraph views."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[3] / "shared" / "data" / "gdss" / "data"
    if not (folder / "community_small.pkl").is_file():
        pytest.skip(f"GDSS's data files are not at {folder}")
    assert [g.number_of_nodes() for g in G.read_graph_pickle(folder / "community_small.pkl")
            ][:1] and len(G.read_graph_pickle(folder / "community_small.pkl")) == 100
    dm = D.GraphFile(path=str(folder / "ego_small.pkl"), max_nodes=18, max_feat=17)
    dm.setup()
    assert (len(dm.train_data), len(dm.test_data)) == (160, 40)


def test_tu_bad_line_names_file_and_line(tmp_path):
    _write_tu(tmp_path / "E", [nx.cycle_graph(12)])
    (tmp_path / "E" / "ENZYMES_A.txt").write_text("1, 2\n2, x\n")
    with pytest.raises(ValueError, match=r"ENZYMES_A.txt:2"):
        G.read_tu_graphs(tmp_path / "E")


def test_tu_self_loops_are_removed_and_counted(tmp_path):
    _write_tu(tmp_path / "E", [nx.cycle_graph(12)])
    with open(tmp_path / "E" / "ENZYMES_A.txt", "a") as fh:
        fh.write("3, 3\n")
    with pytest.warns(UserWarning, match="kept 1 of 1 graphs .*1 self-loop lines"):
        (g,) = G.read_tu_graphs(tmp_path / "E")
    assert nx.number_of_selfloops(g) == 0 and g.number_of_edges() == 12


QM9_SMILES = ["C", "CC", "CO", "C#N", "OC=O", "CC(C)=O", "c1ccccc1", "CCl", "CCCCCCCCCC"]


def _write_qm9(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"{i},{s},{s},0.1" for i, s in enumerate(QM9_SMILES))
    (folder / "qm9.csv").write_text("index,SMILES1,SMILES2,A\n" + rows + "\n")
    (folder / "valid_idx_qm9.json").write_text(json.dumps({"valid_idxs": ["000001", "000004"]}))


def test_qm9_csv_and_index_json(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    monkeypatch.setattr(D.QM9, "IDX_SHA256", None)  # a small index in the real format
    _write_qm9(tmp_path / "qm9")
    dm = D.QM9(source="csv")
    with pytest.warns(UserWarning, match=r"qm9.csv: dropped 2 of 7 train rows, kept 5: 2 outside "
                                         r"qm9's rules.*\(rows 7, 8\)"):
        dm.setup()
    # CCl (Cl) and the 10-carbon chain break QM9's rules; rows 1 and 4 are the test set
    assert dm.test_smiles() == ["CC", "O=CO"]
    assert set(dm.train_smiles()) == {"C", "CO", "C#N", "CC(C)=O", "c1ccccc1"}
    d = next(iter(dm.train_dataloader()))
    st = D.to_dense_state(d, 9)
    assert st["x"].shape[-1] == 4 and set(st["adj"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert torch.equal(st["x"].sum(-1), st["mask"])


def test_qm9_unparsable_rows_are_counted_or_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    monkeypatch.setattr(D.QM9, "IDX_SHA256", None)
    _write_qm9(tmp_path / "qm9")
    csv = tmp_path / "qm9" / "qm9.csv"
    lines = csv.read_text().splitlines()
    lines[3] = "2,C1CC,C1CC,0.1"  # row 2: an unclosed ring
    lines += ["9,,,0.1", "10,c1cccc1,x,0.1"]  # row 9: empty; row 10: aromatic 5-ring, no Kekule form
    csv.write_text("\n".join(lines) + "\n")
    dm = D.QM9(source="csv")
    with pytest.warns(UserWarning) as record:
        dm.setup()
    text = " | ".join(str(w.message) for w in record)
    assert "dropped 5 of 9 train rows, kept 4: 3 unparsable SMILES (rows 2, 9, 10)" in text
    assert len(dm.train_items) == 4
    with pytest.raises(ValueError, match=r"qm9.csv: row 2 \(line 4\), column 'SMILES1': RDKit "
                                         r"cannot parse the SMILES 'C1CC' \(strict=True"):
        D.QM9(source="csv", strict=True).setup()


def test_qm9_index_is_pinned_to_gdss_original(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    _write_qm9(tmp_path / "qm9")
    with pytest.raises(D.DatasetUnavailableError,
                       match=r"valid_idx_qm9.json: checksum mismatch \(expected sha256 889fd232"):
        D.QM9(source="csv").setup()


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
    with pytest.raises(ValueError, match="valid_idx_zinc250k.json: index 7 .entry 0. out of range"):
        D.read_molecule_csv(csv, idx, "smiles")
    idx.write_text("[-1, 2]")
    with pytest.raises(ValueError, match="index -1 .entry 0. out of range; expected 0..2"):
        D.read_molecule_csv(csv, idx, "smiles")
    idx.write_text("[2, 0, 2]")
    with pytest.raises(ValueError, match=r"index 2 \(entry 2\) repeated"):
        D.read_molecule_csv(csv, idx, "smiles")


def test_offline_nci_molecules_follow_the_rules(capsys):
    train, test = D.nci_split("qm9", M.QM9_ATOMS, 9)
    assert len(train) > 300 and len(test) > 30
    line = capsys.readouterr().err
    total, kept, dropped = (int(v) for v in re.search(
        r"has (\d+) molecules: kept (\d+), dropped (\d+)", line).groups())
    assert kept == len(train) + len(test) and kept + dropped == total
    reasons = re.search(r"\((\d+) unparsable .*, (\d+) outside the rules .*, (\d+) repeated", line)
    assert sum(int(v) for v in reasons.groups()) == dropped
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


def test_graph_pickles_with_cached_views_and_subgraphs_round_trip(tmp_path):
    """What networkx really pickles: cached .nodes/.edges/.degree/.adj views, frozen subgraphs."""
    g = nx.karate_club_graph()
    _ = (g.nodes, g.edges, g.degree, g.adj, g.nodes(data=True), g.edges(data=True))
    nx.set_node_attributes(g, {v: float(v) / 3 for v in g}, "feat")
    sub = g.subgraph(range(10))  # a frozen SubGraph view, as GDSS's ENZYMES.pkl holds
    multi = nx.MultiGraph([(0, 1), (0, 1)])
    path = tmp_path / "graphs.pkl"
    path.write_bytes(pickle.dumps([g, sub]))
    back = G.read_graph_pickle(path)
    assert [b.number_of_edges() for b in back] == [g.number_of_edges(), sub.number_of_edges()]
    assert back[0].nodes[5]["feat"] == 5 / 3
    path.write_bytes(pickle.dumps([multi]))
    with pytest.raises(ValueError, match="graph 0: is a MultiGraph with parallel edges"):
        G.read_graph_pickle(path)


def test_graph_pickle_refuses_builtins_that_run_code(tmp_path):
    """Allowed modules are not enough: builtins.eval / getattr are refused by name."""
    path = tmp_path / "graphs.pkl"
    for payload, name in ((b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
                          (b"cbuiltins\ngetattr\n(cbuiltins\ndict\nS'keys'\ntR.", "builtins.getattr"),
                          (b"cnetworkx.classes.graph\nnx\n.", "networkx.classes.graph.nx")):
        path.write_bytes(payload)
        with pytest.raises(ValueError, match=f"refusing to unpickle {name}"):
            G.read_graph_pickle(path)
