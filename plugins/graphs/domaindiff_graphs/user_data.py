r"""Your own graphs and molecules as DataModules: :class:`UserGraphs` and :class:`UserMolecules`.

Generic graphs come from a Python list of networkx graphs, a PyG dataset (``InMemoryDataset``,
any sequence of ``Data``), or files (graph6, sparse6, one edge-list file per graph, a directory
of such files, or the JSON / GDSS pickle lists :class:`~domaindiff_graphs.data.GraphFile` reads).
Molecules come from a SMILES CSV (any column), a SMILES file or an SDF. Both check every item and
name the file, the line / record / graph index and what was expected when they refuse one; what
they skip or drop is counted in one warning.

From the CLI::

    domaindiff fit --model GraphDiffusion --data UserGraphs --data.init_args.path my_graphs.g6
    domaindiff fit --model GraphDiffusion --data UserMolecules --data.init_args.path mols.csv \
        --model.init_args.molecule C,N,O,S --model.init_args.max_feat 4 \
        --model.init_args.max_nodes 20

The model's ``max_nodes`` / ``max_feat`` (and ``molecule`` for molecules) must match the data;
when they do not, the fit stops before training with the values to pass.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from domaindiff_graphs import graphs as G
from domaindiff_graphs.data import GraphDataModule, MoleculeDataModule, degree_features, mol_to_nx

#: file suffixes read as one edge list per file
EDGE_LIST_SUFFIXES = (".edges", ".edgelist", ".el", ".txt")
GRAPH6_SUFFIXES = (".g6", ".graph6")
SPARSE6_SUFFIXES = (".s6", ".sparse6")
LIST_SUFFIXES = (".json", ".pkl", ".pickle")
GRAPH_SUFFIXES = EDGE_LIST_SUFFIXES + GRAPH6_SUFFIXES + SPARSE6_SUFFIXES + LIST_SUFFIXES
#: how many item numbers a skip report names per reason
REPORT_ITEMS = 5


# --- reading graphs ---------------------------------------------------------------------------


def read_graph6_file(path: str | Path, sparse: bool = False) -> list[nx.Graph]:
    """Read a graph6 (or sparse6) file: one graph per line, an optional ``>>graph6<<`` header.

    Raises:
        ValueError: a line that is not graph6 / sparse6 (the file and line are named).
    """
    path = Path(path)
    fmt = "sparse6" if sparse else "graph6"
    parse = nx.from_sparse6_bytes if sparse else nx.from_graph6_bytes
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the {fmt} file ({err})") from err
    graphs = []
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if lineno == 1 and line.startswith(f">>{fmt}<<".encode()):
            line = line[len(f">>{fmt}<<"):]
        if not line:
            continue
        if sparse and not line.startswith(b":"):
            raise ValueError(f"{path}:{lineno}: not a sparse6 line (it must start with ':'); "
                             "expected one sparse6 graph per line")
        try:
            graphs.append(parse(line))
        except (nx.NetworkXError, ValueError, IndexError, TypeError) as err:
            raise ValueError(f"{path}:{lineno}: not a {fmt} graph ({err}); expected one {fmt} "
                             "graph per line") from None
    if not graphs:
        raise ValueError(f"{path}: no graphs; expected one {fmt} graph per line")
    return graphs


def read_edge_list(path: str | Path) -> nx.Graph:
    """Read one graph from an edge-list file.

    Each line is ``u v`` (an edge) or ``u`` alone (a node, so isolated nodes are kept); node ids
    are any tokens without spaces, commas are read as spaces, ``#`` starts a comment. Nodes are
    numbered in order of first appearance.

    Raises:
        ValueError: a line with more than two fields (weights are not read: the model's graphs
            are unweighted), a self-loop, or no nodes; the file and line are named.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the edge list ({err}); expected a text file with "
                         "'u v' per line") from None
    g = nx.Graph()
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ValueError(f"{path}:{lineno}: {len(fields)} fields {line.strip()!r}; expected "
                             "'u v' (an edge) or 'u' (a node); weights and attributes are not "
                             "read")
        if len(fields) == 2 and fields[0] == fields[1]:
            raise ValueError(f"{path}:{lineno}: self-loop on node {fields[0]!r}; expected none "
                             "(the model's adjacency has an empty diagonal)")
        g.add_nodes_from(fields)
        if len(fields) == 2:
            g.add_edge(*fields)
    if g.number_of_nodes() == 0:
        raise ValueError(f"{path}: no nodes; expected 'u v' lines (one graph per file)")
    return g


