"""Generic graph datasets as lists of networkx graphs: generators and real-format readers.

- community-small and grid are generated with networkx as GDSS did (offline by nature);
- ego-small is built from the Citeseer planetoid files (``ind.citeseer.graph``), with a synthetic
  ego-like fallback from a power-law cluster graph for offline use;
- ENZYMES is read from the TU format (``ENZYMES_A.txt``, ``ENZYMES_graph_indicator.txt``...),
  whose files are checked against each other (line counts, node ids, symmetric edges);
- GDSS's own pickled graph lists (``data/<name>.pkl``) are read with an allow-list unpickler
  that refuses anything but networkx graphs, builtin containers and numpy data.

Every graph read from a file is checked by :func:`check_graph` (undirected, simple, 1..max_nodes
nodes, no self-loops, finite attributes); errors name the file, the graph or line and what was
expected.
"""

from __future__ import annotations

import builtins
import functools
import io
import pickle
import warnings
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np

#: GDSS's community-small: ``num_communities`` and ``max_nodes`` drawn per graph from these lists
COMMUNITY_SMALL_PARAMS = {"num_communities": [2], "max_nodes": list(range(12, 21))}
#: GDSS's grid: ``m`` and ``n`` drawn per graph from these lists
GRID_PARAMS = {"m": list(range(10, 20)), "n": list(range(10, 20))}


def community_graph(num_communities: int, max_nodes: int, rs: np.random.RandomState,
                    p_inter: float = 0.05, p_intra: float = 0.7) -> nx.Graph:
    """One community graph exactly as GDSS's ``n_community`` draws it (from Niu et al., 2020).

    ``max_nodes // num_communities`` nodes per community; community ``i`` is
    ``gnp_random_graph(size, p_intra, seed=i)``, so all graphs of one size share their community
    edges. Between each pair of communities (taken as the connected components of their disjoint
    union, in networkx's order) every node pair is bridged when ``rs.random_sample()`` falls below
    ``p_inter * 2 / ((num_communities - 1) * size)``, in node order; if no bridge was drawn the
    first nodes of the two are joined.

    Args:
        num_communities: number of communities (>= 2).
        max_nodes: total nodes before rounding down to a multiple of ``num_communities``.
        rs: the legacy numpy generator that draws the bridges (GDSS uses the global one).
        p_inter: expected inter-community connection parameter.
        p_intra: edge probability inside a community.

    Raises:
        ValueError: fewer than two communities.
    """
    if num_communities < 2:
        raise ValueError(f"num_communities must be >= 2, got {num_communities}")
    size = max_nodes // num_communities
    g = nx.disjoint_union_all([nx.gnp_random_graph(size, p_intra, seed=i)
                               for i in range(num_communities)])
    p_bridge = p_inter * 2 / ((num_communities - 1) * size)
    blocks = [list(g.subgraph(c).nodes()) for c in nx.connected_components(g)]
    for i, nodes1 in enumerate(blocks):
        for nodes2 in blocks[i + 1:]:
            draws = rs.random_sample(len(nodes1) * len(nodes2)).reshape(len(nodes1), len(nodes2))
            hits = np.argwhere(draws < p_bridge)
            g.add_edges_from((nodes1[a], nodes2[b]) for a, b in hits)
            if not len(hits):
                g.add_edge(nodes1[0], nodes2[0])
    return g


def community_small_graphs(num_graphs: int = 100, seed: int = 0) -> list[nx.Graph]:
    """GDSS's community-small, drawn as its ``gen_graph_list`` does with ``np.random.seed(seed)``.

    Per graph: ``num_communities`` then ``max_nodes`` are drawn with ``choice`` from
    :data:`COMMUNITY_SMALL_PARAMS` (2 communities, 12-20 nodes, so 12, 14, ..., 20 after
    rounding), then :func:`community_graph` draws the bridges, all from one legacy
    ``RandomState(seed)``. GDSS ran its generator unseeded, so its file matches no seed in the
    sizes and bridges, but every community equals GDSS's exactly (``gnp_random_graph(size, 0.7,
    seed=i)``).
    """
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(num_graphs):
        params = {k: int(rs.choice(v)) for k, v in COMMUNITY_SMALL_PARAMS.items()}
        out.append(community_graph(params["num_communities"], params["max_nodes"], rs))
    return out


