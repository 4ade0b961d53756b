"""The offline datasets against GDSS's own: generators, split, ego nets, QM9 from qm9pack.

The literal numbers below are statistics of GDSS's released files (``data/<name>.pkl`` of
harryjo97/GDSS), computed once; the files themselves are not in this repository. Tests that need
the real files run only when ``DOMAINDIFF_GDSS_DIR`` names a copy of GDSS's ``data/`` and
``dataset/`` folders (``benchmarks/graphs_gdss_datasets.py --gdss-dir`` checks the same).
"""

import collections
import hashlib
import importlib.util
import json
import os
import pickle
import re
import warnings
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from rdkit import Chem

from domaindiff.data import DatasetUnavailableError
from domaindiff_graphs import data as D
from domaindiff_graphs import graphs as G

# --- statistics of GDSS's files -----------------------------------------------------------------

#: sha256 (first 16 hex digits) of the sorted intra-community edge list of GDSS's
#: community_small.pkl graphs, by graph size: one value per size (all graphs of a size share it)
GDSS_COMMUNITIES = {12: "180add162201b8f7", 14: "8fc287c34e8dae3a", 16: "b247f6eac1efab9b",
                    18: "da58907267953db6", 20: "b68c98367fc5f6ee"}
#: community_small.pkl: 100 graphs, node-count histogram, 3515 edges, bridges per graph
GDSS_CS_NODES = {12: 28, 14: 24, 16: 18, 18: 16, 20: 14}
GDSS_CS_BRIDGES = {1: 89, 2: 9, 3: 2}
#: ego_small.pkl: 200 graphs; node-count histogram; degree histogram; digest of every graph
GDSS_EGO_NODES = {4: 67, 5: 38, 6: 24, 7: 24, 8: 12, 9: 7, 10: 5, 11: 7, 12: 4, 13: 4, 14: 1,
                  15: 1, 16: 5, 17: 1}
GDSS_EGO_DEGREES = {1: 498, 2: 266, 3: 215, 4: 118, 5: 54, 6: 40, 7: 31, 8: 19, 9: 14, 10: 9,
                    11: 4, 12: 4, 13: 3, 14: 1, 15: 5, 16: 1}
GDSS_DIGESTS = {
    "community_small": "020f7e2e04a3d1a23d8198da57c1f5fbd46d61988112f6cda7f272422f3ef1ad",
    "ego_small": "c4f6be45670e2dad7b2afb9add6c1fefe53afb05e631cc7701f25a38a5e49ac1",
    "grid": "a66ae5644c5beaebd0294c6b85d7e84f02e6470e14d26421c75b5fb66ab4a3f9",
    "ENZYMES": "0cd1e7dcb1676414b6bde97a0933423ac16b60944f996a47b149e7a615fcac47",
}
#: digests of GDSS's test splits (the first 20% of each file)
GDSS_TEST_DIGESTS = {
    "community_small": "d22ada0a29921c650ef28000ec979cf305ff2e17a23352650f046ffa515ecdb7",
    "ego_small": "b6d0794011d5e3f89c46f5e850d7b6853501df620f04f1d35ce4ffa2934bfd31",
    "ENZYMES": "582dfe4105ba0d4ae638be24046fde52e2b19839e1a4279f8ce47b01f8ee7a99",
}
#: grid.pkl: 100 graphs, 66 distinct (m, n), 40333 edges, 21639 nodes
GDSS_GRID = {"num": 100, "distinct": 66, "edges": 40333, "nodes": 21639}

GDSS_DIR = os.environ.get("DOMAINDIFF_GDSS_DIR")
needs_gdss = pytest.mark.skipif(not GDSS_DIR, reason="set DOMAINDIFF_GDSS_DIR to GDSS's files")


def digest(graphs):
    """sha256 of the graphs' sorted edge lists, nodes numbered in sorted-id order."""
    out = []
    for g in graphs:
        m = {v: k for k, v in enumerate(sorted(g.nodes()))}
        out.append([g.number_of_nodes(), sorted(sorted((m[u], m[v])) for u, v in g.edges())])
    return hashlib.sha256(json.dumps(out).encode()).hexdigest()


