"""Demo: train Echo-DND briefly on synthetic echocardiograms, segment, print Dice / HD95.

``python -m domaindiff_medical.demo --out demo_out/medical`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from domaindiff.data import atomic_write_text
from domaindiff.quiet import quiet_third_party

from .data import SyntheticEcho
from .evaluate import evaluate_model
from .model import EchoDND, save_checkpoint
from .plots import overlay_title, write_overlays


def train(model: EchoDND, dm: SyntheticEcho, max_steps: int, max_seconds: float,
          log_every: int = 20, cosine: bool = False) -> dict[str, float]:
    """A plain training loop with a time budget (Adam + EMA, the module's own loss).

    Args:
        model: the Echo-DND module (trained in place).
        dm: data.
        max_steps: step budget.
        max_seconds: wall-clock budget.
        log_every: print the loss every this many steps.
        cosine: anneal the learning rate to 0 on a cosine over the wall-clock budget.
    """
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    lr0 = opt.param_groups[0]["lr"]
    model.train()
    step, t0, loss = 0, time.perf_counter(), torch.tensor(0.0)
    while step < max_steps and time.perf_counter() - t0 < max_seconds:
        for batch in dm.train_dataloader():
            if cosine:
                frac = min((time.perf_counter() - t0) / max_seconds, 1.0)
                for group in opt.param_groups:
                    group["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * frac))
            loss = model.loss(model.batch_to_state(batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if model.ema_network is not None:
                model.ema_network.update_parameters(model.network)
            step += 1
            if step % log_every == 0:
                print(f"step {step:4d}  loss {loss.item():.4f}  "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if step >= max_steps or time.perf_counter() - t0 >= max_seconds:
                break
    secs = time.perf_counter() - t0
    return {"train_steps": step, "train_seconds": secs, "steps_per_second": step / secs,
            "final_loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> dict:
    """Run the demo; returns the metrics dict it also writes to ``<out>/metrics.json``."""
    quiet_third_party()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo_out/medical")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num-train", type=int, default=192)
    ap.add_argument("--num-test", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=400)
    ap.add_argument("--train-seconds", type=float, default=110.0)
    ap.add_argument("--steps", type=int, default=10, help="sampler network evaluations")
    ap.add_argument("--num-samples", type=int, default=3, help="ensemble size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 avoids oversubscription on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dm = SyntheticEcho(num_train=args.num_train, num_val=args.num_test, num_test=args.num_test,
                       size=args.size, batch_size=16, seed=args.seed)
    model = EchoDND(base_channels=8, levels=3, temb_dim=32, lr=2e-3, ema_decay=0.98,
                    sampling_steps=args.steps, num_ensemble=args.num_samples, seed=args.seed)
    print(f"training Echo-DND on {args.num_train} synthetic {args.size}x{args.size} echoes "
          f"(<= {args.max_steps} steps, <= {args.train_seconds:.0f} s)")
    stats = train(model, dm, args.max_steps, args.train_seconds)
    test = dm.dataset("test")
    summary, per = evaluate_model(model, test.images, test.masks, sampler="ddim",
                                  steps=args.steps, num_samples=args.num_samples,
                                  seed=args.seed, progress=False)
    summary.update(stats)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    save_checkpoint(model, str(out / "echo_dnd.ckpt"))
    write_overlays(out / "overlays.png", test.images, test.masks, per["mask"], per["var"],
                   title=overlay_title("echo_dnd.ckpt", f"synthetic {args.size}x{args.size}",
                                       "ddim", args.steps, args.num_samples, summary["dice"]))
    print(f"Dice {summary['dice']:.3f}  IoU {summary['iou']:.3f}  HD95 {summary['hd95']:.2f} px  "
          f"ASSD {summary['assd']:.2f} px  ({args.num_samples} x {summary['nfe']} NFE, "
          f"{summary['seconds_per_image']:.2f} s/image)")
    print(f"wrote {out / 'metrics.json'}, {out / 'overlays.png'} and {out / 'echo_dnd.ckpt'}")
    return summary


if __name__ == "__main__":
    main()