def grid_graphs(num_graphs: int = 100, seed: int = 0) -> list[nx.Graph]:
    """GDSS's grid: ``grid_2d_graph(m, n)`` with m, then n drawn by ``choice`` from 10..19.

    As GDSS's ``gen_graph_list`` with ``np.random.seed(seed)``: pairs are drawn with replacement
    (GDSS's file holds 66 distinct pairs among its 100 graphs), nodes numbered row by row
    (``convert_node_labels_to_integers``).
    """
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(num_graphs):
        params = {k: int(rs.choice(v)) for k, v in GRID_PARAMS.items()}
        out.append(nx.convert_node_labels_to_integers(nx.grid_2d_graph(**params)))
    return out


def ego_graphs(g: nx.Graph, num_graphs: int | None = 200, min_nodes: int = 4,
               max_nodes: int = 18, radius: int = 1) -> list[nx.Graph]:
    """GDSS's ego-small: the first ``num_graphs`` radius-``radius`` ego nets of ``g``'s giant.

    As GDSS's ``citeseer_ego`` (radius 1, 4..18 nodes, first 200): the largest connected
    component is renumbered 0..n-1 in its node order, the ego net of every node taken in that
    order, those with ``min_nodes..max_nodes`` nodes kept (self-loops removed) and the first
    ``num_graphs`` returned (None: all). Node ids are those of the renumbered component, in
    networkx's order, as in GDSS's ``ego_small.pkl``.
    """
    giant = max((g.subgraph(c) for c in nx.connected_components(g)), key=len)
    giant = nx.convert_node_labels_to_integers(giant)
    out = []
    for v in range(giant.number_of_nodes()):
        ego = nx.ego_graph(giant, v, radius=radius)
        if min_nodes <= ego.number_of_nodes() <= max_nodes:
            ego.remove_edges_from(list(nx.selfloop_edges(ego)))
            out.append(ego)
            if num_graphs is not None and len(out) == num_graphs:
                break
    return out


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

    Only dicts, lists and ints are unpickled; anything else raises. Self-loops are removed (the
    model's adjacency has an empty diagonal) and counted in a warning.

    Raises:
        ValueError: the file is not an adjacency dict of integer node ids (file and node named).
    """
    path = Path(path)
    try:
        raw = _PlanetoidUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a planetoid graph file ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of adjacency lists, got {type(raw).__name__}")
    g, loops = nx.Graph(), 0
    for u, nbrs in raw.items():
        if not isinstance(u, int) or not isinstance(nbrs, list | set) \
                or not all(isinstance(v, int) for v in nbrs):
            raise ValueError(f"{path}: node {u!r}: expected an integer id with a list of integer "
                             f"neighbours, got {type(nbrs).__name__}")
    g.add_nodes_from(raw)  # every key first, as nx.from_dict_of_lists (GDSS): fixes node order
    for u, nbrs in raw.items():
        for v in nbrs:
            if v == u:
                loops += 1
            else:
                g.add_edge(u, v)
    if loops:
        warnings.warn(f"{path}: removed {loops} self-loops of {g.number_of_nodes()} nodes (the "
                      "model's adjacency has an empty diagonal)", stacklevel=2)
    return g


def synthetic_ego_source(num_nodes: int = 3000, seed: int = 0) -> nx.Graph:
    """An offline stand-in for Citeseer: a sparse power-law cluster graph (mean degree ~2.7)."""
    g = nx.powerlaw_cluster_graph(num_nodes, 1, 0.3, seed=seed)
    rng = np.random.default_rng(seed)
    # thin out hubs a little so ego nets stay small, as in the sparse citation graph
    extra = rng.choice(num_nodes, size=(num_nodes // 3, 2))
    g.add_edges_from((int(a), int(b)) for a, b in extra if a != b)
    return g


# --- validation of graphs read from files -----------------------------------------------------


def _finite(value: object) -> bool:
    """Whether a node attribute holds only finite numbers (non-numeric values count as finite)."""
    if isinstance(value, bool | int | np.integer | str | bytes) or value is None:
        return True
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return True
    return bool(np.isfinite(arr).all())


def check_graph(g: object, where: str, max_nodes: int | None = None) -> nx.Graph:
    """Check that ``g`` is a graph the GDSS model can take; return it.

    The model's adjacency is symmetric with an empty diagonal and padded to ``max_nodes``, so a
    graph must be an undirected, simple ``networkx.Graph`` with 1..max_nodes nodes, no self-loops
    and finite numeric node attributes.

    Args:
        g: the object read.
        where: what to name in the error (file and graph index).
        max_nodes: the largest allowed number of nodes (None: no limit).

    Raises:
        ValueError: one line naming ``where``, the field and what was expected.
    """
    if not isinstance(g, nx.Graph):
        raise ValueError(f"{where}: expected a networkx Graph, got {type(g).__name__}")
    if g.is_directed():
        raise ValueError(f"{where}: is a directed {type(g).__name__}; expected an undirected graph "
                         "(the model's adjacency is symmetric)")
    if g.is_multigraph():
        raise ValueError(f"{where}: is a {type(g).__name__} with parallel edges; expected a simple "
                         "undirected Graph")
    n = g.number_of_nodes()
    if n == 0:
        raise ValueError(f"{where}: has 0 nodes; expected at least 1")
    if max_nodes is not None and n > max_nodes:
        raise ValueError(f"{where}: has {n} nodes; expected at most max_nodes={max_nodes}")
    loops = list(nx.selfloop_edges(g))
    if loops:
        raise ValueError(f"{where}: self-loop on node {loops[0][0]!r} ({len(loops)} in all); "
                         "expected none (the model's adjacency has an empty diagonal)")
    for node, attrs in g.nodes(data=True):
        for key, value in attrs.items():
            if not _finite(value):
                raise ValueError(f"{where}: node {node!r} field {key!r} = {value!r}; expected "
                                 "finite numbers (no NaN or inf)")
    return g


# --- GDSS's pickled graph lists (data/<name>.pkl), read without running code ------------------

_SAFE_BUILTINS = ("dict", "list", "set", "frozenset", "tuple", "int", "float", "complex", "str",
                  "bytes", "bool")
_NX_CLASSES = {
    "networkx.classes.graph": ("Graph",),
    "networkx.classes.digraph": ("DiGraph",),
    "networkx.classes.multigraph": ("MultiGraph",),
    "networkx.classes.multidigraph": ("MultiDiGraph",),
    "networkx.classes.coreviews": (
        "AtlasView", "AdjacencyView", "MultiAdjacencyView", "UnionAtlas", "UnionAdjacency",
        "UnionMultiInner", "UnionMultiAdjacency", "FilterAtlas", "FilterAdjacency",
        "FilterMultiInner", "FilterMultiAdjacency"),
    "networkx.classes.filters": (
        "no_filter", "hide_nodes", "hide_diedges", "hide_edges", "hide_multidiedges",
        "hide_multiedges", "show_nodes", "show_diedges", "show_edges", "show_multidiedges",
        "show_multiedges"),
    "networkx.classes.function": ("frozen",),
    "networkx.classes.reportviews": (  # cached on a graph once .nodes/.edges/.degree are read
        "NodeView", "NodeDataView", "DiDegreeView", "DegreeView", "OutDegreeView",
        "InDegreeView", "MultiDegreeView", "DiMultiDegreeView", "OutMultiDegreeView",
        "InMultiDegreeView", "OutEdgeDataView", "EdgeDataView", "InEdgeDataView",
        "OutMultiEdgeDataView", "MultiEdgeDataView", "InMultiEdgeDataView", "OutEdgeView",
        "EdgeView", "InEdgeView", "OutMultiEdgeView", "MultiEdgeView", "InMultiEdgeView"),
}


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only globals a graph pickle may name: data builtins, networkx graphs/views, numpy data."""
    import importlib

    allowed: dict[tuple[str, str], object] = {}
    for mod in ("builtins", "__builtin__"):
        allowed.update({(mod, name): getattr(builtins, name) for name in _SAFE_BUILTINS})
    for mod, names in _NX_CLASSES.items():
        module = importlib.import_module(mod)
        allowed.update({(mod, name): getattr(module, name) for name in names
                        if hasattr(module, name)})
    multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core")
                                         else "numpy.core.multiarray")
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = multiarray.scalar
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("numpy", "ndarray")] = np.ndarray
    return allowed


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle names a global outside the allow-list (it could run code)."""


class _GraphListUnpickler(pickle.Unpickler):
    """An allow-list unpickler: networkx graph classes, plain builtins and numpy data, nothing else.

    A pickle can name any importable callable and have it called (``os.system``...); this one
    refuses every global outside :func:`_allowed_globals` before importing it.
    """

    def find_class(self, module: str, name: str):
        found = _allowed_globals().get((module, name))
        if found is None:
            raise RefusedPickleError(
                f"refusing to unpickle {module}.{name}: a graph list may only hold networkx "
                "graphs, builtin containers/numbers and numpy scalars/arrays")
        return found


def read_graph_pickle(path: str | Path, max_nodes: int | None = None) -> list[nx.Graph]:
    """Read GDSS's pickled graph list (``data/<name>.pkl``) safely and check every graph.

    Only the allow-listed globals of :class:`_GraphListUnpickler` are unpickled; anything else
    (a class or function that could run code) is refused, the error naming it. Each graph is
    checked with :func:`check_graph`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a graph list, a refused class, or a bad graph (file and index named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such graph list file")
    try:
        with open(path, "rb") as fh:
            raw = _GraphListUnpickler(fh).load()
    except RefusedPickleError as err:
        raise ValueError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, ImportError, MemoryError) as err:
        raise ValueError(f"{path}: not a readable pickled graph list (truncated or corrupt: "
                         f"{type(err).__name__}: {err})") from err
    if not isinstance(raw, list | tuple):
        raise ValueError(f"{path}: expected a list of networkx graphs, got {type(raw).__name__}")
    return [check_graph(g, f"{path}: graph {k}", max_nodes) for k, g in enumerate(raw)]