def community_digest(g):
    s = g.number_of_nodes() // 2
    edges = sorted(sorted(e) for e in g.edges() if (e[0] < s) == (e[1] < s))
    return hashlib.sha256(json.dumps(edges).encode()).hexdigest()[:16]


def bridges(g):
    s = g.number_of_nodes() // 2
    return [e for e in g.edges() if (e[0] < s) != (e[1] < s)]


# --- community-small ----------------------------------------------------------------------------


def test_community_small_communities_are_gdss_edge_for_edge():
    graphs = G.community_small_graphs(100, seed=0)
    sizes = collections.Counter(g.number_of_nodes() for g in graphs)
    assert set(sizes) == set(GDSS_CS_NODES) and sum(sizes.values()) == 100
    for g in graphs:
        # each community is gnp_random_graph(size, 0.7, seed=i): GDSS's edges for that size
        assert community_digest(g) == GDSS_COMMUNITIES[g.number_of_nodes()]
        assert 1 <= len(bridges(g)) <= 4  # GDSS's file: 1 to 3 bridges, at least one forced
    counts = collections.Counter(len(bridges(g)) for g in graphs)
    assert counts[1] >= 75  # GDSS's file: 89 of 100 graphs have exactly one bridge


def test_community_small_draws_as_gdss_generator_seeded():
    """Sizes and bridges are GDSS's ``gen_graph_list`` draws after ``np.random.seed(seed)``."""
    rs = np.random.RandomState(7)
    rs.choice([2])
    m = int(rs.choice(list(range(12, 21))))
    s = m // 2
    draws = rs.random_sample(s * s).reshape(s, s) < 0.05 * 2 / s  # the bridges, in node order
    expected = {(int(a), int(s + b)) for a, b in np.argwhere(draws)} or {(0, s)}
    g = G.community_small_graphs(1, seed=7)[0]
    assert g.number_of_nodes() == 2 * s and set(bridges(g)) == expected


def test_community_small_datamodule_uses_gdss_split(tmp_path):
    dm = D.CommunitySmall(root=str(tmp_path))
    dm.setup()
    graphs = G.community_small_graphs(100, seed=0)
    assert digest(dm.test_graphs()) == digest(graphs[:20])
    assert digest(dm.train_graphs()) == digest(graphs[20:])


# --- grid ---------------------------------------------------------------------------------------


def test_grid_samples_m_n_with_replacement_as_gdss():
    graphs = G.grid_graphs(100, seed=0)
    rs = np.random.RandomState(0)
    pairs = [(int(rs.choice(range(10, 20))), int(rs.choice(range(10, 20)))) for _ in range(100)]
    for g, (m, n) in zip(graphs, pairs):
        assert nx.utils.graphs_equal(
            g, nx.convert_node_labels_to_integers(nx.grid_2d_graph(m, n)))
    # drawn with replacement like GDSS's file (66 distinct pairs of 100); 63.4 +- 2.6 expected
    assert 55 <= len(set(pairs)) <= 75 and len(set(pairs)) < 100
    nodes = sum(g.number_of_nodes() for g in graphs)
    assert abs(nodes - GDSS_GRID["nodes"]) < 0.1 * GDSS_GRID["nodes"]


# --- the split ----------------------------------------------------------------------------------


def _write_pickle(path, graphs):
    path.write_bytes(pickle.dumps(graphs, protocol=pickle.HIGHEST_PROTOCOL))


def test_graph_file_split_is_gdss_first_20_percent_in_file_order(tmp_path):
    graphs = [nx.path_graph(k + 2) for k in range(11)]  # graph k has k + 2 nodes
    _write_pickle(tmp_path / "g.pkl", graphs)
    dm = D.GraphFile(str(tmp_path / "g.pkl"), root=str(tmp_path / "c"))
    dm.setup()
    # GDSS: test_size = int(0.2 * 11) = 2, test = graph_list[:2], train = graph_list[2:]
    assert [g.number_of_nodes() for g in dm.test_graphs()] == [2, 3]
    assert [g.number_of_nodes() for g in dm.train_graphs()] == list(range(4, 13))


