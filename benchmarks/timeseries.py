"""TSDiff benchmark: CRPS and seconds per forecast window, DDPM-100 vs fast guided samplers.

Trains (or loads) a TSDiff checkpoint on a dataset (default: the offline Taylor demand), then
forecasts the rolling test windows with TSDiff-Q under the paper's guided DDPM (100 steps, two
network passes per step) and under guided DDIM / DPM-Solver++(2M) with 10x fewer evaluations.
Also measures training steps per second. Prints a table and writes JSON.

    python benchmarks/timeseries.py --epochs 3 --samples 16           # quick CPU run
    python benchmarks/timeseries.py --config plugins/timeseries/domaindiff_timeseries/conf/taylor.yaml \
        --epochs 100 --samples 100 --device cuda                        # paper-size
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


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(CONF / "demo.yaml"))
    ap.add_argument("--ckpt", default=None, help="skip training, evaluate this checkpoint")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samplers", default="ancestral:100,ddim:10,dpm_solver_pp_2m:10,ddim:20")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "timeseries.json"))
    args = ap.parse_args()
    from domaindiff.module import load_checkpoint
    from domaindiff_timeseries.data import TimeSeriesData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import forecast_metrics, seasonal_naive

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
    rows = [{"method": "seasonal_naive", "nfe": 0, **forecast_metrics(
        seasonal_naive(wins, model.prediction_length, dm.season), target, hist, dm.season),
        "seconds_per_window": 0.0}]
    for spec in args.samplers.split(","):
        name, steps = spec.split(":")
        t0 = time.perf_counter()
        s = forecast(model, wins, args.samples, guidance="quantile", scale=args.scale,
                     sampler=name, steps=int(steps), progress=False)
        sec = (time.perf_counter() - t0) / len(wins)
        nfe = 2 * int(steps) - 1 if name == "ancestral" else int(steps)
        rows.append({"method": f"tsdiff_q/{name}", "steps": int(steps), "nfe": nfe,
                     **forecast_metrics(s, target, hist, dm.season), "seconds_per_window": sec})
    print(f"{'method':28s} {'NFE':>5s} {'CRPS':>8s} {'ND':>8s} {'MASE':>7s} {'s/window':>9s}")
    for r in rows:
        print(f"{r['method'] + (':' + str(r['steps']) if 'steps' in r else ''):28s} "
              f"{r['nfe']:5d} {r['CRPS']:8.4f} {r['ND']:8.4f} {r['MASE']:7.3f} "
              f"{r['seconds_per_window']:9.2f}")
    if steps_per_s is not None:
        print(f"training: {steps_per_s:.2f} steps/s ({args.config}, {args.device})")
    res = {"ckpt": str(ckpt), "config": args.config, "device": args.device,
           "samples": args.samples, "scale": args.scale, "num_windows": len(wins),
           "train_steps_per_s": steps_per_s, "torch": torch.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name)
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
