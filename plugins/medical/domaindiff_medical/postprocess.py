"""Post-processing of fused LV probabilities that cannot keep a blob outside the imaging sector.

Clinical tools restrict a segmentation to where the probe sees: pixels outside the ultrasound
sector carry no echo, so a component there is an artefact whatever its size. The kept component
is then the one the ensemble supports most (the largest probability mass of the fused map, i.e.
the expected area the ensemble members put there), not merely the largest one.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor


def sector_mask(image: Tensor, level: float = 0.02, closing: int = 2) -> Tensor:
    """The imaging sector of each image: the largest region of echo, holes filled.

    Pixels brighter than ``level`` (images in [0, 1]) are closed morphologically (radius
    ``closing``), their holes filled (dark blood pools lie inside the sector) and the largest
    connected region kept.

    Args:
        image: ``(B, 1, H, W)`` images in [0, 1].
        level: echo threshold.
        closing: closing radius in pixels.

    Returns:
        ``(B, 1, H, W)`` bool; an image with no echo at all gives an all-True mask (no
        restriction rather than an empty segmentation).
    """
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"image: expected (B, 1, H, W), got {tuple(image.shape)}")
    arr = image.detach().cpu().float().numpy()
    out = np.ones(arr.shape, bool)
    struct = np.ones((2 * closing + 1, 2 * closing + 1), bool) if closing > 0 else None
    for b in range(arr.shape[0]):
        m = arr[b, 0] > level
        if not m.any():
            continue
        if struct is not None:
            m = ndimage.binary_closing(np.pad(m, closing), structure=struct)[
                closing:-closing, closing:-closing]
        m = ndimage.binary_fill_holes(m)
        lab, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, lab, index=range(1, n + 1))
            m = lab == (1 + int(np.argmax(sizes)))
        out[b, 0] = m
    return torch.from_numpy(out).to(image.device)


def postprocess(prob: Tensor, threshold: float = 0.5, opening: int = 1,
                sector: Tensor | None = None) -> Tensor:
    """Threshold inside the sector, keep the component the ensemble supports most, open it.

    Args:
        prob: ``(B, 1, H, W)`` fused probabilities (the ensemble mean).
        threshold: binarisation threshold.
        opening: opening radius in pixels (0 disables it; an opening that would erase the
            component is skipped).
        sector: ``(B, 1, H, W)`` bool imaging sector (see :func:`sector_mask`); pixels outside
            it are never kept. ``None``: no restriction.

    Returns:
        ``(B, 1, H, W)`` float 0/1 masks with at most one connected component each.
    """
    if prob.ndim != 4 or prob.shape[1] != 1:
        raise ValueError(f"prob: expected (B, 1, H, W), got {tuple(prob.shape)}")
    if sector is not None and sector.shape != prob.shape:
        raise ValueError(f"sector {tuple(sector.shape)} must match prob {tuple(prob.shape)}")
    p = prob.detach().cpu().float().numpy()
    keep = p > threshold
    if sector is not None:
        keep &= sector.detach().cpu().numpy().astype(bool)
    out = np.zeros(p.shape, np.float32)
    struct = np.ones((2 * opening + 1, 2 * opening + 1), bool) if opening > 0 else None
    for b in range(p.shape[0]):
        m = keep[b, 0]
        lab, n = ndimage.label(m)
        if n > 1:  # the component with the largest probability mass (expected ensemble area)
            mass = ndimage.sum(p[b, 0], lab, index=range(1, n + 1))
            m = lab == (1 + int(np.argmax(mass)))
        if struct is not None and m.any():
            opened = ndimage.binary_opening(m, structure=struct)
            if opened.any():
                lab, n = ndimage.label(opened)
                if n > 1:
                    mass = ndimage.sum(p[b, 0], lab, index=range(1, n + 1))
                    opened = lab == (1 + int(np.argmax(mass)))
                m = opened
        out[b, 0] = m
    return torch.from_numpy(out).to(prob.device)
