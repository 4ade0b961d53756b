"""Why the deterministic samplers plateau on community-small (GDSS's released weights).

GDSS's community-small model diffuses X and A with VP(beta 0.1 -> 1.0) up to T = 1, where
``alpha(T) = exp(-0.275) = 0.76`` and ``sigma(T) = 0.65``: the true marginal at T keeps most of the
data (SNR 1.36) and is far from the N(0, I) prior every sampler starts from. This script measures,
on GDSS's exact test split (the first 20% of ``DIR/data/community_small.pkl``):

* ``prior`` starts: DDIM / DPM-Solver / DPM-Solver++(2M) at several NFE, and stochastic S4 / PC;
* the continuous adjacency each run ends at (histogram of the masked off-diagonal entries before
  the ``>= 0.5`` threshold, and the edge density after it, beside the test graphs' density);
* ``marginal`` starts: the same samplers from forward-noised *training* graphs at T
  (``alpha(T) A0 + sigma(T) z``, sizes taken from those graphs) - the true marginal, so any
  remaining gap is the ODE / network, not the prior;
* ``moment`` starts: a Gaussian with the true marginal's per-entry mean and std (from the training
  graphs' edge density and degree-feature frequencies; no test information) - a cheap prior fix.

    DOMAINDIFF_THREADS=2 python benchmarks/graphs_deterministic_samplers.py \\
        --gdss-dir /work/shared/data/gdss --seeds 3 --graphs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs"), str(ROOT / "benchmarks")]

from graphs_gdss_released import METRICS, REFERENCE_CODE  # noqa: E402

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs.data import graph_to_data  # noqa: E402
from domaindiff_graphs.gdss_import import import_gdss, read_gdss_checkpoint  # noqa: E402
from domaindiff_graphs.graphs import read_graph_pickle  # noqa: E402
from domaindiff_graphs.metrics import graph_metrics  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_options  # noqa: E402

BINS = (-np.inf, 0.1, 0.25, 0.5, 0.75, 0.9, np.inf)
DETERMINISTIC = {"ddim": {}, "dpm_solver": {"order": 2}, "dpm_solver_pp_2m": {}}


def dense(model, graphs: list) -> dict[str, torch.Tensor]:
    """Graphs as the model's dense state (one-hot degree features, as GDSS)."""
    batch = Batch.from_data_list([graph_to_data(g, model.max_feat) for g in graphs])
    return model.batch_to_state(batch)


