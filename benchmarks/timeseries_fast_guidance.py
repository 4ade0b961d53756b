"""Fast guided forecasting: CRPS of <= 10-NFE guided samplers over DDPM-100's, several seeds.

One run, one checkpoint, the same test windows (default: the offline Taylor demand's 7 rolling
days), every variant sampled with each of ``--seeds`` (the noise seed; nothing else changes).
Per variant: CRPS (GluonTS mean weighted quantile loss), ND and MASE per seed, their mean and
standard deviation over the seeds, NFE per sampled sequence (counted by a hook on the network)
and seconds per window. Per variant also the ratio of its mean CRPS to the reference's
(``--reference``, default TSDiff-Q DDPM-100, the paper's guided sampler, 199 NFE) and the ratio's
draw noise: the standard error of a ratio of two independent means,
``r * sqrt((se_a / a)^2 + (se_b / b)^2)`` with ``se = std / sqrt(seeds)``. A variant is within
``--target`` (default 3%) of the reference when its ratio is at most ``1 + target``; the claim
needs the ratio's draw noise below the target too (reported as ``noise_below_target``).

Variants are named as in ``benchmarks/timeseries.py`` (``<tsdiff_q|tsdiff_ms>/<sampler>-<steps>
[+eta<x>][+s<scale>][+x0-grad][+<k>inner][+x0steps<k>]``); ``+seed<k>`` is refused (the seeds
come from ``--seeds``).

    python benchmarks/timeseries_fast_guidance.py --ckpt run.ckpt --samples 16 --seeds 0,1,2,3 \\
        --variants tsdiff_q/ddpm-100,tsdiff_q/sde_dpm_solver_pp_2m-10+s32+x0steps4 \\
        --out benchmarks/results/timeseries_taylor_fast_guidance_trained.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from domaindiff.data import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = ("tsdiff_q/ddpm-100,tsdiff_q/sde_dpm_solver_pp_2m-10+s32+x0steps4,"
                    "tsdiff_q/sde_dpm_solver_pp_2m-10+s32,tsdiff_q/ddim-10+eta1+s32+x0steps4,"
                    "tsdiff_q/ddim-10+eta1+s32")


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_timeseries",
                                                  Path(__file__).with_name("timeseries.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _seeds(v: str) -> list[int]:
    try:
        out = [int(s) for s in v.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds: comma-separated integers, got {v!r}") from None
    if len(out) < 2 or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"--seeds: at least 2 distinct seeds (the spread needs "
                                         f"them), got {v!r}")
    return out


def ratio_noise(a: list[float], b: list[float]) -> tuple[float, float]:
    """``mean(a) / mean(b)`` and its standard error for independent draws ``a`` and ``b``."""
    ma, mb = float(np.mean(a)), float(np.mean(b))
    sa = float(np.std(a, ddof=1)) / math.sqrt(len(a))
    sb = float(np.std(b, ddof=1)) / math.sqrt(len(b))
    r = ma / mb
    return r, r * math.sqrt((sa / ma) ** 2 + (sb / mb) ** 2)


def summarise(runs: list[dict], reference: str, target: float) -> list[dict]:
    """Per variant: mean / std of the scores over seeds, ratio to the reference and its noise."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    ref = [r["CRPS"] for r in by.get(reference, [])]
    out = []
    for name, rs in by.items():
        crps = [r["CRPS"] for r in rs]
        row = {"variant": name, "seeds": [r["seed"] for r in rs], "CRPS_per_seed": crps,
               "CRPS_mean": float(np.mean(crps)),
               "CRPS_std": float(np.std(crps, ddof=1)) if len(crps) > 1 else None,
               "ND_mean": float(np.mean([r["ND"] for r in rs])),
               "MASE_mean": float(np.mean([r["MASE"] for r in rs])),
               "nfe": rs[0]["nfe"],
               "seconds_per_window": float(np.mean([r["seconds_per_window"] for r in rs]))}
        if len(ref) > 1 and len(crps) > 1 and name != reference:
            ratio, se = ratio_noise(crps, ref)
            row.update({"ratio_to_reference": ratio, "ratio_se": se,
                        "within_target": ratio <= 1 + target,
                        "noise_below_target": se < target})
        same = f"{name.split('/')[0]}/ddpm-100"  # DDPM-100 of the same energy
        own = [r["CRPS"] for r in by.get(same, [])]
        if same not in (name, reference) and len(own) > 1 and len(crps) > 1:
            ratio, se = ratio_noise(crps, own)
            row.update({"same_energy_reference": same, "ratio_to_same_energy": ratio,
                        "ratio_to_same_energy_se": se})
        out.append(row)
    return out


