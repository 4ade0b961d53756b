"""TSDiff benchmark: CRPS, network evaluations and seconds per window, DDPM-100 vs fast samplers.

Trains (or loads) a TSDiff checkpoint on a dataset (default: the offline Taylor demand), then, in
one run on the same rolling test windows and the same checkpoint:

- baselines: GluonTS seasonal naive and (``--deepar-epochs > 0``) GluonTS DeepAR;
- the paper's guided DDPM with 100 steps (TSDiff-Q and TSDiff-MS; each step evaluates the network
  twice, 199 network evaluations per sequence);
- guided fast samplers with 10 or 20 network evaluations (guidance on the prediction at every
  evaluation, overshoot-safe steps; see ``domaindiff_timeseries.forecast``); ``--variants`` takes
  the names of :data:`VARIANTS` or any ``<energy>/<sampler>-<steps>[+options]`` (see
  :func:`parse_variant`);

and prints each row's CRPS (GluonTS mean weighted quantile loss), ND, MASE, NFE (counted by a hook
on the network, per sampled sequence), seconds per window, and the ratios to DDPM-100 of the same
energy (CRPS ratio, NFE ratio, time ratio). Also training steps per second when it trains.
Writes JSON.

    python benchmarks/timeseries.py --epochs 3 --samples 16                      # quick CPU run
    python benchmarks/timeseries.py --ckpt run.ckpt --samples 32 --deepar-epochs 20
    python benchmarks/timeseries.py --ckpt run.ckpt \\
        --variants tsdiff_q/ddpm-100,tsdiff_q/dpm_solver_pp_2m-20+s32,tsdiff_q/ddim-20+eta1+s32
    python benchmarks/timeseries.py --config plugins/timeseries/conf/taylor.yaml \\
        --epochs 100 --samples 100 --device cuda                                   # paper-size
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "plugins" / "timeseries" / "domaindiff_timeseries" / "conf"

#: name -> forecast() options. DDPM-100 rows first: they are the reference of the ratios.
VARIANTS: dict[str, dict] = {
    "tsdiff_q/ddpm-100": {"guidance": "quantile", "sampler": "ancestral", "steps": 100},
    "tsdiff_q/ddim-10+eta1": {"guidance": "quantile", "sampler": "ddim", "steps": 10,
                               "eta": 1.0},
    "tsdiff_q/ddim-10+eta0": {"guidance": "quantile", "sampler": "ddim", "steps": 10,
                               "eta": 0.0},
    "tsdiff_q/ddpm-10+pred-guided": {"guidance": "quantile", "sampler": "ancestral",
                                     "steps": 10, "ddpm_rule": False},
    "tsdiff_q/dpm_solver_pp_2m-10": {"guidance": "quantile", "sampler": "dpm_solver_pp_2m",
                                     "steps": 10},
    "tsdiff_q/ddim-5x2inner+eta1": {"guidance": "quantile", "sampler": "ddim", "steps": 5,
                                     "eta": 1.0, "inner_steps": 2},
    "tsdiff_q/ddim-10+eta1+x0-grad": {"guidance": "quantile", "sampler": "ddim", "steps": 10,
                                       "eta": 1.0, "gradient": "x0"},
    "tsdiff_ms/ddim-10+eta1": {"guidance": "mse", "sampler": "ddim", "steps": 10, "eta": 1.0},
    "tsdiff_ms/dpm_solver_pp_2m-10": {"guidance": "mse", "sampler": "dpm_solver_pp_2m",
                                      "steps": 10},
    # stronger guidance for the few-step samplers (the safe step keeps any scale stable)
    "tsdiff_ms/ddim-10+eta1+s32": {"guidance": "mse", "sampler": "ddim", "steps": 10,
                                   "eta": 1.0, "scale": 32.0},
    "tsdiff_q/dpm_solver_pp_2m-10+s32": {"guidance": "quantile", "sampler": "dpm_solver_pp_2m",
                                         "steps": 10, "scale": 32.0},
    "tsdiff_ms/ddim-20+eta1+s32": {"guidance": "mse", "sampler": "ddim", "steps": 20,
                                   "eta": 1.0, "scale": 32.0},
    "tsdiff_ms/ddpm-100": {"guidance": "mse", "sampler": "ancestral", "steps": 100},
    # the paper's DDPM rule without the overshoot-safe step, on 2 samples per window (it may
    # diverge: NaN CRPS)
    "tsdiff_ms/ddpm-100+paper-unsafe": {"guidance": "mse", "sampler": "ancestral", "steps": 100,
                                        "safe": False, "samples": 2},
}


_ENERGIES = {"tsdiff_q": "quantile", "tsdiff_ms": "mse"}


def parse_variant(name: str) -> dict:
    """Options of a variant: a :data:`VARIANTS` key or ``<energy>/<sampler>-<steps>[+opt...]``.

    ``<energy>``: ``tsdiff_q`` or ``tsdiff_ms``; ``<sampler>``: a core sampler (``ancestral`` =
    ``ddpm``, ``ddim``, ``dpm_solver_pp_2m``, ...); options: ``eta<x>``, ``s<scale>``, ``x0-grad``,
    ``<k>inner`` (as ``5x2inner``: guidance steps per sampler step), ``pred-guided`` (DDPM with
    guidance on the prediction), ``seed<k>`` (noise seed, default 0: a repeat of a row with other
    noise measures the sample noise of the CRPS), ``x0steps<k>`` (k guidance steps on the
    prediction per network evaluation, no network call). Example: ``tsdiff_q/dpm_solver_pp_2m-20+s32``.
    """
    if name in VARIANTS:
        return dict(VARIANTS[name])
    try:
        energy, rest = name.split("/", 1)
        head, *opts = rest.split("+")
        sampler, steps = head.rsplit("-", 1)
        out: dict = {"guidance": _ENERGIES[energy],
                     "sampler": "ancestral" if sampler == "ddpm" else sampler}
        if "x" in steps:  # 5x2inner written in the head: steps x inner
            steps, inner = steps.split("x", 1)
            out["inner_steps"] = int(inner.removesuffix("inner"))
        out["steps"] = int(steps)
        for o in opts:
            if o.startswith("eta"):
                out["eta"] = float(o[3:])
            elif o.startswith("s") and o[1:].replace(".", "", 1).isdigit():
                out["scale"] = float(o[1:])
            elif o == "x0-grad":
                out["gradient"] = "x0"
            elif o == "pred-guided":
                out["ddpm_rule"] = False
            elif o.startswith("seed"):
                out["seed"] = int(o[4:])
            elif o.startswith("x0steps"):
                out["x0_steps"] = int(o[7:])
            elif o.endswith("inner"):
                out["inner_steps"] = int(o.removesuffix("inner"))
            else:
                raise ValueError(o)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"--variants: cannot read {name!r} ({e}); use a name of "
                         f"{list(VARIANTS)} or <tsdiff_q|tsdiff_ms>/<sampler>-<steps>"
                         "[+eta<x>][+s<scale>][+x0-grad][+<k>inner][+seed<k>][+x0steps<k>]") from None
    return out


def train(config: Path, epochs: int, out: Path, device: str) -> tuple[str, float]:
    """Fit through the CLI; returns the checkpoint and training steps per second."""
    from lightning.pytorch.callbacks import Callback

    from domaindiff.cli import lightning_cli

    class Clock(Callback):
        def __init__(self) -> None:
            self.steps, self.seconds, self.t0 = 0, 0.0, 0.0

        def on_train_batch_start(self, *a) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, *a) -> None:
            self.steps += 1
            self.seconds += time.perf_counter() - self.t0

    clock = Clock()
    cli = lightning_cli(["fit", "--config", str(config), f"--trainer.max_epochs={epochs}",
                         f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false",
                         f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"],
                        run=False)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, cli.datamodule)
    cb = cli.trainer.checkpoint_callback
    return cb.best_model_path or cb.last_model_path, clock.steps / max(clock.seconds, 1e-9)


def _write(path: Path, res: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(path)


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(CONF / "demo.yaml"))
    ap.add_argument("--ckpt", default=None, help="skip training, evaluate this checkpoint")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated names of {list(VARIANTS)} or "
                         "<tsdiff_q|tsdiff_ms>/<sampler>-<steps>[+eta<x>][+s<scale>][+x0-grad]"
                         "[+<k>inner][+seed<k>], e.g. tsdiff_q/dpm_solver_pp_2m-20+s32")
    ap.add_argument("--deepar-epochs", type=int, default=0, help="> 0: add the DeepAR row")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "timeseries.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from domaindiff.module import load_checkpoint
    from domaindiff_timeseries.baselines import deepar, gluonts_seasonal_naive
    from domaindiff_timeseries.data import TimeSeriesData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import forecast_metrics

    names = [v for v in args.variants.split(",") if v]
    parsed = {v: parse_variant(v) for v in names}  # fails before any work on a bad name
    steps_per_s = None
    ckpt = args.ckpt
    if ckpt is None:
        ckpt, steps_per_s = train(Path(args.config), args.epochs,
                                  Path("/tmp/domaindiff_bench_timeseries"), args.device)
    model = load_checkpoint(ckpt).to(args.device)
    dm = TimeSeriesData(context_length=model.context_length,
                        prediction_length=model.prediction_length, lags=model.lags)
    wins = dm.test_windows()
    target = np.stack([w["target"][model.context_length:] for w in wins])
    hist = [w["history"] for w in wins]
    out = Path(args.out)
    res = {"ckpt": str(ckpt), "config": args.config, "device": args.device,
           "samples": args.samples, "scale": args.scale, "num_windows": len(wins),
           "threads": args.threads, "train_steps_per_s": steps_per_s,
           "torch": torch.__version__, "rows": []}
    rows = res["rows"]
    rows.append({"method": "seasonal_naive", "nfe": 0, **forecast_metrics(
        gluonts_seasonal_naive(wins, model.prediction_length, dm.freq, dm.season), target, hist,
        dm.season), "seconds_per_window": 0.0})
    if args.deepar_epochs > 0:
        t0 = time.perf_counter()
        s = deepar(dm.train_series, wins, model.prediction_length, model.context_length,
                   dm.freq, args.samples, args.deepar_epochs)
        rows.append({"method": f"deepar({args.deepar_epochs} epochs x 50 batches)", "nfe": 0,
                     **forecast_metrics(s, target, hist, dm.season),
                     "seconds_per_window": (time.perf_counter() - t0) / len(wins)})
        _write(out, res)
    for name in names:
        opts = dict(parsed[name])
        n_samples = opts.pop("samples", args.samples)
        scale = opts.pop("scale", args.scale)
        stats: dict = {}
        t0 = time.perf_counter()
        s = forecast(model, wins, n_samples, scale=scale, progress=False, stats=stats, **opts)
        sec = (time.perf_counter() - t0) / len(wins)
        rows.append({"method": name, "options": opts, "samples": n_samples, "scale": scale,
                     "nfe": stats["nfe"],
                     **forecast_metrics(s, target, hist, dm.season), "seconds_per_window": sec})
        print(f"{name:34s} NFE {stats['nfe']:5.0f} CRPS {rows[-1]['CRPS']:.4f} "
              f"{sec:.2f} s/window", flush=True)
        _write(out, res)  # partial results survive an interrupted run
    refs = {r["method"].split("/")[0]: r for r in rows if r["method"].endswith("/ddpm-100")}
    res["ratios_reference"] = "the DDPM-100 row of the same energy (tsdiff_q or tsdiff_ms)"
    for r in rows:
        ref = refs.get(r["method"].split("/")[0])
        if ref is not None and r is not ref and np.isfinite(ref["CRPS"]):
            r["crps_ratio_to_ddpm100"] = r["CRPS"] / ref["CRPS"]
            r["nfe_ratio_to_ddpm100"] = r["nfe"] / ref["nfe"]
            r["time_ratio_to_ddpm100"] = r["seconds_per_window"] / ref["seconds_per_window"]
    print(f"\n{'method':34s} {'NFE':>5s} {'CRPS':>8s} {'ND':>7s} {'MASE':>6s} {'s/win':>7s} "
          f"{'CRPS/ref':>8s} {'NFE/ref':>7s} {'t/ref':>6s}")
    for r in rows:
        ratios = (f"{r['crps_ratio_to_ddpm100']:8.3f} {r['nfe_ratio_to_ddpm100']:7.3f} "
                  f"{r['time_ratio_to_ddpm100']:6.3f}" if "crps_ratio_to_ddpm100" in r else "")
        print(f"{r['method']:34s} {r['nfe']:5.0f} {r['CRPS']:8.4f} {r['ND']:7.4f} "
              f"{r['MASE']:6.3f} {r['seconds_per_window']:7.2f} {ratios}")
    if steps_per_s is not None:
        print(f"training: {steps_per_s:.2f} steps/s ({args.config}, {args.device})")
    _write(out, res)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