def marginal_start(model, graphs: list, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Samples of the true marginal at T: ``alpha(T) x0 + sigma(T) z`` of the given graphs."""
    st = dense(model, graphs)
    for k, p in model.processes.items():
        t = torch.tensor(float(p.T))
        z = p.space.noise(st[k], st, gen)
        st[k] = float(p.alpha(t)) * p.space.project(st[k], st) + float(p.sigma(t)) * z
    return st


def adj_stats(samples: dict[str, torch.Tensor]) -> dict:
    """Histogram of the continuous adjacency (masked off-diagonal entries) and edge density."""
    adj, mask = samples["adj"], samples["mask"]
    m = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(adj.shape[-1]))
    vals = (0.5 * (adj + adj.transpose(-1, -2)))[m > 0].numpy()
    hist, _ = np.histogram(vals, bins=BINS)
    return {"hist_fraction": (hist / hist.sum()).tolist(), "edge_density": float((vals >= 0.5)
            .mean()), "mean": float(vals.mean()), "std": float(vals.std())}


def run(model, test, train, label, start, sampler, nfe, opts, seeds, n) -> dict:
    """One configuration over ``seeds``: MMDs, seconds per graph and adjacency statistics."""
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        if start == "marginal":
            idx = torch.randperm(len(train), generator=gen)[:n].tolist()
            tmpl = marginal_start(model, [train[i] for i in idx], gen)
        else:
            tmpl = model.sample_template(n, generator=gen)
        kw = {"prior": {"prior": "standard", "moment": "moment_matched"}.get(start, False)}
        t0 = time.perf_counter()
        out = model.sample(template=tmpl, sampler=sampler, steps=nfe, generator=gen, **kw,
                           **opts)
        secs = (time.perf_counter() - t0) / n
        met = graph_metrics(test, model.decode(out), orbit=True)
        row = {k: float(met[k]) for k in METRICS}
        row.update({"seconds_per_graph": secs, "nfe": int(model.last_nfe), **adj_stats(out)})
        per_seed.append(row)
        print(f"  {label} seed {seed}: " + " ".join(f"{k[:-4]} {row[k]:.4f}" for k in METRICS)
              + f" density {row['edge_density']:.3f} mid(0.25-0.75) "
              f"{sum(row['hist_fraction'][2:4]):.3f} {secs:.3f} s/graph", flush=True)
    res = {"config": label, "start": start, "sampler": sampler, "nfe": nfe, "options": opts,
           "seeds": list(seeds), "num_graphs": n, "per_seed": per_seed}
    for k in (*METRICS, "edge_density", "seconds_per_graph"):
        v = np.array([p[k] for p in per_seed])
        res[k], res[k + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
    res["mid_fraction"] = float(np.mean([sum(p["hist_fraction"][2:4]) for p in per_seed]))
    return res


def plan(nfes: list[int], starts: list[str], ref_opts: dict) -> list[tuple]:
    """(label, start, sampler, nfe, options) of every configuration."""
    out = []
    for start in starts:
        for name, opts in DETERMINISTIC.items():
            for k in nfes:
                out.append((f"{start}/{name}{k}", start, name, k, opts))
        out.append((f"{start}/s4_100", start, "s4", 100,
                    {**fast_s4_options(100, float(ref_opts["snr"]), 1000), "eps": 1e-4}))
        out.append((f"{start}/pc100", start, "gdss_pc", 200, ref_opts))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, required=True)
    ap.add_argument("--nfe", nargs="+", type=int, default=[20, 50, 100, 200])
    ap.add_argument("--starts", nargs="+", default=["prior", "marginal", "moment"],
                    choices=["prior", "marginal", "moment"])
    ap.add_argument("--only", nargs="*", default=None, help="only these config labels")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--graphs", type=int, default=None, help="graphs per seed (default: the "
                    "test-set size)")
    ap.add_argument("--dataset", default="community_small",
                    choices=["community_small", "ego_small"])
    ap.add_argument("--out", type=Path, default=None,
                    help="default benchmarks/results/graphs_deterministic_<dataset>_cpu.json")
    args = ap.parse_args(argv)
    args.out = args.out or (ROOT / "benchmarks" / "results"
                            / f"graphs_deterministic_{args.dataset}_cpu.json")
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    src = args.gdss_dir / "checkpoints" / args.dataset / f"gdss_{args.dataset}.pth"
    raw = read_gdss_checkpoint(src)
    graphs = read_graph_pickle(args.gdss_dir / "data" / f"{args.dataset}.pkl")
    n_test = int(float(raw["model_config"]["data"]["test_split"]) * len(graphs))
    test, train = graphs[:n_test], graphs[n_test:]
    with tempfile.TemporaryDirectory() as tmp:  # node counts and prior moments from train
        model = import_gdss(src, Path(tmp) / "m.ckpt", train_graphs=train)
    mom = model.prior_moments
    n_graphs = args.graphs or len(test)
    p = model.processes["adj"]
    t = torch.tensor(float(p.T))
    test_st = dense(model, test)
    a_t, s_t = float(p.alpha(t)), float(p.sigma(t))
    prior_info = {"alpha_T": a_t, "sigma_T": s_t, "snr_T": a_t ** 2 / s_t ** 2,
                  "test_edge_density": adj_stats(test_st)["edge_density"],
                  "data_edge_density": float(mom["adj_mean"]),
                  "marginal_adj_mean": a_t * float(mom["adj_mean"]), "marginal_adj_std":
                  (a_t**2 * float(mom["adj_var"]) + s_t**2) ** 0.5,
                  "prior_mean": 0.0, "prior_std": float(p.prior_std)}
    print(prior_info, flush=True)
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core host",
              "torch": torch.__version__, "dataset": f"{args.dataset} (GDSS file, GDSS split)",
              "num_test_graphs": len(test), "prior_vs_marginal_at_T": prior_info,
              "reference_code_3_seeds": dict(zip(METRICS, REFERENCE_CODE[args.dataset],
                                                 strict=True)), "rows": []}
    if args.out.exists():  # resume: keep rows already measured
        result["rows"] = json.loads(args.out.read_text()).get("rows", [])
    done = {r["config"] for r in result["rows"]}
    seeds = range(args.seeds)
    for label, start, sampler, nfe, opts in plan(args.nfe, args.starts,
                                                 dict(model.hparams["sampler_options"])):
        if label in done or (args.only and label not in args.only):
            continue
        result["rows"].append(run(model, test, train, label, start, sampler, nfe, opts, seeds,
                                  n_graphs))
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    """Markdown table of the rows."""
    print("\n| start | sampler | NFE | degree | clustering | orbit | edge density | "
          "adj in (0.25, 0.75) | s/graph |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['start']} | {r['sampler']} | {r['per_seed'][0]['nfe']} | "
              + " | ".join(f"{r[k]:.3f}±{r[k + '_std']:.3f}" for k in METRICS)
              + f" | {r['edge_density']:.3f} | {r['mid_fraction']:.3f} | "
              f"{r['seconds_per_graph']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