# --- the TU format ------------------------------------------------------------------------------


def _lines(path: Path, what: str) -> list[str]:
    """The lines of a TU text file; trailing blank lines are dropped, inner ones refused."""
    if not path.is_file():
        raise FileNotFoundError(f"TU dataset: missing {what} file {path}")
    try:
        lines = path.read_text().rstrip().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err}); expected {what}, one per line") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{path}:{lineno}: empty line; expected {what} on every line")
    return lines


def _int_rows(path: Path, what: str, width: int | None = None) -> list[list[int]]:
    rows = []
    for lineno, line in enumerate(_lines(path, what), 1):
        try:
            row = [int(v) for v in line.replace(",", " ").split()]
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: expected integers, got {line!r}") from err
        if width is not None and len(row) != width:
            shape = "'i, j'" if width == 2 else "one integer"
            raise ValueError(f"{path}:{lineno}: expected {shape}, got {line!r}")
        rows.append(row)
    return rows


def _check_count(path: Path, count: int, expected: int, per: str, source: Path) -> None:
    """A per-node / per-graph file must have exactly one line per node / graph of ``source``."""
    if count < expected:
        raise ValueError(f"{path}: ends after line {count}; expected {expected} lines (one per "
                         f"{per} of {source.name}), line {count + 1} is missing (truncated?)")
    if count > expected:
        raise ValueError(f"{path}:{expected + 1}: extra line; expected {expected} lines (one per "
                         f"{per} of {source.name})")


