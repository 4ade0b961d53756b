"""Echo-DND against its ablations and two U-Nets, in domain, under domain shift and corruptions.

One run, at one training budget (the same optimizer steps and batch size for every method), on
the harder offline default (``camus_like`` synthetic echoes: both apical views, ED and ES,
shape/size/thickness variation, depth gain, speckle, shadowing and dropout, sector cut-off, probe
tilt; CAMUS label values) at 64x64:

* methods: Echo-DND (dual noise), the Gaussian-only and Bernoulli-only ablations (the paper's
  ablation; each trained with the core's Lightning loop, EMA and the same steps), the plugin's
  plain U-Net and MONAI's ``UNet`` (BCE + soft Dice, cosine learning rate);
* test sets: in domain; the ``shifted`` generator (written separately, other appearance
  statistics); the in-domain test set under noise, blur, contrast and gain at severities 1, 3, 5;
* metrics: Dice, IoU, HD95 and ASSD in mm (MONAI, 160 mm field of view), per-image spread
  (std, 5th percentile), calibration: the expected Dice error against the real one (the
  ensemble's ``1 - mean Dice(member, fused)`` for the diffusion models; ``1 - soft Dice(p, mask)``
  for the U-Nets, whose only uncertainty is the pixel probability) and the ECE of the pixel
  probabilities.

The JSON (``benchmarks/results/medical_benchmark.json``) is rewritten after every stage; the
table is printed and written as Markdown next to it, and a PNG plots Dice per test set.

    python benchmarks/medical.py --train-steps 4 --num-test 4 --num-corr 2 --num-train 16  # smoke
    nohup timeout 5400 python benchmarks/medical.py > runs/medical_bench.log 2>&1 &        # recorded
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from domaindiff.data import atomic_write_text
from domaindiff.quiet import quiet_third_party
from domaindiff_medical import EchoDND, SyntheticEcho
from domaindiff_medical.evaluate import evaluate_arrays, per_image_rows, summarise
from domaindiff_medical.networks import UNetBaseline
from domaindiff_medical.postprocess import postprocess, sector_mask
from domaindiff_medical.synthetic import CORRUPTIONS

DIFFUSION = {"Echo-DND": "dual", "Gaussian-only": "gaussian", "Bernoulli-only": "bernoulli"}


class MonaiUNet(nn.Module):
    """MONAI's standard 2-D ``UNet`` (residual units), image -> LV logit."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        from monai.networks.nets import UNet
        self.net = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=channels,
                        strides=(2,) * (len(channels) - 1), num_res_units=2)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def train_segmenter(net: nn.Module, dm: SyntheticEcho, steps: int, lr: float,
                    seed: int) -> dict[str, float]:
    """Train an image -> logit network for ``steps`` steps (BCE + soft Dice, cosine lr)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    step, t0, loss = 0, time.perf_counter(), torch.tensor(0.0)
    net.train()
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
    net.eval()
    secs = time.perf_counter() - t0
    return {"train_steps": step, "train_seconds": secs, "final_loss": float(loss.detach())}


def score_segmenter(net: nn.Module, images: torch.Tensor, masks: torch.Tensor,
                    spacing: torch.Tensor) -> dict[str, Any]:
    """The U-Net's metrics with the same post-processing and scoring as Echo-DND."""
    t0 = time.perf_counter()
    with torch.no_grad():
        prob = torch.sigmoid(net.logits(images))
    mask = postprocess(prob, sector=sector_mask(images))
    secs = (time.perf_counter() - t0) / len(images)
    per = per_image_rows(prob[None], mask, prob, masks, spacing)
    inter = (prob * mask).flatten(1).sum(1)
    soft = 2 * inter / (prob.flatten(1).sum(1) + mask.flatten(1).sum(1)).clamp_min(1e-6)
    per["expected_error"] = 1 - soft  # a single network's own error estimate: soft Dice
    out = summarise(per, prob, masks)
    out.update({"seconds_per_image": secs, "nfe_per_image": 1, "num_images": len(images)})
    return out