def read_graph_files(path: str | Path) -> list[tuple[str, nx.Graph]]:
    """Graphs of a file or of a directory of files, each with where it came from.

    A directory is read file by file in sorted name order (files with other suffixes are
    refused, hidden files skipped).

    Returns:
        ``(where, graph)`` pairs, ``where`` naming the file and the graph's index in it.

    Raises:
        FileNotFoundError: no such file or directory.
        ValueError: an unknown suffix, an empty directory or a bad file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if not files:
            raise ValueError(f"path: {path} is an empty directory; expected graph files "
                             f"({', '.join(GRAPH_SUFFIXES)})")
        out: list[tuple[str, nx.Graph]] = []
        for file in files:
            out.extend(_read_one_file(file))
        return out
    if not path.is_file():
        raise FileNotFoundError(f"path: {path}: no such graph file or directory")
    return _read_one_file(path)


def _read_one_file(path: Path) -> list[tuple[str, nx.Graph]]:
    suffix = path.suffix.lower()
    if suffix in GRAPH6_SUFFIXES + SPARSE6_SUFFIXES:
        graphs = read_graph6_file(path, sparse=suffix in SPARSE6_SUFFIXES)
        return [(f"{path}: graph {k} (line {k + 1})", g) for k, g in enumerate(graphs)]
    if suffix in EDGE_LIST_SUFFIXES:
        return [(str(path), read_edge_list(path))]
    if suffix == ".json":
        from domaindiff_graphs.data import read_graph_list

        return [(f"{path}: entry {k}", g) for k, g in enumerate(read_graph_list(path))]
    if suffix in (".pkl", ".pickle"):
        return [(f"{path}: graph {k}", g) for k, g in enumerate(G.read_graph_pickle(path))]
    if path.is_dir():
        raise ValueError(f"path: {path} is a directory inside the graph directory; expected "
                         "graph files only")
    raise ValueError(f"path: {path} has the suffix {suffix!r}; expected one of "
                     f"{', '.join(GRAPH_SUFFIXES)} (graph6, sparse6, an edge list per file, a "
                     "JSON or GDSS pickle list)")


def pyg_to_graph(data: Any, where: str) -> nx.Graph:
    """A PyG ``Data`` as an undirected networkx graph (node attribute ``x`` when it has one).

    Raises:
        ValueError: not a ``Data``, or a directed ``edge_index`` (apply ``ToUndirected`` first).
    """
    from torch_geometric.utils import is_undirected, to_networkx

    if not isinstance(data, Data):
        raise ValueError(f"{where}: expected a torch_geometric Data, got {type(data).__name__}")
    n = int(data.num_nodes or 0)
    ei = data.edge_index if data.edge_index is not None else torch.zeros(2, 0, dtype=torch.long)
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise ValueError(f"{where}: edge_index names node {int(ei.max())}; expected node ids "
                         f"0..{n - 1} (num_nodes={n})")
    if ei.numel() and not is_undirected(ei, num_nodes=n):
        raise ValueError(f"{where}: edge_index is directed (an edge without its reverse); "
                         "expected an undirected graph (apply torch_geometric.transforms."
                         "ToUndirected() to the dataset)")
    if ei.numel():
        unique = torch.unique(ei, dim=1).shape[1]
        if unique != ei.shape[1]:
            raise ValueError(f"{where}: edge_index repeats {ei.shape[1] - unique} edges; expected "
                             "each edge once per direction (torch_geometric.utils.coalesce)")
    attrs = ["x"] if getattr(data, "x", None) is not None else None
    return to_networkx(data, node_attrs=attrs, to_undirected=True, remove_self_loops=False)


def attribute_features(g: nx.Graph, key: str, where: str) -> Tensor:
    """Node features from node attribute ``key``: a number or a vector of numbers per node.

    Raises:
        ValueError: a node without the attribute or with a non-numeric / ragged value.
    """
    rows = []
    for node in g.nodes():
        if key not in g.nodes[node]:
            raise ValueError(f"{where}: node {node!r} has no attribute {key!r}; expected every "
                             f"node to carry it (node_features={key!r})")
        value = g.nodes[node][key]
        try:
            row = np.atleast_1d(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: node {node!r} field {key!r} = {value!r}; expected a "
                             "number or a vector of numbers") from None
        if row.ndim != 1 or (rows and row.shape != rows[0].shape):
            raise ValueError(f"{where}: node {node!r} field {key!r} has shape {row.shape}; "
                             f"expected {rows[0].shape if rows else 'a vector'} like the others")
        rows.append(row)
    return torch.from_numpy(np.stack(rows))


def _sources(graphs: Any) -> list[tuple[str, Any]]:
    """``(where, item)`` pairs of an in-memory collection (networkx graphs or PyG ``Data``)."""
    if isinstance(graphs, nx.Graph | Data | str | Path):
        raise ValueError(f"graphs: expected a sequence of graphs or a PyG dataset, got one "
                         f"{type(graphs).__name__} (pass a file as path=...)")
    try:
        items = list(graphs)
    except TypeError:
        raise ValueError(f"graphs: expected a sequence of networkx graphs or a PyG dataset, got "
                         f"{type(graphs).__name__}") from None
    return [(f"graphs[{k}]", item) for k, item in enumerate(items)]


def seeded_split(items: list, test_split: float, shuffle: bool, seed: int) -> tuple[list, list]:
    """Train and test lists: the first ``test_split`` fraction is the test set.

    As :meth:`GraphDataModule.split` (GDSS's convention), after a ``seed``-ed permutation when
    ``shuffle``.
    """
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(items))
        items = [items[i] for i in order]
    n_test = int(test_split * len(items))
    return items[n_test:], items[:n_test]


def _report(kind: str, counts: dict[str, list[str]]) -> str:
    """``"3 reason (a, b, c); 1 other (d)"``: counts by reason with the first items named."""
    parts = []
    for reason, where in counts.items():
        first = ", ".join(where[:REPORT_ITEMS]) + (", ..." if len(where) > REPORT_ITEMS else "")
        parts.append(f"{len(where)} {reason} ({kind + ' ' if kind else ''}{first})")
    return "; ".join(parts)


class _ChecksModel:
    """Mixin: refuse a fit whose model does not match the data (before any training step)."""

    def model_args(self) -> dict[str, Any]:
        """The GraphDiffusion arguments this data needs."""
        raise NotImplementedError

    def check_model(self) -> None:
        """Compare the attached trainer's model with :meth:`model_args`.

        Raises:
            ValueError: the model's max_nodes is too small, its max_feat differs, or (molecules)
                its atom types differ; the message lists the ``--model.init_args`` to pass.
        """
        trainer = getattr(self, "trainer", None)
        model = getattr(trainer, "lightning_module", None) if trainer is not None else None
        if model is None or not hasattr(model, "max_nodes"):
            return
        need = self.model_args()
        wrong = []
        if int(model.max_nodes) < need["max_nodes"]:
            wrong.append(f"max_nodes={model.max_nodes} < {need['max_nodes']} (largest graph)")
        if int(model.max_feat) != need["max_feat"]:
            wrong.append(f"max_feat={model.max_feat} != {need['max_feat']} (node features)")
        if "molecule" in need and tuple(getattr(model, "atom_types", None) or ()) != \
                tuple(self.atom_types):
            wrong.append(f"atom types {list(getattr(model, 'atom_types', None) or [])} != "
                         f"{list(self.atom_types)}")
        if "molecule" not in need and getattr(model, "atom_types", None) is not None:
            wrong.append(f"the model generates molecules (molecule={model.molecule})")
            need = {**need, "molecule": "null"}
        if wrong:
            flags = " ".join(f"--model.init_args.{k} {v}" for k, v in need.items())
            raise ValueError(f"{type(self).__name__}: the model does not fit the data: "
                             f"{'; '.join(wrong)}; pass {flags}")


# --- UserGraphs -----------------------------------------------------------------------------------


class UserGraphs(_ChecksModel, GraphDataModule):
    """Your own generic graphs: a list of networkx graphs, a PyG dataset or graph files.

    Sources (exactly one of ``path`` and ``graphs``):

    * ``path`` a file or a directory of files (read in sorted name order):
      ``.g6``/``.graph6`` graph6 and ``.s6``/``.sparse6`` sparse6, one graph per line (optional
      ``>>graph6<<`` header); ``.edges``/``.edgelist``/``.el``/``.txt``, one graph per file, a
      line ``u v`` per edge or ``u`` for a node (so isolated nodes survive), ``#`` comments;
      ``.json`` edge lists and GDSS ``.pkl`` lists as :class:`~domaindiff_graphs.data.GraphFile`
      reads them (allow-list unpickler: a pickle cannot run code).
    * ``graphs`` (Python only): a sequence of undirected ``networkx.Graph`` or a PyG dataset /
      ``InMemoryDataset`` / list of ``Data`` (undirected ``edge_index``; ``x`` becomes the node
      attribute ``"x"``).

    Every graph is checked by :func:`graphs.check_graph` (undirected, simple, no self-loops,
    1..max_nodes nodes, finite attributes); an error names the file and line or the graph index.

    Args:
        path: graph file or directory.
        graphs: in-memory graphs (instead of ``path``).
        node_features: ``"degree"`` (GDSS: one-hot degree, degrees >= max_feat in the last class)
            or the name of a node attribute holding a number or a vector per node (``"x"`` for PyG
            data); max_feat is then the vector length.
        max_nodes: padding size; None: the largest graph's node count (at least 2).
        max_feat: one-hot degree classes (``node_features="degree"``); for an attribute, None or
            its vector length.
        drop_isolated: remove isolated nodes (a graph left empty is dropped); the counts are
            reported in a warning. Default: node counts and isolated nodes kept as given.
        test_split: fraction of the graphs in the test set.
        shuffle: permute the graphs with ``seed`` before the split; False keeps the given order
            (GDSS's convention: the first ``test_split`` of the list is the test set).
        root: unused cache directory (kept for the common DataModule signature).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of the split and of the training order.
    """

    name = "user_graphs"

    def __init__(self, path: str | None = None, graphs: Any = None,
                 node_features: str = "degree", max_nodes: int | None = None,
                 max_feat: int | None = None, drop_isolated: bool = False,
                 test_split: float = 0.2, shuffle: bool = True, root: str | None = None,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0) -> None:
        if (path is None) == (graphs is None):
            raise ValueError("UserGraphs: pass exactly one of path= (a graph file or directory) "
                             "and graphs= (networkx graphs or a PyG dataset)")
        if max_nodes is not None and max_nodes < 2:
            raise ValueError(f"max_nodes={max_nodes}: expected an integer >= 2 or null (derived "
                             "from the data)")
        if max_feat is not None and max_feat < 1:
            raise ValueError(f"max_feat={max_feat}: expected an integer >= 1 or null")
        super().__init__(max_nodes or 2, max_feat or 10, test_split, root, batch_size,
                         num_workers, seed)
        self.path = Path(path) if path is not None else None
        self.graphs = graphs
        self.node_features = node_features
        self.max_nodes_arg, self.max_feat_arg = max_nodes, max_feat
        self.drop_isolated, self.shuffle = drop_isolated, shuffle
        self.keep_isolated = not drop_isolated
        self.features: dict[int, Tensor] = {}

    # loading
    def _raw(self) -> list[tuple[str, nx.Graph]]:
        if self.path is not None:
            pairs = read_graph_files(self.path)
        else:
            pairs = [(where, pyg_to_graph(item, where) if isinstance(item, Data) else item)
                     for where, item in _sources(self.graphs)]
        if not pairs:
            raise ValueError(f"{self.path or 'graphs'}: no graphs")
        return [(where, G.check_graph(g, where, self.max_nodes_arg)) for where, g in pairs]

    def _drop_isolated(self, pairs: list[tuple[str, nx.Graph]]) -> list[tuple[str, nx.Graph]]:
        kept, nodes, touched, emptied = [], 0, 0, []
        for where, g in pairs:
            iso = list(nx.isolates(g))
            if iso:
                g = g.copy()
                g.remove_nodes_from(iso)
                nodes, touched = nodes + len(iso), touched + 1
            if g.number_of_nodes() == 0:
                emptied.append(where)
                continue
            kept.append((where, g))
        if nodes:
            msg = (f"UserGraphs ({self.path or 'graphs'}): drop_isolated=True removed {nodes} "
                   f"isolated nodes from {touched} of {len(pairs)} graphs")
            if emptied:
                msg += f"; dropped {_report('', {'graphs left without nodes': emptied})}"
            warnings.warn(msg, stacklevel=3)
        return kept

    def _features(self, pairs: list[tuple[str, nx.Graph]]) -> None:
        if self.node_features == "degree":
            return
        feats = [attribute_features(g, self.node_features, where) for where, g in pairs]
        width = feats[0].shape[1]
        for (where, _), f in zip(pairs, feats):
            if f.shape[1] != width:
                raise ValueError(f"{where}: node attribute {self.node_features!r} has "
                                 f"{f.shape[1]} values; expected {width} as in the first graph")
        if self.max_feat_arg is not None and self.max_feat_arg != width:
            raise ValueError(f"max_feat={self.max_feat_arg} but node attribute "
                             f"{self.node_features!r} has {width} values; expected them equal "
                             "(or max_feat: null)")
        self.max_feat = width
        self.features = {id(g): f for (_, g), f in zip(pairs, feats)}

    def load_items(self) -> tuple[list, list]:
        pairs = self._raw()
        if self.drop_isolated:
            pairs = self._drop_isolated(pairs)
            if not pairs:
                raise ValueError(f"{self.path or 'graphs'}: every graph has only isolated nodes; "
                                 "nothing is left with drop_isolated=True")
        pairs = [(w, nx.convert_node_labels_to_integers(g)) for w, g in pairs]
        self._features(pairs)
        largest = max(g.number_of_nodes() for _, g in pairs)
        self.max_nodes = self.max_nodes_arg or max(largest, 2)
        train, test = seeded_split([g for _, g in pairs], self.test_split, self.shuffle,
                                   self.seed)
        if not test:
            raise ValueError(f"{self.path or 'graphs'}: {len(pairs)} graphs and test_split="
                             f"{self.test_split} leave no test graph; expected at least "
                             f"{int(np.ceil(1 / self.test_split))} graphs or a larger test_split")
        return train, test

    def to_data(self, item: nx.Graph) -> Data:
        edges = [(u, v) for u, v in item.edges()]
        ei = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).reshape(-1, 2).T
        x = self.features.get(id(item))
        if x is None:
            x = degree_features(item, self.max_feat)
        return Data(x=x, edge_index=ei.contiguous(), edge_attr=torch.ones(ei.shape[1]),
                    num_nodes=item.number_of_nodes())

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.check_model()

    def model_args(self) -> dict[str, Any]:
        GraphDataModule.setup(self)
        return {"max_nodes": self.max_nodes, "max_feat": self.max_feat}


# --- UserMolecules --------------------------------------------------------------------------------


def _reasons() -> dict[str, str]:
    return {"unparsable": "unparsable", "kekulize": "aromatic and not kekulizable",
            "sanitize": "rejected by RDKit (valence)", "bond": "with unsupported bonds",
            "atoms": "with atoms outside the vocabulary", "size": "with too many atoms",
            "fragments": "of several fragments", "empty": "without atoms",
            "dummy": "with dummy atoms (*)"}


def parse_molecule(mol: Any, text: str = "") -> tuple[Any, str, str]:
    """Sanitize and kekulize an unsanitized RDKit molecule.

    Returns:
        ``(mol, "", "")`` kekulized (bond orders 1/2/3 only, Hs implicit), or
        ``(None, reason, detail)`` with reason one of :func:`_reasons`'s keys.
    """
    from rdkit import Chem

    if mol is None:
        return None, "unparsable", f"RDKit cannot parse {text!r}"
    try:
        Chem.SanitizeMol(mol)
        mol = Chem.RemoveHs(mol)
    except Chem.KekulizeException as err:
        return None, "kekulize", f"{text!r}: {str(err).strip()}"
    except Exception as err:  # noqa: BLE001 - RDKit raises its own types
        return None, "sanitize", f"{text!r}: {str(err).strip()}"
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as err:  # noqa: BLE001
        return None, "kekulize", f"{text!r}: {str(err).strip()}"
    if mol.GetNumAtoms() == 0:
        return None, "empty", f"{text!r} has no atoms"
    if any(a.GetAtomicNum() == 0 for a in mol.GetAtoms()):
        return None, "dummy", f"{text!r} has a dummy atom '*'; expected elements only"
    from domaindiff_graphs.mol import unsupported_bond

    bond = unsupported_bond(mol)
    if bond is not None:
        return None, "bond", f"{text!r}: {bond}"
    frags = len(Chem.GetMolFrags(mol))
    if frags != 1:
        return None, "fragments", f"{text!r} has {frags} fragments; expected one molecule"
    return mol, "", ""


class UserMolecules(_ChecksModel, MoleculeDataModule):
    """Your own molecules from a SMILES CSV, a SMILES file or an SDF.

    Formats (by suffix):

    * ``.csv`` / ``.tsv``: a header row and a column of SMILES named by ``smiles_col``
      (other columns are ignored); items are named by file line (the header is line 1).
    * ``.smi`` / ``.smiles``: one SMILES per line, the first whitespace-separated field (the rest,
      e.g. a name, is ignored); a first line ``smiles`` / ``SMILES`` is a header.
    * ``.sdf`` / ``.mol``: MDL records (V2000/V3000) as RDKit's ``SDMolSupplier`` reads them,
      explicit hydrogens removed; items are named by 1-based record number.

    Every molecule is sanitized and kekulized (aromatic input becomes alternating single/double
    bonds, bond orders 1/2/3 as GDSS). A molecule is skipped when it does not parse, is aromatic
    but cannot be kekulized, fails RDKit's valence check, has a bond other than single / double /
    triple (dative, quadruple, SDF "any"), atoms outside ``atom_types``, more than ``max_nodes``
    heavy atoms, or several fragments (salts); the skips are counted by reason in one warning
    naming the file and the first lines / records (``strict=True`` refuses the first instead).
    As in GDSS, an atom is encoded by its element only: formal charges, explicit hydrogens and
    stereochemistry are not part of the model's input.

    Args:
        path: the CSV / SMILES / SDF file.
        smiles_col: the CSV column holding SMILES.
        atom_types: the atom vocabulary (element symbols, in feature order); None: every element
            of the parsed molecules, in atomic-number order.
        max_nodes: the most heavy atoms; None: the largest kept molecule's size (at least 2).
        test_split: fraction of the molecules in the test set.
        shuffle: permute with ``seed`` before the split (False: the first ``test_split`` of the
            file is the test set).
        strict: refuse the first bad molecule (ValueError naming file and line / record).
        max_train: optional cap on training molecules.
        root: unused cache directory.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of the split and of the training order.

    Train with ``GraphDiffusion(molecule=",".join(dm.atom_types), max_feat=len(dm.atom_types),
    max_nodes=dm.max_nodes)`` (:meth:`model_args`).
    """

    name = "user_molecules"

    def __init__(self, path: str, smiles_col: str = "smiles", atom_types: list[str] | None = None,
                 max_nodes: int | None = None, test_split: float = 0.1, shuffle: bool = True,
                 strict: bool = False, max_train: int | None = None, root: str | None = None,
                 batch_size: int = 1024, num_workers: int = 0, seed: int = 0) -> None:
        from domaindiff_graphs.mol import atom_types_for

        if max_nodes is not None and max_nodes < 2:
            raise ValueError(f"max_nodes={max_nodes}: expected an integer >= 2 or null")
        if atom_types is not None:
            atom_types = list(atom_types_for(",".join(atom_types)))
        GraphDataModule.__init__(self, max_nodes or 2, len(atom_types or ()) or 1, test_split,
                                 root, batch_size, num_workers, seed)
        self.path, self.smiles_col = Path(path), smiles_col
        self.atom_types_arg, self.max_nodes_arg = atom_types, max_nodes
        self.atom_types: tuple[str, ...] = tuple(atom_types or ())
        self.shuffle, self.strict, self.max_train = shuffle, strict, max_train
        self.source = "user"
        self.skipped: dict[str, list[str]] = {}

    # reading
    def records(self) -> Iterable[tuple[str, Any, str]]:
        """``(where, unsanitized mol or None, text)`` for every item of the file."""
        from rdkit import Chem

        path = self.path
        if not path.is_file():
            raise FileNotFoundError(f"path: {path}: no such molecule file")
        suffix = path.suffix.lower()
        if suffix in (".sdf", ".mol"):
            try:
                supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
            except OSError as err:
                raise ValueError(f"{path}: not a readable SDF ({err})") from None
            for k, mol in enumerate(supplier):
                yield f"record {k + 1}", mol, f"{path.name} record {k + 1}"
            return
        if suffix in (".csv", ".tsv"):
            yield from self._csv_records(path, "\t" if suffix == ".tsv" else ",")
            return
        if suffix in (".smi", ".smiles"):
            yield from self._smi_records(path)
            return
        raise ValueError(f"path: {path} has the suffix {suffix!r}; expected .csv/.tsv (SMILES "
                         "column), .smi (one SMILES per line) or .sdf")

    def _csv_records(self, path: Path, delimiter: str) -> Iterable[tuple[str, Any, str]]:
        from rdkit import Chem

        try:
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh, delimiter=delimiter)
                if reader.fieldnames is None:
                    raise ValueError(f"{path}: empty file; expected a header row with a "
                                     f"{self.smiles_col!r} column")
                if self.smiles_col not in reader.fieldnames:
                    raise ValueError(f"{path}: no column {self.smiles_col!r} (columns: "
                                     f"{reader.fieldnames}); pass smiles_col=<the SMILES column>")
                for row in reader:
                    smiles = (row.get(self.smiles_col) or "").strip()
                    where = f"line {reader.line_num}"
                    mol = Chem.MolFromSmiles(smiles, sanitize=False) if smiles else None
                    yield where, mol, smiles
        except (UnicodeDecodeError, csv.Error) as err:
            raise ValueError(f"{path}: not a readable CSV ({err})") from None

    def _smi_records(self, path: Path) -> Iterable[tuple[str, Any, str]]:
        from rdkit import Chem

        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a text file ({err})") from None
        for lineno, line in enumerate(lines, 1):
            fields = line.split()
            if not fields or (lineno == 1 and fields[0].lower() == "smiles"):
                continue
            yield f"line {lineno}", Chem.MolFromSmiles(fields[0], sanitize=False), fields[0]

    def _screen(self) -> list[tuple[str, Any]]:
        """Parse and check every item; skipped ones are counted (or refused if strict)."""
        kept, skipped, total = [], defaultdict(list), 0
        allowed = set(self.atom_types_arg or ())
        for where, mol, text in self.records():
            total += 1
            mol, reason, detail = parse_molecule(mol, text)
            if mol is not None and allowed:
                unknown = sorted({a.GetSymbol() for a in mol.GetAtoms()} - allowed)
                if unknown:
                    mol, reason, detail = None, "atoms", (
                        f"{text!r} has atom {unknown[0]}; expected only {sorted(allowed)}")
            if mol is not None and self.max_nodes_arg and mol.GetNumAtoms() > self.max_nodes_arg:
                mol, reason, detail = None, "size", (
                    f"{text!r} has {mol.GetNumAtoms()} heavy atoms; expected at most max_nodes="
                    f"{self.max_nodes_arg}")
            if mol is None:
                if self.strict:
                    raise ValueError(f"{self.path}: {where}: {detail} (strict=True)")
                skipped[reason].append(where.split(" ", 1)[1])
                continue
            kept.append((where, mol))
        if total == 0:
            raise ValueError(f"{self.path}: no molecules")
        self.skipped = dict(skipped)
        if skipped:
            kind = "records" if self.path.suffix.lower() in (".sdf", ".mol") else "lines"
            names = _reasons()
            counts = {names[r]: w for r, w in skipped.items()}
            warnings.warn(f"{self.path}: skipped {total - len(kept)} of {total} molecules, kept "
                          f"{len(kept)}: {_report(kind, counts)}", stacklevel=3)
        if not kept:
            raise ValueError(f"{self.path}: none of the {total} molecules can be used "
                             f"({_report('', {_reasons()[r]: w for r, w in skipped.items()})})")
        return kept

    def load_items(self) -> tuple[list, list]:
        from rdkit import Chem

        kept = self._screen()
        mols = [m for _, m in kept]
        if not self.atom_types_arg:
            found = {a.GetSymbol() for m in mols for a in m.GetAtoms()}
            self.atom_types = tuple(sorted(found, key=Chem.GetPeriodicTable().GetAtomicNumber))
        self.max_feat = len(self.atom_types)
        self.max_nodes = self.max_nodes_arg or max(2, max(m.GetNumAtoms() for m in mols))
        train, test = seeded_split(mols, self.test_split, self.shuffle, self.seed)
        if not test:
            raise ValueError(f"{self.path}: {len(mols)} usable molecules and test_split="
                             f"{self.test_split} leave no test molecule; expected more "
                             "molecules or a larger test_split")
        if self.max_train is not None:
            train = train[: self.max_train]
        return train, test

    def as_graph(self, item: Any) -> nx.Graph:
        return mol_to_nx(item)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.check_model()

    def model_args(self) -> dict[str, Any]:
        GraphDataModule.setup(self)
        return {"molecule": ",".join(self.atom_types), "max_feat": len(self.atom_types),
                "max_nodes": self.max_nodes}


__all__ = ["UserGraphs", "UserMolecules", "read_edge_list", "read_graph6_file", "read_graph_files",
           "seeded_split"]
