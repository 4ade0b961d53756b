"""Pictures of segmentations: image with ground-truth and predicted contours, and uncertainty.

Written through :func:`domaindiff.plotting.save_figure` (atomic, closes the figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from domaindiff.plotting import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRUTH, PRED = "lime", "red"


def _contour(ax: Axes, mask: np.ndarray, color: str, ls: str) -> None:
    """The 0.5 level line of ``mask`` (nothing when the mask is empty or full)."""
    if mask.min() < 0.5 <= mask.max():
        ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.2, linestyles=ls)


def _pixels(ax: Axes, left: bool, bottom: bool) -> None:
    ax.tick_params(labelsize=6)
    if left:
        ax.set_ylabel("row (px)", fontsize=8)
    if bottom:
        ax.set_xlabel("column (px)", fontsize=8)
    else:  # the same pixel grid as the row below: its labels would crowd the next title
        ax.tick_params(labelbottom=False)


def overlay_title(ckpt: str, data: str, sampler: str, steps: int, ensemble: int,
                  dice: float | None = None) -> str:
    """The overlay picture's title: which checkpoint, data, sampler, steps and ensemble size."""
    score = "" if dice is None else f"; mean Dice {dice:.3f}"
    return f"{ckpt} on {data}: {sampler}, {steps} steps, ensemble of {ensemble}{score}"


def write_overlays(path: str | Path | None, images: torch.Tensor, masks: torch.Tensor,
                   pred: torch.Tensor, var: torch.Tensor, num: int = 4, title: str = "",
                   labels: list[str] | None = None) -> Figure:
    """One PNG with a row per image: the image, its contours, and the uncertainty map.

    Column 1 is the plain image; column 2 the image with the ground-truth (green, solid) and
    predicted (red, dashed) contours overlaid; column 3 the ensemble variance with a colourbar
    (one scale for all rows) and the ground-truth contour for orientation.

    Args:
        path: the PNG to write, or None to return the figure unsaved (an eval app's driver saves
            it).
        images: (N, 1, H, W) images.
        masks: (N, 1, H, W) ground-truth masks.
        pred: (N, 1, H, W) predicted masks (probabilities or 0/1).
        var: (N, 1, H, W) ensemble variance.
        num: images drawn (rows).
        title: what and which run (checkpoint, sampler, steps, ensemble size).
        labels: one name per row (default ``test image r``), e.g. its index and Dice.

    Returns:
        the figure (saved and closed when ``path`` is given).
    """
    from matplotlib.lines import Line2D

    plt = pyplot()
    num = max(1, min(num, len(images)))
    fig, axes = plt.subplots(num, 3, figsize=(9.0, 2.7 * num + 0.9), squeeze=False)
    top = float(var[:num].float().max()) or 1.0  # one colour scale: rows compare
    for r in range(num):
        img = images[r, 0].float().numpy()
        last = r == num - 1
        axes[r, 0].imshow(img, cmap="gray")
        name = labels[r] if labels is not None else f"test image {r}"
        axes[r, 0].set_title(name, fontsize=9)
        axes[r, 1].imshow(img, cmap="gray")
        _contour(axes[r, 1], masks[r, 0].float().numpy(), TRUTH, "solid")
        _contour(axes[r, 1], pred[r, 0].float().numpy(), PRED, "dashed")
        axes[r, 1].set_title("truth and prediction", fontsize=9)
        heat = axes[r, 2].imshow(var[r, 0].float().numpy(), cmap="magma", vmin=0, vmax=top)
        _contour(axes[r, 2], masks[r, 0].float().numpy(), TRUTH, "solid")  # where the organ is
        cbar = fig.colorbar(heat, ax=axes[r, 2], fraction=0.046, pad=0.04)
        cbar.set_label("ensemble variance", fontsize=7)
        cbar.ax.tick_params(labelsize=6)
        axes[r, 2].set_title("uncertainty", fontsize=9)
        for c in range(3):
            _pixels(axes[r, c], c == 0, last)
    handles = [Line2D([], [], color=TRUTH, lw=1.5), Line2D([], [], color=PRED, lw=1.5, ls="--")]
    fig.legend(handles, ["ground truth", "prediction"], loc="lower center", ncol=2,
               fontsize=8, frameon=False)
    fig.suptitle(title or "segmentations", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    if path is not None:
        save_figure(fig, path, dpi=90)
    return fig
