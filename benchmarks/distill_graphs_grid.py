"""Community-small: the round-1 flow sampled on few-step grids picked from its own grid, no distillation.

``distill_graphs.py --method reflow-stochastic`` trains a flow on S4's coupling at the
``--flow-steps`` times of its grid (``T = t_0 > ... > t_15``, uniform in ``t`` for GDSS's VP
processes) and straightens it onto a 4-step student on every fourth of them. This benchmark asks
what the flow itself gives at ``--steps`` NFE on a grid placed where its ODE curves most: every
``--steps``-point subset of the flow's grid that starts at ``T`` (the flow was trained at those
times only; the sample is the last clean prediction, as the ``distilled`` sampler ends) is scored
by the mean squared distance of its ``distilled`` ODE output to the flow's own
``--flow-steps``-step ODE output from the same ``--search-graphs`` N(0, I) draws (seed
``--search-seed``, none of the test seeds): the global error of the coarse grid against the fine
one, the objective of :func:`domaindiff.samplers.schedule.optimize_grid` restricted to the
flow's times. The ``--top`` grids of least error, the default grid (every
``flow_steps / steps``-th time) and any ``--grid`` given (indices into the flow's grid) are then
sampled on GDSS's test split over ``--seeds`` seeds (degree / clustering / orbit MMD), with the
flow at ``--flow-steps`` and at 1 NFE and the teacher's fast S4 at 100 NFE in the same run.

    DOMAINDIFF_THREADS=1 python benchmarks/distill_graphs_grid.py --gdss-dir /work/shared/data/gdss \
        --flow /tmp/work/flow_16_3000.ckpt --work /tmp/grid --out benchmarks/results/NAME.json

The pick is the first of the ``--top`` rows (least ODE error); the others are reported, not
chosen among on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs"), str(ROOT / "benchmarks")]

from distill_graphs import community_small_teacher, print_table  # noqa: E402
from graphs_deterministic_samplers import run  # noqa: E402

from domaindiff.checkpoint import load_checkpoint  # noqa: E402
from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff.distill.sampling import distilled_times, grid_times, subset_grids  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_options  # noqa: E402


def ode_errors(model, flow_steps: int, grids: list[tuple[int, ...]], n: int, seed: int
               ) -> list[float]:
    """Mean squared distance of each grid's ``distilled`` output to the ``flow_steps``-step one.

    Every solve starts from the same ``n`` N(0, I) draws (template and prior from ``seed``); the
    distance is summed over the diffused components, each the mean over its entries.
    """
    fine = distilled_times(model.processes, flow_steps)

    def solve(ts: list[float]) -> dict:
        gen = torch.Generator().manual_seed(seed)
        tmpl = model.sample_template(n, generator=gen)
        with torch.no_grad():
            return model.sample(template=tmpl, sampler="distilled", generator=gen,
                                prior="standard", timesteps=ts)

    ref = solve(fine)
    out = []
    for index in grids:
        got = solve(grid_times(fine, index))
        out.append(sum(float(((got[k] - ref[k]).double() ** 2).mean())
                       for k in model.processes))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, required=True)
    ap.add_argument("--flow", type=Path, required=True,
                    help="the round-1 flow checkpoint (distill_graphs.py's flow_16_STEP.ckpt)")
    ap.add_argument("--flow-steps", type=int, default=16, help="the flow's grid")
    ap.add_argument("--steps", type=int, default=4, help="the few-step grid's NFE")
    ap.add_argument("--work", type=Path, required=True, help="the imported teacher")
    ap.add_argument("--search-graphs", type=int, default=128)
    ap.add_argument("--search-seed", type=int, default=1000)
    ap.add_argument("--top", type=int, default=3, help="grids of least ODE error sampled")
    ap.add_argument("--grid", type=int, nargs="+", action="append", default=[],
                    help="also sample this grid (indices into the flow's grid, starting at 0)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not 1 <= args.steps <= args.flow_steps:
        ap.error(f"--steps {args.steps} must be in [1, --flow-steps {args.flow_steps}]")
    for g in args.grid:
        if (len(g) != args.steps or g[0] != 0 or any(b <= a for a, b in zip(g, g[1:]))
                or g[-1] >= args.flow_steps):
            ap.error(f"--grid {' '.join(map(str, g))}: need {args.steps} increasing indices "
                     f"from 0 below {args.flow_steps}")
    if not args.flow.is_file():
        ap.error(f"--flow {args.flow}: no such checkpoint")
    threads, raw, test, train, teacher_path, teacher = community_small_teacher(args.gdss_dir,
                                                                               args.work)
    flow = load_checkpoint(args.flow)
    fine = distilled_times(flow.processes, args.flow_steps)
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__, "command": " ".join(sys.argv),
              "load_average_start": os.getloadavg(), "flow": str(args.flow),
              "flow_grid": fine, "dataset": "community_small (GDSS file, GDSS split, 20 test "
              "graphs)", "rows": []}
    t0 = time.thread_time()
    grids = subset_grids(args.flow_steps, args.steps)
    errors = ode_errors(flow, args.flow_steps, grids, args.search_graphs, args.search_seed)
    ranked = sorted(zip(errors, grids, strict=True))
    default = tuple(range(0, args.flow_steps, args.flow_steps // args.steps))[:args.steps]
    result["search"] = {"graphs": args.search_graphs, "seed": args.search_seed,
                        "candidates": len(grids), "cpu_seconds": time.thread_time() - t0,
                        "ranked": [{"index": list(g), "times": grid_times(fine, g),
                                    "ode_error": e} for e, g in ranked],
                        "default_index": list(default),
                        "default_ode_error": dict(zip(grids, errors, strict=True)).get(default)}
    print(f"grid search: {len(grids)} grids in {result['search']['cpu_seconds']:.0f} CPU s; "
          f"best {ranked[0][1]} error {ranked[0][0]:.4g}, default {default} error "
          f"{result['search']['default_ode_error']}", flush=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    seeds = range(args.seeds)

    def measure(model, label, sampler, nfe, opts, extra) -> None:
        t1 = time.thread_time()
        row = run(model, test, train, label, "prior", sampler, nfe, opts, seeds, len(test))
        row["cpu_seconds"] = time.thread_time() - t1
        if row["nfe"] is None:  # a caller's grid: the evaluations it made
            row["nfe"] = row["per_seed"][0]["nfe"]
        row.update(extra)
        result["rows"].append(row)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")

    snr = float(teacher.hparams["sampler_options"]["snr"])
    measure(teacher, "teacher/s4_100", "s4", 100,
            {**fast_s4_options(100, snr, 1000), "eps": 1e-4}, {"role": "teacher"})
    measure(flow, f"flow{args.flow_steps}", "distilled", args.flow_steps, {}, {"role": "flow"})
    measure(flow, "flow/nfe1", "distilled", 1, {}, {"role": "flow"})
    picks = [("default", default)] + [(f"top{i + 1}", g) for i, (_, g) in
                                       enumerate(ranked[:args.top])]
    picks += [("given", tuple(g)) for g in args.grid]
    seen = set()
    err = dict(zip(grids, errors, strict=True))
    for name, g in picks:
        if g in seen:
            continue
        seen.add(g)
        ts = grid_times(fine, g)
        measure(flow, f"flow/grid{'-'.join(map(str, g))}", "distilled", None,
                {"timesteps": ts}, {"role": "flow", "grid": name, "grid_index": list(g),
                                    "ode_error": err[g]})
    result["load_average_end"] = os.getloadavg()
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