def _read_node_attributes(path: Path, num_nodes: int, source: Path) -> None:
    """Check ``<name>_node_attributes.txt``: one line of finite numbers per node."""
    lines = _lines(path, "node attributes")
    _check_count(path, len(lines), num_nodes, "node", source)
    for lineno, line in enumerate(lines, 1):
        try:
            values = np.array([float(v) for v in line.replace(",", " ").split()])
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: expected numbers, got {line!r}") from err
        if not np.isfinite(values).all():
            raise ValueError(f"{path}:{lineno}: {line.strip()!r} is not finite; expected finite "
                             "node attributes (no NaN or inf)")


def _graph_ids(path: Path) -> tuple[list[int], int]:
    """Graph id of each node, and the number of graphs (ids must run 1..G, none empty)."""
    indicator = [r[0] for r in _int_rows(path, "graph indicator", 1)]
    if not indicator:
        raise ValueError(f"{path}: no nodes; expected one graph id per node")
    bad = next((k for k, gid in enumerate(indicator, 1) if gid < 1), None)
    if bad is not None:
        raise ValueError(f"{path}:{bad}: graph id {indicator[bad - 1]}; expected ids >= 1")
    num_graphs = max(indicator)
    empty = sorted(set(range(1, num_graphs + 1)) - set(indicator))
    if empty:
        raise ValueError(f"{path}: graph {empty[0]} has 0 nodes ({len(empty)} empty graphs); "
                         f"expected every id 1..{num_graphs} on some line")
    return indicator, num_graphs


