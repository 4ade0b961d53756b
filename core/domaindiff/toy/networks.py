"""A small time-conditioned MLP denoiser for vector data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from domaindiff.nn import sinusoidal_embedding


class MLPDenoiser(nn.Module):
    """``f(x_t, t)``: an MLP on ``[x_t, emb(t)]`` with SiLU activations and residual blocks.

    Args:
        dim: data dimension.
        hidden: hidden width.
        depth: number of residual blocks.
        time_dim: size of the time embedding.
        key: state key read and written.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32,
                 key: str = "x") -> None:
        super().__init__()
        self.key, self.time_dim = key, time_dim
        self.inp = nn.Linear(dim + time_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                          nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, state: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        x = state[self.key]
        emb = sinusoidal_embedding(t, self.time_dim, scale=1000.0, cos_first=True)
        h = self.inp(torch.cat([x, emb.to(x.dtype)], -1))
        for block in self.blocks:
            h = h + block(h)
        return {self.key: self.out(h)}
