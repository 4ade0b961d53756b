"""Exact node orbit counts of the graphlets on 2-4 nodes (ORCA's 15 orbits, ``orca node 4``).

Orbits (Przulj's numbering, as ORCA): 0 edge; 1/2 end/middle of the 3-path; 3 triangle;
4/5 end/inner of the 4-path; 6/7 leaf/centre of the 3-star; 8 4-cycle; 9/10/11 tail end,
degree-2 triangle node and degree-3 centre of the paw; 12/13 degree-2/degree-3 node of the diamond;
14 the 4-clique. Counts are over *induced* connected subgraphs, as ORCA's.

Every connected induced subgraph on 3 or 4 nodes is enumerated exactly once (ESU, Wernicke 2006)
and each node is given the orbit fixed by its degree inside the subgraph and the subgraph's edge
count, which identifies the orbit uniquely for graphlets of up to 4 nodes.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

NUM_ORBITS = 15

# (number of edges, degree inside the graphlet) -> orbit, for the 4-node graphlets whose orbits
# the degree alone decides (diamond, clique); paths/stars and cycles/paws are resolved below
_ORBIT4 = {(5, 2): 12, (5, 3): 13, (6, 3): 14}


def _classify4(m: int, degs: list[int]) -> list[int]:
    if m == 3:
        if max(degs) == 3:  # star
            return [7 if d == 3 else 6 for d in degs]
        return [4 if d == 1 else 5 for d in degs]  # path
    if m == 4:
        if min(degs) == 2:  # cycle
            return [8] * 4
        return [{1: 9, 2: 10, 3: 11}[d] for d in degs]  # paw
    return [_ORBIT4[(m, d)] for d in degs]


def _connected_subsets(adj: list[set[int]], k: int):
    """ESU: every connected induced node set of size ``k`` exactly once."""
    n = len(adj)

    def extend(sub: list[int], ext: set[int], v: int, nbhd: set[int]):
        if len(sub) == k:
            yield sub
            return
        ext = set(ext)
        while ext:
            w = ext.pop()
            new_ext = ext | {u for u in adj[w] if u > v and u not in nbhd}
            yield from extend(sub + [w], new_ext, v, nbhd | adj[w])

    for v in range(n):
        ext = {u for u in adj[v] if u > v}
        yield from extend([v], ext, v, adj[v] | {v})


def orbit_counts(g: nx.Graph) -> np.ndarray:
    """Per-node counts of the 15 orbits of graphlets on 2-4 nodes, shape ``(n, 15)``.

    Nodes are taken in ``sorted(g.nodes())`` order when sortable (else insertion order); self
    loops and edge multiplicities are ignored.
    """
    try:
        nodes = sorted(g.nodes())
    except TypeError:
        nodes = list(g.nodes())
    index = {u: i for i, u in enumerate(nodes)}
    adj: list[set[int]] = [set() for _ in nodes]
    for u, v in g.edges():
        if u != v:
            adj[index[u]].add(index[v])
            adj[index[v]].add(index[u])
    out = np.zeros((len(nodes), NUM_ORBITS), dtype=np.int64)
    for i, nb in enumerate(adj):
        out[i, 0] = len(nb)
    for sub in _connected_subsets(adj, 3):
        degs = [len(adj[u] & set(sub)) for u in sub]
        if sum(degs) == 6:
            for u in sub:
                out[u, 3] += 1
        else:
            for u, d in zip(sub, degs):
                out[u, 2 if d == 2 else 1] += 1
    for sub in _connected_subsets(adj, 4):
        s = set(sub)
        degs = [len(adj[u] & s) for u in sub]
        for u, o in zip(sub, _classify4(sum(degs) // 2, degs)):
            out[u, o] += 1
    return out
