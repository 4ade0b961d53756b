"""TSDiff's denoiser: a gated residual backbone around bidirectional S4D layers.

:class:`S4DLayer` is a diagonal state-space layer (S4D, Gu et al. 2022) with zero-order-hold
discretisation and S4D-Lin initialisation; its convolution kernel depends only on the weights, so
outside training it is cached per sequence length (and recomputed when the weights change, e.g. by
the EMA update).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domaindiff.nn import sinusoidal_embedding


class S4DLayer(nn.Module):
    """Bidirectional diagonal state-space convolution over ``(B, L, H)`` sequences.

    Args:
        hidden: channels ``H``.
        d_state: state size ``N`` (``N/2`` complex conjugate pairs).
        bidirectional: add a second kernel run over the reversed sequence.
        dt_min: smallest initial step size.
        dt_max: largest initial step size.
    """

    def __init__(self, hidden: int, d_state: int = 64, bidirectional: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number >= 2, got {d_state}")
        self.hidden, self.bidirectional = hidden, bidirectional
        k = 2 if bidirectional else 1
        n = d_state // 2
        self.log_dt = nn.Parameter(torch.rand(k * hidden) * (math.log(dt_max) - math.log(dt_min))
                                   + math.log(dt_min))
        self.log_a_real = nn.Parameter(torch.full((k * hidden, n), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(n).float().repeat(k * hidden, 1))
        c = torch.randn(k * hidden, n, 2) * math.sqrt(0.5)
        self.c = nn.Parameter(c)
        self.d = nn.Parameter(torch.randn(hidden))
        self.out = nn.Linear(hidden, 2 * hidden)
        self._cache: tuple[tuple, Tensor] | None = None

    def kernel(self, length: int) -> Tensor:
        """The convolution kernel ``(k * H, L)`` (cached outside training)."""
        key = (length, self.log_dt._version, self.log_a_real._version, self.a_imag._version,
               self.c._version, self.log_dt.data_ptr(), str(self.log_dt.device))
        if not self.training and not torch.is_grad_enabled() and self._cache is not None \
                and self._cache[0] == key:
            return self._cache[1]
        dt = self.log_dt.exp()[:, None]
        a = torch.complex(-self.log_a_real.exp(), self.a_imag)
        dta = a * dt
        c = torch.view_as_complex(self.c.contiguous()) * (torch.exp(dta) - 1.0) / a
        pos = torch.arange(length, device=dt.device, dtype=dt.dtype)
        vander = torch.exp(dta[:, :, None] * pos)  # (kH, N/2, L)
        k = 2 * torch.einsum("hn,hnl->hl", c, vander).real
        if not self.training and not torch.is_grad_enabled():
            k = k.detach()
            self._cache = (key, k)
        return k

    def train(self, mode: bool = True):  # noqa: D102 - nn.Module API
        self._cache = None
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, L, H)`` -> ``(B, L, H)``."""
        b, length, h = x.shape
        # the kernel needs no grad at inference even when guidance differentiates w.r.t. x
        with torch.set_grad_enabled(self.training and torch.is_grad_enabled()):
            k = self.kernel(length)
        u = x.transpose(1, 2)  # (B, H, L)
        n = 2 * length
        if self.bidirectional:  # one circular convolution: causal kernel + anti-causal kernel
            k = F.pad(k[:h], (0, length)) + F.pad(k[h:].flip(-1), (length, 0)).roll(1, -1)
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
        y = y + self.d[:, None] * u
        y = F.gelu(y.transpose(1, 2))
        return F.glu(self.out(y), dim=-1)


