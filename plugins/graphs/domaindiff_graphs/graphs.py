"""Generic graph datasets as lists of networkx graphs: generators and real-format readers.

- community-small and grid are generated with networkx as GDSS did (offline by nature);
- ego-small is built from the Citeseer planetoid files (``ind.citeseer.graph``), with a synthetic
  ego-like fallback from a power-law cluster graph for offline use;
- ENZYMES is read from the TU format (``ENZYMES_A.txt``, ``ENZYMES_graph_indicator.txt``).
"""

from __future__ import annotations

import io
import pickle
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np


def community_graph(num_nodes: int, rng: np.random.Generator, num_communities: int = 2,
                    p_intra: float = 0.7, p_inter: float = 0.05) -> nx.Graph:
    """One community graph (GraphRNN/GDSS ``n_community``).

    ``num_nodes // num_communities`` nodes per community, G(n, p_intra) inside; between each
    pair of communities every node pair is bridged with probability
    ``p_inter * 2 / ((k - 1) * size)``, and one bridge is forced if none was drawn.

    Args:
        num_nodes: total nodes (rounded down to a multiple of ``num_communities``).
        rng: numpy random generator.
        num_communities: number of communities.
        p_intra: edge probability inside a community.
        p_inter: expected inter-community connection parameter.
    """
    if num_communities < 2:
        raise ValueError(f"num_communities must be >= 2, got {num_communities}")
    size = num_nodes // num_communities
    parts = [nx.gnp_random_graph(size, p_intra, seed=int(rng.integers(2**31)))
             for _ in range(num_communities)]
    g = nx.disjoint_union_all(parts)
    p_bridge = p_inter * 2 / ((num_communities - 1) * size)
    blocks = [list(range(i * size, (i + 1) * size)) for i in range(num_communities)]
    for i in range(num_communities):
        for j in range(i + 1, num_communities):
            bridged = False
            for u in blocks[i]:
                for v in blocks[j]:
                    if rng.random() < p_bridge:
                        g.add_edge(u, v)
                        bridged = True
            if not bridged:
                g.add_edge(blocks[i][0], blocks[j][0])
    return g


def community_small_graphs(num_graphs: int = 100, seed: int = 0) -> list[nx.Graph]:
    """GDSS's community-small: two communities, 12-20 nodes in total, p 0.7 / 0.05."""
    rng = np.random.default_rng(seed)
    return [community_graph(int(rng.integers(12, 21)), rng) for _ in range(num_graphs)]


def grid_graphs(seed: int = 0, low: int = 10, high: int = 20) -> list[nx.Graph]:
    """GDSS's grid: ``grid_2d_graph(m, n)`` for m, n in ``[low, high)``, shuffled with ``seed``."""
    graphs = [nx.convert_node_labels_to_integers(nx.grid_2d_graph(m, n))
              for m in range(low, high) for n in range(low, high)]
    order = np.random.default_rng(seed).permutation(len(graphs))
    return [graphs[i] for i in order]


def ego_graphs(g: nx.Graph, num_graphs: int = 200, min_nodes: int = 4, max_nodes: int = 20,
               radius: int = 1, seed: int = 0) -> list[nx.Graph]:
    """Radius-``radius`` ego networks of the largest component of ``g`` (GraphRNN's ego-small).

    Ego nets with ``min_nodes..max_nodes`` nodes are kept, shuffled with ``seed`` and the first
    ``num_graphs`` returned.
    """
    giant = g.subgraph(max(nx.connected_components(g), key=len)).copy()
    giant = nx.convert_node_labels_to_integers(giant)
    out = []
    for v in range(giant.number_of_nodes()):
        ego = nx.ego_graph(giant, v, radius=radius)
        if min_nodes <= ego.number_of_nodes() <= max_nodes:
            out.append(nx.convert_node_labels_to_integers(ego))
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order[:num_graphs]]


