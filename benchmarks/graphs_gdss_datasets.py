"""Check the plugin's offline datasets against GDSS's released files (read, never copied).

For each dataset, compares what the plugin builds with what GDSS trained and tested on:

- community-small: every community of GDSS's ``community_small.pkl`` against
  ``gnp_random_graph(size, 0.7, seed=i)`` (exact), and MMD (degree / clustering / orbit, the
  plugin's metrics) between our regenerated test split (seeds ``--seeds``) and GDSS's, beside
  GDSS's own train-vs-test MMD and that of random 20-graph subsets of GDSS's train set;
- ego-small: our 200 ego nets of ``dataset/ind.citeseer.graph`` against ``ego_small.pkl``;
- ENZYMES: our reader on ``dataset/ENZYMES`` against ``ENZYMES.pkl``;
- grid: the (m, n) statistics of ``grid.pkl`` and of our draws;
- the split: ``GraphFile`` on each ``.pkl`` against GDSS's ``graph_list[:int(0.2 * n)]``;
- QM9: ``qm9pack`` with ``data/valid_idx_qm9.json`` (test molecules found / missing).

Prints a table and writes JSON next to the other results.

    python benchmarks/graphs_gdss_datasets.py --gdss-dir /work/shared/data/gdss
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import networkx as nx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs")]  # runs uninstalled too

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs import data as D  # noqa: E402
from domaindiff_graphs import graphs as G  # noqa: E402
from domaindiff_graphs import metrics as M  # noqa: E402


def edge_sets(graphs: list[nx.Graph]) -> list[tuple[int, frozenset]]:
    """Each graph as (nodes, edges) with nodes numbered in sorted-id order."""
    out = []
    for g in graphs:
        m = {v: k for k, v in enumerate(sorted(g.nodes()))}
        out.append((g.number_of_nodes(), frozenset(frozenset((m[u], m[v])) for u, v in g.edges())))
    return out


def same(a: list[nx.Graph], b: list[nx.Graph]) -> int:
    """How many graphs of ``a`` equal the graph at the same position of ``b``."""
    return sum(x == y for x, y in zip(edge_sets(a), edge_sets(b)))


def mmd(ref: list[nx.Graph], pred: list[nx.Graph]) -> dict[str, float]:
    """Degree / clustering / orbit MMD (the plugin's metrics, GDSS's kernels)."""
    out = M.graph_metrics(ref, pred)
    return {k: round(float(out[k]), 5) for k in ("degree_mmd", "clustering_mmd", "orbit_mmd")}


def spread(rows: list[dict[str, float]]) -> dict[str, str]:
    """Mean +- standard deviation of each metric over rows."""
    return {k: f"{np.mean([r[k] for r in rows]):.4f} +- {np.std([r[k] for r in rows]):.4f}"
            for k in rows[0]}


def community_small(gdss: Path, seeds: int) -> dict:
    """Exact communities, and MMD of our test split against GDSS's."""
    ref = G.read_graph_pickle(gdss / "data" / "community_small.pkl")
    exact = 0
    for g in ref:
        s = g.number_of_nodes() // 2
        base = nx.disjoint_union_all([nx.gnp_random_graph(s, 0.7, seed=i) for i in range(2)])
        intra = {frozenset(e) for e in g.edges() if (e[0] < s) == (e[1] < s)}
        exact += intra == {frozenset(e) for e in base.edges()}
    test, train = ref[:20], ref[20:]
    drawn = [G.community_small_graphs(100, seed) for seed in range(seeds)]
    ours = [mmd(test, graphs[:20]) for graphs in drawn]
    ours_train = [mmd(test, graphs[20:]) for graphs in drawn]
    rng = np.random.default_rng(0)
    subsets = [mmd(test, [train[i] for i in rng.choice(len(train), 20, replace=False)])
               for _ in range(seeds)]
    return {"graphs": len(ref), "communities_equal_gnp_seed_i": exact,
            "gdss_train_vs_gdss_test": mmd(test, train),
            "our_test_vs_gdss_test_per_seed": ours, "our_test_vs_gdss_test": spread(ours),
            "our_train_vs_gdss_test": spread(ours_train),
            "gdss_train_subsets20_vs_gdss_test": spread(subsets)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gdss-dir", required=True, type=Path,
                        help="a copy of GDSS's files (data/, dataset/)")
    parser.add_argument("--seeds", type=int, default=5, help="generator seeds for the MMD rows")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "graphs_gdss_datasets_cpu.json")
    args = parser.parse_args(argv)
    gdss, t0 = args.gdss_dir, time.time()
    if not (gdss / "data").is_dir():
        print(f"--gdss-dir: {gdss}/data is not a directory; expected GDSS's files",
              file=sys.stderr)
        return 2
    result: dict = {"machine": platform.platform(), "processor": platform.processor(),
                    "settings": f"CPU only, DOMAINDIFF_THREADS={os.environ.get('DOMAINDIFF_THREADS')}"
                                f", {os.cpu_count()} cores shared, seeds 0..{args.seeds - 1}"}
    result["community_small"] = community_small(gdss, args.seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        egos = G.ego_graphs(G.read_planetoid_graph(gdss / "dataset" / "ind.citeseer.graph"))
        enzymes = G.read_tu_graphs(gdss / "dataset" / "ENZYMES", "ENZYMES")
    ref_ego = G.read_graph_pickle(gdss / "data" / "ego_small.pkl")
    ref_enz = G.read_graph_pickle(gdss / "data" / "ENZYMES.pkl")
    result["ego_small"] = {"graphs": len(ref_ego), "ours_equal": same(egos, ref_ego)}
    result["ENZYMES"] = {"graphs": len(ref_enz), "ours_equal": same(enzymes, ref_enz)}
    ref_grid = G.read_graph_pickle(gdss / "data" / "grid.pkl")
    pairs = {(g.number_of_nodes() // max(g.neighbors(0)), max(g.neighbors(0))) for g in ref_grid}
    ours = G.grid_graphs(100, 0)
    result["grid"] = {"graphs": len(ref_grid), "gdss_distinct_mn": len(pairs),
                      "ours_distinct_mn_seed0": len({(g.number_of_nodes(), max(g.neighbors(0)))
                                                     for g in ours}),
                      "gdss_nodes": sum(g.number_of_nodes() for g in ref_grid),
                      "ours_nodes_seed0": sum(g.number_of_nodes() for g in ours)}
    split = {}
    for name, max_nodes in (("community_small", 20), ("ego_small", 18), ("grid", 361),
                            ("ENZYMES", 125)):
        path = gdss / "data" / f"{name}.pkl"
        ref = [nx.convert_node_labels_to_integers(g) for g in G.read_graph_pickle(path)]
        dm = D.GraphFile(str(path), max_nodes=max_nodes, root=tempfile.mkdtemp())  # writes none
        dm.setup()
        n_test = int(0.2 * len(ref))
        split[name] = {"test": len(dm.test_items), "test_equal": same(dm.test_graphs(),
                                                                      ref[:n_test]),
                       "train_equal": same(dm.train_graphs(), ref[n_test:])}
    result["graph_file_split"] = split
    try:
        train, test, report = D.qm9pack_rows(D.qm9pack_data_dir(),
                                             gdss / "data" / "valid_idx_qm9.json")
        result["qm9"] = {"train": len(train), "test": len(test), "report": report}
    except (D.DatasetUnavailableError, FileNotFoundError, ValueError) as err:
        result["qm9"] = {"error": str(err)}
    result["seconds"] = round(time.time() - t0, 1)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    cs = result["community_small"]
    print(f"{'dataset':<16} {'check':<48} result")
    print(f"{'community_small':<16} {'communities = gnp(size, 0.7, seed=i)':<48} "
          f"{cs['communities_equal_gnp_seed_i']}/{cs['graphs']}")
    for label, key in (("GDSS train vs GDSS test", "gdss_train_vs_gdss_test"),
                       (f"our test vs GDSS test ({args.seeds} seeds)", "our_test_vs_gdss_test"),
                       (f"our train vs GDSS test ({args.seeds} seeds)", "our_train_vs_gdss_test"),
                       ("20 GDSS train vs GDSS test", "gdss_train_subsets20_vs_gdss_test")):
        print(f"{'':<16} {label + ' (deg/clus/orb)':<48} "
              f"{' / '.join(str(v) for v in cs[key].values())}")
    for name in ("ego_small", "ENZYMES"):
        r = result[name]
        print(f"{name:<16} {'our graphs = GDSS file, in order':<48} {r['ours_equal']}/{r['graphs']}")
    g = result["grid"]
    print(f"{'grid':<16} {'distinct (m, n): GDSS / ours seed 0':<48} "
          f"{g['gdss_distinct_mn']} / {g['ours_distinct_mn_seed0']}")
    for name, r in split.items():
        print(f"{name:<16} {'GraphFile split = GDSS [:20%] / [20%:]':<48} "
              f"{r['test_equal']}/{r['test']} test, {r['train_equal']} train")
    print(f"{'qm9':<16} {'qm9pack + valid_idx_qm9.json':<48} "
          f"{result['qm9'].get('test', '-')} test, {result['qm9'].get('train', '-')} train")
    print(f"wrote {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