def test_enzymes_keeps_tu_order(tmp_path):
    folder = tmp_path / "E"
    folder.mkdir()
    sizes = [12, 10, 15, 11, 13]
    ind, edges, offset = [], [], 0
    for gid, n in enumerate(sizes, 1):
        ind += [gid] * n
        for u in range(n - 1):
            edges += [(offset + u + 1, offset + u + 2), (offset + u + 2, offset + u + 1)]
        offset += n
    (folder / "ENZYMES_graph_indicator.txt").write_text("\n".join(map(str, ind)) + "\n")
    (folder / "ENZYMES_A.txt").write_text("\n".join(f"{a}, {b}" for a, b in edges) + "\n")
    (folder / "ENZYMES_graph_labels.txt").write_text("1\n" * len(sizes))
    dm = D.Enzymes(folder=str(folder), root=str(tmp_path / "c"), test_split=0.4)
    dm.setup()
    assert [g.number_of_nodes() for g in dm.test_graphs()] == [12, 10]  # no shuffle
    assert [g.number_of_nodes() for g in dm.train_graphs()] == [15, 11, 13]


# --- ego-small ----------------------------------------------------------------------------------


def _write_planetoid(path, adjacency):
    with open(path, "wb") as fh:
        pickle.dump(defaultdict(list, adjacency), fh, protocol=2)


def test_planetoid_node_order_is_the_dict_order(tmp_path):
    """Keys first, as ``nx.from_dict_of_lists`` (GDSS): the order decides which ego nets come first."""
    raw = {0: [7], 1: [2], 2: [1, 7], 7: [0, 2]}
    _write_planetoid(tmp_path / "ind.x.graph", raw)
    g = G.read_planetoid_graph(tmp_path / "ind.x.graph")
    assert list(g.nodes()) == list(nx.from_dict_of_lists(raw).nodes()) == [0, 1, 2, 7]


def test_ego_small_is_first_ego_nets_in_node_order(tmp_path, monkeypatch):
    # giant: the path 0-1-...-6, a leaf 10 + i on each path node, a self-loop on 3; apart: a
    # triangle 20-21-22. Renumbered in dict order: path 0..6, leaves 7..13.
    raw = {i: [j for j in (i - 1, i + 1) if 0 <= j <= 6] + [10 + i] for i in range(7)}
    raw[3].append(3)
    raw.update({10 + i: [i] for i in range(7)})
    raw.update({20: [21, 22], 21: [20, 22], 22: [20, 21]})
    folder = tmp_path / "ego_small"
    folder.mkdir()
    _write_planetoid(folder / "ind.citeseer.graph", raw)
    with pytest.warns(UserWarning, match="removed 1 self-loops"):
        big = G.read_planetoid_graph(folder / "ind.citeseer.graph")
    egos = G.ego_graphs(big, num_graphs=3, min_nodes=3, max_nodes=18)
    assert [sorted(e.nodes()) for e in egos] == [[0, 1, 7], [0, 1, 2, 8], [1, 2, 3, 9]]
    assert all(nx.number_of_selfloops(e) == 0 for e in egos)
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    monkeypatch.setattr(D.EgoSmall, "SHA256", None)  # a tiny file in the real format
    monkeypatch.setattr(D.EgoSmall, "SIZE", None)
    dm = D.EgoSmall(num_graphs=5, test_split=0.4)
    with pytest.warns(UserWarning, match="self-loops"):
        dm.setup()
    # ego nets of >= 4 nodes: those of path nodes 1..5, in order; the first 40% is the test set
    assert [sorted(g.nodes()) for g in dm.test_graphs()] == [[0, 1, 2, 8], [1, 2, 3, 9]]
    assert [sorted(g.nodes()) for g in dm.train_graphs()][-1] == [4, 5, 6, 12]
    with pytest.warns(UserWarning, match="self-loops"):
        with pytest.raises(ValueError, match=r"num_graphs: citeseer has 5 ego nets of 4..18 "
                                             r"nodes; expected at least 6"):
            D.EgoSmall(num_graphs=6).setup()


# --- against the real files, when given --------------------------------------------------------


