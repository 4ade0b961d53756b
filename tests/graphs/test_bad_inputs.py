"""Bad graph and molecule inputs (TU text files, GDSS pickles, JSON lists, CSV): each refused in one line.

Every ``check`` writes the tiny bad file(s) into ``tmp_path`` in the real format and runs the real
loader (the DataModule's ``setup``, as ``domaindiff fit`` does) or the real CLI, and returns the
message. A consistent TU set is written first and one file then spoiled, as a killed extraction,
a bad copy or a hostile user would leave it.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import pytest
from rdkit import Chem

from domaindiff.data import DatasetUnavailableError
from domaindiff_graphs import mol as M
from domaindiff_graphs.data import QM9, Enzymes, GraphFile
from tests.catalogue import BadInput, assert_refused, cli_message, raised

CONF = Path(__file__).parents[2] / "plugins/graphs/domaindiff_graphs/conf"
ERRORS = (ValueError, FileNotFoundError, DatasetUnavailableError)
TU_GRAPHS = [nx.cycle_graph(12), nx.complete_graph(10)]  # 22 nodes, ids 1..12 and 13..22


def _write_tu(folder: Path, graphs: list[nx.Graph] = TU_GRAPHS) -> dict[str, Path]:
    """A consistent TU ENZYMES set in ``folder``; returns its files by suffix (``A``...)."""
    folder.mkdir(parents=True, exist_ok=True)
    ind, edges, offset = [], [], 0
    for gid, g in enumerate(graphs, 1):
        ind += [gid] * g.number_of_nodes()
        for u, v in g.edges():
            edges += [(u + 1 + offset, v + 1 + offset), (v + 1 + offset, u + 1 + offset)]
        offset += g.number_of_nodes()
    files = {k: folder / f"ENZYMES_{k}.txt" for k in
             ("A", "graph_indicator", "graph_labels", "node_labels", "node_attributes")}
    files["A"].write_text("".join(f"{a}, {b}\n" for a, b in edges))
    files["graph_indicator"].write_text("".join(f"{g}\n" for g in ind))
    files["graph_labels"].write_text("".join("1\n" for _ in graphs))
    files["node_labels"].write_text("".join("2\n" for _ in ind))
    files["node_attributes"].write_text("".join("0.5, 1.0\n" for _ in ind))
    return files


def _tu(spoil: Callable[[dict[str, Path]], None]) -> Callable[[Path], str]:
    """A check: write the TU set, ``spoil`` it, load it with ``Enzymes(folder=...)``."""
    def check(tmp: Path) -> str:
        spoil(_write_tu(tmp / "ENZYMES"))
        return raised(ERRORS, lambda: Enzymes(folder=str(tmp / "ENZYMES"), root=str(tmp / "c"))
                      .setup("fit"))
    return check


def _drop_last_lines(path: Path, k: int = 1) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-k]))


def _set_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def _bad_zip(tmp: Path) -> str:
    (tmp / "c").mkdir()
    (tmp / "c" / "ENZYMES.zip").write_bytes(b"PK\x03\x04 this is not the rest of a zip")
    return raised(ERRORS, lambda: Enzymes(root=str(tmp / "c")).setup("fit"))


def _truncated_zip(tmp: Path) -> str:
    """A zip whose member data were cut short (a torn copy); its CRC no longer matches."""
    _write_tu(tmp / "src")
    (tmp / "c").mkdir()
    with zipfile.ZipFile(tmp / "c" / "ENZYMES.zip", "w", zipfile.ZIP_STORED) as zf:
        for f in sorted((tmp / "src").iterdir()):
            zf.write(f, f"ENZYMES/{f.name}")
    data = bytearray((tmp / "c" / "ENZYMES.zip").read_bytes())
    at = data.index(b"1, 2")  # flip a byte inside ENZYMES_A.txt's stored data
    data[at] = ord("7")
    (tmp / "c" / "ENZYMES.zip").write_bytes(bytes(data))
    return raised(ERRORS, lambda: Enzymes(root=str(tmp / "c")).setup("fit"))


# --- pickled (GDSS) and JSON graph lists -------------------------------------------------------


class _Shell:
    """A pickle payload that runs a shell command when unpickled with plain ``pickle``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pkl(make: Callable[[Path], object], **kw) -> Callable[[Path], str]:
    """A check: pickle ``make(tmp)`` as GDSS does and load it with ``GraphFile(path=...)``."""
    def check(tmp: Path) -> str:
        path = tmp / "community_small.pkl"
        with open(path, "wb") as fh:
            pickle.dump(make(tmp), fh)
        return raised(ERRORS, lambda: GraphFile(path=str(path), **kw).setup("fit"))
    return check