class _PlanetoidUnpickler(pickle.Unpickler):
    """Unpickles only the adjacency dict of a planetoid ``ind.<name>.graph`` file."""

    ALLOWED = {("collections", "defaultdict")} | {
        (mod, name) for mod in ("builtins", "__builtin__") for name in ("list", "dict", "set", "int")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_planetoid_graph(path: str | Path) -> nx.Graph:
    """Read a planetoid ``ind.<name>.graph`` file (a pickled ``{node: [neighbours]}`` dict).

    Only dicts, lists and ints are unpickled; anything else raises. Self loops are dropped.

    Raises:
        ValueError: the file is not an adjacency dict (the message names the file).
    """
    path = Path(path)
    try:
        raw = _PlanetoidUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{path}: not a planetoid graph file ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of adjacency lists, got {type(raw).__name__}")
    g = nx.Graph()
    for u, nbrs in raw.items():
        g.add_node(int(u))
        for v in nbrs:
            if int(v) != int(u):
                g.add_edge(int(u), int(v))
    return g


def synthetic_ego_source(num_nodes: int = 3000, seed: int = 0) -> nx.Graph:
    """An offline stand-in for Citeseer: a sparse power-law cluster graph (mean degree ~2.7)."""
    g = nx.powerlaw_cluster_graph(num_nodes, 1, 0.3, seed=seed)
    rng = np.random.default_rng(seed)
    # thin out hubs a little so ego nets stay small, as in the sparse citation graph
    extra = rng.choice(num_nodes, size=(num_nodes // 3, 2))
    g.add_edges_from((int(a), int(b)) for a, b in extra if a != b)
    return g


def _read_int_lines(path: Path, what: str) -> list[list[int]]:
    if not path.is_file():
        raise FileNotFoundError(f"TU dataset: missing {what} file {path}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append([int(v) for v in line.replace(",", " ").split()])
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: expected integers, got {line!r}") from err
    return rows


def read_tu_graphs(folder: str | Path, name: str = "ENZYMES", min_nodes: int = 10,
                   max_nodes: int = 1000) -> list[nx.Graph]:
    """Read a TU-format dataset (``<name>_A.txt`` 1-based edge list, ``<name>_graph_indicator.txt``).

    Node labels (``<name>_node_labels.txt``) are attached as the ``label`` attribute when present.
    Isolated nodes are removed and graphs outside ``min_nodes..max_nodes`` dropped (GraphRNN/GDSS:
    587 ENZYMES graphs with 10-125 nodes).

    Raises:
        FileNotFoundError: a required file is missing (named).
        ValueError: a malformed line (file and line named) or an edge naming an unknown node.
    """
    folder = Path(folder)
    indicator = [r[0] for r in _read_int_lines(folder / f"{name}_graph_indicator.txt",
                                               "graph indicator")]
    edges = _read_int_lines(folder / f"{name}_A.txt", "adjacency")
    labels_path = folder / f"{name}_node_labels.txt"
    labels = [r[0] for r in _read_int_lines(labels_path, "node labels")] \
        if labels_path.is_file() else None
    graphs: dict[int, nx.Graph] = defaultdict(nx.Graph)
    for node, gid in enumerate(indicator, 1):
        graphs[gid].add_node(node, **({"label": labels[node - 1]} if labels else {}))
    for k, row in enumerate(edges, 1):
        if len(row) != 2:
            raise ValueError(f"{folder / f'{name}_A.txt'}:{k}: expected 'i, j', got {row}")
        u, v = row
        if not (1 <= u <= len(indicator) and 1 <= v <= len(indicator)):
            raise ValueError(f"{folder / f'{name}_A.txt'}:{k}: node {max(u, v)} is not in "
                             f"{name}_graph_indicator.txt ({len(indicator)} nodes)")
        if indicator[u - 1] != indicator[v - 1]:
            raise ValueError(f"{folder / f'{name}_A.txt'}:{k}: edge ({u}, {v}) joins two graphs")
        if u != v:
            graphs[indicator[u - 1]].add_edge(u, v)
    out = []
    for gid in sorted(graphs):
        g = graphs[gid]
        g.remove_nodes_from(list(nx.isolates(g)))
        if min_nodes <= g.number_of_nodes() <= max_nodes:
            out.append(nx.convert_node_labels_to_integers(g))
    return out