@needs_gdss
def test_real_files_ego_and_enzymes_equal_gdss():
    root = Path(GDSS_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        egos = G.ego_graphs(G.read_planetoid_graph(root / "dataset" / "ind.citeseer.graph"))
        enzymes = G.read_tu_graphs(root / "dataset" / "ENZYMES", "ENZYMES")
    assert digest(egos) == GDSS_DIGESTS["ego_small"]
    assert collections.Counter(g.number_of_nodes() for g in egos) == GDSS_EGO_NODES
    assert collections.Counter(d for g in egos for _, d in g.degree()) == GDSS_EGO_DEGREES
    assert digest(enzymes) == GDSS_DIGESTS["ENZYMES"]


@needs_gdss
def test_real_pickles_split_as_gdss(tmp_path):
    for name, max_nodes in (("community_small", 20), ("ego_small", 18), ("ENZYMES", 125)):
        path = Path(GDSS_DIR) / "data" / f"{name}.pkl"
        ref = G.read_graph_pickle(path)
        assert digest(ref) == GDSS_DIGESTS[name]
        dm = D.GraphFile(str(path), max_nodes=max_nodes, root=str(tmp_path))
        dm.setup()
        n_test = int(0.2 * len(ref))
        assert digest(ref[:n_test]) == GDSS_TEST_DIGESTS[name]
        assert digest(dm.test_graphs()) == digest(
            [nx.convert_node_labels_to_integers(g) for g in ref[:n_test]])
    cs = G.read_graph_pickle(Path(GDSS_DIR) / "data" / "community_small.pkl")
    assert all(community_digest(g) == GDSS_COMMUNITIES[g.number_of_nodes()] for g in cs)
    assert collections.Counter(len(bridges(g)) for g in cs) == GDSS_CS_BRIDGES


# --- QM9 from qm9pack ---------------------------------------------------------------------------

QM9PACK_HEADER = ("XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,"
                  "Mulliken_pop,Harmonic_Freq_cmi,RotA_GHz,HOMO_au")
#: GDB number -> SMILES of a tiny table; GDB 4 and 7 are "left out", as in qm9pack
TINY_QM9 = {1: "C", 2: "N", 3: "O", 5: "C#N", 6: "C=O", 8: "CCO", 9: "c1ccoc1", 10: "CC(=O)C",
            11: "OC=O", 12: "CCCl"}


def _write_qm9pack(folder, table, parts=3):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f'"dsgdb9nsd_{n:06d}.xyz",{n},"{s}","InChI=1S/x",5,"[1,0,0,0,0]","[\'C\']",'
            f'"[[0.0,0.0,0.0]]","[0.1]","[1.0,2.0]",157.7,-0.38' for n, s in sorted(table.items())]
    chunks = np.array_split(np.arange(len(rows)), parts)
    for k, chunk in enumerate(chunks, 1):
        body = "\n".join(rows[i] for i in chunk)
        (folder / f"qm9_part{k}.csv").write_text(QM9PACK_HEADER + "\n" + body + "\n")
    return folder


def _write_idx(path, positions):
    path.write_text(json.dumps({"valid_idxs": [f"{p:06d}" for p in positions]}))
    return path


def test_qm9pack_rows_map_positions_to_gdb_numbers_and_report_missing(tmp_path):
    folder = _write_qm9pack(tmp_path / "pkg" / "data", TINY_QM9)
    idx = _write_idx(tmp_path / "valid_idx_qm9.json", [1, 3, 6, 8])  # GDB 2, 4, 7, 9
    train, test, report = D.qm9pack_rows(folder, idx)
    assert test == [(1, "N"), (8, "c1ccoc1")]  # position p is GDB Index p + 1
    assert [p for p, _ in train] == [0, 2, 4, 5, 7, 9, 10, 11]
    assert ("qm9pack lacks 2 of the 4 test molecules of valid_idx_qm9.json (GDB Index 4, 7)"
            in report)
    assert "the test set is 2 molecules, the training set 8" in report
    assert f"and {D.QM9_NUM_MOLECULES - 4 - 8} of the {D.QM9_NUM_MOLECULES - 4}" in report


