"""Network pieces shared by the plugins' denoisers.

One sinusoidal time embedding serves every plugin; the plugins differ only in how they scale
``t`` before embedding it (DDPM steps ``1000 t``, ``N t``, raw frame offsets), which is the
``scale`` argument or a multiplication at the call site, and in the order of the two halves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalTimeEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, *, max_period: float = 10000.0,
                         scale: float = 1.0, cos_first: bool = False,
                         dtype: torch.dtype | None = torch.float32) -> Tensor:
    """Transformer-style sinusoidal embedding of times ``t`` (any shape) into ``(..., dim)``.

    With ``half = dim // 2`` and frequencies ``f_k = max_period ** (-k / half)``
    (``k = 0 .. half - 1``), the embedding of ``s = scale * t`` is
    ``[sin(s f_0), ..., sin(s f_{half-1}), cos(s f_0), ..., cos(s f_{half-1})]``
    (cosines first with ``cos_first``); an odd ``dim`` gets one trailing zero.

    Args:
        t: times (continuous or integer steps), any shape.
        dim: embedding width (>= 1).
        max_period: the longest period, ``1 / f_{half}``.
        scale: multiplies ``t`` before embedding (e.g. ``1000.0`` for times in [0, 1] read as
            DDPM steps).
        cos_first: put the cosine half first.
        dtype: dtype of the computation and the output; ``None`` keeps ``t``'s floating dtype
            (float32 for integer ``t``).

    Returns:
        ``(*t.shape, dim)`` tensor.

    Raises:
        ValueError: ``dim`` is not positive.
    """
    if dim < 1:
        raise ValueError(f"sinusoidal_embedding: dim must be >= 1, got {dim}")
    if dtype is None:
        dtype = t.dtype if t.is_floating_point() else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = (scale * t.to(dtype))[..., None] * freqs
    halves = [args.cos(), args.sin()] if cos_first else [args.sin(), args.cos()]
    emb = torch.cat(halves, -1)
    return torch.cat([emb, emb.new_zeros(*emb.shape[:-1], 1)], -1) if dim % 2 else emb


class SinusoidalTimeEmbedding(nn.Module):
    """Module form of :func:`sinusoidal_embedding` (no parameters, no buffers).

    Args:
        dim: embedding width.
        max_period: the longest period.
        scale: multiplies ``t`` before embedding.
        cos_first: put the cosine half first.
        dtype: computation dtype (``None``: ``t``'s floating dtype).
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1.0,
                 cos_first: bool = False, dtype: torch.dtype | None = torch.float32) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"SinusoidalTimeEmbedding: dim must be >= 1, got {dim}")
        self.dim, self.max_period, self.scale = dim, float(max_period), float(scale)
        self.cos_first, self.dtype = cos_first, dtype

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t`` (any shape) into ``(*t.shape, dim)``."""
        return sinusoidal_embedding(t, self.dim, max_period=self.max_period, scale=self.scale,
                                    cos_first=self.cos_first, dtype=self.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, scale={self.scale}"
