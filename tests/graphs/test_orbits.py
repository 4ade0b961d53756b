"""Orbit counts: hand-computed graphlets and brute force over all node subsets."""

import itertools

import networkx as nx
import numpy as np
import pytest

from domaindiff_graphs.orbits import orbit_counts

# each 4-node graphlet with the ORCA orbit of each of its nodes (Przulj's numbering)
GRAPHLETS = {
    "path": (nx.path_graph(4), {0: 4, 1: 5, 2: 5, 3: 4}),
    "star": (nx.star_graph(3), {0: 7, 1: 6, 2: 6, 3: 6}),
    "cycle": (nx.cycle_graph(4), {0: 8, 1: 8, 2: 8, 3: 8}),
    "paw": (nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)]), {0: 10, 1: 10, 2: 11, 3: 9}),
    "diamond": (nx.Graph([(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]), {0: 13, 1: 12, 2: 13, 3: 12}),
    "clique": (nx.complete_graph(4), {0: 14, 1: 14, 2: 14, 3: 14}),
}


@pytest.mark.parametrize("name", list(GRAPHLETS))
def test_single_graphlet_orbits(name):
    g, orbits = GRAPHLETS[name]
    c = orbit_counts(g)
    for v, o in orbits.items():
        assert c[v, o] == 1
        assert c[v, 4:].sum() == 1  # exactly one 4-node graphlet
        assert c[v, 0] == g.degree(v)


def test_hand_counted_small_orbits():
    # triangle with a pendant (paw): node 2 is in 1 triangle and centres 2 paths (0-2-3, 1-2-3)
    c = orbit_counts(nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)]))
    np.testing.assert_array_equal(c[2, :4], [3, 0, 2, 1])
    np.testing.assert_array_equal(c[3, :4], [1, 2, 0, 0])
    # K5: each node is in C(4,3)=4 K4s and C(4,2)=6 triangles, nothing else
    c = orbit_counts(nx.complete_graph(5))
    assert (c[:, 14] == 4).all() and (c[:, 3] == 6).all() and c[:, [1, 2] + list(range(4, 14))].sum() == 0


def _brute_force(g):
    """Every 2/3/4-subset, induced subgraph matched to templates with networkx isomorphism."""
    nodes = sorted(g.nodes())
    out = np.zeros((len(nodes), 15), dtype=np.int64)
    idx = {v: i for i, v in enumerate(nodes)}
    tri = {"p3": (nx.path_graph(3), {0: 1, 1: 2, 2: 1}), "k3": (nx.complete_graph(3),
                                                                  {0: 3, 1: 3, 2: 3})}
    for u, v in g.edges():
        out[idx[u], 0] += 1
        out[idx[v], 0] += 1
    for k, templates in ((3, tri), (4, GRAPHLETS)):
        for sub in itertools.combinations(nodes, k):
            h = g.subgraph(sub)
            if not nx.is_connected(h):
                continue
            for tmpl, orbit_of in templates.values():
                gm = nx.algorithms.isomorphism.GraphMatcher(h, tmpl)
                if gm.is_isomorphic():
                    for a, b in gm.mapping.items():
                        out[idx[a], orbit_of[b]] += 1
                    break
    return out


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_on_random_graphs(seed):
    g = nx.gnp_random_graph(11, 0.35 + 0.1 * seed, seed=seed)
    np.testing.assert_array_equal(orbit_counts(g), _brute_force(g))


def test_matches_brute_force_on_community_graph():
    from domaindiff_graphs.graphs import community_small_graphs

    g = community_small_graphs(1, seed=3)[0]
    np.testing.assert_array_equal(orbit_counts(g), _brute_force(g))
