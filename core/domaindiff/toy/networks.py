"""A small time-conditioned MLP denoiser for vector data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (continuous) times ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2)).to(t.dtype if t.is_floating_point()
                                                         else torch.float32)


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
        h = self.inp(torch.cat([x, timestep_embedding(t, self.time_dim).to(x.dtype)], -1))
        for block in self.blocks:
            h = h + block(h)
        return {self.key: self.out(h)}
