"""Distances between sample sets, and torchmetrics wrappers so DDP syncs them."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric


def energy_distance(x: Tensor, y: Tensor) -> Tensor:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic, squared form)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256,
                       generator: torch.Generator | None = None) -> Tensor:
    """Sliced 2-Wasserstein distance over random unit directions (equal sample counts)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    if x.shape[0] != y.shape[0]:
        n = min(x.shape[0], y.shape[0])
        x, y = x[:n], y[:n]
    d = torch.randn(x.shape[1], n_proj, generator=generator, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ d, dim=0)
    py, _ = torch.sort(y @ d, dim=0)
    return ((px - py) ** 2).mean().sqrt()


class SampleDistance(Metric):
    """Accumulates generated and reference samples and reports their energy distance.

    States are concatenated across processes on ``compute`` (DDP-synced by torchmetrics).
    """

    full_state_update = False
    # states made by add_state (typed here: torchmetrics' __getattr__ is untyped); a DDP sync
    # may turn a list state into one concatenated tensor, which compute() accepts
    generated: list[Tensor]
    reference: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("generated", default=[], dist_reduce_fx="cat")
        self.add_state("reference", default=[], dist_reduce_fx="cat")

    def update(self, generated: Tensor, reference: Tensor) -> None:
        """Add a batch of generated and reference samples."""
        self.generated.append(generated.reshape(generated.shape[0], -1).float())
        self.reference.append(reference.reshape(reference.shape[0], -1).float())

    def compute(self) -> Tensor:
        """Energy distance between all gathered samples."""
        return energy_distance(_cat(self.generated), _cat(self.reference)).float()


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A list state as one tensor (it already is one after a DDP sync)."""
    return state if isinstance(state, Tensor) else torch.cat(state)


class SampleCount(Metric):
    """Number of samples seen across all processes (checks DDP sync)."""

    full_state_update = False
    n: Tensor  # made by add_state

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("n", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, generated: Tensor, reference: Tensor) -> None:
        """Count a batch."""
        self.n += generated.shape[0]

    def compute(self) -> Tensor:
        """Total count."""
        return self.n