def _pkl_runs_code(tmp: Path) -> str:
    message = _pkl(lambda t: [nx.path_graph(4), _Shell(t / "pwned")])(tmp)
    assert not (tmp / "pwned").exists(), "the pickle's command ran"
    return message


def _pkl_truncated(tmp: Path) -> str:
    path = tmp / "grid.pkl"
    path.write_bytes(pickle.dumps([nx.grid_2d_graph(3, 3)] * 5)[:-40])
    return raised(ERRORS, lambda: GraphFile(path=str(path)).setup("fit"))


def _graphs_with(**change) -> Callable[[Path], list[nx.Graph]]:
    def make(tmp: Path) -> list[nx.Graph]:
        graphs = [nx.cycle_graph(6) for _ in range(5)]
        for k, g in change.items():
            graphs[int(k[1:])] = g
        return graphs
    return make


def _nan_feature() -> nx.Graph:
    g = nx.path_graph(5)
    nx.set_node_attributes(g, {0: 1.0, 1: 0.5, 2: float("nan"), 3: 0.0, 4: 2.0}, "feat")
    return g


def _json(payload: object) -> Callable[[Path], str]:
    def check(tmp: Path) -> str:
        path = tmp / "graphs.json"
        path.write_text(json.dumps(payload))
        return raised(ERRORS, lambda: GraphFile(path=str(path)).setup("fit"))
    return check


def _cycles(n: int = 5) -> list[dict]:
    return [{"num_nodes": 4, "edges": [[0, 1], [1, 2], [2, 3], [3, 0]]} for _ in range(n)]


# --- molecules -----------------------------------------------------------------------------------

QM9_ROWS = ["C", "CC", "CO", "C#N", "OC=O", "CC(C)=O", "c1ccccc1", "CCO", "CCN", "NC=O"]


def _qm9(rows: list[str] = QM9_ROWS, index: object = None, strict: bool = True,
         pin: bool = False) -> Callable[[Path], str]:
    """A check: GDSS's qm9.csv / valid_idx_qm9.json layout in the cache dir, then ``QM9.setup``."""
    def check(tmp: Path) -> str:
        folder = tmp / "qm9"
        folder.mkdir()
        body = "".join(f"{i},{s},{s},0.1\n" for i, s in enumerate(rows))
        (folder / "qm9.csv").write_text("index,SMILES1,SMILES2,A\n" + body)
        idx = {"valid_idxs": ["000001", "000004"]} if index is None else index
        (folder / "valid_idx_qm9.json").write_text(json.dumps(idx))
        dm = QM9(source="csv", root=str(folder), strict=strict)
        if not pin:
            dm.IDX_SHA256 = None  # tiny index files in the real format (the pin is its own entry)
        return raised(ERRORS, lambda: dm.setup("fit"))
    return check


def _featurizer(tmp: Path) -> str:
    return raised(ValueError, lambda: M.mol_to_dense(M.kekulized("CC(Cl)=O"), M.QM9_ATOMS, 9))


# --- the CLI -------------------------------------------------------------------------------------


def _cli_pkl(tmp: Path) -> str:
    import yaml

    path = tmp / "ego_small.pkl"
    path.write_bytes(pickle.dumps([nx.star_graph(4), _Shell(tmp / "pwned")]))
    config = yaml.safe_load((CONF / "demo.yaml").read_text())
    config["data"] = {"class_path": "domaindiff_graphs.GraphFile",
                      "init_args": {"path": str(path), "max_nodes": 20, "max_feat": 10}}
    (tmp / "ego_file.yaml").write_text(yaml.safe_dump(config))
    message = cli_message(["fit", "--config", str(tmp / "ego_file.yaml"),
                           "--trainer.max_epochs=1", "--trainer.logger=false",
                           f"--trainer.default_root_dir={tmp}"], cwd=tmp)
    assert not (tmp / "pwned").exists(), "the pickle's command ran"
    return message


