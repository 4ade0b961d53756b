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


# --- unconditional generation: marginal, classification and prediction scores ----------------------
def marginal_score(real: Tensor, fake: Tensor, bins: int = 50) -> float:
    """Mean absolute difference of per-column histograms (GeoTDM's marginal score; lower is better).

    For every column (e.g. a spatial dimension, or one bond's length), the real values define
    ``bins`` equal bins over ``[min, max]``; both sets are turned into densities on those bins
    (a generated value outside the real range falls in no bin) and the absolute differences are
    averaged over bins, then over columns.

    Args:
        real: ``(S, C)`` real values, one column per marginal.
        fake: ``(S', C)`` generated values.
        bins: number of bins (paper 50).

    Returns:
        the score (0 for identical sets).
    """
    real, fake = real.double().reshape(len(real), -1), fake.double().reshape(len(fake), -1)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real has {real.shape[1]} columns, fake {fake.shape[1]}")
    scores = []
    for c in range(real.shape[1]):
        r, f = real[:, c], fake[:, c]
        lo, hi = float(r.min()), float(r.max())
        width = max(hi - lo, 1e-12) / bins

        def density(v: Tensor, lo: float = lo, width: float = width) -> Tensor:
            idx = torch.floor((v - lo) / width).long()
            idx = torch.where((v >= lo) & (idx == bins), bins - 1, idx)  # the maximum itself
            keep = (idx >= 0) & (idx < bins)
            counts = torch.bincount(idx[keep], minlength=bins).double()
            return counts / (len(v) * width)

        scores.append((density(r) - density(f)).abs().mean())
    return float(torch.stack(scores).mean())


def coordinate_columns(traj: Tensor, mask: Tensor | None = None) -> Tensor:
    """Columns of the N-body marginal score: every real node and frame, one column per dimension.

    Args:
        traj: ``(S, N, T, D)``.
        mask: ``(S, N)``.
    """
    if mask is None:
        return traj.reshape(-1, traj.shape[-1])
    keep = mask.bool()[:, :, None].expand(-1, -1, traj.shape[2])
    return traj[keep]


def bond_pairs(frame: Tensor, cutoff: float = 1.6) -> list[tuple[int, int]]:
    """Atom pairs closer than ``cutoff`` (Angstrom) in one ``(N, 3)`` frame: the bonds."""
    d = torch.cdist(frame[None].double(), frame[None].double())[0]
    i, j = torch.triu_indices(len(frame), len(frame), 1)
    close = d[i, j] < cutoff
    return list(zip(i[close].tolist(), j[close].tolist(), strict=True))


def bond_columns(traj: Tensor, pairs: list[tuple[int, int]]) -> Tensor:
    """Columns of the MD17 marginal score: each bond's length over items and frames.

    Args:
        traj: ``(S, N, T, 3)``.
        pairs: bonds (see :func:`bond_pairs`).

    Returns:
        ``(S * T, len(pairs))``.
    """
    if not pairs:
        raise ValueError("no bonds: no atom pair is closer than the cutoff")
    i, j = (torch.tensor(p) for p in zip(*pairs, strict=True))
    lengths = (traj[:, i] - traj[:, j]).norm(dim=-1)  # (S, P, T)
    return lengths.permute(0, 2, 1).reshape(-1, len(pairs))


def _batches(n: int, size: int, generator: torch.Generator | None, shuffle: bool):
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


def _readout_inputs(traj: Tensor, h: Tensor) -> Tensor:
    return h[:, :, None].expand(-1, -1, traj.shape[2], -1)


