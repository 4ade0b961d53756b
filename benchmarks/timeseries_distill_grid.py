"""A TSDiff round-1 flow (and its student) on a 4-step grid picked by ODE error, CRPS on Taylor.

``benchmarks/timeseries_distill.py --guided-coupling --flow-row`` leaves the round-1 flow of the
guided coupling (a TSDiff-Cond reading the context) and the straightened student. This script:

1. scores every ``--steps``-point sub-grid of the flow's ``--flow-steps`` grid that starts at
   ``T`` (:func:`domaindiff.distill.sampling.subset_grids`: 455 for 4 of 16) by the mean
   squared distance of its ``distilled`` forecast to the full grid's, from the same prior draws,
   on ``--search-windows`` windows cut from the **training** part of the series (the test
   windows are not looked at);
2. scores on the 7 rolling test windows, in one run and with the same samples per window: the
   teacher's DDPM-100 (TSDiff-Q's rule) and its fast guided 10-NFE sampler, the flow on its full
   grid, on the uniform ``--steps`` grid and on the ``--top`` grids of least ODE error, and the
   student (if given) on its own grid, at 1 NFE and on the best grid.

Prints and writes (JSON) per row: NFE, CRPS, ND, MASE, seconds per window, the ratio to the
teacher's best row and to its DDPM-100.

    python benchmarks/timeseries_distill_grid.py --teacher T.ckpt --flow RUN/flow.ckpt \\
        --student RUN/student.ckpt --seed 0 --out benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timeseries_distill import TEACHER_Q  # noqa: E402

TEACHERS = {k: v for k, v in TEACHER_Q.items() if k.startswith("tsdiff_q/")
            and "dpm_solver_pp_2m-20" not in k}


def search_windows(dm, count: int) -> list[dict]:
    """``count`` windows ending at evenly spaced points of the training series (no test data)."""
    from domaindiff_timeseries.data import make_window

    dm.load()
    length = dm.context_length + dm.prediction_length
    out = []
    per = max(1, count // len(dm.train_series))
    for s in dm.train_series:
        s = np.asarray(s)
        if len(s) < length:
            continue
        for end in np.linspace(length, len(s), per).astype(int):
            w = make_window(s, int(end), dm.context_length, dm.prediction_length, dm.max_lag)
            w["history"] = s[:int(end) - dm.prediction_length]
            out.append(w)
    if not out:
        raise SystemExit(f"error: no training series holds a {length}-step window")
    short = sum(len(s) < length for s in dm.train_series)
    print(f"grid search on {min(len(out), count)} training windows (asked for {count}; "
          f"{short} of {len(dm.train_series)} training series shorter than {length} steps)",
          flush=True)
    return out[:count]


def grid_errors(flow, windows: list[dict], grids: list[tuple[int, ...]], fine: list[float],
                samples: int, seed: int) -> list[float]:
    """Mean squared distance of each grid's forecast to the full grid's (same draws)."""
    from tqdm import tqdm

    from domaindiff.distill.sampling import grid_times
    from domaindiff_timeseries.forecast import forecast

    def solve(ts: list[float]) -> np.ndarray:
        return forecast(flow, windows, samples, guidance="none", sampler="distilled",
                        steps=len(ts) - 1, timesteps=ts, seed=seed, progress=False)

    ref = solve(fine)
    return [float(((solve(grid_times(fine, g)) - ref) ** 2).mean())
            for g in tqdm(grids, desc="grid search")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True, help="the TSDiff teacher checkpoint")
    ap.add_argument("--flow", required=True, help="the round-1 flow (flow.ckpt)")
    ap.add_argument("--student", default=None, help="the straightened student (student.ckpt)")
    ap.add_argument("--flow-steps", type=int, default=16, help="the flow's grid")
    ap.add_argument("--steps", type=int, default=4, help="the few-step grid's NFE")
    ap.add_argument("--search-windows", type=int, default=16)
    ap.add_argument("--search-samples", type=int, default=8)
    ap.add_argument("--search-seed", type=int, default=1000)
    ap.add_argument("--top", type=int, default=3, help="grids of least ODE error scored")
    ap.add_argument("--samples", type=int, default=16, help="samples per test window")
    ap.add_argument("--scale", type=float, default=4.0, help="the DDPM-100 row's guidance scale")
    ap.add_argument("--seed", type=int, default=0, help="the scoring seed")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for name in ("teacher", "flow", "student"):
        path = getattr(args, name)
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"error: --{name} {path}: no such file")
    if not 1 <= args.steps <= args.flow_steps:
        raise SystemExit(f"error: --steps must be in [1, --flow-steps {args.flow_steps}], got "
                         f"{args.steps}")
    torch.set_num_threads(int(os.environ.get("DOMAINDIFF_THREADS", "1")))
    from domaindiff.data import atomic_write_text
    from domaindiff.distill.sampling import distilled_times, grid_times, subset_grids
    from domaindiff.module import load_checkpoint
    from domaindiff.quiet import quiet_third_party
    from domaindiff_timeseries.baselines import gluonts_seasonal_naive
    from domaindiff_timeseries.data import TimeSeriesData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import forecast_metrics

    quiet_third_party()
    teacher, flow = load_checkpoint(args.teacher), load_checkpoint(args.flow)
    student = load_checkpoint(args.student) if args.student else None
    dm = TimeSeriesData(context_length=teacher.context_length,
                        prediction_length=teacher.prediction_length, lags=teacher.lags)
    wins = dm.test_windows()
    c = teacher.context_length
    target = np.stack([w["target"][c:] for w in wins])
    hist = [w["history"] for w in wins]
    res: dict = {"settings": {k: str(v) for k, v in vars(args).items()},
                 "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch "
                            "thread(s)", "torch": torch.__version__,
                 "load_average_start": os.getloadavg(), "rows": []}
    rows = res["rows"]

    def write() -> None:
        res["load_average_now"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")

    fine = distilled_times(flow.processes, args.flow_steps)
    grids = subset_grids(args.flow_steps, args.steps)
    t0 = time.perf_counter()
    errs = grid_errors(flow, search_windows(dm, args.search_windows), grids, fine,
                       args.search_samples, args.search_seed)
    order = np.argsort(errs)
    uniform = distilled_times(flow.processes, args.steps)
    res["search"] = {"grids": len(grids), "seconds": time.perf_counter() - t0,
                     "best": [{"index": list(grids[i]), "times": grid_times(fine, grids[i]),
                               "ode_error": errs[i]} for i in order[:args.top]],
                     "uniform_times": uniform}
    print(f"searched {len(grids)} grids in {res['search']['seconds']:.0f} s; best "
          f"{grid_times(fine, grids[order[0]])} (error {errs[order[0]]:.3g})", flush=True)
    write()

    def score(name: str, model, opts: dict) -> None:
        opts = dict(opts)
        scale = opts.pop("scale", args.scale)
        stats: dict = {}
        t1 = time.perf_counter()
        s = forecast(model, wins, args.samples, scale=scale, progress=False, stats=stats,
                     seed=args.seed, **opts)
        sec = (time.perf_counter() - t1) / len(wins)
        rows.append({"method": name, "options": opts, "scale": scale, "nfe": stats["nfe"],
                     **forecast_metrics(s, target, hist, dm.season), "seconds_per_window": sec})
        print(f"{name:58s} NFE {stats['nfe']:5.0f} CRPS {rows[-1]['CRPS']:.4f} {sec:.2f} s/win",
              flush=True)
        write()

    rows.append({"method": "seasonal_naive", "nfe": 0, **forecast_metrics(
        gluonts_seasonal_naive(wins, teacher.prediction_length, dm.freq, dm.season), target,
        hist, dm.season), "seconds_per_window": 0.0})
    for name, opts in TEACHERS.items():
        score(f"teacher {name}", teacher, opts)
    free = {"sampler": "distilled", "guidance": "none"}
    score(f"flow distilled-{args.flow_steps} (its grid)", flow,
          {**free, "steps": args.flow_steps})
    score(f"flow distilled-{args.steps} (uniform grid)", flow, {**free, "steps": args.steps})
    for rank, i in enumerate(order[:args.top]):
        ts = grid_times(fine, grids[i])
        score(f"flow distilled-{args.steps}, searched grid #{rank + 1} {grids[i]}", flow,
              {**free, "steps": args.steps, "timesteps": ts})
    if student is not None:
        score(f"student distilled-{args.steps} (its grid)", student,
              {**free, "steps": args.steps})
        score("student distilled-1", student, {**free, "steps": 1})
        score(f"student distilled-{args.steps}, searched grid #1", student,
              {**free, "steps": args.steps, "timesteps": grid_times(fine, grids[order[0]])})
    teach = [r for r in rows if r["method"].startswith("teacher")]
    best = min(teach, key=lambda r: r["CRPS"])
    ddpm = next(r for r in teach if "ddpm-100" in r["method"])
    for r in rows:
        r["crps_ratio_to_best_teacher"] = r["CRPS"] / best["CRPS"]
        r["crps_ratio_to_ddpm100"] = r["CRPS"] / ddpm["CRPS"]
    res["best_teacher"] = best["method"]
    write()
    print(f"\n{'method':62s} {'NFE':>5s} {'CRPS':>7s} {'/best':>6s} {'/ddpm':>6s} {'s/win':>6s}")
    for r in rows:
        print(f"{r['method']:62s} {r['nfe']:5.0f} {r['CRPS']:7.4f} "
              f"{r['crps_ratio_to_best_teacher']:6.3f} {r['crps_ratio_to_ddpm100']:6.3f} "
              f"{r['seconds_per_window']:6.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
