"""Evaluate an Echo-DND checkpoint (Hydra app): ``domaindiff eval medical ckpt=... steps=25``.

Segments a test split with the chosen sampler, step count and ensemble size, then writes
``metrics.json`` (Dice, IoU, HD95, ASSD, ensemble variance, ECE, GED, the correlation between
ensemble variance, and of the ensemble's expected Dice error, with the Dice error; seconds per
image, network evaluations) and PNG overlays of
image, ground truth, prediction and uncertainty into ``out_dir``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch

from domaindiff.cli import check_counts, report_errors
from domaindiff.data import atomic_write_text

from .metrics import ensemble_metrics, segmentation_metrics
from .plots import overlay_title, write_overlays


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan


def evaluate_model(model: Any, images: torch.Tensor, masks: torch.Tensor, *, sampler: str = "ddim",
                   steps: int = 25, num_samples: int = 5, batch_size: int = 8,
                   spacing: float = 1.0, seed: int = 0, progress: bool = True,
                   bernoulli: str | None = None
                   ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Segment ``images`` and score against ``masks``.

    ``sampler`` drives the Gaussian branch (ddpm | ddim), ``bernoulli`` the Bernoulli branch
    (posterior | ddim; ``None``: the model's ``bernoulli_sampler``).

    Returns:
        ``(summary, per_image)``: the summary dict and per-image tensors (prob, var, mask, dice...).
    """
    from tqdm.auto import tqdm
    gen = torch.Generator(device=model.device).manual_seed(seed)
    outs: dict[str, list[torch.Tensor]] = {}
    nfe = 0  # network evaluations of one sampling walk (model.last_nfe; the most over batches)
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(images), batch_size), desc="segment", disable=not progress):
        img = images[s:s + batch_size].to(model.device)
        tgt = masks[s:s + batch_size].to(model.device)
        out = model.segment(img, num_samples, steps, sampler, gen, bernoulli=bernoulli)
        nfe = max(nfe, int(model.last_nfe))
        seg = segmentation_metrics(out["mask"].cpu(), tgt.cpu(), spacing)
        ens = ensemble_metrics(out["samples"].cpu(), tgt.cpu())
        rows = {"prob": out["prob"].cpu(), "var": out["var"].cpu(), "mask": out["mask"].cpu(),
                "var_mean": ens["variance"], "ged": ens["ged"],
                "expected_error": expected_dice_error(out["samples"].cpu(), out["mask"].cpu()),
                **seg}
        for k, v in rows.items():
            outs.setdefault(k, []).append(v)
    secs = time.perf_counter() - t0
    per = {k: torch.cat(v) for k, v in outs.items()}
    corr = uncertainty_correlation(per["var_mean"], 1 - per["dice"])
    corr_exp = uncertainty_correlation(per["expected_error"], 1 - per["dice"])
    summary = {
        "dice": _nanmean(per["dice"]), "iou": _nanmean(per["iou"]),
        "hd95": _nanmean(per["hd95"]), "assd": _nanmean(per["assd"]),
        "variance": _nanmean(per["var_mean"]), "ged": _nanmean(per["ged"]),
        "ece": float(ensemble_metrics(torch.stack([per["prob"]]), masks.cpu())["ece"]),
        "corr_variance_dice_error": corr["pearson"],
        "spearman_variance_dice_error": corr["spearman"],
        "expected_dice_error": _nanmean(per["expected_error"]),
        "corr_expected_dice_error": corr_exp["pearson"],
        "spearman_expected_dice_error": corr_exp["spearman"],
        "num_images": len(images), "sampler": sampler,
        "bernoulli_sampler": bernoulli or model.bernoulli_sampler, "steps": steps,
        "num_samples": num_samples, "nfe": nfe, "nfe_per_image": nfe * num_samples,
        "seconds_per_image": secs / max(len(images), 1),
    }
    return summary, per


