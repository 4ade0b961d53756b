"""Echo-DND on the synthetic default: Dice / HD95 and seconds per image vs NFE and ensemble size.

Trains Echo-DND (or loads ``--ckpt``) and a plain U-Net on the same synthetic echoes, then
segments the test split with the paper's sampler (ancestral DDPM, ``--ref-steps`` steps x
``--ref-samples`` samples) and with fast DDIM/Bernoulli-skip samplers at fewer network
evaluations. Prints a table and writes ``benchmarks/results/medical.json``.

    python benchmarks/medical.py                      # CPU-sized defaults (~8 minutes)
    python benchmarks/medical.py --size 64 --train-seconds 3600 --ref-steps 1000  # full length
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from domaindiff.data import atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff_medical.data import SyntheticEcho
from domaindiff_medical.demo import train
from domaindiff_medical.evaluate import evaluate_model
from domaindiff_medical.metrics import segmentation_metrics
from domaindiff_medical.model import EchoDND, postprocess, save_checkpoint
from domaindiff_medical.networks import UNetBaseline


def train_unet(dm: SyntheticEcho, max_steps: int, max_seconds: float, seed: int) -> tuple:
    """Train the plain U-Net baseline with BCE + soft Dice; returns (net, steps/s)."""
    torch.manual_seed(seed)
    net = UNetBaseline(8, 3)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    step, t0 = 0, time.perf_counter()
    while step < max_steps and time.perf_counter() - t0 < max_seconds:
        for batch in dm.train_dataloader():
            p = net(batch["image"])
            m = batch["mask"]
            dice = 1 - (2 * (p * m).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + m.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy(p, m) + dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= max_steps or time.perf_counter() - t0 >= max_seconds:
                break
    return net, step / (time.perf_counter() - t0), step


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ckpt", default=None, help="an EchoDND checkpoint (skips training)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num-train", type=int, default=256)
    ap.add_argument("--num-test", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--train-seconds", type=float, default=150.0)
    ap.add_argument("--ref-steps", type=int, default=1000, help="paper sampler steps (DDPM)")
    ap.add_argument("--ref-samples", type=int, default=5)
    ap.add_argument("--fast", default="5x1,10x1,10x3,25x1,25x5",
                    help="DDIM settings as STEPSxSAMPLES, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default="benchmarks/results/medical.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dm = SyntheticEcho(num_train=args.num_train, num_val=args.num_test, num_test=args.num_test,
                       size=args.size, batch_size=16, seed=args.seed)
    test = dm.dataset("test")
    result: dict = {"settings": vars(args), "torch_threads": torch.get_num_threads()}
    if args.ckpt:
        model = load_checkpoint(args.ckpt)
    else:
        torch.manual_seed(args.seed)
        model = EchoDND(base_channels=8, levels=3, temb_dim=32, lr=2e-3, ema_decay=0.98,
                        seed=args.seed)
        result["echo_dnd_training"] = train(model, dm, args.max_steps, args.train_seconds,
                                            log_every=100)
        save_checkpoint(model, str(Path(args.out).with_suffix(".ckpt")))
    unet, ups, usteps = train_unet(dm, args.max_steps, args.train_seconds, args.seed)
    with torch.no_grad():
        pred = postprocess(unet(test.images))
    seg = segmentation_metrics(pred, test.masks)
    result["unet"] = {"dice": float(seg["dice"].mean()), "hd95": float(seg["hd95"].nanmean()),
                      "train_steps": usteps, "steps_per_second": ups}
    rows = [("ddpm", args.ref_steps, args.ref_samples)]
    for item in args.fast.split(","):
        s, k = item.lower().split("x")
        rows.append(("ddim", int(s), int(k)))
    result["sampling"] = []
    for sampler, steps, k in rows:
        summary, _ = evaluate_model(model, test.images, test.masks, sampler=sampler, steps=steps,
                                    num_samples=k, seed=args.seed, progress=False)
        result["sampling"].append(summary)
        print(f"{sampler:5s} {steps:5d} x {k}  NFE {summary['nfe_per_image']:5d}  "
              f"Dice {summary['dice']:.3f}  HD95 {summary['hd95']:6.2f}  "
              f"s/img {summary['seconds_per_image']:.3f}  "
              f"corr(var, 1-Dice) {summary['corr_variance_dice_error']:+.2f}", flush=True)
    print(f"U-Net baseline: Dice {result['unet']['dice']:.3f}  HD95 {result['unet']['hd95']:.2f}"
          f"  ({usteps} steps, {ups:.2f} steps/s)")
    if "echo_dnd_training" in result:
        tr = result["echo_dnd_training"]
        print(f"Echo-DND training: {tr['train_steps']} steps, {tr['steps_per_second']:.2f} steps/s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