def classification_score(real: Tensor, fake: Tensor, h: Tensor, mask: Tensor | None = None,
                         epochs: int = 100, hidden: int = 16, layers: int = 1, lr: float = 5e-3,
                         batch_size: int = 128, seed: int = 0) -> float:
    """Test BCE of a small equivariant classifier of real vs generated trajectories.

    GeoTDM's classification score (higher is better: ``ln 2 = 0.693`` when the two sets cannot be
    told apart). Real and generated trajectories are pooled with labels 0/1, split 80/20 at
    random, a one-layer EGTN (invariant readout: mean of the node features over real nodes and
    frames, then a linear logit) is trained with Adam for ``epochs`` and the test-split binary
    cross-entropy is returned.

    Args:
        real: ``(S, N, T, D)`` real trajectories.
        fake: ``(S', N, T, D)`` generated trajectories.
        h: ``(S + S', N, F)`` node features of the pooled set (real first), or ``(N, F)``.
        mask: ``(S + S', N)`` node mask of the pooled set, or ``(N,)``, or None.
        epochs: training epochs (paper 100).
        hidden: classifier width (paper 16).
        layers: EGTN blocks (paper 1).
        lr: Adam learning rate (paper 0.005).
        batch_size: batch size (paper 128).
        seed: split, initialisation and shuffling seed.
    """
    from domaindiff_trajectories.networks import EGTN

    x = torch.cat([real, fake]).float()
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))])
    h, mask = _pooled(h, mask, x)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=gen)
    cut = int(0.8 * len(x))
    tr, te = perm[:cut], perm[cut:]
    torch.manual_seed(seed)
    net = EGTN(h.shape[-1], hidden, layers, edge_dim=h.shape[-1])
    head = torch.nn.Linear(hidden, 1)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=lr)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")

    def logits(idx: Tensor) -> Tensor:
        hh, m = h[idx], mask[idx]
        out, _ = net(_readout_inputs(x[idx], hh), x[idx], m, hh[:, :, None] * hh[:, None])
        w = m[:, :, None, None]
        pooled = (out * w).sum((1, 2)) / (w.sum((1, 2)) * out.shape[2]).clamp_min(1.0)
        return head(pooled)[:, 0]

    for _ in range(epochs):
        for b in _batches(len(tr), batch_size, gen, True):
            idx = tr[b]
            loss = bce(logits(idx), y[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(torch.cat([bce(logits(te[b]), y[te[b]])
                                for b in _batches(len(te), batch_size, None, False)]).mean())


def _pooled(h: Tensor, mask: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
    n = len(x)
    h = h.float()
    h = h[None].expand(n, -1, -1) if h.dim() == 2 else h
    if mask is None:
        mask = torch.ones(x.shape[:2])
    mask = mask.float()
    mask = mask[None].expand(n, -1) if mask.dim() == 1 else mask
    if len(h) != n or len(mask) != n:
        raise ValueError(f"h and mask must cover the {n} pooled trajectories")
    return h, mask


def prediction_score(train: Tensor, test: Tensor, h: Tensor, mask: Tensor | None = None,
                     epochs: int = 100, hidden: int = 16, layers: int = 1, lr: float = 5e-3,
                     batch_size: int = 128, seed: int = 0) -> float:
    """Train-on-synthetic, test-on-real MSE of a small equivariant forecaster (lower is better).

    GeoTDM's prediction score: a one-layer EGTN regressor learns to map the first half of each
    generated trajectory to its second half, and its mean squared error (over real nodes, frames
    and coordinates) on the real trajectories is returned.

    Args:
        train: ``(S', N, T, D)`` generated trajectories (the training set).
        test: ``(S, N, T, D)`` real trajectories.
        h: ``(S' + S, N, F)`` node features (train first), or ``(N, F)``.
        mask: ``(S' + S, N)`` node mask, ``(N,)`` or None.
        epochs: training epochs (paper 100).
        hidden: width (paper 16).
        layers: EGTN blocks (paper 1).
        lr: Adam learning rate (paper 0.005).
        batch_size: batch size (paper 128).
        seed: initialisation and shuffling seed.
    """
    from domaindiff_trajectories.networks import EGTNRegressor

    x = torch.cat([train, test]).float()
    h, mask = _pooled(h, mask, x)
    tc = x.shape[2] // 2
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = EGTNRegressor(h.shape[-1], hidden, layers, x.shape[2] - tc)
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def err(idx: Tensor) -> Tensor:
        m = mask[idx]
        batch = {"cond": x[idx, :, :tc], "h": h[idx], "mask": m}
        se = ((net(batch) - x[idx, :, tc:]) ** 2).mean((2, 3))  # (B, N)
        return (se * m).sum(1) / m.sum(1).clamp_min(1.0)

    n_train = len(train)
    for _ in range(epochs):
        for b in _batches(n_train, batch_size, gen, True):
            loss = err(b).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        idx = torch.arange(n_train, len(x))
        return float(torch.cat([err(idx[b]) for b in _batches(len(idx), batch_size, None,
                                                              False)]).mean())
