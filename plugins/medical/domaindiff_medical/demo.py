"""Demo: train Echo-DND briefly through ``domaindiff fit``, segment the test split, score it.

``python -m domaindiff_medical.demo --out demo_out/medical`` (about a minute on 2 CPU cores).
Training is the core's (LightningCLI with ``conf/demo.yaml``: EMA, ``last.ckpt``, resumable);
any further LightningCLI override is passed through, e.g. ``--model.init_args.noise=gaussian``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from domaindiff.data import atomic_write_text
from domaindiff.demo_utils import demo_args, fit_config
from domaindiff.module import load_checkpoint
from domaindiff.quiet import quiet_third_party

from .evaluate import evaluate_arrays
from .plots import overlay_title, write_overlays

CONF = Path(__file__).parent / "conf"


def _max_time(seconds: float) -> str:
    s = max(1, int(round(seconds)))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def main(argv: list[str] | None = None) -> dict:
    """Run the demo; returns the metrics dict it also writes to ``<out>/metrics.json``."""
    quiet_third_party()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_out/medical")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num-train", type=int, default=192)
    ap.add_argument("--num-test", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--train-seconds", type=float, default=45.0)
    ap.add_argument("--steps", type=int, default=10, help="sampler network evaluations")
    ap.add_argument("--num-samples", type=int, default=3, help="ensemble size")
    ap.add_argument("--seed", type=int, default=0)
    args, overrides = demo_args(ap, argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"training Echo-DND on {args.num_train} synthetic {args.size}x{args.size} echoes "
          f"(<= {args.max_steps} steps, <= {args.train_seconds:.0f} s) with domaindiff fit")
    cli, ckpt = fit_config(CONF / "demo.yaml", out, [
        f"--trainer.max_steps={args.max_steps}",
        f"--trainer.max_time={_max_time(args.train_seconds)}",
        f"--trainer.callbacks.init_args.dirpath={out / 'checkpoints'}",
        f"--seed_everything={args.seed}",
        f"--model.init_args.seed={args.seed}",
        f"--data.init_args.num_train={args.num_train}",
        f"--data.init_args.num_val={args.num_test}",
        f"--data.init_args.num_test={args.num_test}",
        f"--data.init_args.size={args.size}",
        f"--data.init_args.seed={args.seed}", *overrides])
    train_s = time.perf_counter() - t0
    model = load_checkpoint(ckpt)
    test = cli.datamodule.dataset("test")
    summary, per = evaluate_arrays(model, test.images, test.masks, test.spacing,
                                   steps=args.steps, num_samples=args.num_samples,
                                   seed=args.seed)
    steps_done = int(cli.trainer.global_step)
    summary.update({"checkpoint": ckpt, "train_steps": steps_done, "train_seconds": train_s,
                    "steps_per_second": steps_done / max(train_s, 1e-9),
                    "distance_unit": test.unit})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    order = torch.argsort(per["dice"])[:4]
    write_overlays(out / "overlays.png", test.images[order], test.masks[order],
                   per["mask"][order], per["var"][order], len(order),
                   title=overlay_title(Path(ckpt).name, f"synthetic {args.size}x{args.size}",
                                       summary["sampler"], args.steps, args.num_samples,
                                       summary["dice"]) + "; worst images by Dice",
                   labels=[f"image {int(i)}: Dice {float(per['dice'][i]):.3f}" for i in order])
    print(f"Dice {summary['dice']:.3f}  IoU {summary['iou']:.3f}  HD95 {summary['hd95']:.2f} mm  "
          f"ASSD {summary['assd']:.2f} mm  ({args.num_samples} x {summary['nfe']} NFE, "
          f"{summary['seconds_per_image']:.2f} s/image; {steps_done} training steps)")
    print(f"wrote {out / 'metrics.json'}, {out / 'overlays.png'} and {ckpt}")
    return summary


if __name__ == "__main__":
    main()