def _write(path: Path, res: dict) -> None:
    atomic_write_text(path, json.dumps(res, indent=2))


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a TSDiff checkpoint (unconditional)")
    ap.add_argument("--samples", type=int, default=16, help="samples per window and seed")
    ap.add_argument("--seeds", type=_seeds, default=_seeds("0,1,2,3"))
    ap.add_argument("--scale", type=float, default=4.0, help="guidance scale without +s<x>")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--reference", default="tsdiff_q/ddpm-100")
    ap.add_argument("--target", type=float, default=0.03, help="relative CRPS gap allowed")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                         "timeseries_taylor_fast_guidance_trained.json"))
    args = ap.parse_args()
    if args.samples < 2:
        raise SystemExit(f"--samples: at least 2 (a CRPS needs a distribution), got {args.samples}")
    names = [v for v in args.variants.split(",") if v]
    if args.reference not in names:
        raise SystemExit(f"--reference {args.reference!r} is not in --variants {names}")
    parse_variant = _load_bench().parse_variant
    parsed = {v: parse_variant(v) for v in names}  # fails before any work on a bad name
    for v, o in parsed.items():
        if "seed" in o:
            raise SystemExit(f"--variants: {v!r} names a seed; the seeds come from --seeds")
    torch.set_num_threads(args.threads)
    from domaindiff.module import load_checkpoint
    from domaindiff_timeseries.data import TimeSeriesData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import forecast_metrics

    model = load_checkpoint(args.ckpt)
    dm = TimeSeriesData(context_length=model.context_length,
                        prediction_length=model.prediction_length, lags=model.lags)
    wins = dm.test_windows()
    target = np.stack([w["target"][model.context_length:] for w in wins])
    hist = [w["history"] for w in wins]
    out = Path(args.out)
    res = {"command": "python " + " ".join(sys.argv), "ckpt": str(args.ckpt),
           "samples": args.samples, "seeds": args.seeds,
           "scale": args.scale, "reference": args.reference, "target": args.target,
           "num_windows": len(wins), "threads": args.threads, "torch": torch.__version__,
           "machine": platform.machine(), "runs": [], "summary": []}
    t_start = time.perf_counter()
    for name in names:
        for seed in args.seeds:
            opts = dict(parsed[name])
            scale = opts.pop("scale", args.scale)
            n_samples = opts.pop("samples", args.samples)
            stats: dict = {}
            t0 = time.perf_counter()
            s = forecast(model, wins, n_samples, scale=scale, seed=seed, progress=False,
                         stats=stats, **opts)
            sec = (time.perf_counter() - t0) / len(wins)
            m = forecast_metrics(s, target, hist, dm.season)
            res["runs"].append({"variant": name, "seed": seed, "options": opts, "scale": scale,
                                "samples": n_samples, "nfe": stats["nfe"], **m,
                                "seconds_per_window": sec})
            print(f"{name:48s} seed {seed} NFE {stats['nfe']:5.0f} CRPS {m['CRPS']:.4f} "
                  f"{sec:6.2f} s/window", flush=True)
            res["summary"] = summarise(res["runs"], args.reference, args.target)
            res["seconds"] = time.perf_counter() - t_start
            _write(out, res)  # partial results survive an interrupted run
    print(f"\n{'variant':48s} {'NFE':>4s} {'CRPS mean':>9s} {'std':>7s} {'ratio':>6s} "
          f"{'± se':>6s} {'s/win':>6s}")
    for r in res["summary"]:
        ratio = (f"{r['ratio_to_reference']:6.3f} {r['ratio_se']:6.3f}"
                 if "ratio_to_reference" in r else f"{'1':>6s} {'':6s}")
        print(f"{r['variant']:48s} {r['nfe']:4.0f} {r['CRPS_mean']:9.4f} {r['CRPS_std']:7.4f} "
              f"{ratio} {r['seconds_per_window']:6.2f}")
    res["finished"] = True
    _write(out, res)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