def train_diffusion(noise: str, dm: SyntheticEcho, args: argparse.Namespace,
                    ckpt: Path) -> tuple[EchoDND, dict[str, float]]:
    """Train Echo-DND (or an ablation) with the core's Lightning loop (EMA, same steps)."""
    L.seed_everything(args.seed, verbose=False)
    model = EchoDND(base_channels=args.base_channels, levels=3, temb_dim=32, lr=args.lr,
                    ema_decay=args.ema_decay, noise=noise, sampling_steps=args.steps,
                    num_ensemble=args.ensemble, seed=args.seed)
    trainer = L.Trainer(max_steps=args.train_steps, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    secs = time.perf_counter() - t0
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(ckpt)
    model.eval()
    return model, {"train_steps": int(trainer.global_step), "train_seconds": secs,
                   "checkpoint": str(ckpt)}


def test_sets(args: argparse.Namespace) -> dict[str, tuple[torch.Tensor, ...]]:
    """In-domain, shifted and corrupted test sets: ``name -> (images, masks, spacing)``."""
    sets = {}

    def add(name: str, n: int, **kw: Any) -> None:
        ds = SyntheticEcho(num_train=1, num_val=1, num_test=n, size=args.size, seed=args.seed,
                           **kw).dataset("test")
        sets[name] = (ds.images, ds.masks, ds.spacing)

    add("in-domain", args.num_test)
    add("shifted", args.num_test, generator="shifted")
    for kind in CORRUPTIONS:
        for sev in args.severities:
            add(f"{kind}-{sev}", args.num_corr, corruption=kind, severity=sev)
    return sets


ROW_KEYS = ("dice", "dice_std", "dice_p05", "iou", "hd95", "assd", "expected_dice_error",
            "real_dice_error", "calibration_gap", "ece", "corr_expected_dice_error")


def table(results: dict[str, dict[str, dict[str, Any]]], sets: list[str]) -> str:
    """Markdown tables: the main one (in-domain, shifted) and Dice under each corruption."""
    head = ("| method | test set | Dice | Dice std | Dice p05 | IoU | HD95 (mm) | ASSD (mm) | "
            "expected err | real err | gap | ECE | corr(exp, real) |")
    lines = [head, "|" + "---|" * 13]
    for method, per_set in results.items():
        for s in ("in-domain", "shifted"):
            r = per_set.get(s)
            if r is None:
                continue
            vals = " | ".join(f"{r.get(k, math.nan):.3f}" for k in ROW_KEYS)
            lines.append(f"| {method} | {s} | {vals} |")
    corr = [s for s in sets if s not in ("in-domain", "shifted")]
    lines += ["", "| method | " + " | ".join(corr) + " |", "|" + "---|" * (len(corr) + 1)]
    for method, per_set in results.items():
        vals = " | ".join(f"{per_set[s]['dice']:.3f}" if s in per_set else "-" for s in corr)
        lines.append(f"| {method} (Dice) | {vals} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, Any]]], sets: list[str], path: Path,
         title: str) -> None:
    """Dice per test set and method (points), with the per-image std as error bars."""
    from domaindiff.plotting import pyplot, save_figure
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * len(sets)), 3.8))
    for k, (method, per_set) in enumerate(results.items()):
        xs = [i + 0.12 * (k - 2) for i, s in enumerate(sets) if s in per_set]
        ys = [per_set[s]["dice"] for s in sets if s in per_set]
        es = [per_set[s]["dice_std"] for s in sets if s in per_set]
        ax.errorbar(xs, ys, yerr=es, fmt="o", ms=4, capsize=2, label=method)
    ax.set_xticks(range(len(sets)), sets, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("Dice (mean, per-image std)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    """Run the benchmark."""
    quiet_third_party()
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--num-train", type=int, default=768)
    ap.add_argument("--num-test", type=int, default=32)
    ap.add_argument("--num-corr", type=int, default=16, help="images per corrupted test set")
    ap.add_argument("--severities", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--train-steps", type=int, default=150, help="optimizer steps, every method")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--base-channels", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--steps", type=int, default=6, help="sampler network evaluations")
    ap.add_argument("--ensemble", type=int, default=3)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--methods", nargs="+",
                    default=["Echo-DND", "Gaussian-only", "Bernoulli-only", "U-Net", "MONAI UNet"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="runs/medical_benchmark")
    ap.add_argument("--out", default="benchmarks/results/medical_benchmark.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "settings": vars(args), "torch_threads": torch.get_num_threads(),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training": {}, "results": {}}

    def save() -> None:
        atomic_write_text(out, json.dumps(result, indent=2))

    dm = SyntheticEcho(num_train=args.num_train, num_val=1, num_test=1, size=args.size,
                       batch_size=args.batch_size, seed=args.seed)
    sets = test_sets(args)
    names = list(sets)
    print(f"test sets: {', '.join(f'{k} ({len(v[0])})' for k, v in sets.items())}", flush=True)
    for method in args.methods:
        t0 = time.perf_counter()
        if method in DIFFUSION:
            model, stats = train_diffusion(DIFFUSION[method], dm, args,
                                           Path(args.runs) / f"{DIFFUSION[method]}.ckpt")

            def score(images, masks, spacing, model=model):
                return evaluate_arrays(model, images, masks, spacing, sampler=args.sampler,
                                       steps=args.steps, num_samples=args.ensemble,
                                       batch_size=16, seed=args.seed)[0]
        else:
            net = UNetBaseline(args.base_channels, 3) if method == "U-Net" else MonaiUNet()
            stats = train_segmenter(net, dm, args.train_steps, args.lr, args.seed)

            def score(images, masks, spacing, net=net):
                return score_segmenter(net, images, masks, spacing)
        stats["parameters"] = sum(p.numel() for p in (model.network if method in DIFFUSION
                                                      else net).parameters())
        result["training"][method] = stats
        print(f"{method}: {stats['train_steps']} steps in {stats['train_seconds']:.0f} s",
              flush=True)
        per_set: dict[str, dict[str, Any]] = {}
        for name, (images, masks, spacing) in sets.items():
            per_set[name] = score(images, masks, spacing)
            r = per_set[name]
            print(f"  {name:12s} Dice {r['dice']:.3f} (std {r['dice_std']:.3f})  HD95 "
                  f"{r['hd95']:6.2f} mm  ASSD {r['assd']:5.2f} mm  exp.err "
                  f"{r['expected_dice_error']:.3f} vs {r['real_dice_error']:.3f}  ECE "
                  f"{r['ece']:.3f}", flush=True)
            result["results"][method] = per_set
            save()
        result["training"][method]["total_seconds"] = time.perf_counter() - t0
        save()
    md = table(result["results"], names)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    atomic_write_text(out.with_suffix(".md"), md + "\n")
    plot(result["results"], names, out.with_suffix(".png"),
         f"synthetic camus_like {args.size}x{args.size}, {args.train_steps} steps each, "
         f"{args.sampler} {args.steps} x {args.ensemble}")
    print(md)
    print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
