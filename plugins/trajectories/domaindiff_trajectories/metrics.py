"""Forecasting metrics (ADE/FDE, average and minimum over K samples) and simple baselines.

ADE of one sample = per-node L2 distance, averaged over real nodes and predicted frames; FDE =
the same at the last frame. GeoTDM reports the average over K = 5 samples; the minimum over K is
the usual best-of-K figure.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric


def ade_fde(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-trajectory ADE and FDE.

    Args:
        pred: ``(..., B, N, T, D)`` predictions (leading dims, e.g. K samples, allowed).
        target: ``(B, N, T, D)``.
        mask: ``(B, N)`` real nodes (None: all).

    Returns:
        ``(ade, fde)`` of shape ``(..., B)``.
    """
    if pred.shape[-4:] != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} does not end with target shape "
                         f"{tuple(target.shape)}")
    dist = (pred - target).norm(dim=-1)  # (..., B, N, T)
    if mask is None:
        mask = torch.ones(target.shape[:2], dtype=dist.dtype, device=dist.device)
    m = mask.to(dist.dtype)
    count = m.sum(-1).clamp_min(1.0)
    ade = (dist.mean(-1) * m).sum(-1) / count
    fde = (dist[..., -1] * m).sum(-1) / count
    return ade, fde


def ade_fde_k(samples: Tensor, target: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """ADE/FDE over K samples ``(K, B, N, T, D)``: averaged over K and minimum over K, per item."""
    ade, fde = ade_fde(samples, target, mask)
    return {"ade_avg": ade.mean(0), "fde_avg": fde.mean(0),
            "ade_min": ade.min(0).values, "fde_min": fde.min(0).values}


def constant_velocity(cond: Tensor, pred_frames: int) -> Tensor:
    """Extrapolate the last observed velocity: ``x_{T+k} = x_T + k (x_T - x_{T-1})``."""
    last, vel = cond[:, :, -1:], cond[:, :, -1:] - cond[:, :, -2:-1]
    k = torch.arange(1, pred_frames + 1, dtype=cond.dtype, device=cond.device)
    return last + k[None, None, :, None] * vel


def kmeans_min_of(samples: np.ndarray, target: np.ndarray, k: int = 20, seed: int = 0
                  ) -> tuple[float, float]:
    """ETH-UCY protocol: cluster S samples of one scene to ``k`` by their final positions.

    Args:
        samples: ``(S, N, T, 2)``.
        target: ``(N, T, 2)``.
        k: clusters (paper 20 of 60).
        seed: k-means seed.

    Returns:
        minADE and minFDE over the ``k`` cluster-centre trajectories (centres are the mean
        trajectory of each cluster's members).
    """
    from sklearn.cluster import KMeans

    s = samples.shape[0]
    feats = samples[:, :, -1].reshape(s, -1)
    labels = KMeans(n_clusters=min(k, s), n_init=4, random_state=seed).fit_predict(feats)
    centres = np.stack([samples[labels == c].mean(0) for c in np.unique(labels)])
    dist = np.linalg.norm(centres - target[None], axis=-1)  # (k, N, T)
    return float(dist.mean((1, 2)).min()), float(dist[:, :, -1].mean(1).min())


class DisplacementError(Metric):
    """Streaming ADE or FDE (averaged over items) for one sample per item.

    ``update(pred, target, mask)`` with ``(B, N, T, D)`` tensors.

    Args:
        which: ``ade`` or ``fde``.
    """

    full_state_update = False

    def __init__(self, which: str = "ade", **kwargs) -> None:
        super().__init__(**kwargs)
        if which not in ("ade", "fde"):
            raise ValueError(f"which must be 'ade' or 'fde', got {which!r}")
        self.which = which
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("n", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        ade, fde = ade_fde(pred, target, mask)
        val = ade if self.which == "ade" else fde
        self.total += val.double().sum()
        self.n += val.numel()

    def compute(self) -> Tensor:
        return (self.total / self.n.clamp_min(1.0)).float()
