"""Echo-DND on the synthetic default: Dice / HD95 and seconds per image vs NFE and ensemble size.

One run does everything, writing the JSON after every stage:

1. trains Echo-DND for ``--train-seconds`` (cosine learning rate over that budget), saving a
   checkpoint under ``runs/`` (never under ``benchmarks/results``);
2. trains the plain U-Net baseline on the same data, batch size and number of optimizer steps
   (BCE + soft Dice, cosine learning rate over those steps) and scores it with the same
   post-processing;
3. segments the test split with the paper's sampler (ancestral DDPM, 1000 steps x 5 samples) and
   with fast samplers (DDIM / respaced DDPM for the Gaussian branch, the exact skip-step chain
   for the Bernoulli branch) at >= 20x fewer network evaluations, reporting Dice, IoU, HD95,
   ASSD, GED, ECE and seconds per image;
4. correlates per-image ensemble variance with Dice error (Pearson, Spearman) on a larger test
   set with a fast sampler.

    python benchmarks/medical.py --train-seconds 60 --ref 20x2 --fast 5x1 --num-test 4  # smoke
    nice -n 15 python benchmarks/medical.py      # the recorded run (70 min on 1 busy thread)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from domaindiff.data import atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff_medical.data import SyntheticEcho
from domaindiff_medical.demo import train
from domaindiff_medical.evaluate import evaluate_model, uncertainty_correlation
from domaindiff_medical.metrics import segmentation_metrics
from domaindiff_medical.model import EchoDND, postprocess, save_checkpoint
from domaindiff_medical.networks import UNetBaseline


def train_unet(dm: SyntheticEcho, steps: int, lr: float, base_channels: int, levels: int,
               seed: int) -> tuple[UNetBaseline, dict[str, float]]:
    """Train the plain U-Net baseline for ``steps`` optimizer steps (BCE + soft Dice, cosine lr).

    Returns:
        ``(network, stats)`` with ``train_steps``, ``train_seconds``, ``steps_per_second``.
    """
    torch.manual_seed(seed)
    net = UNetBaseline(base_channels, levels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    step, t0 = 0, time.perf_counter()
    while step < steps:
        for batch in dm.train_dataloader():
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            logit = net.logits(batch["image"])
            p, m = torch.sigmoid(logit), batch["mask"]
            dice = 1 - (2 * (p * m).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + m.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logit, m) + dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    secs = time.perf_counter() - t0
    return net, {"train_steps": step, "train_seconds": secs, "steps_per_second": step / secs,
                 "final_loss": float(loss.detach())}


def score_unet(net: UNetBaseline, images: torch.Tensor, masks: torch.Tensor) -> dict[str, Any]:
    """Dice / IoU / HD95 / ASSD of the baseline with Echo-DND's post-processing."""
    t0 = time.perf_counter()
    with torch.no_grad():
        pred = postprocess(net(images))
    secs = (time.perf_counter() - t0) / len(images)
    seg = segmentation_metrics(pred, masks)
    return {k: float(v[torch.isfinite(v)].mean()) for k, v in seg.items()} | {
        "seconds_per_image": secs, "nfe_per_image": 1}


