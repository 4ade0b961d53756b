"""DataModules of the graph plugin: PyG batches of generic graphs and molecules.

Every dataset yields :class:`torch_geometric.data.Data` objects (``x`` node features,
``edge_index``, ``edge_attr`` = adjacency value: 1 for generic graphs, bond order for molecules)
batched by PyG's DataLoader. :func:`to_dense_state` turns a batch into the dense
``{"x": (B, N, F), "adj": (B, N, N), "mask": (B, N)}`` state the networks use and
:func:`dense_to_pyg` goes back.

Datasets (GDSS settings): community-small (generated), ego-small (Citeseer planetoid files or an
offline synthetic source), grid (generated), ENZYMES (TU format), QM9 and ZINC250k (the
reference CSV + test-index JSON, or the offline NCI molecules RDKit ships filtered to each
dataset's rules). Generic graphs use one-hot degree features; the first 20% of the list is test.
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import to_dense_adj, to_dense_batch

from domaindiff.data import DatasetUnavailableError, DomainDataModule, atomic_write_text
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
        """GDSS split: the first ``test_split`` fraction is the test set."""
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
            too_big = [i for i in items if self._size(i) > self.max_nodes]
            if too_big:
                raise ValueError(f"{type(self).__name__}: a {what} graph has {self._size(too_big[0])}"
                                 f" nodes > max_nodes={self.max_nodes}")
        self.train_items, self.test_items = train, test
        self.train_data = [self.to_data(i) for i in train]
        self.test_data = [self.to_data(i) for i in test]

    @staticmethod
    def _size(item) -> int:
        return item.number_of_nodes() if isinstance(item, nx.Graph) else item.GetNumAtoms()

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
        return DataLoader(self.train_data, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.test_data, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    test_dataloader = val_dataloader


class CommunitySmall(GraphDataModule):
    """community-small: 100 two-community graphs with 12-20 nodes (generated, cached as JSON).

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
        path = self.cache_dir / f"community_small_{self.num_graphs}_seed{self.seed}.json"
        if path.is_file():
            graphs = read_graph_list(path)
        else:
            graphs = G.community_small_graphs(self.num_graphs, self.seed)
            write_graph_list(graphs, path)
        return self.split(graphs)


class Grid(GraphDataModule):
    """grid: the 100 ``grid_2d_graph(m, n)``, m, n in 10..19 (generated), shuffled with ``seed``."""

    name = "grid"

    def __init__(self, max_nodes: int = 361, max_feat: int = 5, test_split: float = 0.2,
                 root: str | None = None, batch_size: int = 8, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)

    def load_items(self):
        return self.split(G.grid_graphs(self.seed))


class EgoSmall(GraphDataModule):
    """ego-small: 200 one-hop ego nets with 4-20 nodes of Citeseer (or an offline synthetic source).

    Args:
        source: "citeseer" (reads ``ind.citeseer.graph`` in the cache dir, downloading it from the
            Planetoid repository when online) or "synthetic" (a power-law cluster graph).
        num_graphs: ego nets kept.
        **kwargs: see :class:`GraphDataModule`.
    """

    name = "ego_small"
    URL = "https://github.com/kimiyoung/planetoid/raw/master/data/ind.citeseer.graph"

    def __init__(self, source: str = "citeseer", num_graphs: int = 200, max_nodes: int = 18,
                 max_feat: int = 17, test_split: float = 0.2, root: str | None = None,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)
        if source not in ("citeseer", "synthetic"):
            raise ValueError(f"source: unknown {source!r}; use 'citeseer' or 'synthetic'")
        self.source, self.num_graphs = source, num_graphs

    def load_items(self):
        if self.source == "citeseer":
            path = self.download(self.URL, "ind.citeseer.graph",
                                 manual=f"copy the Planetoid file ind.citeseer.graph into "
                                        f"{self.cache_dir}")
            big = G.read_planetoid_graph(path)
        else:
            big = G.synthetic_ego_source(seed=self.seed)
        graphs = G.ego_graphs(big, self.num_graphs, 4, self.max_nodes, 1, self.seed)
        return self.split(graphs)


