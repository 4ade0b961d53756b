"""Forecasting with TSDiff: self-guidance, missing values, TSDiff-Cond sampling and refinement.

Observation self-guidance (MSE / quantile), missing-value scenarios, TSDiff-Cond sampling, and the
refinement of a base forecaster's samples.

Self-guidance uses :class:`domaindiff.guidance.EnergyGuidance` with the energy evaluated on the
one-step denoised estimate at the observed positions: ``eps <- eps + s sigma_t grad E``, which is
TSDiff's DDIM rule exactly; with the ancestral (DDPM) sampler it moves the posterior mean by
``-s (a_{t-1}/a_t) beta_t grad E``, TSDiff's ``-s posterior_var_t grad E`` up to the factor
``(1 - abar_{t-1}) / (1 - abar_t) / sqrt(1 - beta_t)`` (within 5% for t >= 3 on the
paper schedule).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from domaindiff.guidance import EnergyGuidance
from domaindiff_timeseries.data import mean_scale

SCENARIOS = ("none", "random", "blackout_begin", "blackout_end")


def scenario_mask(context_length: int, length: int, scenario: str = "none",
                  missing: float = 0.5, rng: np.random.Generator | None = None) -> np.ndarray:
    """Observation mask ``(length,)`` of a window: context observed except the scenario's gaps.

    Args:
        context_length: observed steps (the horizon is never observed).
        length: window length.
        scenario: ``none``, ``random`` (each context step missing with prob. ``missing``),
            ``blackout_begin`` / ``blackout_end`` (a contiguous ``missing`` fraction of the
            context missing at its start / end).
        missing: missing fraction.
        rng: generator for ``random``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: unknown {scenario!r}; use one of {SCENARIOS}")
    if not 0 <= missing < 1:
        raise ValueError(f"missing must be in [0, 1), got {missing}")
    m = np.zeros(length, np.float32)
    m[:context_length] = 1
    k = int(round(missing * context_length))
    if scenario == "random":
        rng = rng or np.random.default_rng(0)
        m[:context_length] = (rng.random(context_length) >= missing).astype(np.float32)
    elif scenario == "blackout_begin":
        m[:k] = 0
    elif scenario == "blackout_end":
        m[context_length - k: context_length] = 0
    return m


def quantile_levels(n: int) -> Tensor:
    """TSDiff-Q's quantile of sample ``k`` of ``n``: ``(k + 1) / (n + 1)``."""
    return (torch.arange(n, dtype=torch.float32) + 1) / (n + 1)


def guidance_energy(y: Tensor, mask: Tensor, kind: str = "quantile",
                    q: Tensor | None = None):
    """Energy on the denoised estimate at observed positions.

    Args:
        y: observations ``(B, L, D)`` (scaled).
        mask: 1 where observed, broadcastable to ``y``.
        kind: ``mse`` (sum of squared errors) or ``quantile`` (sum of pinball losses at ``q``).
        q: per-sample quantile levels ``(B,)`` for ``quantile``.
    """
    if kind not in ("mse", "quantile"):
        raise ValueError(f"guidance kind: use 'mse' or 'quantile', got {kind!r}")

    def energy(x0: dict[str, Tensor], t: Tensor) -> Tensor:
        r = (y - x0["x"]) * mask  # observed minus predicted
        if kind == "mse":
            e = r**2
        else:
            qq = q.to(r)[:, None, None]
            e = torch.maximum(qq * r, (qq - 1) * r)
        return e.flatten(1).sum(1)

    return energy


class DDPMSelfGuidance:
    """TSDiff's DDPM self-guidance: after each ancestral step ``x <- x - s var_t grad_x E``.

    ``var_t`` is the posterior variance of the step just taken and ``E`` the energy of the
    one-step denoised estimate ``(x - sigma eps_theta(x, t)) / alpha`` of the new state (at its own
    time; TSDiff evaluates the network at the previous step index, a one-step offset). No update
    after the final step (TSDiff's posterior variance is 0 there).

    Args:
        denoiser: eps-predicting denoiser ``(state, t) -> {"x": eps}``.
        process: the diffusion of ``x``.
        energy: ``energy(x0_state, t) -> (B,)``.
        scale: ``s``.
    """

    def __init__(self, denoiser, process, energy, scale: float) -> None:
        self.denoiser, self.process, self.energy, self.scale = denoiser, process, energy, scale
        self._prev = float(process.T)

    def after_step(self, x: dict[str, Tensor], t: Tensor, procs, generator,
                   final: bool = False) -> dict[str, Tensor]:
        s = float(t.reshape(-1)[0])
        prev, self._prev = self._prev, s
        if final:
            self._prev = float(self.process.T)
            return x
        p = self.process
        a_t, s_t = float(p.alpha(torch.tensor(prev))), float(p.sigma(torch.tensor(prev)))
        a_s, s_s = float(p.alpha(torch.tensor(s))), float(p.sigma(torch.tensor(s)))
        var = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0) * s_s**2 / s_t**2
        with torch.enable_grad():
            xs = x["x"].detach().requires_grad_(True)
            eps = self.denoiser({**x, "x": xs}, t)["x"]
            x0 = (xs - s_s * eps) / a_s
            g = torch.autograd.grad(self.energy({"x": x0}, t).sum(), xs)[0]
        return {**x, "x": xs.detach() - self.scale * var * g}


