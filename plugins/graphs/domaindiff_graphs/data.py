"""DataModules of the graph plugin: PyG batches of generic graphs and molecules.

Every dataset yields :class:`torch_geometric.data.Data` objects (``x`` node features,
``edge_index``, ``edge_attr`` = adjacency value: 1 for generic graphs, bond order for molecules)
batched by PyG's DataLoader. :func:`to_dense_state` turns a batch into the dense
``{"x": (B, N, F), "adj": (B, N, N), "mask": (B, N)}`` state the networks use and
:func:`dense_to_pyg` goes back.

Datasets (GDSS settings): community-small (generated), ego-small (Citeseer planetoid files or an
offline synthetic source), grid (generated), ENZYMES (TU format), QM9 and ZINC250k (the
reference CSV + test-index JSON, or the offline NCI molecules RDKit ships filtered to each
dataset's rules), or any graph list file (GDSS's pickled ``data/<name>.pkl``, read without running
code, or a JSON edge list). Generic graphs use one-hot degree features; the first 20% of the list is
test.

Nothing bad passes silently: every graph is checked (1..max_nodes nodes, undirected, no
self-loops, edges between existing nodes, finite features) and errors name the file, the graph or
line and what was expected; molecule rows that do not parse or break the dataset's rules are
counted in a warning (or refused with ``strict=True``). Cached files (generated graphs, the
unpacked ENZYMES zip) are built in a temporary directory and moved in as a unit with a manifest of
sizes and checksums that is verified on every use (:func:`domaindiff.data.build_cache_entry`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import to_dense_adj, to_dense_batch

from domaindiff.data import (
    DatasetUnavailableError,
    DomainDataModule,
    atomic_write_text,
    build_cache_entry,
)
from domaindiff_graphs import graphs as G


def _M():  # noqa: N802 - RDKit is imported only when molecules are used
    from domaindiff_graphs import mol

    return mol

# --- dense <-> PyG ---------------------------------------------------------------------------


def degree_features(g: nx.Graph, max_feat: int) -> Tensor:
    """One-hot degree features (GDSS ``init: deg``); degrees >= max_feat go to the last class."""
    deg = torch.tensor([d for _, d in sorted(g.degree())], dtype=torch.long)
    return torch.nn.functional.one_hot(deg.clamp(max=max_feat - 1), max_feat).float()


def graph_to_data(g: nx.Graph, max_feat: int) -> Data:
    """A networkx graph as a PyG ``Data`` with one-hot degree features."""
    g = nx.convert_node_labels_to_integers(g)
    edges = [(u, v) for u, v in g.edges() if u != v]
    ei = torch.tensor(edges + [(v, u) for u, v in edges], dtype=torch.long).reshape(-1, 2).T
    return Data(x=degree_features(g, max_feat), edge_index=ei.contiguous(),
                edge_attr=torch.ones(ei.shape[1]), num_nodes=g.number_of_nodes())


def mol_to_data(mol, atom_types: Sequence[str], max_atoms: int) -> Data:
    """A kekulized molecule as a PyG ``Data`` (one-hot atoms, bond orders in ``edge_attr``)."""
    x, adj = _M().mol_to_dense(mol, atom_types, max_atoms)
    n = mol.GetNumAtoms()
    ei = adj[:n, :n].nonzero().T
    return Data(x=x[:n], edge_index=ei.contiguous(), edge_attr=adj[ei[0], ei[1]], num_nodes=n)


def to_dense_state(batch: Batch, max_nodes: int) -> dict[str, Tensor]:
    """A PyG batch as the dense state ``{"x", "adj", "mask"}`` padded to ``max_nodes``."""
    x, mask = to_dense_batch(batch.x, batch.batch, max_num_nodes=max_nodes,
                             batch_size=batch.num_graphs)
    adj = to_dense_adj(batch.edge_index, batch.batch, edge_attr=batch.edge_attr,
                       max_num_nodes=max_nodes, batch_size=batch.num_graphs)
    return {"x": x.float(), "adj": adj.float(), "mask": mask.float()}


def dense_to_pyg(state: dict[str, Tensor], threshold: float = 0.5) -> Batch:
    """Sampled dense graphs back to a PyG batch: nodes from the mask, edges where adj >= threshold.

    ``edge_attr`` holds the (continuous) adjacency value of each kept edge.
    """
    out = []
    for x, adj, m in zip(state["x"], state["adj"], state["mask"]):
        keep = m > 0.5
        a = adj[keep][:, keep]
        a = 0.5 * (a + a.T) * (1 - torch.eye(a.shape[0], device=a.device))
        ei = (a >= threshold).nonzero().T
        out.append(Data(x=x[keep], edge_index=ei, edge_attr=a[ei[0], ei[1]],
                        num_nodes=int(keep.sum())))
    return Batch.from_data_list(out)


def dense_to_graphs(adj: Tensor, mask: Tensor | None = None, threshold: float = 0.5,
                    drop_isolated: bool = True) -> list[nx.Graph]:
    """GDSS decoding of generic graphs: ``adj >= 0.5`` is an edge, no self loops, no isolated nodes.

    An empty result keeps one node (as the reference does), so every graph has a node.
    """
    out = []
    for i, a in enumerate(adj.detach().cpu()):
        if mask is not None:
            keep = mask[i].detach().cpu() > 0.5
            a = a[keep][:, keep]
        a = ((0.5 * (a + a.T)) >= threshold).numpy().astype(np.int64)
        np.fill_diagonal(a, 0)
        g = nx.from_numpy_array(a)
        if drop_isolated:
            g.remove_nodes_from(list(nx.isolates(g)))
        if g.number_of_nodes() == 0:
            g.add_node(0)
        out.append(nx.convert_node_labels_to_integers(g))
    return out


# --- DataModules -------------------------------------------------------------------------------


class GraphDataModule(DomainDataModule):
    """Base of the graph DataModules: a train/test list of PyG ``Data`` and dense settings.

    Subclasses implement :meth:`load_graphs` (returning train and test lists of networkx graphs
    or RDKit molecules). The first ``test_split`` of the list is the test set (GDSS).

    Args:
        max_nodes: padding size N of the dense state.
        max_feat: node feature size F.
        test_split: fraction of the list used as the test set.
        root: data directory (default ``$DOMAINDIFF_DATA/<name>``).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of generation / shuffling.
    """

    name = "graphs"
    is_molecule = False

    def __init__(self, max_nodes: int = 20, max_feat: int = 10, test_split: float = 0.2,
                 root: str | None = None, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if not 0 < test_split < 1:
            raise ValueError(f"test_split must be in (0, 1), got {test_split}")
        self.max_nodes, self.max_feat, self.test_split = max_nodes, max_feat, test_split
        self.train_items: list | None = None
        self.test_items: list | None = None
        self.train_data: list[Data] = []
        self.test_data: list[Data] = []

    # subclasses
    def load_items(self) -> tuple[list, list]:
        """Train and test lists of networkx graphs (or molecules)."""
        raise NotImplementedError

    def split(self, items: list) -> tuple[list, list]:
        """GDSS's split (its ``utils/data_loader.py``), no shuffle.

        The first ``int(test_split * len(items))`` items are the test set, the rest the train set.
        """
        n_test = int(self.test_split * len(items))
        return items[n_test:], items[:n_test]

    def to_data(self, item) -> Data:
        """One item as a PyG ``Data``."""
        return graph_to_data(item, self.max_feat)

    def setup(self, stage: str | None = None) -> None:
        if self.train_items is not None:
            return
        train, test = self.load_items()
        for what, items in (("train", train), ("test", test)):
            if not items:
                raise ValueError(f"{type(self).__name__}: the {what} split is empty")
            for k, item in enumerate(items):
                self.check_item(item, f"{type(self).__name__}: {what} graph {k}")
        train_data = [self._checked_data(i, f"train graph {k}") for k, i in enumerate(train)]
        test_data = [self._checked_data(i, f"test graph {k}") for k, i in enumerate(test)]
        self.train_items, self.test_items = train, test
        self.train_data, self.test_data = train_data, test_data

    def check_item(self, item, where: str) -> None:
        """Refuse an item the model cannot take (see :func:`graphs.check_graph`)."""
        G.check_graph(item, where, self.max_nodes)

    def _checked_data(self, item, where: str) -> Data:
        data = self.to_data(item)
        if not torch.isfinite(data.x).all():
            raise ValueError(f"{type(self).__name__}: {where}: node features contain NaN or inf; "
                             "expected finite values")
        return data

    def node_counts(self) -> list[int]:
        """Node counts of the training graphs (sampling draws sizes from them)."""
        self.setup()
        return [int(d.num_nodes) for d in self.train_data]

    def train_graphs(self) -> list[nx.Graph]:
        """Training graphs as networkx graphs (molecules: atoms/bonds labelled)."""
        self.setup()
        return [self.as_graph(i) for i in self.train_items]

    def test_graphs(self) -> list[nx.Graph]:
        """Test graphs as networkx graphs."""
        self.setup()
        return [self.as_graph(i) for i in self.test_items]

    def as_graph(self, item) -> nx.Graph:
        """An item as a networkx graph."""
        return item

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self.train_loader(self.train_data, loader_cls=DataLoader)  # resumable order

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.test_data, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    test_dataloader = val_dataloader


class CommunitySmall(GraphDataModule):
    """community-small as GDSS draws it: 100 two-community graphs of 12-20 nodes (cached as JSON).

    Generated by :func:`graphs.community_small_graphs` (GDSS's ``n_community`` with a legacy
    ``RandomState(seed)``): each community is ``gnp_random_graph(size, 0.7, seed=i)``, so it is
    exactly GDSS's for that size; sizes and bridges follow GDSS's draws (its own file was drawn
    unseeded: to train and test on exactly that list, read its ``community_small.pkl`` with
    :class:`GraphFile`). GDSS's split: the first 20% of the list is the test set.

    Args:
        num_graphs: graphs generated.
        **kwargs: see :class:`GraphDataModule`.
    """

    name = "community_small"

    def __init__(self, num_graphs: int = 100, max_nodes: int = 20, max_feat: int = 10,
                 test_split: float = 0.2, root: str | None = None, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)
        self.num_graphs = num_graphs

    def load_items(self):
        """The generated graphs, cached as a verified entry ``community_small_gdss_<n>_seed<s>/``.

        (``gdss`` names the generator: entries of the earlier, different generator are not used.)
        """
        def build(tmp: Path) -> None:
            write_graph_list(G.community_small_graphs(self.num_graphs, self.seed),
                             tmp / "graphs.json")

        entry = build_cache_entry(
            self.cache_dir / f"community_small_gdss_{self.num_graphs}_seed{self.seed}", build,
            description=f"community-small (GDSS's n_community): {self.num_graphs} graphs, "
                        f"seed {self.seed}")
        return self.split(read_graph_list(entry / "graphs.json"))


class Grid(GraphDataModule):
    """grid as GDSS samples it: 100 ``grid_2d_graph(m, n)``, m then n drawn from 10..19.

    Pairs are drawn with replacement from a legacy ``RandomState(seed)`` as GDSS's generator does
    (:func:`graphs.grid_graphs`); the first 20% of the list is the test set (GDSS's split).

    Args:
        num_graphs: graphs drawn.
        **kwargs: see :class:`GraphDataModule`.
    """

    name = "grid"

    def __init__(self, num_graphs: int = 100, max_nodes: int = 361, max_feat: int = 5,
                 test_split: float = 0.2, root: str | None = None, batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)
        self.num_graphs = num_graphs

    def load_items(self):
        return self.split(G.grid_graphs(self.num_graphs, self.seed))


class EgoSmall(GraphDataModule):
    """ego-small as GDSS cuts it: the first 200 one-hop ego nets of 4-18 nodes of Citeseer.

    The giant component of Citeseer's ``ind.citeseer.graph``, renumbered in file order, gives
    one ego net per node in that order; those of 4..``max_nodes`` nodes are kept and the first
    ``num_graphs`` taken (:func:`graphs.ego_graphs`: the same 200 graphs as GDSS's
    ``ego_small.pkl``, edge for edge). GDSS's split: the first 20% is the test set. The
    "synthetic" source is an explicit offline stand-in, not GDSS's data.

    Args:
        source: "citeseer" (reads ``ind.citeseer.graph`` in the cache dir, downloading it from the
            Planetoid repository when online) or "synthetic" (a power-law cluster graph).
        num_graphs: ego nets kept.
        **kwargs: see :class:`GraphDataModule`.
    """

    name = "ego_small"
    URL = "https://github.com/kimiyoung/planetoid/raw/master/data/ind.citeseer.graph"
    #: Planetoid publishes no checksum; these are of the file in the authors' repository
    #: (kimiyoung/planetoid, data/ind.citeseer.graph, git blob a01dca66, commit af6abf46). The
    #: file is also read with an allow-list unpickler and checked to be an adjacency dict.
    SHA256 = "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7"
    SIZE = 61987

    def __init__(self, source: str = "citeseer", num_graphs: int = 200, max_nodes: int = 18,
                 max_feat: int = 17, test_split: float = 0.2, root: str | None = None,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)
        if source not in ("citeseer", "synthetic"):
            raise ValueError(f"source: unknown {source!r}; use 'citeseer' or 'synthetic'")
        self.source, self.num_graphs = source, num_graphs

    def load_items(self):
        if self.source == "citeseer":
            path = self.download(self.URL, "ind.citeseer.graph", sha256=self.SHA256,
                                 size=self.SIZE,
                                 manual=f"copy the Planetoid file ind.citeseer.graph into "
                                        f"{self.cache_dir}")
            big = G.read_planetoid_graph(path)
        else:
            big = G.synthetic_ego_source(seed=self.seed)
        graphs = G.ego_graphs(big, self.num_graphs, 4, self.max_nodes, 1)
        if len(graphs) < self.num_graphs:
            raise ValueError(f"num_graphs: {self.source} has {len(graphs)} ego nets of 4.."
                             f"{self.max_nodes} nodes; expected at least {self.num_graphs}")
        return self.split(graphs)


class Enzymes(GraphDataModule):
    """ENZYMES from the TU format (587 of its 600 graphs have 10-125 nodes: GraphRNN/GDSS's set).

    The graphs keep the TU order, as GDSS's ``ENZYMES.pkl`` (the same 587 graphs, edge for edge),
    and the first 20% (117) is the test set (GDSS's split, no shuffle).

    By default the TU zip ``ENZYMES.zip`` (downloaded when online, or copied by hand into the cache
    dir) is unpacked into the cache entry ``ENZYMES/``, built in a temporary directory, checked
    with :func:`graphs.read_tu_graphs` and moved in as a unit with a manifest of sizes and sha256
    that is verified on every use: a killed extraction leaves no entry, a truncated or altered
    file is found and the entry rebuilt (with a warning). TU Dortmund publishes no checksum for
    ENZYMES.zip, so the download itself is not checksummed; the data are verified by the manifest
    after extraction and by the consistency checks of the TU files (line counts per node and per
    graph, node ids, symmetric edges).

    Args:
        folder: a directory holding the unpacked TU text files (``ENZYMES_A.txt``...) to read
            directly instead of the cache entry; it is only read, never modified.
        **kwargs: see :class:`GraphDataModule`.
    """

    name = "enzymes"
    URL = "https://www.chrsmrrs.com/graphkerneldatasets/ENZYMES.zip"
    # No SHA256: TU Dortmund publishes none for its zips (see the class docstring).

    def __init__(self, max_nodes: int = 125, max_feat: int = 10, test_split: float = 0.2,
                 root: str | None = None, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, folder: str | None = None) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)
        self.folder = Path(folder) if folder else None

    def load_items(self):
        if self.folder is not None:
            graphs = G.read_tu_graphs(self.folder, "ENZYMES")
        else:
            graphs = G.read_tu_graphs(self.tu_entry(), "ENZYMES")
        return self.split(graphs)

    def tu_entry(self) -> Path:
        """The verified cache entry of the unpacked TU files (built from the zip if needed)."""
        def build(tmp: Path) -> None:
            zpath = self.download(self.URL, "ENZYMES.zip",
                                  manual=f"copy the TU file ENZYMES.zip into {self.cache_dir}, or "
                                         "pass folder=<directory of the unpacked TU files>")
            extract_tu_zip(zpath, "ENZYMES", tmp)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    G.read_tu_graphs(tmp, "ENZYMES")  # never install inconsistent files
            except (ValueError, FileNotFoundError) as err:
                raise ValueError(str(err).replace(str(tmp), f"{zpath}!ENZYMES")) from None

        return build_cache_entry(self.cache_dir / "ENZYMES", build,
                                 description=f"ENZYMES TU text files unpacked from {self.URL}")


class GraphFile(GraphDataModule):
    """Generic graphs from a file: GDSS's pickled list (``data/<name>.pkl``) or a JSON edge list.

    A ``.pkl`` is read by :func:`graphs.read_graph_pickle`, an allow-list unpickler that refuses
    anything but networkx graphs, builtin containers and numpy data (a pickle naming any other
    class or function could run code); a ``.json`` by :func:`read_graph_list`. Every graph is
    checked (undirected, simple, 1..max_nodes nodes, no self-loops, finite attributes). GDSS's
    split: the first ``test_split`` of the list, in file order, is the test set.

    Args:
        path: the graph list file (``.pkl``/``.pickle`` or ``.json``).
        **kwargs: see :class:`GraphDataModule`.
    """

    name = "graph_file"

    def __init__(self, path: str, max_nodes: int = 20, max_feat: int = 10,
                 test_split: float = 0.2, root: str | None = None, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)
        self.path = Path(path)

    def load_items(self):
        if not self.path.is_file():
            raise FileNotFoundError(f"path: {self.path}: no such graph list file")
        suffix = self.path.suffix.lower()
        if suffix in (".pkl", ".pickle"):
            graphs = G.read_graph_pickle(self.path, self.max_nodes)
        elif suffix == ".json":
            graphs = read_graph_list(self.path, self.max_nodes)
        else:
            raise ValueError(f"path: {self.path} has the suffix {suffix!r}; expected .pkl (GDSS's "
                             "pickled graph list) or .json (an edge list)")
        return self.split([nx.convert_node_labels_to_integers(g) for g in graphs])


def extract_tu_zip(zpath: str | Path, name: str, dest: str | Path) -> None:
    """Unpack the ``<name>_*.txt`` files of a TU zip flat into ``dest``.

    Only file names are kept (no directories from the archive, so no path escapes ``dest``);
    zipfile checks each member's CRC while reading.

    Raises:
        ValueError: not a zip, a corrupt member, or no ``<name>_*.txt`` in it (the zip is named).
    """
    zpath, dest = Path(zpath), Path(dest)
    try:
        with zipfile.ZipFile(zpath) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()
                       and PurePosixPath(m.filename).name.startswith(f"{name}_")
                       and m.filename.endswith(".txt")]
            if not members:
                raise ValueError(f"{zpath}: no {name}_*.txt files in the zip; expected the TU "
                                 f"{name} dataset")
            for m in members:
                with zf.open(m) as src, open(dest / PurePosixPath(m.filename).name, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise ValueError(f"{zpath}: not a readable zip ({err}); delete it and retry") from err


class MoleculeDataModule(GraphDataModule):
    """Base of QM9 / ZINC250k: kekulized RDKit molecules.

    Args:
        source: "csv" (the reference ``<name>.csv`` + ``valid_idx_<name>.json`` in the cache
            dir, downloaded when online), "qm9pack" (QM9 only, offline: the QM9 table shipped
            by the PyPI package ``qm9pack``, see :func:`read_qm9pack`) or "nci" (offline: the NCI
            molecules RDKit ships, filtered to this dataset's rules, fixed 10% test split; not
            the dataset's molecules).
        max_train: optional cap on training molecules (quick runs).
        strict: refuse (``ValueError`` naming the file and row) any CSV row whose SMILES does not
            parse or breaks the dataset's rules; by default such rows are dropped and counted in a
            warning naming the file, the counts and the first rows.
        valid_idx: the test-index JSON (GDSS's ``valid_idx_<name>.json``) to read instead of
            the pinned copy in the cache dir; it is content-checked (integers, each once, within
            the table), not checksummed.
        **kwargs: see :class:`GraphDataModule`.

    The CSVs are GDSS's (``data/qm9.csv``, ``data/zinc250k.csv``); no checksum is published for
    them (and none is pinned): every row is parsed and checked, drops are reported. The test-index
    JSONs are pinned to the sha256 of GDSS's originals (``IDX_SHA256``).
    """

    is_molecule = True
    dataset = "qm9"
    smiles_col = "SMILES1"
    CSV_URL = ""
    IDX_URL = ""
    IDX_SHA256: str | None = None
    #: the first rows named in a report of dropped rows
    REPORT_ROWS = 5
    #: the sources this dataset can be read from
    SOURCES: tuple[str, ...] = ("csv", "nci")

    def __init__(self, source: str = "csv", max_nodes: int = 9, max_train: int | None = None,
                 root: str | None = None, batch_size: int = 1024, num_workers: int = 0,
                 seed: int = 0, strict: bool = False, valid_idx: str | None = None) -> None:
        self.atom_types = _M().atom_types_for(self.dataset)
        super().__init__(max_nodes, len(self.atom_types), 0.1, root, batch_size, num_workers,
                         seed)
        if source not in self.SOURCES:
            raise ValueError(f"source: unknown {source!r} for {self.name}; use one of "
                             f"{', '.join(map(repr, self.SOURCES))}")
        self.source, self.max_train, self.strict = source, max_train, strict
        self.valid_idx = Path(valid_idx) if valid_idx else None

    def to_data(self, item) -> Data:
        return mol_to_data(item, self.atom_types, self.max_nodes)

    def as_graph(self, item) -> nx.Graph:
        return mol_to_nx(item)

    def check_item(self, item, where: str) -> None:
        n = item.GetNumAtoms()
        if not 1 <= n <= self.max_nodes:
            raise ValueError(f"{where}: molecule has {n} atoms; expected 1..max_nodes="
                             f"{self.max_nodes}")

    def rules(self) -> str:
        """This dataset's rules, in words (for reports)."""
        return (f"{self.name}'s rules: one molecule of <= {self.max_nodes} heavy atoms of "
                f"{', '.join(self.atom_types)}")

    def molecules(self, rows: Sequence[tuple[int, str]], path: Path, what: str,
                  where: str = "line") -> list:
        """Parse ``(row, smiles)`` pairs of ``path``; drops are reported (or refused if strict).

        Rows are 0-based data rows, as in the test-index JSON; ``where`` says how a strict error
        places a row: "line" (a CSV: file line = row + 2) or "gdb" (GDB number = row + 1).
        """
        kept, dropped = [], defaultdict(list)
        for row, smiles in rows:
            mol, kind, detail = _M().screen(smiles, self.atom_types, self.max_nodes)
            if mol is not None:
                kept.append(mol)
                continue
            if self.strict:
                place = f"line {row + 2}" if where == "line" else f"GDB Index {row + 1}"
                raise ValueError(f"{path}: row {row} ({place}), column "
                                 f"{self.smiles_col!r}: {detail} (strict=True; expected a "
                                 f"parsable SMILES within {self.rules()})")
            dropped[kind].append(row)
        if dropped:
            warnings.warn(self._drop_report(path, what, len(rows), len(kept), dropped, where),
                          stacklevel=2)
        return kept

    def _drop_report(self, path: Path, what: str, total: int, kept: int,
                     dropped: dict[str, list[int]], where: str = "line") -> str:
        parts = []
        for kind, label in (("unparsable", "unparsable SMILES"),
                            ("rules", f"outside {self.rules()}")):
            rows = dropped.get(kind, [])
            if rows:
                first = ", ".join(map(str, rows[: self.REPORT_ROWS]))
                more = ", ..." if len(rows) > self.REPORT_ROWS else ""
                parts.append(f"{len(rows)} {label} (rows {first}{more})")
        return (f"{path}: dropped {total - kept} of {total} {what} rows, kept {kept}: "
                f"{'; '.join(parts)}. Rows are 0-based "
                f"{'data rows' if where == 'line' else 'positions in GDB order (GDB Index = row + 1)'}"
                "; pass strict=True to refuse them instead")

    def load_items(self):
        if self.source == "nci":
            train, test = nci_split(self.dataset, self.atom_types, self.max_nodes)
        elif self.source == "qm9pack":
            train, test = self.load_qm9pack()
        else:
            train, test = self.load_csv()
        if self.max_train is not None:
            train = train[: self.max_train]
        return train, test

    def load_csv(self):
        """Read the reference CSV and test-index JSON (see :func:`read_molecule_csv`)."""
        # no published checksum for GDSS's CSVs: every row is parsed and checked instead
        csv = self.download(self.CSV_URL, f"{self.dataset}.csv",
                            manual=f"copy {self.dataset}.csv (GDSS data/) into {self.cache_dir}")
        idx = self.index_file()
        train_rows, test_rows = read_molecule_rows(csv, idx, self.smiles_col)
        return (self.molecules(train_rows, csv, "train"),
                self.molecules(test_rows, csv, f"test ({idx.name})"))

    def index_file(self) -> Path:
        """The test-index JSON: ``valid_idx`` if given, else the pinned copy in the cache dir."""
        if self.valid_idx is not None:
            if not self.valid_idx.is_file():
                raise FileNotFoundError(f"valid_idx: {self.valid_idx}: no such file; expected "
                                        f"GDSS's valid_idx_{self.dataset}.json")
            return self.valid_idx
        return self.download(self.IDX_URL, f"valid_idx_{self.dataset}.json",
                             sha256=self.IDX_SHA256,
                             manual=f"copy GDSS's valid_idx_{self.dataset}.json (data/) into "
                                    f"{self.cache_dir}, or pass valid_idx=<path>")

    def load_qm9pack(self):
        """QM9 from the package ``qm9pack`` split by the test-index JSON (see :func:`qm9pack_rows`).

        Molecules of the index that ``qm9pack`` leaves out are reported as missing in a warning
        (with their count and the test-set size), never replaced.
        """
        folder = qm9pack_data_dir()
        idx = self.index_file()
        train_rows, test_rows, report = qm9pack_rows(folder, idx)
        if report:
            warnings.warn(report, stacklevel=2)
        return (self.molecules(train_rows, folder, "train", where="gdb"),
                self.molecules(test_rows, folder, f"test ({idx.name})", where="gdb"))

    def train_smiles(self) -> list[str]:
        """Canonical SMILES of the training molecules (novelty reference)."""
        from rdkit import Chem

        self.setup()
        # re-parsed: the items are kekulized, generated molecules are canonicalised aromatic
        return [Chem.CanonSmiles(Chem.MolToSmiles(m)) for m in self.train_items]

    def test_smiles(self) -> list[str]:
        """Canonical SMILES of the test molecules."""
        from rdkit import Chem

        self.setup()
        return [Chem.CanonSmiles(Chem.MolToSmiles(m)) for m in self.test_items]


class QM9(MoleculeDataModule):
    """QM9: <= 9 heavy atoms of C, N, O, F (13,082 test molecules by ``valid_idx_qm9.json``).

    The default source, "qm9pack", is offline: the GDB SMILES of the PyPI package ``qm9pack``
    (130,831 of the 133,885 molecules) split by GDSS's ``valid_idx_qm9.json`` (``valid_idx`` or
    the pinned copy in the cache dir): 12,914 test molecules, the 168 that ``qm9pack`` lacks
    reported as missing. Kekulized, bond orders 1/2/3, as GDSS. "csv" reads GDSS's ``qm9.csv``
    (all 13,082 test molecules).
    """

    name = "qm9"
    dataset = "qm9"
    smiles_col = "SMILES1"
    SOURCES = ("qm9pack", "csv", "nci")
    CSV_URL = "https://raw.githubusercontent.com/harryjo97/GDSS/master/data/qm9.csv"
    IDX_URL = "https://raw.githubusercontent.com/harryjo97/GDSS/master/data/valid_idx_qm9.json"
    #: sha256 of GDSS's data/valid_idx_qm9.json (git blob 7823322e)
    IDX_SHA256 = "889fd232a33d8a2c00f057c807b119e72abd5baa48f6fab93e8d8b7a79340f4d"

    def __init__(self, source: str = "qm9pack", max_nodes: int = 9,
                 max_train: int | None = None, root: str | None = None, batch_size: int = 1024,
                 num_workers: int = 0, seed: int = 0, strict: bool = False,
                 valid_idx: str | None = None) -> None:
        super().__init__(source, max_nodes, max_train, root, batch_size, num_workers, seed,
                         strict, valid_idx)

    def load_qm9pack(self):
        """See :meth:`MoleculeDataModule.load_qm9pack`; the column is qm9pack's ``SMILES``."""
        self.smiles_col = "SMILES"
        return super().load_qm9pack()


class ZINC250k(MoleculeDataModule):
    """ZINC250k: <= 38 heavy atoms of 9 types (24,887 test molecules by the index JSON)."""

    name = "zinc250k"
    dataset = "zinc250k"
    smiles_col = "smiles"
    CSV_URL = "https://raw.githubusercontent.com/harryjo97/GDSS/master/data/zinc250k.csv"
    IDX_URL = ("https://raw.githubusercontent.com/harryjo97/GDSS/master/data/"
               "valid_idx_zinc250k.json")
    #: sha256 of GDSS's data/valid_idx_zinc250k.json (git blob b4b45d15)
    IDX_SHA256 = "cf1af3a8588c947493ff0a2b60178db6726e9a4dbb445235b149cd3bbe6831df"

    def __init__(self, source: str = "csv", max_nodes: int = 38, max_train: int | None = None,
                 root: str | None = None, batch_size: int = 1024, num_workers: int = 0,
                 seed: int = 0, strict: bool = False, valid_idx: str | None = None) -> None:
        super().__init__(source, max_nodes, max_train, root, batch_size, num_workers, seed,
                         strict, valid_idx)


# --- files -------------------------------------------------------------------------------------


def write_graph_list(graphs: Sequence[nx.Graph], path: str | Path) -> None:
    """Write graphs as JSON edge lists (atomically)."""
    payload = [{"num_nodes": g.number_of_nodes(),
                "edges": [[int(u), int(v)] for u, v in nx.convert_node_labels_to_integers(g).edges()]}
               for g in graphs]
    atomic_write_text(path, json.dumps(payload))


def read_graph_list(path: str | Path, max_nodes: int | None = None) -> list[nx.Graph]:
    """Read graphs written by :func:`write_graph_list`, checking every entry.

    Raises:
        ValueError: not a JSON list, an entry without ``num_nodes``/``edges``, a graph with 0
            nodes, an edge to a node that does not exist, a self-loop or more than ``max_nodes``
            nodes: the file, the entry (and edge) and what was expected are named.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON graph list ({err})") from err
    if not isinstance(payload, list):
        raise ValueError(f"{path}: expected a JSON list of graphs, got {type(payload).__name__}")
    return [_graph_entry(item, f"{path}: entry {k}", max_nodes) for k, item in enumerate(payload)]


def _graph_entry(item: object, where: str, max_nodes: int | None) -> nx.Graph:
    """One ``{"num_nodes": n, "edges": [[u, v], ...]}`` entry as a checked graph."""
    if not isinstance(item, dict) or "num_nodes" not in item or "edges" not in item:
        raise ValueError(f"{where}: needs 'num_nodes' and 'edges'")
    n = item["num_nodes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{where}: num_nodes = {n!r}; expected an integer >= 1")
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for j, edge in enumerate(item["edges"]):
        if not (isinstance(edge, list) and len(edge) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in edge)):
            raise ValueError(f"{where}: edge {j} = {edge!r}; expected a pair of node ids")
        bad = [v for v in edge if not 0 <= v < n]
        if bad:
            raise ValueError(f"{where}: edge {j} {edge} names node {bad[0]}, which does not exist; "
                             f"expected node ids 0..{n - 1} (num_nodes={n})")
        g.add_edge(*edge)
    return G.check_graph(g, where, max_nodes)


def read_molecule_csv(csv_path: str | Path, idx_path: str | Path, smiles_col: str
                      ) -> tuple[list[str], list[str]]:
    """The train and test SMILES of the reference CSV (see :func:`read_molecule_rows`)."""
    train, test = read_molecule_rows(csv_path, idx_path, smiles_col)
    return [s for _, s in train], [s for _, s in test]


def read_molecule_rows(csv_path: str | Path, idx_path: str | Path, smiles_col: str
                       ) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Split the reference CSV by its test-index JSON (GDSS ``load_smiles``).

    The JSON is either ``{"valid_idxs": ["007278", ...]}`` (QM9) or a list of ints (ZINC250k);
    indices are 0-based row numbers of the CSV.

    Returns:
        ``(row, smiles)`` pairs of the train and of the test rows (an empty cell is ``""``).

    Raises:
        ValueError: unreadable CSV, missing SMILES column, malformed JSON, a repeated index or an
            index out of range (the file and the index named).
    """
    import pandas as pd

    csv_path, idx_path = Path(csv_path), Path(idx_path)
    try:
        df = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{csv_path}: not a readable CSV ({err})") from err
    if smiles_col not in df.columns:
        raise ValueError(f"{csv_path}: no column {smiles_col!r} (columns: {list(df.columns)})")
    test_idx = _test_indices(idx_path, csv_path, len(df))
    smiles = ["" if pd.isna(s) else str(s).strip() for s in df[smiles_col]]
    test_set = set(test_idx)
    train = [(i, s) for i, s in enumerate(smiles) if i not in test_set]
    return train, [(i, smiles[i]) for i in test_idx]


def _test_indices(idx_path: Path, csv_path: Path | str, num_rows: int) -> list[int]:
    """The sorted 0-based test rows of a GDSS index JSON, each once and within the CSV."""
    try:
        raw = json.loads(idx_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{idx_path}: not JSON ({err})") from err
    if isinstance(raw, dict):
        if "valid_idxs" not in raw:
            raise ValueError(f"{idx_path}: expected the key 'valid_idxs'")
        raw = raw["valid_idxs"]
    if not isinstance(raw, list):
        raise ValueError(f"{idx_path}: expected a list of indices")
    try:
        idx = [int(i) for i in raw]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{idx_path}: indices must be integers ({err})") from err
    seen: set[int] = set()
    for k, i in enumerate(idx):
        if not 0 <= i < num_rows:
            raise ValueError(f"{idx_path}: index {i} (entry {k}) out of range; expected 0.."
                             f"{num_rows - 1} for the {num_rows} rows of {csv_path}")
        if i in seen:
            raise ValueError(f"{idx_path}: index {i} (entry {k}) repeated; expected each test row "
                             "once")
        seen.add(i)
    return sorted(idx)


# --- QM9 from the PyPI package qm9pack ---------------------------------------------------------

#: the files of qm9pack's table, in GDB order
QM9PACK_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
#: molecules in the full QM9 table (GDB numbers 1..133,885); GDSS's index counts rows of it
QM9_NUM_MOLECULES = 133_885


def qm9pack_data_dir() -> Path:
    """The data folder of the installed ``qm9pack`` package (found without importing it).

    Raises:
        DatasetUnavailableError: ``qm9pack`` is not installed (the fix named).
    """
    spec = importlib.util.find_spec("qm9pack")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DatasetUnavailableError("source='qm9pack': the package qm9pack is not installed; "
                                      "`pip install qm9pack`, or use source='csv' with GDSS's "
                                      "qm9.csv")
    return Path(locations[0]) / "data"


def read_qm9pack(folder: str | Path) -> dict[int, str]:
    """The GDB SMILES of ``qm9pack``'s table by 1-based GDB number (its column ``Index``).

    Reads ``qm9_part{1,2,3}.csv`` of ``folder`` (columns ``Index`` and ``SMILES`` only).

    Raises:
        FileNotFoundError: a part is missing (named).
        ValueError: unreadable CSV, a missing column, a non-integer or repeated ``Index``, one
            outside 1..133,885, or an empty SMILES (the file and line named).
    """
    import pandas as pd

    folder, table = Path(folder), {}
    for name in QM9PACK_PARTS:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected qm9pack's {', '.join(QM9PACK_PARTS)}")
        try:
            df = pd.read_csv(path, usecols=["Index", "SMILES"], dtype={"Index": str,
                                                                       "SMILES": str},
                             keep_default_na=False)
        except ValueError as err:  # also pandas' ParserError and a missing column
            raise ValueError(f"{path}: not qm9pack's CSV with columns 'Index' and 'SMILES' "
                             f"({err})") from err
        for line, (index, smiles) in enumerate(zip(df["Index"], df["SMILES"]), 2):
            table[_gdb_number(index, path, line, table)] = _nonempty(smiles, path, line)
    return table


def _gdb_number(value: str, path: Path, line: int, seen: dict[int, str]) -> int:
    """One ``Index`` cell as a new GDB number 1..133,885."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: Index {value!r}; expected an integer GDB number") \
            from None
    if not 1 <= number <= QM9_NUM_MOLECULES:
        raise ValueError(f"{path}:{line}: Index {number}; expected a GDB number in "
                         f"1..{QM9_NUM_MOLECULES}")
    if number in seen:
        raise ValueError(f"{path}:{line}: Index {number} repeated; expected each molecule once")
    return number


def _nonempty(smiles: str, path: Path, line: int) -> str:
    if not smiles.strip():
        raise ValueError(f"{path}:{line}: empty SMILES; expected the molecule's GDB SMILES")
    return smiles.strip()


def qm9pack_rows(folder: str | Path, idx_path: str | Path
                 ) -> tuple[list[tuple[int, str]], list[tuple[int, str]], str]:
    """GDSS's QM9 split of ``qm9pack``'s table: ``(train_rows, test_rows, missing_report)``.

    GDSS's ``valid_idx_qm9.json`` holds 0-based positions of the full 133,885-row table in GDB
    order, so position ``p`` is the molecule with ``Index`` ``p + 1``. Rows are ``(p, smiles)``;
    the training rows are every other molecule of the table. Positions ``qm9pack`` lacks are left
    out and described in ``missing_report`` (empty when none is missing): the counts, the first
    GDB numbers and the sizes that remain. Nothing is substituted.
    """
    table = read_qm9pack(folder)
    test_idx = _test_indices(Path(idx_path), "the full QM9 table (GDB order)", QM9_NUM_MOLECULES)
    test_set = set(test_idx)
    test = [(p, table[p + 1]) for p in test_idx if p + 1 in table]
    train = [(n - 1, s) for n, s in sorted(table.items()) if n - 1 not in test_set]
    missing_test = [p + 1 for p in test_idx if p + 1 not in table]
    n_train = QM9_NUM_MOLECULES - len(test_idx)
    report = ""
    if missing_test or len(train) < n_train:
        first = ", ".join(map(str, missing_test[:5])) + (", ..." if len(missing_test) > 5 else "")
        report = (f"{folder}: qm9pack lacks {len(missing_test)} of the {len(test_idx)} test "
                  f"molecules of {Path(idx_path).name}" + (f" (GDB Index {first})" if first else "")
                  + f" and {n_train - len(train)} of the {n_train} training molecules; they are "
                  f"missing, not replaced: the test set is {len(test)} molecules, the training "
                  f"set {len(train)}")
    return train, test, report


@functools.lru_cache(maxsize=2)
def _nci_kekulized(path: str) -> tuple[tuple[bytes, ...], int]:
    """Parseable, kekulizable molecules of a SMILES file (RDKit binaries) and its line count."""
    out, lines = [], 0
    for line in Path(path).read_text().splitlines():
        if line.strip():
            lines += 1
            mol = _M().kekulized(line.split()[0])
            if mol is not None:
                out.append(mol.ToBinary())
    return tuple(out), lines


def nci_split(dataset: str, atom_types: Sequence[str], max_atoms: int, test_frac: float = 0.1,
              seed: int = 0, report: bool = True) -> tuple[list, list]:
    """Offline molecules: RDKit's ``NCI/first_5K.smi`` filtered to a dataset's rules.

    Kept: parseable, kekulizable, one fragment, only ``atom_types``, at most ``max_atoms`` heavy
    atoms, canonical SMILES de-duplicated. Fixed split: a seeded permutation, ``test_frac`` test.
    With ``report`` one line on stderr says how many were kept and how many dropped, by reason.
    """
    import sys

    from rdkit import Chem, RDConfig

    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not path.is_file():
        raise DatasetUnavailableError(f"RDKit's NCI molecules are missing ({path})")
    seen, mols = set(), []
    binaries, lines = _nci_kekulized(str(path))
    outside = repeated = 0
    for binary in binaries:
        mol = Chem.Mol(binary)
        if not _M().fits(mol, atom_types, max_atoms):
            outside += 1
            continue
        can = Chem.MolToSmiles(mol)
        if can in seen:
            repeated += 1
            continue
        seen.add(can)
        mols.append(mol)
    if report:
        print(f"{dataset} (source=nci): {path.name} has {lines} molecules: kept {len(mols)}, "
              f"dropped {lines - len(mols)} ({lines - len(binaries)} unparsable or not "
              f"kekulizable, {outside} outside the rules (one fragment, <= {max_atoms} heavy "
              f"atoms of {', '.join(atom_types)}, no unsupported bond), {repeated} repeated "
              "SMILES)", file=sys.stderr)
    order = np.random.default_rng(seed).permutation(len(mols))
    mols = [mols[i] for i in order]
    n_test = max(1, int(test_frac * len(mols)))
    return mols[n_test:], mols[:n_test]


def mol_to_nx(mol) -> nx.Graph:
    """A molecule as a networkx graph with ``label`` = atom symbol / bond order (for NSPDK)."""
    g = nx.Graph()
    for a in mol.GetAtoms():
        g.add_node(a.GetIdx(), label=a.GetSymbol())
    for b in mol.GetBonds():
        g.add_edge(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), label=int(b.GetBondTypeAsDouble()))
    return g


DATAMODULES = [CommunitySmall, EgoSmall, Grid, Enzymes, GraphFile, QM9, ZINC250k]

__all__ = [
    "DATAMODULES",
    "CommunitySmall",
    "EgoSmall",
    "Enzymes",
    "GraphDataModule",
    "GraphFile",
    "Grid",
    "MoleculeDataModule",
    "QM9",
    "ZINC250k",
    "dense_to_graphs",
    "dense_to_pyg",
    "to_dense_state",
]