class Enzymes(GraphDataModule):
    """ENZYMES from the TU format (587 graphs with 10-125 nodes).

    Files ``ENZYMES/ENZYMES_A.txt`` and ``ENZYMES/ENZYMES_graph_indicator.txt`` are read from the
    cache dir; when absent, the TU zip is downloaded (online) and unpacked.
    """

    name = "enzymes"
    URL = "https://www.chrsmrrs.com/graphkerneldatasets/ENZYMES.zip"

    def __init__(self, max_nodes: int = 125, max_feat: int = 10, test_split: float = 0.2,
                 root: str | None = None, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(max_nodes, max_feat, test_split, root, batch_size, num_workers, seed)

    def load_items(self):
        folder = self.cache_dir / "ENZYMES"
        if not (folder / "ENZYMES_A.txt").is_file():
            zpath = self.download(self.URL, "ENZYMES.zip",
                                  manual=f"unzip the TU ENZYMES files into {folder}")
            with zipfile.ZipFile(zpath) as zf:
                zf.extractall(self.cache_dir)
        graphs = G.read_tu_graphs(folder, "ENZYMES")
        order = np.random.default_rng(self.seed).permutation(len(graphs))
        return self.split([graphs[i] for i in order])


class MoleculeDataModule(GraphDataModule):
    """Base of QM9 / ZINC250k: kekulized RDKit molecules.

    Args:
        source: "csv" (the reference ``<name>.csv`` + ``valid_idx_<name>.json`` in the cache
            dir, downloaded when online) or "nci" (offline: the NCI molecules RDKit ships,
            filtered to this dataset's rules, fixed 10% test split).
        max_train: optional cap on training molecules (quick runs).
        **kwargs: see :class:`GraphDataModule`.
    """

    is_molecule = True
    dataset = "qm9"
    smiles_col = "SMILES1"
    CSV_URL = ""
    IDX_URL = ""

    def __init__(self, source: str = "csv", max_nodes: int = 9, max_train: int | None = None,
                 root: str | None = None, batch_size: int = 1024, num_workers: int = 0,
                 seed: int = 0) -> None:
        self.atom_types = _M().atom_types_for(self.dataset)
        super().__init__(max_nodes, len(self.atom_types), 0.1, root, batch_size, num_workers,
                         seed)
        if source not in ("csv", "nci"):
            raise ValueError(f"source: unknown {source!r}; use 'csv' or 'nci'")
        self.source, self.max_train = source, max_train

    def to_data(self, item) -> Data:
        return mol_to_data(item, self.atom_types, self.max_nodes)

    def as_graph(self, item) -> nx.Graph:
        return mol_to_nx(item)

    def _keep(self, smiles: str):
        mol = _M().kekulized(smiles)
        if mol is None or not _M().fits(mol, self.atom_types, self.max_nodes):
            return None
        return mol

    def load_items(self):
        if self.source == "nci":
            train, test = nci_split(self.dataset, self.atom_types, self.max_nodes)
        else:
            train, test = self.load_csv()
        if self.max_train is not None:
            train = train[: self.max_train]
        return train, test

    def load_csv(self):
        """Read the reference CSV and test-index JSON (see :func:`read_molecule_csv`)."""
        csv = self.download(self.CSV_URL, f"{self.dataset}.csv",
                            manual=f"copy {self.dataset}.csv (GDSS data/) into {self.cache_dir}")
        idx = self.download(self.IDX_URL, f"valid_idx_{self.dataset}.json",
                            manual=f"copy valid_idx_{self.dataset}.json into {self.cache_dir}")
        train_smi, test_smi = read_molecule_csv(csv, idx, self.smiles_col)
        train = [m for m in map(self._keep, train_smi) if m is not None]
        test = [m for m in map(self._keep, test_smi) if m is not None]
        return train, test

    def train_smiles(self) -> list[str]:
        """Canonical SMILES of the training molecules (novelty reference)."""
        from rdkit import Chem

        self.setup()
        return [Chem.MolToSmiles(m) for m in self.train_items]

    def test_smiles(self) -> list[str]:
        """Canonical SMILES of the test molecules."""
        from rdkit import Chem

        self.setup()
        return [Chem.MolToSmiles(m) for m in self.test_items]


class QM9(MoleculeDataModule):
    """QM9: <= 9 heavy atoms of C, N, O, F (13,082 test molecules by ``valid_idx_qm9.json``)."""

    name = "qm9"
    dataset = "qm9"
    smiles_col = "SMILES1"
    CSV_URL = "https://raw.githubusercontent.com/harryjo97/GDSS/master/data/qm9.csv"
    IDX_URL = "https://raw.githubusercontent.com/harryjo97/GDSS/master/data/valid_idx_qm9.json"

    def __init__(self, source: str = "csv", max_nodes: int = 9, max_train: int | None = None,
                 root: str | None = None, batch_size: int = 1024, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(source, max_nodes, max_train, root, batch_size, num_workers, seed)


class ZINC250k(MoleculeDataModule):
    """ZINC250k: <= 38 heavy atoms of 9 types (24,887 test molecules by the index JSON)."""

    name = "zinc250k"
    dataset = "zinc250k"
    smiles_col = "smiles"
    CSV_URL = "https://raw.githubusercontent.com/harryjo97/GDSS/master/data/zinc250k.csv"
    IDX_URL = ("https://raw.githubusercontent.com/harryjo97/GDSS/master/data/"
               "valid_idx_zinc250k.json")

    def __init__(self, source: str = "csv", max_nodes: int = 38, max_train: int | None = None,
                 root: str | None = None, batch_size: int = 1024, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(source, max_nodes, max_train, root, batch_size, num_workers, seed)


# --- files -------------------------------------------------------------------------------------


def write_graph_list(graphs: Sequence[nx.Graph], path: str | Path) -> None:
    """Write graphs as JSON edge lists (atomically)."""
    payload = [{"num_nodes": g.number_of_nodes(),
                "edges": [[int(u), int(v)] for u, v in nx.convert_node_labels_to_integers(g).edges()]}
               for g in graphs]
    atomic_write_text(path, json.dumps(payload))


def read_graph_list(path: str | Path) -> list[nx.Graph]:
    """Read graphs written by :func:`write_graph_list` (errors name the file and entry)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON graph list ({err})") from err
    out = []
    for k, item in enumerate(payload):
        if not isinstance(item, dict) or "num_nodes" not in item or "edges" not in item:
            raise ValueError(f"{path}: entry {k} needs 'num_nodes' and 'edges'")
        g = nx.Graph()
        g.add_nodes_from(range(int(item["num_nodes"])))
        g.add_edges_from((int(u), int(v)) for u, v in item["edges"])
        out.append(g)
    return out


def read_molecule_csv(csv_path: str | Path, idx_path: str | Path, smiles_col: str
                      ) -> tuple[list[str], list[str]]:
    """Split the reference CSV by its test-index JSON (GDSS ``load_smiles``).

    The JSON is either ``{"valid_idxs": ["007278", ...]}`` (QM9) or a list of ints (ZINC250k);
    indices are 0-based row numbers of the CSV.

    Raises:
        ValueError: missing SMILES column, malformed JSON or an index out of range (named).
    """
    import pandas as pd

    csv_path, idx_path = Path(csv_path), Path(idx_path)
    df = pd.read_csv(csv_path)
    if smiles_col not in df.columns:
        raise ValueError(f"{csv_path}: no column {smiles_col!r} (columns: {list(df.columns)})")
    try:
        raw = json.loads(idx_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{idx_path}: not JSON ({err})") from err
    if isinstance(raw, dict):
        if "valid_idxs" not in raw:
            raise ValueError(f"{idx_path}: expected the key 'valid_idxs'")
        raw = raw["valid_idxs"]
    if not isinstance(raw, list):
        raise ValueError(f"{idx_path}: expected a list of indices")
    try:
        test_idx = sorted({int(i) for i in raw})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{idx_path}: indices must be integers ({err})") from err
    if test_idx and (test_idx[0] < 0 or test_idx[-1] >= len(df)):
        raise ValueError(f"{idx_path}: index {test_idx[-1]} out of range for {len(df)} rows of "
                         f"{csv_path}")
    smiles = [str(s).strip() for s in df[smiles_col]]
    test_set = set(test_idx)
    train = [s for i, s in enumerate(smiles) if i not in test_set]
    return train, [smiles[i] for i in test_idx]


@functools.lru_cache(maxsize=2)
def _nci_kekulized(path: str) -> tuple[bytes, ...]:
    """The parseable, kekulizable molecules of a SMILES file, as RDKit binaries (parsed once)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            mol = _M().kekulized(line.split()[0])
            if mol is not None:
                out.append(mol.ToBinary())
    return tuple(out)


def nci_split(dataset: str, atom_types: Sequence[str], max_atoms: int, test_frac: float = 0.1,
              seed: int = 0) -> tuple[list, list]:
    """Offline molecules: RDKit's ``NCI/first_5K.smi`` filtered to a dataset's rules.

    Kept: parseable, kekulizable, one fragment, only ``atom_types``, at most ``max_atoms`` heavy
    atoms, canonical SMILES de-duplicated. Fixed split: a seeded permutation, ``test_frac`` test.
    """
    from rdkit import Chem, RDConfig

    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not path.is_file():
        raise DatasetUnavailableError(f"RDKit's NCI molecules are missing ({path})")
    seen, mols = set(), []
    for binary in _nci_kekulized(str(path)):
        mol = Chem.Mol(binary)
        if not _M().fits(mol, atom_types, max_atoms):
            continue
        can = Chem.MolToSmiles(mol)
        if can in seen:
            continue
        seen.add(can)
        mols.append(mol)
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


DATAMODULES = [CommunitySmall, EgoSmall, Grid, Enzymes, QM9, ZINC250k]

__all__ = [
    "DATAMODULES",
    "CommunitySmall",
    "EgoSmall",
    "Enzymes",
    "GraphDataModule",
    "Grid",
    "MoleculeDataModule",
    "QM9",
    "ZINC250k",
    "dense_to_graphs",
    "dense_to_pyg",
    "to_dense_state",
]