def test_qm9_datamodule_reads_qm9pack_offline_kekulized(tmp_path, monkeypatch):
    folder = _write_qm9pack(tmp_path / "pkg" / "data", TINY_QM9)
    monkeypatch.setattr(D, "qm9pack_data_dir", lambda: folder)
    idx = _write_idx(tmp_path / "idx.json", [1, 3, 6, 8])
    dm = D.QM9(valid_idx=str(idx), root=str(tmp_path / "cache"))
    assert dm.source == "qm9pack"  # the default
    with pytest.warns(UserWarning) as record:
        dm.setup()
    text = " | ".join(str(w.message) for w in record)
    assert "lacks 2 of the 4 test molecules" in text and "the test set is 2 molecules" in text
    assert re.search(r"dropped 1 of 8 train rows, kept 7: 1 outside qm9's rules.*\(rows 11\)\. "
                     r"Rows are 0-based positions in GDB order", text)  # CCCl, GDB 12
    assert dm.test_smiles() == ["N", "c1ccoc1"]
    furan = dm.test_items[1]  # aromatic input, kekulized: bond orders 1 and 2, none aromatic
    orders = sorted(b.GetBondTypeAsDouble() for b in furan.GetBonds())
    assert orders == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert not any(b.GetIsAromatic() for b in furan.GetBonds())
    data = dm.test_data[1]
    assert sorted(data.edge_attr.tolist()) == [1.0] * 6 + [2.0] * 4
    assert Chem.MolToSmiles(furan) == "C1=COC=C1"  # the same molecule, re-aromatized on parse
    assert Chem.MolToSmiles(Chem.MolFromSmiles(Chem.MolToSmiles(furan))) == "c1ccoc1"


def test_qm9pack_strict_names_the_gdb_number(tmp_path, monkeypatch):
    folder = _write_qm9pack(tmp_path / "pkg" / "data", TINY_QM9)
    monkeypatch.setattr(D, "qm9pack_data_dir", lambda: folder)
    idx = _write_idx(tmp_path / "idx.json", [1])
    with pytest.raises(ValueError, match=r"data: row 11 \(GDB Index 12\), column 'SMILES': "
                                         r"'CCCl' has atom Cl"):
        with pytest.warns(UserWarning, match="lacks 0 of the 1 test molecules"):
            D.QM9(valid_idx=str(idx), root=str(tmp_path / "c"), strict=True).setup()


def test_qm9pack_bad_tables_are_refused_with_file_and_line(tmp_path, monkeypatch):
    folder = _write_qm9pack(tmp_path / "a", {1: "C", 2: "N", 3: "O"})
    good = (folder / "qm9_part2.csv").read_text()
    (folder / "qm9_part2.csv").write_text(good.replace(",2,", ",1,"))
    with pytest.raises(ValueError, match=r"qm9_part2.csv:2: Index 1 repeated"):
        D.read_qm9pack(folder)
    (folder / "qm9_part2.csv").write_text(good.replace(",2,", ",x2,"))
    with pytest.raises(ValueError, match=r"qm9_part2.csv:2: Index 'x2'; expected an integer"):
        D.read_qm9pack(folder)
    (folder / "qm9_part2.csv").write_text(good)
    (folder / "qm9_part3.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"qm9_part3.csv: missing"):
        D.read_qm9pack(folder)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetUnavailableError, match="qm9pack is not installed"):
        D.qm9pack_data_dir()


def test_qm9_valid_idx_argument_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"valid_idx: .*nope.json: no such file"):
        D.QM9(valid_idx=str(tmp_path / "nope.json"), root=str(tmp_path)).setup()


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack not installed")
def test_real_qm9pack_table():
    table = D.read_qm9pack(D.qm9pack_data_dir())
    assert len(table) == 130_831 and max(table) == D.QM9_NUM_MOLECULES
    assert (table[1], table[2], table[3]) == ("C", "N", "O")  # methane, ammonia, water
    assert table[133_885] == "C1N2C3C4C5OC13C2C45"
    assert 3773 not in table  # one of the 168 test molecules qm9pack leaves out