def expected_dice_error(samples: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """The ensemble's own estimate of its Dice error: ``1 - mean_k Dice(sample_k, fused)``.

    Args:
        samples: ``(K, B, 1, H, W)`` sample probabilities (thresholded at 0.5).
        fused: ``(B, 1, H, W)`` fused 0/1 mask.

    Returns:
        ``(B,)``; 0 when every sample agrees with the fused mask (two empty masks agree).
    """
    b = (samples > 0.5).float().flatten(2)
    f = (fused > 0.5).float().flatten(1)
    inter = (b * f).sum(-1)
    total = b.sum(-1) + f.sum(-1)
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return 1 - dice.mean(0)


def uncertainty_correlation(variance: torch.Tensor, error: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation between per-image ensemble variance and Dice error.

    A calibrated ensemble is most uncertain on the images it segments worst: both are positive.
    NaN when fewer than two images or either quantity is constant.
    """
    from scipy import stats
    v, e = variance.double().numpy(), error.double().numpy()
    ok = np.isfinite(v) & np.isfinite(e)
    v, e = v[ok], e[ok]
    if len(v) < 2 or v.std() == 0 or e.std() == 0:
        return {"pearson": math.nan, "spearman": math.nan}
    return {"pearson": float(stats.pearsonr(v, e)[0]), "spearman": float(stats.spearmanr(v, e)[0])}


def load_split(data: str, split: str, root: str | None, size: int | None,
               max_images: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of a split of ``synthetic``, ``camus`` or ``echonet``."""
    from .data import CAMUS, EchoNetDynamic, SyntheticEcho
    if data == "synthetic":
        dm = SyntheticEcho(num_train=1, num_val=max_images, num_test=max_images,
                           size=size or 64, root=root, seed=seed)
    elif data == "camus":
        dm = CAMUS(root=root, size=size or 256)
    elif data == "echonet":
        dm = EchoNetDynamic(root=root, size=size or 112)
    else:
        raise ValueError(f"data must be synthetic, camus or echonet; got {data!r}")
    ds = dm.dataset(split)
    return ds.images[:max_images], ds.masks[:max_images]


def run(cfg: Any) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as configured (see ``conf/eval.yaml``); returns the summary."""
    from domaindiff.module import load_checkpoint
    if cfg.ckpt in (None, "???"):
        raise ValueError("eval: set ckpt=path/to/checkpoint.ckpt")
    check_counts(cfg, positive=("steps", "num_samples", "batch_size", "max_images", "threads",
                                "size"),
                 nonnegative=("num_overlays", "seed"), optional=("threads", "size"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    from .model import checkpoint_image_size
    model = load_checkpoint(cfg.ckpt, trust=bool(cfg.trust))
    size = cfg.size
    if size is None:
        try:
            size = checkpoint_image_size(cfg.ckpt)
        except Exception:  # noqa: BLE001 - a checkpoint needing trust=True: data default
            size = None
    images, masks = load_split(cfg.data, cfg.split, cfg.data_root, size, int(cfg.max_images),
                               int(cfg.seed))
    summary, per = evaluate_model(model, images, masks, sampler=cfg.sampler,
                                  steps=int(cfg.steps), num_samples=int(cfg.num_samples),
                                  batch_size=int(cfg.batch_size), spacing=float(cfg.spacing),
                                  seed=int(cfg.seed), bernoulli=cfg.get("bernoulli"))
    summary["ckpt"] = str(cfg.ckpt)
    summary["data"] = cfg.data
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    if int(cfg.num_overlays) > 0:  # 0: no picture
        write_overlays(out / "overlays.png", images, masks, per["mask"], per["var"],
                       int(cfg.num_overlays), title=overlay_title(
                           Path(str(cfg.ckpt)).name, str(cfg.data), str(cfg.sampler),
                           int(cfg.steps), int(cfg.num_samples), summary.get("dice")))
    print(json.dumps(summary, indent=2))
    return summary


@hydra.main(version_base=None, config_path="conf", config_name="eval")
@report_errors
def main(cfg: Any) -> None:
    """Hydra entry point (config ``conf/eval.yaml``)."""
    run(cfg)


if __name__ == "__main__":
    main()