def _cli_enzymes(tmp: Path) -> str:
    files = _write_tu(tmp / "ENZYMES")
    _drop_last_lines(files["graph_labels"])
    return cli_message(["fit", "--config", str(CONF / "enzymes.yaml"),
                        f"--data.init_args.folder={tmp / 'ENZYMES'}",
                        f"--data.init_args.root={tmp / 'cache'}", "--trainer.max_epochs=1",
                        "--trainer.accelerator=cpu", "--trainer.logger=false",
                        f"--trainer.default_root_dir={tmp}"], cwd=tmp)


def _qm9pack(index: list[int], rows: str = "1,C\n2,N\n3,O\n") -> Callable[[Path], str]:
    """A check: a tiny qm9pack table (three parts) and an index file, read as QM9 reads them."""
    def check(tmp: Path) -> str:
        from domaindiff_graphs.data import qm9pack_rows

        (tmp / "qm9pack").mkdir()
        for k, part in enumerate((rows, "", ""), 1):
            (tmp / "qm9pack" / f"qm9_part{k}.csv").write_text("Index,SMILES\n" + part)
        (tmp / "idx.json").write_text(json.dumps({"valid_idxs": [f"{i:06d}" for i in index]}))
        return raised(ERRORS, lambda: qm9pack_rows(tmp / "qm9pack", tmp / "idx.json"))

    return check


ENZ = "Enzymes(folder=ENZYMES).setup()"
def _eval_probe(tmp: Path) -> str:
    """``domaindiff eval graphs`` with an unknown Hutchinson probe, on a tiny written checkpoint."""
    import torch

    from domaindiff_graphs import GraphDiffusion

    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=2, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp / "g.ckpt")
    message = cli_message(["eval", "graphs", f"ckpt={tmp / 'g.ckpt'}", "nll_graphs=2",
                           "nll_probe=laplace", f"out_dir={tmp / 'ev'}"], cwd=tmp)
    assert not list((tmp / "ev").glob("*.*")), "files written before the refusal"
    return message


