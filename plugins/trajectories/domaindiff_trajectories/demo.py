"""The trajectories demo: brief GeoTDM training on charged 5-body, then forecasts.

Trains through the real CLI, forecasts the test split and compares with constant velocity.

python -m domaindiff_trajectories.demo --out demo_out/trajectories
python -m domaindiff_trajectories.demo --model.init_args.scale=1.0   # any LightningCLI override
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from domaindiff.data import atomic_write_text
from domaindiff.demo_utils import demo_args, fit_config
from domaindiff.module import load_checkpoint
from domaindiff.quiet import quiet_third_party
from domaindiff_trajectories.evaluate import forecast_metrics, plot_forecasts

CONF = Path(__file__).parent / "conf"


def main(argv: list[str] | None = None) -> int:
    """Train on a small charged split, forecast K samples per test trajectory, print ADE/FDE."""
    quiet_third_party()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out/trajectories")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--k", type=int, default=5)
    args, overrides = demo_args(parser, argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    cli, ckpt = fit_config(CONF / "demo.yaml", out,
                           [f"--trainer.max_epochs={args.epochs}", *overrides])
    train_s = time.perf_counter() - t0
    print(f"checkpoint: {ckpt} (trained in {train_s:.0f} s)")
    model = load_checkpoint(ckpt)
    data = cli.datamodule
    loader = DataLoader(data.test_set, batch_size=len(data.test_set))
    gen = torch.Generator().manual_seed(0)
    metrics, first = forecast_metrics(model, loader, args.sampler, args.steps, args.k, gen)
    result = {"system": data.system, "num_train": data.sizes["train"],
              "num_test": data.sizes["test"], "epochs": args.epochs, "train_seconds": train_s,
              "sampler": args.sampler, "steps": args.steps, "k": args.k, **metrics}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    plot_forecasts(first, out / "forecasts.png", 4,
                   f"GeoTDM demo, {Path(ckpt).name}, {data.system} 5-body: {args.sampler}, "
                   f"{args.steps} steps, K = {args.k}; ADE {result['ade_avg']:.3f} "
                   f"FDE {result['fde_avg']:.3f} (avg over K)")
    print(f"\ncharged 5-body, {result['num_test']} test trajectories, K = {args.k}")
    print(f"{'method':<28}{'ADE':>8}{'FDE':>8}")
    print(f"{'GeoTDM (avg over K)':<28}{result['ade_avg']:>8.3f}{result['fde_avg']:>8.3f}")
    print(f"{'GeoTDM (min over K)':<28}{result['ade_min']:>8.3f}{result['fde_min']:>8.3f}")
    print(f"{'constant velocity':<28}{result['cv_ade']:>8.3f}{result['cv_fde']:>8.3f}")
    print(f"wrote {out / 'metrics.json'} and {out / 'forecasts.png'} "
          f"({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
