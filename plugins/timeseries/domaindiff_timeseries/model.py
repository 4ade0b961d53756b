"""TSDiff (unconditional, self-guided) and TSDiff-Cond as DiffusionModules."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from domaindiff.module import DiffusionModule
from domaindiff.processes import DiscreteDDPM
from domaindiff_timeseries.networks import TSDiffBackbone


class TSDiff(DiffusionModule):
    """Unconditional diffusion over context + horizon windows (TSDiff, Kollovieh et al. 2023).

    The state holds ``x`` ``(B, L, D)`` (the mean-scaled window, diffused) and ``past``
    ``(B, max_lag, D)`` (the clean scaled history feeding the lag channels, passed through).

    Args:
        dim: channels ``D``.
        context_length: context steps.
        prediction_length: horizon steps.
        lags: lag channels (must match the data's).
        hidden: residual channels.
        num_blocks: residual blocks.
        emb_dim: step-embedding size.
        d_state: S4 state size.
        num_steps: DDPM steps ``T`` (paper 100).
        beta_start: first beta (paper 1e-4).
        beta_end: last beta (paper 0.1).
        lr: Adam learning rate (paper 1e-3).
        ema_decay: EMA decay.
        sampler: default sampler.
        sampling_steps: default NFE.
        seed: noise seed.
    """

    conditional = False

    def __init__(self, dim: int = 1, context_length: int = 336, prediction_length: int = 24,
                 lags: list[int] | None = None, hidden: int = 64, num_blocks: int = 3,
                 emb_dim: int = 128, d_state: int = 64, num_steps: int = 100,
                 beta_start: float = 1e-4, beta_end: float = 0.1, lr: float = 1e-3,
                 ema_decay: float = 0.999, sampler: str = "ancestral",
                 sampling_steps: int = 100, seed: int = 0) -> None:
        self.save_hyperparameters()
        if context_length < 1 or prediction_length < 1:
            raise ValueError("context_length and prediction_length must be >= 1")
        self.dim, self.context_length, self.prediction_length = dim, context_length, \
            prediction_length
        self.lags = sorted(int(x) for x in (lags or []))
        net = TSDiffBackbone(dim, self.lags, hidden, num_blocks, emb_dim, d_state, num_steps,
                             conditional=self.conditional)
        proc = DiscreteDDPM(schedule="linear", num_steps=num_steps, beta_start=beta_start,
                            beta_end=beta_end)
        super().__init__(net, {"x": proc}, parametrization="eps", lr=lr, ema_decay=ema_decay,
                         sampler=sampler, sampling_steps=sampling_steps, seed=seed)

    @property
    def length(self) -> int:
        """Window length ``context + prediction``."""
        return self.context_length + self.prediction_length

    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        state = {"x": batch["x"].float()}
        state["past"] = batch["past"].float() if self.lags else \
            batch["x"].new_zeros(batch["x"].shape[0], 0, self.dim)
        return state

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is not None:
            state = self.batch_to_state(batch)
            return {k: v[:n] for k, v in state.items()}
        past = torch.zeros(n, max(self.lags, default=0), self.dim, device=self.device)
        return {"x": torch.zeros(n, self.length, self.dim, device=self.device), "past": past}


class TSDiffCond(TSDiff):
    """TSDiff-Cond: the same backbone conditioned on the observed context and its mask.

    Trained on forecasting directly: ``cond`` holds the context values (horizon zeroed) and the
    observation mask (1 on the observed context); the whole window is denoised.
    """

    conditional = True

    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        state = super().batch_to_state(batch)
        x = state["x"]
        mask = torch.zeros_like(x)
        mask[:, : self.context_length] = 1.0
        if "observed" in batch:
            mask = mask * batch["observed"].to(x)
        state["cond"] = torch.cat([x * mask, mask], -1)
        return state

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is None:
            raise ValueError("TSDiffCond samples forecasts: give a batch holding the context")
        return super().sample_template(n, batch)