class ResidualBlock(nn.Module):
    """DiffWave/SSSD block: step conditioning, S4, gated activation, residual and skip outputs."""

    def __init__(self, hidden: int, emb_dim: int, d_state: int) -> None:
        super().__init__()
        self.step_proj = nn.Linear(emb_dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.s4 = S4DLayer(hidden, d_state)
        self.gate = nn.Linear(hidden, 2 * hidden)
        self.res_skip = nn.Linear(hidden, 2 * hidden)

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        y = x + self.step_proj(emb)[:, None, :]
        y = self.s4(self.norm(y))
        a, b = self.gate(y).chunk(2, -1)
        y = torch.tanh(a) * torch.sigmoid(b)
        res, skip = self.res_skip(y).chunk(2, -1)
        return (x + res) / math.sqrt(2.0), skip


class TSDiffBackbone(nn.Module):
    """The TSDiff denoiser ``(state, t) -> {"x": eps}``.

    Input channels per step: the noisy series ``x`` (``D``), its lagged values (``D`` per lag,
    read from the noisy window itself or, before its start, from the clean scaled ``past``), and
    for the conditional model the observed context and its mask (``2 D``). With
    ``missing_indicator`` each of the ``1 + len(lags)`` value channels gets a 0/1 channel saying
    whether its input is a value (1) or the placeholder of a missing step (0): read from
    ``state["observed"]`` (the window) and ``state["past_observed"]`` (the lag history), each
    taken as all ones when absent (a sampled window holds no placeholders).

    Args:
        dim: channels ``D`` of the series.
        lags: lag steps.
        hidden: residual channels (paper 64).
        num_blocks: residual blocks (paper 3).
        emb_dim: step-embedding size (paper 128).
        d_state: S4 state size.
        num_steps: diffusion steps ``N`` (``t`` in ``[0, 1]`` is embedded as ``t * N``).
        conditional: read ``state["cond"]`` (``(B, L, 2 D)``: observed values, mask).
        covariates: extra dynamic covariate channels read from ``state["covariates"]``.
        missing_indicator: add the observed-mask channels described above.
    """

    def __init__(self, dim: int = 1, lags: list[int] | None = None, hidden: int = 64,
                 num_blocks: int = 3, emb_dim: int = 128, d_state: int = 64,
                 num_steps: int = 100, conditional: bool = False, covariates: int = 0,
                 missing_indicator: bool = False) -> None:
        super().__init__()
        self.dim, self.lags = dim, list(lags or [])
        self.num_steps, self.conditional, self.covariates = num_steps, conditional, covariates
        self.emb_dim, self.missing_indicator = emb_dim, bool(missing_indicator)
        c_in = dim * (1 + len(self.lags)) * (2 if missing_indicator else 1) \
            + (2 * dim if conditional else 0) + covariates
        self.inp = nn.Linear(c_in, hidden)
        self.emb = nn.Sequential(nn.Linear(emb_dim, 4 * emb_dim), nn.SiLU(),
                                 nn.Linear(4 * emb_dim, emb_dim), nn.SiLU())
        self.blocks = nn.ModuleList(ResidualBlock(hidden, emb_dim, d_state)
                                    for _ in range(num_blocks))
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def features(self, state: dict[str, Tensor]) -> Tensor:
        """Input features ``(B, L, c_in)`` of a state."""
        x = state["x"]
        feats = [x]
        if self.lags:
            past = state.get("past")
            max_lag = max(self.lags)
            if past is None or past.shape[1] < max_lag:
                raise ValueError(f"state['past'] must hold >= {max_lag} steps of history for the "
                                 "lag channels")
            full = torch.cat([past[:, -max_lag:].to(x), x], 1)
            length = x.shape[1]
            feats += [full[:, max_lag - lag: max_lag - lag + length] for lag in self.lags]
        if self.missing_indicator:
            feats += self._observed_channels(state, x)
        if self.conditional:
            feats.append(state["cond"].to(x))
        if self.covariates:
            feats.append(state["covariates"].to(x))
        return torch.cat(feats, -1)

    def _observed_channels(self, state: dict[str, Tensor], x: Tensor) -> list[Tensor]:
        """The 0/1 masks of the value channels (window, then each lag)."""
        obs = state.get("observed")
        obs = torch.ones_like(x) if obs is None else obs.to(x).expand_as(x)
        out = [obs]
        if self.lags:
            max_lag, length = max(self.lags), x.shape[1]
            past = state.get("past_observed")
            past = x.new_ones(x.shape[0], max_lag, x.shape[2]) if past is None else \
                past[:, -max_lag:].to(x)
            full = torch.cat([past, obs], 1)
            out += [full[:, max_lag - lag: max_lag - lag + length] for lag in self.lags]
        return out

    def forward(self, state: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        h = self.inp(self.features(state))
        emb = self.emb(sinusoidal_embedding(t * self.num_steps, self.emb_dim))
        skip = 0.0
        for blk in self.blocks:
            h, s = blk(h, emb)
            skip = skip + s
        return {"x": self.head(skip / math.sqrt(len(self.blocks)))}