def _stack(windows: Sequence[dict], key: str) -> Tensor:
    return torch.as_tensor(np.stack([w[key] for w in windows]))


@torch.no_grad()
def forecast(model, windows: Sequence[dict], num_samples: int = 100, *, guidance: str = "quantile",
             scale: float = 4.0, sampler: str = "ancestral", steps: int | None = None,
             scenario: str = "none", missing: float = 0.5, batch_size: int = 800,
             seed: int = 0, progress: bool = True, **options) -> np.ndarray:
    """Probabilistic forecasts of the windows' horizons.

    Args:
        model: a trained :class:`~domaindiff_timeseries.model.TSDiff` (or ``TSDiffCond``).
        windows: test windows from :meth:`TimeSeriesData.test_windows`.
        num_samples: samples per window.
        guidance: ``quantile`` (TSDiff-Q), ``mse`` (TSDiff-MS), or ``none`` (conditional model or
            plain unconditional samples).
        scale: guidance scale ``s``.
        sampler: core sampler name (``ancestral`` = DDPM, ``ddim``, ``dpm_solver_pp_2m``, ...).
        steps: network evaluations (default: the diffusion's ``T``).
        scenario: missing-value scenario of the context (see :func:`scenario_mask`).
        missing: missing fraction of the scenario.
        batch_size: sequences sampled at once.
        seed: noise seed.
        progress: tqdm bar over batches.
        **options: sampler options (e.g. ``eta``).

    Returns:
        ``(W, num_samples, prediction_length, D)`` samples in the data's units.
    """
    c, h = model.context_length, model.prediction_length
    length = c + h
    steps = steps or model.processes["x"].num_steps
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    masks, scales = [], []
    for w in windows:
        m = scenario_mask(c, length, scenario, missing, rng)[:, None] * w["observed"]
        masks.append(m)
        scales.append(mean_scale(w["target"][:c], m[:c]))
    mask_all = torch.as_tensor(np.stack(masks))
    scale_all = torch.as_tensor(np.stack(scales))
    target = _stack(windows, "target")
    x_obs = target / scale_all[:, None, :] * mask_all
    # the lag history is rescaled with the scenario's scale
    past = _stack(windows, "past") * _stack(windows, "scale")[:, None, :] / scale_all[:, None, :]
    n_total = len(windows) * num_samples
    win_idx = torch.arange(len(windows)).repeat_interleave(num_samples)
    q_all = quantile_levels(num_samples).repeat(len(windows))
    out = []
    starts = range(0, n_total, batch_size)
    for s0 in tqdm(starts, desc=f"forecast {guidance}/{sampler}-{steps}", disable=not progress):
        idx = win_idx[s0: s0 + batch_size]
        dev = model.device
        y, m = x_obs[idx].to(dev), mask_all[idx].to(dev)
        template = {"x": torch.zeros_like(y), "past": past[idx].to(dev)}
        if not model.lags:
            template["past"] = y.new_zeros(len(idx), 0, y.shape[-1])
        if getattr(model, "conditional", False):
            template["cond"] = torch.cat([y * m, m], -1)
            guide = None
        elif guidance == "none":
            guide = None
        elif sampler == "ancestral":
            guide = DDPMSelfGuidance(model.denoiser(), model.processes["x"], guidance_energy(
                y, m, guidance, q_all[s0: s0 + batch_size].to(dev)), scale)
        else:
            guide = EnergyGuidance(guidance_energy(y, m, guidance, q_all[s0: s0 + batch_size]
                                                   .to(dev)), scale)
        x = model.sample(template=template, sampler=sampler, steps=steps, guidance=guide,
                         generator=gen, **options)["x"]
        out.append((x[:, c:] * scale_all[idx].to(dev)[:, None, :]).cpu())
    samples = torch.cat(out).reshape(len(windows), num_samples, h, -1)
    return samples.numpy()


