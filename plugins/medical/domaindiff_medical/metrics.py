"""Segmentation metrics through MONAI, and ensemble statistics.

Dice, IoU, HD95 and ASSD come from MONAI (``DiceMetric``, ``MeanIoU``,
``HausdorffDistanceMetric(percentile=95)``, ``SurfaceDistanceMetric(symmetric=True)``), with the
pixel spacing passed through. Ensembles add the mean per-pixel variance, the expected
calibration error of the fused probability, and the generalized energy distance with
``d = 1 - IoU``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDistanceMetric
from torch import Tensor


def _check_finite(name: str, x: Tensor) -> None:
    """Refuse NaN or infinite entries (a NaN would silently count as background)."""
    bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
    if bad:
        raise ValueError(f"{name}: {bad} value(s) are NaN or infinite; expected masks or "
                         "probabilities in [0, 1]")


def _check(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be "
                         "(B, 1, H, W)")
    _check_finite("pred", pred)
    _check_finite("target", target)
    return (pred > 0.5).float(), (target > 0.5).float()


def _spacing(spacing: float | Sequence[float] | Tensor, batch: int) -> list[float] | list[list[float]]:
    """``spacing`` as (row, col), or one (row, col) per image; refuses non-positive values.

    Accepts one number, a (row, col) pair, or a ``(B, 2)`` array of per-image spacings.
    """
    arr = torch.as_tensor(spacing, dtype=torch.float64)
    if arr.ndim == 0:
        arr = arr.repeat(2)
    ok = (arr.shape == (2,) or arr.shape == (batch, 2)) and bool(
        torch.isfinite(arr).all() and (arr > 0).all())
    if not ok:
        raise ValueError(f"spacing: expected one positive number, (row, col) positive numbers or "
                         f"a ({batch}, 2) array of per-image (row, col) spacings, got "
                         f"{spacing if arr.numel() <= 4 else tuple(arr.shape)!r}")
    return arr.tolist()


def segmentation_metrics(pred: Tensor, target: Tensor,
                         spacing: float | Sequence[float] | Tensor = 1.0) -> dict[str, Tensor]:
    """Per-image Dice, IoU, HD95 and ASSD of binary masks ``(B, 1, H, W)`` (MONAI).

    Args:
        pred: predicted masks (0/1 or probabilities, thresholded at 0.5).
        target: ground-truth masks.
        spacing: pixel spacing in the unit of the distances: one number, (row, col), or a
            ``(B, 2)`` array with each image's (row, col) spacing (e.g. CAMUS files' own).

    Returns:
        ``{"dice", "iou", "hd95", "assd"}``, each a ``(B,)`` tensor; distances are NaN where a
        mask is empty.
    """
    p, t = _check(pred, target)
    sp = _spacing(spacing, p.shape[0])
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(p, t)
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        p, t, spacing=sp)
    assd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")(
        p, t, spacing=sp)
    return {"dice": dice[:, 0], "iou": iou[:, 0], "hd95": hd[:, 0].float(),
            "assd": assd[:, 0].float()}


def expected_calibration_error(prob: Tensor, target: Tensor, bins: int = 10) -> Tensor:
    """Pixel-wise ECE: ``sum_b |B_b|/n * |mean(target in b) - mean(prob in b)|`` on equal bins."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    if prob.numel() != target.numel():
        raise ValueError(f"prob {tuple(prob.shape)} and target {tuple(target.shape)} must have "
                         "the same number of pixels")
    _check_finite("prob", prob)
    _check_finite("target", target)
    if prob.numel() and (prob.min() < -1e-6 or prob.max() > 1 + 1e-6):
        raise ValueError(f"prob: values in [{float(prob.min()):g}, {float(prob.max()):g}]; "
                         "expected probabilities in [0, 1]")
    p, t = prob.flatten().float(), (target.flatten() > 0.5).float()
    idx = torch.clamp((p * bins).long(), max=bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.double().mean() * (t[sel].mean() - p[sel].mean()).abs().double()
    return ece.float()


def _iou_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 - IoU`` between masks ``(B, 1, H, W)``; two empty masks are at distance 0 (MONAI)."""
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(
        (a > 0.5).float(), (b > 0.5).float())
    return 1 - iou[:, 0]


def _check_samples(samples: Tensor, target: Tensor) -> None:
    if samples.ndim != 5 or samples.shape[0] < 1 or samples.shape[1:] != target.shape:
        raise ValueError(f"samples {tuple(samples.shape)} must be (K, B, 1, H, W) with K >= 1 and "
                         f"(B, 1, H, W) = target {tuple(target.shape)}")
    _check_finite("samples", samples)


def generalized_energy_distance(samples: Tensor, target: Tensor) -> Tensor:
    """Per-image GED with ``d = 1 - IoU``: ``2 E d(S, Y) - E d(S, S') - E d(Y, Y')``.

    Args:
        samples: ``(K, B, 1, H, W)`` binary samples.
        target: ``(B, 1, H, W)``, a single annotation (so ``E d(Y, Y') = 0``).
    """
    _check_samples(samples, target)
    k = samples.shape[0]
    cross = torch.stack([_iou_distance(samples[a], target) for a in range(k)]).mean(0)
    if k > 1:
        pairs = [_iou_distance(samples[a], samples[c]) for a in range(k) for c in range(k)
                 if a != c]
        within = torch.stack(pairs).mean(0)
    else:
        within = torch.zeros_like(cross)
    return 2 * cross - within


def ensemble_metrics(samples: Tensor, target: Tensor, bins: int = 10) -> dict[str, Tensor]:
    """Ensemble statistics of ``(K, B, 1, H, W)`` probability samples against ``(B, 1, H, W)``.

    Returns:
        ``variance`` (mean per-pixel variance, (B,)), ``ece`` (of the mean probability, scalar)
        and ``ged`` ((B,)).
    """
    _check_samples(samples, target)
    var = samples.var(0, unbiased=False).flatten(1).mean(1)
    ece = expected_calibration_error(samples.mean(0), target, bins)
    ged = generalized_energy_distance((samples > 0.5).float(), target)
    return {"variance": var, "ece": ece, "ged": ged}
