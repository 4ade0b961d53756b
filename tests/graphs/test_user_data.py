"""Your own graphs and molecules: UserGraphs (networkx, PyG, graph6/sparse6, edge lists) and
UserMolecules (SMILES CSV / SDF), on files these tests write; fit through the real CLI."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import pytest
import torch
from rdkit import Chem
from torch_geometric.data import Data, InMemoryDataset

from domaindiff_graphs import GraphDiffusion, UserGraphs, UserMolecules
from domaindiff_graphs import mol as M
from tests.catalogue import BadInput, assert_refused, cli_message, raised

TINY = ["--model.init_args.depth=1", "--model.init_args.nhid=8", "--model.init_args.num_layers=1",
        "--model.init_args.adim=8", "--model.init_args.num_heads=2",
        "--model.init_args.num_linears=1", "--trainer.max_steps=1", "--trainer.accelerator=cpu",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
        "--data.init_args.batch_size=4"]


def _graphs() -> list[nx.Graph]:
    """Ten graphs of 3..12 nodes; the first has an isolated node (node 3 of a 4-node path)."""
    gs = [nx.path_graph(n) for n in range(3, 13)]
    gs[0].add_node(3)
    return gs


def _write_g6(path: Path, graphs: list[nx.Graph], header: bool = False) -> Path:
    text = b"".join(nx.to_graph6_bytes(g, header=header and k == 0) for k, g in enumerate(graphs))
    path.write_bytes(text)
    return path


def _sizes(dm) -> list[int]:
    return sorted(dm.node_counts() + [int(d.num_nodes) for d in dm.test_data])


# --- UserGraphs ---------------------------------------------------------------------------------


def test_graph6_keeps_node_counts_and_isolated_nodes_and_derives_max_nodes(tmp_path):
    graphs = _graphs()
    dm = UserGraphs(path=str(_write_g6(tmp_path / "g.g6", graphs, header=True)), shuffle=False)
    dm.setup()
    assert dm.max_nodes == 12 and dm.max_feat == 10
    assert _sizes(dm) == sorted(g.number_of_nodes() for g in graphs)  # isolated node kept
    # GDSS's split: the first 20% of the list, in file order, is the test set
    assert [d.num_nodes for d in dm.test_data] == [4, 4]
    assert [d.num_nodes for d in dm.train_data] == list(range(5, 13))
    first = dm.test_data[0]
    assert first.x[:, 0].tolist() == [0, 0, 0, 1]  # one-hot degree: node 3 has degree 0
    assert first.edge_index.shape[1] == 4  # the 2 edges of path_graph(3), both directions


def test_shuffled_split_is_seeded(tmp_path):
    path = str(_write_g6(tmp_path / "g.g6", _graphs()))
    a, b, c = (UserGraphs(path=path, seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    sizes = [[d.num_nodes for d in dm.test_data] for dm in (a, b, c)]
    assert sizes[0] == sizes[1] and len(sizes[0]) == 2
    assert [d.num_nodes for d in a.train_data] != [d.num_nodes for d in c.train_data]


def test_drop_isolated_reports_the_count(tmp_path):
    graphs = _graphs()
    empty = nx.empty_graph(3)  # only isolated nodes: dropped as a graph, and said so
    path = _write_g6(tmp_path / "g.g6", [*graphs, empty])
    dm = UserGraphs(path=str(path), drop_isolated=True)
    with pytest.warns(UserWarning, match=r"removed 4 isolated nodes from 2 of 11 graphs; dropped "
                                         r"1 graphs left without nodes \(.*g\.g6: graph 10"):
        dm.setup()
    assert _sizes(dm) == [3, *range(4, 13)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        UserGraphs(path=str(path)).setup()  # kept as given: nothing to report


def test_sparse6_and_a_directory_of_edge_lists(tmp_path):
    graphs = _graphs()
    (tmp_path / "s.s6").write_bytes(b"".join(nx.to_sparse6_bytes(g, header=False)
                                             for g in graphs))
    dm = UserGraphs(path=str(tmp_path / "s.s6"))
    dm.setup()
    assert _sizes(dm) == sorted(g.number_of_nodes() for g in graphs)
    folder = tmp_path / "edges"
    folder.mkdir()
    for k, g in enumerate(graphs):
        lines = [f"# graph {k}"] + [f"n{u} n{v}" for u, v in g.edges()]
        lines += [f"n{u}" for u in nx.isolates(g)]  # a lone id declares an isolated node
        (folder / f"g{k:02d}.edges").write_text("\n".join(lines) + "\n")
    dm = UserGraphs(path=str(folder), max_nodes=15)
    dm.setup()
    assert dm.max_nodes == 15
    assert _sizes(dm) == sorted(g.number_of_nodes() for g in graphs)


def test_networkx_list_and_pyg_in_memory_dataset_with_node_features():
    graphs = _graphs()
    dm = UserGraphs(graphs=graphs, max_feat=4)
    dm.setup()
    assert dm.max_feat == 4 and dm.train_data[0].x.shape[1] == 4

    class Tiny(InMemoryDataset):
        def __init__(self, items):
            super().__init__(None)
            self.data, self.slices = self.collate(items)

    items = []
    for k, g in enumerate(graphs):
        ei = torch.tensor([[u, v] for u, v in g.edges()] + [[v, u] for u, v in g.edges()]).T
        items.append(Data(x=torch.full((g.number_of_nodes(), 3), float(k)), edge_index=ei,
                          num_nodes=g.number_of_nodes()))
    dm = UserGraphs(graphs=Tiny(items), node_features="x", shuffle=False)
    dm.setup()
    assert dm.max_feat == 3
    assert _sizes(dm) == sorted(g.number_of_nodes() for g in graphs)
    assert dm.train_data[0].x[0].tolist() == [2.0, 2.0, 2.0]  # graph 2's own features
    assert dm.model_args() == {"max_nodes": 12, "max_feat": 3}


def test_fit_through_the_cli_on_a_graph6_file(tmp_path):
    from domaindiff.cli import lightning_cli

    path = _write_g6(tmp_path / "my_graphs.g6", _graphs())
    cli = lightning_cli(["fit", "--model", "GraphDiffusion", "--data", "UserGraphs",
                         f"--data.init_args.path={path}", "--model.init_args.max_nodes=12",
                         f"--trainer.default_root_dir={tmp_path}", *TINY])
    assert cli.trainer.global_step == 1
    hist = cli.model.node_count_hist
    assert int(hist.sum()) == 8  # the 8 training graphs
    assert set(torch.nonzero(hist).flatten().tolist()) <= set(range(3, 13))


def test_cli_refuses_a_model_too_small_for_the_data_in_one_line(tmp_path):
    path = _write_g6(tmp_path / "my_graphs.g6", _graphs())
    msg = cli_message(["fit", "--model", "GraphDiffusion", "--data", "UserGraphs",
                       f"--data.init_args.path={path}", "--model.init_args.max_nodes=8",
                       f"--trainer.default_root_dir={tmp_path}", *TINY])
    assert "max_nodes=8 < 12" in msg and "--model.init_args.max_nodes 12" in msg
    assert "Traceback" not in msg and len(msg.strip().splitlines()) == 1
    dm = UserGraphs(path=str(path))
    dm.trainer = SimpleNamespace(lightning_module=GraphDiffusion(molecule="qm9", max_feat=4))
    msg = raised(ValueError, dm.setup)
    assert "the model generates molecules (molecule=qm9)" in msg
    assert "--model.init_args.max_feat 10 --model.init_args.molecule null" in msg


# --- UserMolecules ------------------------------------------------------------------------------

CSV_ROWS = [  # (SMILES, kept?)
    ("c1ccccc1O", True),            # aromatic: kekulized
    ("Cc1ccncc1", True),
    ("C$C", False),                 # quadruple bond: unsupported (mol_to_dense crashed on it)
    ("c1cccc1", False),             # aromatic ring that cannot be kekulized
    ("CC(=O)[O-].[Na+]", False),    # a salt: two fragments
    ("CCO", True),
    ("not a smiles", False),        # unparsable
    ("OCC=O", True),
    ("C1CC1", True),
    ("CC(C)(C)(C)C", False),        # pentavalent carbon: rejected by RDKit's valence check
    ("NCC#N", True),
    ("", False),                    # empty cell
    ("CCN", True),
    ("O=C1CCCCC1", True),
]


def _csv(tmp_path: Path, col: str = "canonical_smiles") -> Path:
    lines = [f"id,{col},note"] + [f"{k},{s},x" for k, (s, _) in enumerate(CSV_ROWS)]
    path = tmp_path / "mols.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_molecules_kekulized_and_bad_rows_counted_by_reason(tmp_path):
    dm = UserMolecules(str(_csv(tmp_path)), smiles_col="canonical_smiles", test_split=0.25)
    with pytest.warns(UserWarning) as rec:
        dm.setup()
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "mols.csv: skipped 6 of 14 molecules, kept 8" in msg
    for part in ("1 with unsupported bonds (lines 4)", "1 aromatic and not kekulizable (lines 5)",
                 "1 of several fragments (lines 6)", "2 unparsable (lines 8, 13)",
                 "1 rejected by RDKit (valence) (lines 11)"):
        assert part in msg, msg
    assert dm.atom_types == ("C", "N", "O")  # derived, in atomic-number order
    assert dm.max_nodes == 7 and dm.max_feat == 3
    assert len(dm.train_items) + len(dm.test_items) == 8 and len(dm.test_items) == 2
    for data in dm.train_data + dm.test_data:
        assert set(data.edge_attr.tolist()) <= {1.0, 2.0, 3.0}
        assert data.x.sum(1).eq(1).all()
    kept = {Chem.CanonSmiles(s) for s, ok in CSV_ROWS if ok}
    assert set(dm.train_smiles() + dm.test_smiles()) == kept  # canonical (aromatic) SMILES
    phenol = next(m for m in dm.train_items + dm.test_items if m.GetNumAtoms() == 7
                  and Chem.CanonSmiles(Chem.MolToSmiles(m)) == Chem.CanonSmiles("c1ccccc1O"))
    assert not any(b.GetIsAromatic() for b in phenol.GetBonds())
    assert dm.model_args() == {"molecule": "C,N,O", "max_feat": 3, "max_nodes": 7}


def test_given_vocabulary_and_max_nodes_skip_with_reasons_and_strict_refuses(tmp_path):
    path = _csv(tmp_path)
    dm = UserMolecules(str(path), smiles_col="canonical_smiles", atom_types=["C", "O"],
                       max_nodes=6, test_split=0.34)
    with pytest.warns(UserWarning) as rec:
        dm.setup()
    msg = str(rec[0].message)
    assert "skipped 11 of 14 molecules, kept 3" in msg
    assert "3 with atoms outside the vocabulary (lines 3, 12, 14)" in msg
    assert "2 with too many atoms (lines 2, 15)" in msg
    assert dm.atom_types == ("C", "O") and dm.max_nodes == 6
    msg = raised(ValueError, lambda: UserMolecules(str(path), smiles_col="canonical_smiles",
                                                   strict=True).setup())
    assert msg.startswith(f"{path}: line 4: ") and "QUADRUPLE" in msg and "strict=True" in msg


def test_sdf_written_by_rdkit_with_aromatic_bonds_and_a_bad_record(tmp_path):
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    writer.SetKekulize(False)  # aromatic bonds (type 4) in the file: the loader kekulizes them
    for smi in ("c1ccccc1", "c1ccncc1O", "CCO", "CC#N", "C1=CC=CN1", "OC(=O)CC"):
        writer.write(Chem.MolFromSmiles(smi))
    writer.close()
    any_bond = Chem.MolToMolBlock(Chem.MolFromSmiles("CO")).replace("  1  2  1  0", "  1  2  8  0")
    assert "  1  2  8  0" in any_bond
    with open(path, "a") as fh:
        fh.write(any_bond + "$$$$\n")  # an SDF 'any' bond: unspecified, skipped
    dm = UserMolecules(str(path), test_split=0.2, shuffle=False)
    # pyrrole written aromatic loses its N-H in the V2000 record: RDKit cannot kekulize it back
    with pytest.warns(UserWarning, match=r"skipped 2 of 7 molecules, kept 5: 1 aromatic and not "
                                         r"kekulizable \(records 5\); 1 with unsupported bonds "
                                         r"\(records 7\)"):
        dm.setup()
    assert dm.atom_types == ("C", "N", "O")
    assert dm.test_smiles() == [Chem.CanonSmiles("c1ccccc1")]
    for m in dm.train_items + dm.test_items:
        assert all(b.GetBondTypeAsDouble() in (1.0, 2.0, 3.0) for b in m.GetBonds())


def test_fit_molecules_through_the_cli(tmp_path):
    from domaindiff.cli import lightning_cli

    path = _csv(tmp_path)
    with pytest.warns(UserWarning, match="skipped 6 of 14"):
        cli = lightning_cli(["fit", "--model", "GraphDiffusion", "--data", "UserMolecules",
                             f"--data.init_args.path={path}",
                             "--data.init_args.smiles_col=canonical_smiles",
                             "--data.init_args.test_split=0.25",
                             "--model.init_args.molecule=C,N,O", "--model.init_args.max_feat=3",
                             "--model.init_args.max_nodes=7",
                             f"--trainer.default_root_dir={tmp_path}", *TINY])
    assert cli.trainer.global_step == 1 and cli.model.atom_types == ("C", "N", "O")
    # the vocabulary in another order would decode atoms as the wrong elements: refused
    msg = cli_message(["fit", "--model", "GraphDiffusion", "--data", "UserMolecules",
                       f"--data.init_args.path={path}",
                       "--data.init_args.smiles_col=canonical_smiles",
                       "--data.init_args.test_split=0.25", "--model.init_args.molecule=C,O,N",
                       "--model.init_args.max_feat=3", f"--trainer.default_root_dir={tmp_path}",
                       *TINY])
    assert "atom types ['C', 'O', 'N'] != ['C', 'N', 'O']" in msg
    assert "--model.init_args.molecule C,N,O" in msg and len(msg.strip().splitlines()) == 1


def test_novelty_of_a_training_molecule_is_zero(tmp_path):
    from domaindiff_graphs.metrics import molecule_metrics

    # before: train_smiles() were Kekule strings, generated ones aromatic: always "novel"
    dm = UserMolecules(str(_csv(tmp_path)), smiles_col="canonical_smiles", test_split=0.25,
                       shuffle=False)
    with pytest.warns(UserWarning):
        dm.setup()
    train = dm.train_smiles()
    assert Chem.CanonSmiles("Cc1ccncc1") not in train  # the first 2 kept rows are the test set
    mine = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccccc1CCCCO")]
    res = molecule_metrics([Chem.MolFromSmiles(train[-1]), *mine], [True] * 3, train, None, None)
    assert res["novelty"] == pytest.approx(1 / 3)  # CCO and the last train item are not novel


def test_screen_and_fits_refuse_bonds_the_encoder_cannot_take():
    # before: QM9 rows like "C$C" passed screen() and mol_to_dense raised in setup
    mol, kind, detail = M.screen("C$C", M.QM9_ATOMS, 9)
    assert mol is None and kind == "rules" and "QUADRUPLE" in detail
    assert not M.fits(Chem.MolFromSmiles("C->O"), M.QM9_ATOMS, 9)
    assert M.fits(Chem.MolFromSmiles("CO"), M.QM9_ATOMS, 9)
    assert M.atom_types_for("C,N,O,S") == ("C", "N", "O", "S")
    assert M.atom_types_for("qm9") == M.QM9_ATOMS


# --- bad inputs ---------------------------------------------------------------------------------


def _setup(**kw) -> str:
    return raised((ValueError, FileNotFoundError), lambda: UserGraphs(**kw).setup())


def _bad_g6(tmp: Path) -> str:
    good = nx.to_graph6_bytes(nx.path_graph(4), header=False)
    (tmp / "g.g6").write_bytes(good + b"Dzz!!\n")
    return _setup(path=str(tmp / "g.g6"))


def _edge_file(tmp: Path, text: str) -> str:
    (tmp / "g.edges").write_text(text)
    return _setup(path=str(tmp / "g.edges"))


def _directed(tmp: Path) -> str:
    return _setup(graphs=[Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)])


def _repeated(tmp: Path) -> str:
    ei = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]])
    return _setup(graphs=[Data(edge_index=ei, num_nodes=2)])


def _dummy(tmp: Path) -> str:
    (tmp / "m.csv").write_text("smiles\n*CC\nCCO\n")
    return raised(ValueError, lambda: UserMolecules(str(tmp / "m.csv"), strict=True).setup())


def _too_big(tmp: Path) -> str:
    _write_g6(tmp / "g.g6", [nx.path_graph(4), nx.path_graph(30)])
    return _setup(path=str(tmp / "g.g6"), max_nodes=20)


def _missing_attr(tmp: Path) -> str:
    g = nx.path_graph(3)
    nx.set_node_attributes(g, {0: 1.0, 1: 2.0}, "w")
    return _setup(graphs=[g, g], node_features="w")


def _no_col(tmp: Path) -> str:
    (tmp / "m.csv").write_text("id,smi\n0,CCO\n")
    return raised(ValueError, lambda: UserMolecules(str(tmp / "m.csv")).setup())


CATALOGUE: list[BadInput] = [
    BadInput("graphs-user-g6-bad-line", "UserGraphs(path='g.g6').setup()",
             r"g\.g6:2: not a graph6 graph", _bad_g6),
    BadInput("graphs-user-edges-weights", "UserGraphs(path='g.edges').setup()",
             r"g\.edges:2: 3 fields .*expected 'u v'", lambda t: _edge_file(t, "0 1\n1 2 0.5\n")),
    BadInput("graphs-user-edges-self-loop", "UserGraphs(path='g.edges').setup()",
             r"g\.edges:1: self-loop on node '3'", lambda t: _edge_file(t, "3 3\n")),
    BadInput("graphs-user-suffix", "UserGraphs(path='g.gml').setup()",
             r"g\.gml has the suffix '\.gml'; expected one of",
             lambda t: (t / "g.gml").write_text("x") and _setup(path=str(t / "g.gml"))),
    BadInput("graphs-user-missing-path", "UserGraphs(path='nope.g6').setup()",
             r"nope\.g6: no such graph file", lambda t: _setup(path=str(t / "nope.g6"))),
    BadInput("graphs-user-pyg-directed", "UserGraphs(graphs=[Data(edge_index=...)])",
             r"graphs\[0\]: edge_index is directed .*ToUndirected", _directed),
    BadInput("graphs-user-pyg-repeated-edges", "UserGraphs(graphs=[Data(edge_index=...)])",
             r"graphs\[0\]: edge_index repeats 2 edges; expected each edge once", _repeated),
    BadInput("graphs-user-molecules-dummy-atom", "UserMolecules('m.csv', strict=True).setup()",
             r"m\.csv: line 2: '\*CC' has a dummy atom", _dummy),
    BadInput("graphs-user-too-many-nodes", "UserGraphs(path='g.g6', max_nodes=20).setup()",
             r"g\.g6: graph 1 \(line 2\): has 30 nodes; expected at most max_nodes=20", _too_big),
    BadInput("graphs-user-missing-attribute", "UserGraphs(graphs=gs, node_features='w')",
             r"graphs\[0\]: node 2 has no attribute 'w'", _missing_attr),
    BadInput("graphs-user-not-a-graph", "UserGraphs(graphs=[1, 2]).setup()",
             r"graphs\[0\]: expected a networkx Graph, got int", lambda t: _setup(graphs=[1, 2])),
    BadInput("graphs-user-molecules-no-column", "UserMolecules('m.csv').setup()",
             r"m\.csv: no column 'smiles' \(columns: \['id', 'smi'\]\); pass smiles_col", _no_col),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)