def refine(model, windows: Sequence[dict], base_samples: np.ndarray, *, method: str = "langevin",
           iterations: int = 20, step_size: float = 0.1, noise: float = 0.1,
           reg: str = "quantile", reg_weight: float = 1.0, seed: int = 0) -> np.ndarray:
    """Refine a base forecaster's samples with the unconditional model (TSDiff Sec. 4.2).

    Energy ``E(y) = ||eps_theta(x_t, t) - eps||^2 at one fixed t`` (the step whose training loss is
    nearest the mean, estimated once) ``+ reg_weight * R(y)`` where ``R`` is the MSE or quantile
    loss of the context against the observations (the base forecast's own samples fix the
    horizon's start point). ``most_likely``: gradient descent (SGD, lr ``step_size``);
    ``langevin``: ``y <- y - eta grad E + sqrt(2 eta) noise xi``.

    Returns:
        refined samples, same shape as ``base_samples`` ``(W, S, H, D)``.
    """
    if method not in ("langevin", "most_likely"):
        raise ValueError(f"method: use 'langevin' or 'most_likely', got {method!r}")
    c, h = model.context_length, model.prediction_length
    proc = model.processes["x"]
    net = model.denoiser()
    gen = torch.Generator().manual_seed(seed)
    w_n, s_n = base_samples.shape[:2]
    scale = _stack(windows, "scale")
    ctx = _stack(windows, "x")[:, :c]
    past = _stack(windows, "past")
    y0 = torch.as_tensor(base_samples, dtype=torch.float32) / scale[:, None, None, :]
    x = torch.cat([ctx[:, None].expand(-1, s_n, -1, -1), y0], 2).reshape(w_n * s_n, c + h, -1)
    pst = past[:, None].expand(-1, s_n, -1, -1).reshape(w_n * s_n, past.shape[1], -1)
    if not model.lags:
        pst = x.new_zeros(len(x), 0, x.shape[-1])
    obs = x[:, :c].clone()
    q = quantile_levels(s_n).repeat(w_n)[:, None, None]
    t_fix = _fixed_time(model, x[: min(len(x), 256)], pst[: min(len(x), 256)], gen)
    t = torch.full((len(x),), t_fix)
    a, sg = proc.alpha(t)[:, None, None], proc.sigma(t)[:, None, None]
    base = x[:, c:].clone()
    x = x.clone()
    for _ in range(iterations):
        x.requires_grad_(True)
        with torch.enable_grad():
            eps = torch.randn(x.shape, generator=gen)
            pred = net({"x": a * x + sg * eps, "past": pst}, t)["x"]
            e = ((pred - eps) ** 2).flatten(1).sum(1)
            r = obs - x[:, :c]
            r2 = base - x[:, c:]
            if reg == "mse":
                e = e + reg_weight * ((r**2).flatten(1).sum(1) + (r2**2).flatten(1).sum(1))
            else:
                e = e + reg_weight * (torch.maximum(q * r, (q - 1) * r).flatten(1).sum(1)
                                      + torch.maximum(q * r2, (q - 1) * r2).flatten(1).sum(1))
            g = torch.autograd.grad(e.sum(), x)[0]
        with torch.no_grad():
            x = x - step_size * g
            if method == "langevin":
                x = x + (2 * step_size) ** 0.5 * noise * torch.randn(x.shape, generator=gen)
        x = x.detach()
    out = x[:, c:].reshape(w_n, s_n, h, -1) * scale[:, None, None, :]
    return out.numpy()


@torch.no_grad()
def _fixed_time(model, x: Tensor, past: Tensor, gen: torch.Generator) -> float:
    """The diffusion time whose denoising loss is nearest the mean over all steps."""
    proc = model.processes["x"]
    net = model.denoiser()
    n = proc.num_steps
    losses = []
    for i in range(1, n + 1):
        t = torch.full((len(x),), i / n)
        eps = torch.randn(x.shape, generator=gen)
        xt = proc.alpha(t)[:, None, None] * x + proc.sigma(t)[:, None, None] * eps
        losses.append(float(((net({"x": xt, "past": past}, t)["x"] - eps) ** 2).mean()))
    losses_t = torch.tensor(losses)
    i = int((losses_t - losses_t.mean()).abs().argmin()) + 1
    return i / n
