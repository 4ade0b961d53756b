"""The core's sinusoidal time embedding, bitwise equal to the four plugin copies it replaced."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from domaindiff.nn import SinusoidalTimeEmbedding, sinusoidal_embedding

# Frozen copies of the four embeddings the plugins had before they used domaindiff.nn
# (the reference the refactor must reproduce bit for bit).


def _old_toy(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2)).to(t.dtype if t.is_floating_point()
                                                         else torch.float32)


def _old_medical(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _old_timeseries(step: Tensor, dim: int = 128, max_period: float = 10000.0) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=step.device) / half)
    arg = step.float()[:, None] * freqs[None] * 1.0
    return torch.cat([arg.sin(), arg.cos()], -1)


def _old_trajectories(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype,
                                                           device=t.device) / half)
    ang = t[..., None] * freqs
    emb = torch.cat([ang.sin(), ang.cos()], -1)
    return torch.cat([emb, torch.zeros_like(emb[..., :1])], -1) if dim % 2 else emb


def _times(dtype: torch.dtype = torch.float32) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.tensor([0.0, 1e-3, 0.5, 1.0]), torch.rand(60, generator=g)]).to(dtype)


def test_hand_computed_value():
    # dim 4: half 2, frequencies 1 and 10000 ** -0.5 = 0.01
    emb = sinusoidal_embedding(torch.tensor([1.0]), 4)
    want = torch.tensor([[math.sin(1.0), math.sin(0.01), math.cos(1.0), math.cos(0.01)]])
    torch.testing.assert_close(emb, want)
    emb = sinusoidal_embedding(torch.tensor([2.0]), 5, scale=0.5, cos_first=True)
    want = torch.tensor([[math.cos(1.0), math.cos(0.01), math.sin(1.0), math.sin(0.01), 0.0]])
    torch.testing.assert_close(emb, want)


@pytest.mark.parametrize("dim", [7, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_toy_embedding_bitwise(dim, dtype):
    t = _times(dtype)
    new = sinusoidal_embedding(t, dim, scale=1000.0, cos_first=True).to(t.dtype)
    assert torch.equal(new, _old_toy(t, dim))


@pytest.mark.parametrize("dim", [16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_medical_embedding_bitwise(dim, dtype):
    t = _times(dtype)
    assert torch.equal(sinusoidal_embedding(t, dim, scale=1000.0), _old_medical(t, dim))


@pytest.mark.parametrize("dim", [8, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_timeseries_embedding_bitwise(dim, dtype):
    s = _times(dtype) * 50  # the backbone embeds t * num_steps
    assert torch.equal(sinusoidal_embedding(s, dim), _old_timeseries(s, dim))


@pytest.mark.parametrize("dim", [7, 8, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectories_embedding_bitwise(dim, dtype):
    t = _times(dtype) * 1000
    idx = torch.arange(6, dtype=dtype)
    rel = idx[:, None] - idx[None, :]  # the relative-time attention embeds a (T, T) grid
    for x in (t, rel):
        new = sinusoidal_embedding(x, dim, dtype=None)
        assert new.dtype == dtype and torch.equal(new, _old_trajectories(x, dim))


def test_module_has_no_state_and_matches_function():
    emb = SinusoidalTimeEmbedding(9, scale=1000.0, cos_first=True)
    assert emb.state_dict() == {} and list(emb.parameters()) == []
    t = _times()
    assert torch.equal(emb(t), sinusoidal_embedding(t, 9, scale=1000.0, cos_first=True))
    assert emb(t).shape == (t.shape[0], 9)


def test_integer_steps_embed_as_float32():
    emb = sinusoidal_embedding(torch.arange(5), 6, dtype=None)
    assert emb.dtype == torch.float32
    assert torch.equal(emb, sinusoidal_embedding(torch.arange(5).float(), 6))


def test_bad_dim_is_refused():
    with pytest.raises(ValueError, match="dim must be >= 1, got 0"):
        sinusoidal_embedding(torch.zeros(2), 0)