def read_tu_graphs(folder: str | Path, name: str = "ENZYMES", min_nodes: int = 10,
                   max_nodes: int = 1000) -> list[nx.Graph]:
    """Read a TU-format dataset, checking that its files agree with each other.

    Files: ``<name>_graph_indicator.txt`` (graph id of each node, ids 1..G), ``<name>_A.txt``
    (1-based ``i, j`` edges, each undirected edge listed both ways), ``<name>_graph_labels.txt``
    (one line per graph) and, when present, ``<name>_node_labels.txt`` (one line per node; kept as
    the ``label`` attribute) and ``<name>_node_attributes.txt`` (one line of finite numbers per
    node). GraphRNN/GDSS treatment, reported in a warning with the totals: self-loops and isolated
    nodes are removed and graphs outside ``min_nodes..max_nodes`` dropped (ENZYMES: 587 of 600
    graphs, 10-125 nodes).

    Raises:
        FileNotFoundError: a required file is missing (named).
        ValueError: a malformed line, a file whose line count does not match the nodes or graphs of
            the indicator (truncated), an edge to a node that does not exist, an edge joining two
            graphs or without its reverse: the file, the line and what was expected are named.
    """
    folder = Path(folder)
    ind_path = folder / f"{name}_graph_indicator.txt"
    indicator, num_graphs = _graph_ids(ind_path)
    n = len(indicator)
    labels_path = folder / f"{name}_graph_labels.txt"
    _check_count(labels_path, len(_lines(labels_path, "graph labels")), num_graphs, "graph",
                 ind_path)
    node_labels = None
    if (folder / f"{name}_node_labels.txt").is_file():
        path = folder / f"{name}_node_labels.txt"
        node_labels = [r[0] for r in _int_rows(path, "node labels", 1)]
        _check_count(path, len(node_labels), n, "node", ind_path)
    if (folder / f"{name}_node_attributes.txt").is_file():
        _read_node_attributes(folder / f"{name}_node_attributes.txt", n, ind_path)
    edges, loops = _tu_edges(folder / f"{name}_A.txt", indicator, ind_path)
    graphs: dict[int, nx.Graph] = defaultdict(nx.Graph)
    for node, gid in enumerate(indicator, 1):
        graphs[gid].add_node(node, **({"label": node_labels[node - 1]} if node_labels else {}))
    for u, v in edges:
        graphs[indicator[u - 1]].add_edge(u, v)
    out, isolated = [], 0
    for gid in sorted(graphs):
        g = graphs[gid]
        lonely = list(nx.isolates(g))
        isolated += len(lonely)
        g.remove_nodes_from(lonely)
        if min_nodes <= g.number_of_nodes() <= max_nodes:
            out.append(nx.convert_node_labels_to_integers(g))
    if len(out) < num_graphs or loops or isolated:
        warnings.warn(f"{folder}/{name}: kept {len(out)} of {num_graphs} graphs (GraphRNN/GDSS "
                      f"rule: {loops} self-loop lines and {isolated} isolated nodes removed, "
                      f"{num_graphs - len(out)} graphs outside {min_nodes}..{max_nodes} nodes "
                      "dropped)", stacklevel=2)
    return out


def _tu_edges(path: Path, indicator: list[int], ind_path: Path
              ) -> tuple[set[tuple[int, int]], int]:
    """Undirected edges ``(u, v)``, ``u < v``, of ``<name>_A.txt`` and the number of self-loops."""
    n = len(indicator)
    directed: dict[tuple[int, int], int] = {}
    loops = 0
    for lineno, (u, v) in enumerate(_int_rows(path, "adjacency", 2), 1):
        for node in (u, v):
            if not 1 <= node <= n:
                raise ValueError(f"{path}:{lineno}: node {node} does not exist; expected node "
                                 f"ids 1..{n} ({ind_path.name} has {n} lines)")
        if indicator[u - 1] != indicator[v - 1]:
            raise ValueError(f"{path}:{lineno}: edge ({u}, {v}) joins graph {indicator[u - 1]} "
                             f"and graph {indicator[v - 1]}; expected both ends in one graph")
        if u == v:
            loops += 1
            continue
        directed.setdefault((u, v), lineno)
    for (u, v), lineno in directed.items():
        if (v, u) not in directed:
            raise ValueError(f"{path}:{lineno}: edge ({u}, {v}) has no reverse ({v}, {u}); "
                             "expected each undirected edge listed both ways (truncated file?)")
    return {(u, v) for u, v in directed if u < v}, loops