def parse_rows(text: str, default: str) -> list[tuple[str, int, int]]:
    """``"ddpm:1000x5,ddim:10x1,25x5"`` -> ``[(sampler, steps, samples), ...]``."""
    rows = []
    for item in text.split(","):
        sampler, _, spec = item.strip().rpartition(":")
        steps, samples = spec.lower().split("x")
        rows.append((sampler or default, int(steps), int(samples)))
    return rows


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None, help="an EchoDND checkpoint (skips its training; "
                    "the U-Net then trains for --unet-steps)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--num-train", type=int, default=1024)
    ap.add_argument("--num-test", type=int, default=32)
    ap.add_argument("--num-corr", type=int, default=256,
                    help="test images for the variance / Dice-error correlation")
    ap.add_argument("--base-channels", type=int, default=8)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--train-seconds", type=float, default=1800.0)
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--unet-steps", type=int, default=None,
                    help="U-Net steps (default: as many as Echo-DND took)")
    ap.add_argument("--ref", default="ddpm:1000x5", help="the paper's setting, SAMPLER:STEPSxK")
    ap.add_argument("--fast", default="ddim:10x1,ddim:10x5,ddim:25x1,ddim:25x5,ddim:50x5,"
                    "ddpm:50x5", help="fast settings, comma-separated SAMPLER:STEPSxK")
    ap.add_argument("--corr", default="ddim:10x5", help="sampler for the correlation set")
    ap.add_argument("--batch-size", type=int, default=32, help="images per sampling batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--ckpt-out", default="runs/medical/benchmark_echo_dnd.ckpt")
    ap.add_argument("--out", default="benchmarks/results/medical_synthetic32_cpu.json")
    args = ap.parse_args()
    if Path(args.ckpt_out).resolve().is_relative_to(Path("benchmarks/results").resolve()):
        raise SystemExit("--ckpt-out: checkpoints go under runs/, not benchmarks/results")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "settings": vars(args), "torch_threads": torch.get_num_threads(),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def save() -> None:
        atomic_write_text(out, json.dumps(result, indent=2))

    dm = SyntheticEcho(num_train=args.num_train, num_val=args.num_test,
                       num_test=max(args.num_test, args.num_corr), size=args.size,
                       batch_size=16, seed=args.seed)
    full = dm.dataset("test")
    images, masks = full.images[:args.num_test], full.masks[:args.num_test]

    # 1. Echo-DND
    if args.ckpt:
        model = load_checkpoint(args.ckpt)
        steps = args.unet_steps or 1000
    else:
        torch.manual_seed(args.seed)
        model = EchoDND(base_channels=args.base_channels, levels=args.levels, temb_dim=32,
                        lr=args.lr, ema_decay=args.ema_decay, seed=args.seed)
        print(f"training Echo-DND for {args.train_seconds:.0f} s on {args.num_train} "
              f"{args.size}x{args.size} synthetic echoes", flush=True)
        stats = train(model, dm, args.max_steps, args.train_seconds, log_every=250, cosine=True)
        stats["epochs"] = stats["train_steps"] * 16 / args.num_train
        result["echo_dnd_training"] = stats
        Path(args.ckpt_out).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(model, args.ckpt_out)
        result["checkpoint"] = args.ckpt_out
        steps = args.unet_steps or stats["train_steps"]
        print(f"Echo-DND: {stats['train_steps']} steps ({stats['epochs']:.1f} epochs), "
              f"{stats['steps_per_second']:.2f} steps/s", flush=True)
        save()
    model.eval()

    # 2. the plain U-Net, same data and number of steps
    unet, ustats = train_unet(dm, steps, args.lr, args.base_channels, args.levels, args.seed)
    result["unet"] = ustats | score_unet(unet, images, masks)
    u = result["unet"]
    print(f"U-Net baseline ({u['train_steps']} steps, {u['steps_per_second']:.2f} steps/s): "
          f"Dice {u['dice']:.4f}  HD95 {u['hd95']:.2f}  ASSD {u['assd']:.2f}", flush=True)
    save()

    # 3. samplers x steps x ensemble size
    result["sampling"] = []
    ref = parse_rows(args.ref, "ddpm")
    for sampler, nsteps, k in ref + parse_rows(args.fast, "ddim"):
        summary, _ = evaluate_model(model, images, masks, sampler=sampler, steps=nsteps,
                                    num_samples=k, batch_size=args.batch_size, seed=args.seed,
                                    progress=False)
        summary["nfe_reduction_vs_ref"] = (ref[0][1] * ref[0][2]) / summary["nfe_per_image"]
        result["sampling"].append(summary)
        print(f"{sampler:5s} {nsteps:5d} x {k}  NFE {summary['nfe_per_image']:5d} "
              f"({summary['nfe_reduction_vs_ref']:6.1f}x fewer)  Dice {summary['dice']:.4f}  "
              f"HD95 {summary['hd95']:5.2f}  GED {summary['ged']:.3f}  "
              f"s/img {summary['seconds_per_image']:7.3f}", flush=True)
        save()

    # 4. calibrated uncertainty on a larger set
    (sampler, nsteps, k), = parse_rows(args.corr, "ddim")
    summary, per = evaluate_model(model, full.images[:args.num_corr], full.masks[:args.num_corr],
                                  sampler=sampler, steps=nsteps, num_samples=k,
                                  batch_size=args.batch_size, seed=args.seed + 1, progress=False)
    corr = uncertainty_correlation(per["var_mean"], 1 - per["dice"])
    corr_exp = uncertainty_correlation(per["expected_error"], 1 - per["dice"])
    result["uncertainty"] = summary | {"pearson": corr["pearson"], "spearman": corr["spearman"],
                                       "expected_error_pearson": corr_exp["pearson"],
                                       "expected_error_spearman": corr_exp["spearman"]}
    worst = torch.argsort(per["dice"])[: max(1, args.num_corr // 10)]
    top = torch.argsort(per["var_mean"], descending=True)[: len(worst)]
    result["uncertainty"]["worst_decile_in_top_variance_decile"] = \
        len(set(worst.tolist()) & set(top.tolist())) / len(worst)
    print(f"uncertainty ({args.num_corr} images, {sampler} {nsteps}x{k}): corr(variance, 1 - Dice)"
          f" Pearson {corr['pearson']:+.3f}  Spearman {corr['spearman']:+.3f}; "
          f"{result['uncertainty']['worst_decile_in_top_variance_decile']:.0%} of the worst-Dice "
          "decile are in the highest-variance decile", flush=True)
    print(f"expected Dice error (1 - mean Dice of samples vs fused mask) vs Dice error: Pearson "
          f"{corr_exp['pearson']:+.3f}  Spearman {corr_exp['spearman']:+.3f}", flush=True)
    if "echo_dnd_training" in result:
        tr = result["echo_dnd_training"]
        print(f"training steps/s: Echo-DND {tr['steps_per_second']:.2f}, U-Net "
              f"{u['steps_per_second']:.2f} (batch 16, {args.size}x{args.size}, "
              f"{result['torch_threads']} thread)")
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