CATALOGUE: list[BadInput] = [
    BadInput("graphs-tu-short-graph-labels", f"{ENZ}  # ENZYMES_graph_labels.txt cut short",
             r"ENZYMES_graph_labels.txt: ends after line 1; expected 2 lines \(one per graph of "
             r"ENZYMES_graph_indicator.txt\), line 2 is missing",
             _tu(lambda f: _drop_last_lines(f["graph_labels"]))),
    BadInput("graphs-tu-short-node-labels", f"{ENZ}  # ENZYMES_node_labels.txt cut short",
             r"ENZYMES_node_labels.txt: ends after line 19; expected 22 lines \(one per node",
             _tu(lambda f: _drop_last_lines(f["node_labels"], 3))),
    BadInput("graphs-tu-extra-node-attributes", f"{ENZ}  # one line too many",
             r"ENZYMES_node_attributes.txt:23: extra line; expected 22 lines \(one per node",
             _tu(lambda f: _append(f["node_attributes"], "0.1, 0.2\n"))),
    BadInput("graphs-tu-edge-to-missing-node", f"{ENZ}  # ENZYMES_A.txt names node 99",
             r"ENZYMES_A.txt:3: node 99 does not exist; expected node ids 1..22",
             _tu(lambda f: _set_line(f["A"], 3, "5, 99"))),
    BadInput("graphs-tu-edge-joins-graphs", f"{ENZ}  # an edge from graph 1 to graph 2",
             r"ENZYMES_A.txt:\d+: edge \(12, 13\) joins graph 1 and graph 2; expected both ends",
             _tu(lambda f: _append(f["A"], "12, 13\n13, 12\n"))),
    BadInput("graphs-tu-truncated-edges", f"{ENZ}  # ENZYMES_A.txt lost its last line",
             r"ENZYMES_A.txt:\d+: edge \(\d+, \d+\) has no reverse .*expected each undirected "
             r"edge listed both ways",
             _tu(lambda f: _drop_last_lines(f["A"]))),
    BadInput("graphs-tu-torn-last-line", f"{ENZ}  # ENZYMES_A.txt ends in '21,'",
             r"ENZYMES_A.txt:\d+: expected 'i, j', got '21,'",
             _tu(lambda f: _append(f["A"], "21,\n"))),
    BadInput("graphs-tu-empty-graph", f"{ENZ}  # graph ids jump from 1 to 3",
             r"ENZYMES_graph_indicator.txt: graph 2 has 0 nodes \(1 empty graphs\); expected "
             r"every id 1..3",
             _tu(lambda f: (f["graph_indicator"].write_text(
                 f["graph_indicator"].read_text().replace("2\n", "3\n")),
                 _append(f["graph_labels"], "1\n")))),
    BadInput("graphs-tu-nan-node-attribute", f"{ENZ}  # 'nan' in ENZYMES_node_attributes.txt",
             r"ENZYMES_node_attributes.txt:4: '0.5, nan' is not finite; expected finite",
             _tu(lambda f: _set_line(f["node_attributes"], 4, "0.5, nan"))),
    BadInput("graphs-zip-not-a-zip", "Enzymes().setup()  # ENZYMES.zip is a torn download",
             r"ENZYMES.zip: not a readable zip .*delete it and retry", _bad_zip),
    BadInput("graphs-zip-bad-crc", "Enzymes().setup()  # one byte of ENZYMES.zip altered",
             r"ENZYMES.zip: not a readable zip \(Bad CRC-32 for file 'ENZYMES/ENZYMES_A.txt'\)",
             _truncated_zip),
    BadInput("graphs-pkl-runs-code", "GraphFile(path='community_small.pkl').setup()  # os.system",
             r"community_small.pkl: refusing to unpickle posix.system: a graph list may only hold "
             r"networkx graphs", _pkl_runs_code),
    BadInput("graphs-pkl-truncated", "GraphFile(path='grid.pkl').setup()  # file cut short",
             r"grid.pkl: not a readable pickled graph list \(truncated or corrupt", _pkl_truncated),
    BadInput("graphs-pkl-zero-nodes", "GraphFile(path='community_small.pkl').setup()",
             r"community_small.pkl: graph 3: has 0 nodes; expected at least 1",
             _pkl(_graphs_with(g3=nx.Graph()))),
    BadInput("graphs-pkl-self-loop", "GraphFile(path='community_small.pkl').setup()",
             r"community_small.pkl: graph 1: self-loop on node 2 \(1 in all\); expected none",
             _pkl(_graphs_with(g1=nx.Graph([(0, 1), (1, 2), (2, 2)])))),
    BadInput("graphs-pkl-too-many-nodes", "GraphFile(path='community_small.pkl', max_nodes=20)",
             r"community_small.pkl: graph 4: has 25 nodes; expected at most max_nodes=20",
             _pkl(_graphs_with(g4=nx.path_graph(25)))),
    BadInput("graphs-pkl-directed", "GraphFile(path='community_small.pkl').setup()",
             r"community_small.pkl: graph 0: is a directed DiGraph; expected an undirected graph",
             _pkl(_graphs_with(g0=nx.DiGraph([(0, 1), (1, 2)])))),
    BadInput("graphs-pkl-nan-feature", "GraphFile(path='community_small.pkl').setup()",
             r"community_small.pkl: graph 2: node 2 field 'feat' = nan; expected finite numbers",
             _pkl(_graphs_with(g2=_nan_feature()))),
    BadInput("graphs-json-edge-to-missing-node", "GraphFile(path='graphs.json').setup()",
             r"graphs.json: entry 1: edge 2 \[2, 7\] names node 7, which does not exist; expected "
             r"node ids 0..3 \(num_nodes=4\)",
             _json(_cycles()[:1] + [{"num_nodes": 4, "edges": [[0, 1], [1, 2], [2, 7]]}]
                   + _cycles(3))),
    BadInput("graphs-json-zero-nodes", "GraphFile(path='graphs.json').setup()",
             r"graphs.json: entry 0: num_nodes = 0; expected an integer >= 1",
             _json([{"num_nodes": 0, "edges": []}] + _cycles(4))),
    BadInput("graphs-file-unknown-suffix", "GraphFile(path='graphs.txt').setup()",
             r"path: \S*graphs.txt has the suffix '.txt'; expected .pkl",
             lambda tmp: (tmp / "graphs.txt").write_text("0 1\n") and raised(
                 ERRORS, lambda: GraphFile(path=str(tmp / "graphs.txt")).setup())),
    BadInput("graphs-file-missing", "GraphFile(path='nowhere.pkl').setup()",
             r"path: \S*nowhere.pkl: no such graph list file",
             lambda tmp: raised(ERRORS, lambda: GraphFile(path=str(tmp / "nowhere.pkl")).setup())),
    BadInput("graphs-tu-binary-file", f"{ENZ}  # ENZYMES_node_labels.txt is binary garbage",
             r"ENZYMES_node_labels.txt: not a text file .*; expected node labels, one per line",
             _tu(lambda f: f["node_labels"].write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"))),
    BadInput("graphs-qm9-unparsable-strict", "QM9(source='csv', strict=True).setup()",
             r"qm9.csv: row 5 \(line 7\), column 'SMILES1': RDKit cannot parse the SMILES 'C1CC' "
             r"\(strict=True", _qm9(QM9_ROWS[:5] + ["C1CC"] + QM9_ROWS[5:])),
    BadInput("graphs-qm9-unknown-atom-strict", "QM9(source='csv', strict=True).setup()",
             r"qm9.csv: row 3 \(line 5\), column 'SMILES1': 'CCS' has atom S; expected only the "
             r"atom types \['C', 'N', 'O', 'F'\]", _qm9(QM9_ROWS[:3] + ["CCS"] + QM9_ROWS[3:])),
    BadInput("graphs-featurizer-unknown-atom", "mol_to_dense(Chem.MolFromSmiles('CC(Cl)=O'), "
             "QM9_ATOMS, 9)",
             r"molecule CC\(=O\)Cl: atom Cl \(index 2\) not in the featurizer's atom types "
             r"\['C', 'N', 'O', 'F'\]; expected one of them", _featurizer),
    BadInput("graphs-qm9-index-repeated", "QM9(source='csv').setup()  # valid_idx lists 4 twice",
             r"valid_idx_qm9.json: index 4 \(entry 2\) repeated; expected each test row once",
             _qm9(index={"valid_idxs": ["000001", "000004", "000004"]})),
    BadInput("graphs-qm9-index-out-of-range", "QM9(source='csv').setup()  # index 10 of 10 rows",
             r"valid_idx_qm9.json: index 10 \(entry 1\) out of range; expected 0..9",
             _qm9(index=[1, 10])),
    BadInput("graphs-qm9-index-not-gdss", "QM9(source='csv').setup()  # a different index file",
             r"valid_idx_qm9.json: checksum mismatch \(expected sha256 889fd232", _qm9(pin=True)),
    BadInput("graphs-cli-pkl-runs-code", "domaindiff fit --config ego_file.yaml  "
             "# data: GraphFile, path: ego_small.pkl naming os.system",
             r"error: .*ego_small.pkl: refusing to unpickle posix.system", _cli_pkl),
    BadInput("graphs-cli-enzymes-short-labels", "domaindiff fit --config plugins/graphs/"
             "domaindiff_graphs/conf/enzymes.yaml --data.init_args.folder=ENZYMES",
             r"error: .*ENZYMES_graph_labels.txt: ends after line 1; expected 2 lines",
             _cli_enzymes),
    BadInput("graphs-qm9pack-index-repeated", "QM9(source='qm9pack').setup()  # Index 2 twice",
             r"qm9pack/qm9_part1.csv:4: Index 2 repeated; expected each molecule once",
             _qm9pack([0], "1,C\n2,N\n2,O\n")),
    BadInput("graphs-qm9pack-index-beyond-qm9", "QM9(valid_idx='idx.json').setup()  # row 133885",
             r"idx.json: index 133885 \(entry 0\) out of range; expected 0..133884 for the "
             r"133885 rows of the full QM9 table", _qm9pack([133885])),
    BadInput("graphs-qm9-valid-idx-missing", "QM9(valid_idx='nope.json').setup()",
             r"valid_idx: \S*nope.json: no such file; expected GDSS's valid_idx_qm9.json",
             lambda tmp: raised(ERRORS, lambda: QM9(valid_idx=str(tmp / "nope.json"),
                                                    root=str(tmp)).setup())),
    BadInput("graphs-eval-unknown-nll-probe", "domaindiff eval graphs ckpt=g.ckpt nll_graphs=2 "
             "nll_probe=laplace",
             r"nll_probe: unknown Hutchinson probe 'laplace'; choose one of .*rademacher",
             _eval_probe, max_lines=1),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)


def test_catalogue_ids_are_unique_and_name_the_area():
    ids = [c.id for c in CATALOGUE]
    assert len(ids) == len(set(ids)) and all(i.startswith("graphs-") for i in ids)
    assert Chem.MolFromSmiles("C1CC") is None  # the unparsable row really is unparsable
