"""Forecasting with TSDiff: self-guidance, missing values, TSDiff-Cond sampling and refinement.

Observation self-guidance puts an energy (MSE for TSDiff-MS, quantile/pinball for TSDiff-Q) on the
one-step denoised estimate at the observed positions:

- :class:`DDPMSelfGuidance`: TSDiff's DDPM rule, ``x <- x - s var_t grad_{x_t} E`` after each
  ancestral step (two network evaluations per step);
- :class:`PredictionSelfGuidance`: guidance on the prediction for any core sampler; with
  ``gradient="network"`` it is TSDiff's DDIM rule ``eps <- eps + s sigma_t grad_{x_t} E``.

Both take overshoot-safe steps by default (``safe=True``; see the classes for why TSDiff-MS
diverged without them); ``safe=False`` is the paper's rules exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from domaindiff.guidance import Guidance
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


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` -> broadcastable to ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


class DDPMSelfGuidance(Guidance):
    """TSDiff's DDPM self-guidance: after each ancestral step ``x <- x - s var_t grad_x E``.

    ``var_t`` is the posterior variance of the step just taken and ``E`` the energy of the
    one-step denoised estimate ``(x - sigma eps_theta(x, t)) / alpha`` of the new state (at its own
    time; TSDiff evaluates the network at the previous step index, a one-step offset). No update
    after the final step (TSDiff's posterior variance is 0 there). The guidance evaluates the
    network once more per step (forward + backward): DDPM with ``N`` steps costs ``2 N - 1``
    network evaluations.

    Why MSE guidance can diverge, and ``safe``: the update is a gradient step of rate
    ``s var_t`` on ``E(x0_hat(x_t))``, whose curvature is ``2 J^T M J`` for MSE with
    ``J = d x0_hat / d x_t = (I - sigma d eps_theta / d x_t) / alpha``. A well-trained denoiser
    has a small ``J`` at high noise (Tweedie: ``J = alpha Cov[x0 | x_t] / sigma^2``), but a briefly
    trained one is close to its zero-initialised head (``eps_theta = 0``, ``J = I / alpha``,
    ``|J| = 13`` at ``t = T`` on the paper's schedule; measured ``|J| = 8`` after 6 epochs). Then
    ``2 s var_T |J|^2 = 2 * 4 * 0.1 * 64 = 51 >> 2`` and each step multiplies the residual by
    about ``-50``: MSE guidance blows up within five steps. The quantile energy has a bounded
    gradient, which hides the problem. With ``safe`` the rate is capped per sample at Polyak's
    step ``E / |grad E|^2`` (exact for a convex energy whose minimum is 0, as both are): the step
    never overshoots the observation, and it equals the paper's step whenever that one is already
    small enough (a well-trained model at moderate scale).

    Args:
        denoiser: eps-predicting denoiser ``(state, t) -> {"x": eps}``.
        process: the diffusion of ``x``.
        energy: ``energy(x0_state, t) -> (B,)``.
        scale: ``s``.
        safe: cap the step at Polyak's step (see above); ``False``: the paper's rule exactly.
    """

    def __init__(self, denoiser, process, energy, scale: float, safe: bool = True) -> None:
        self.denoiser, self.process, self.energy, self.scale = denoiser, process, energy, scale
        self.safe = safe

    def after_step(self, x: dict[str, Tensor], t_prev: Tensor, t: Tensor, procs, generator,
                   final: bool = False) -> dict[str, Tensor]:
        s, prev = float(t.reshape(-1)[0]), float(t_prev.reshape(-1)[0])
        if final:
            return x
        p = self.process
        a_t, s_t = float(p.alpha(torch.tensor(prev))), float(p.sigma(torch.tensor(prev)))
        a_s, s_s = float(p.alpha(torch.tensor(s))), float(p.sigma(torch.tensor(s)))
        var = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0) * s_s**2 / s_t**2
        with torch.enable_grad():
            xs = x["x"].detach().requires_grad_(True)
            eps = self.denoiser({**x, "x": xs}, t)["x"]
            x0 = (xs - s_s * eps) / a_s
            e = self.energy({"x": x0}, t)
            g = torch.autograd.grad(e.sum(), xs)[0]
        rate = torch.full_like(e, self.scale * var).detach()
        if self.safe:
            polyak = e.detach() / g.flatten(1).pow(2).sum(1).clamp_min(1e-20)
            rate = torch.minimum(rate, polyak)
        return {**x, "x": xs.detach() - _per_sample(rate, g) * g}


class PredictionSelfGuidance(Guidance):
    """Self-guidance on the model's prediction, for every core sampler (DDIM, DPM-Solver, ...).

    At each network evaluation the clean prediction is moved down the energy,
    ``x0_hat <- x0_hat - rate * d``, and ``eps_hat`` is made consistent with it
    (``eps_hat = (x_t - alpha x0_hat) / sigma``), so the sampler integrates the guided prediction.

    - ``gradient="network"`` (TSDiff's DDIM rule): ``d = grad_{x_t} E(x0_hat(x_t))`` through the
      network and ``rate = s sigma_t^2 / alpha_t``, i.e. ``eps <- eps + s sigma_t grad E`` exactly.
      The gradient couples the horizon to the observed context through the network.
    - ``gradient="x0"``: ``d = grad_{x0} E(x0_hat)`` (no backward pass through the network) and
      ``rate = s sigma_t^2`` (``sigma_t^2`` is the posterior variance of ``x0`` given ``x_t`` for
      unit-variance data, the scale Tweedie's formula gives the network gradient). The horizon
      only learns of the observation at the next evaluation, through ``x_t``.

    ``safe`` takes, per sample, the best of the step fractions ``1, 1/2, ..., 1/128, 0`` by the
    energy of the moved prediction (energy evaluations only, no network call): the guided
    prediction never overshoots the observation, whatever the scale or the step count. That is
    what lets 10-step DDIM keep the paper's scale (plain, it overshoots by orders of magnitude).

    ``inner_steps > 1`` (``gradient="network"``) repeats guidance steps ``x_t <- x_t - rho d``
    with a fresh network evaluation each (``inner_steps`` NFE per sampler step, counted), on the
    step ``rho = rate * alpha_t`` that moves ``x_t`` as far as the prediction moves.

    ``x0_steps = k > 0`` then takes ``k`` more guidance steps on the guided prediction itself,
    ``x0_hat <- x0_hat - s sigma_t^2 grad_{x0} E(x0_hat)`` (line-searched like the others when
    ``safe``), with no network call: several guidance steps per network evaluation. They move
    only the observed positions of ``x0_hat`` (the energy's gradient in ``x0`` is zero on the
    horizon), which reach the horizon through ``x_t`` at the next evaluation.

    Args:
        energy: ``energy(x0_state, t) -> (B,)``.
        scale: ``s``.
        gradient: ``network`` or ``x0``.
        safe: line search on the step (see above).
        inner_steps: guidance steps per sampler step (network evaluations each).
        key: the guided component.
        x0_steps: extra guidance steps on the prediction per evaluation (no network call).
    """

    FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.0)

    def __init__(self, energy, scale: float, gradient: str = "network", safe: bool = True,
                 inner_steps: int = 1, key: str = "x", x0_steps: int = 0) -> None:
        if gradient not in ("network", "x0"):
            raise ValueError(f"gradient: use 'network' or 'x0', got {gradient!r}")
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        if isinstance(x0_steps, bool) or int(x0_steps) != x0_steps or x0_steps < 0:
            raise ValueError(f"x0_steps must be an integer >= 0, got {x0_steps!r}")
        self.x0_steps = int(x0_steps)
        self.energy, self.scale, self.gradient = energy, float(scale), gradient
        self.safe, self.inner_steps, self.key = safe, int(inner_steps), key

    def _best(self, x0: Tensor, d: Tensor, rate: Tensor, t: Tensor) -> Tensor:
        """Per-sample step fraction of ``x0 - f rate d`` with the lowest energy."""
        best_e, best_f = None, torch.ones_like(rate)
        for f in self.FRACTIONS:
            e = self.energy({self.key: x0 - _per_sample(f * rate, d) * d}, t).detach()
            if best_e is None:
                best_e = e
                continue
            better = e < best_e
            best_e = torch.where(better, e, best_e)
            best_f = torch.where(better, torch.full_like(best_f, f), best_f)
        return best_f * rate

    def predict(self, model, x: dict[str, Tensor], t: Tensor):
        k = self.key
        p = model.procs[k]
        a, s = float(p.alpha(t[:1])), float(p.sigma(t[:1]))
        xt = x[k]
        steps = self.inner_steps if self.gradient == "network" else 1
        for i in range(steps):
            x0, eps, d, rate = self._direction(model, {**x, k: xt}, t, a, s)
            if self.safe:
                rate = self._best(x0[k], d, rate, t)
            if i + 1 < steps:  # move x_t itself and evaluate the network again
                xt = xt - _per_sample(rate * a, d) * d
        x0g = x0[k] - _per_sample(rate, d) * d
        if self.x0_steps:
            x0g = self._x0_steps(x, x0g, t, s)
        eps = dict(eps)
        x0 = dict(x0)
        x0[k] = p.space.project(x0g, x)
        eps[k] = p.space.project((x[k] - a * x0g) / s, x)
        return x0, eps

    def _x0_steps(self, x: dict[str, Tensor], x0g: Tensor, t: Tensor, s: float) -> Tensor:
        """``x0_steps`` gradient steps of the energy on the prediction (no network call)."""
        k = self.key
        for _ in range(self.x0_steps):
            with torch.enable_grad():
                leaf = x0g.detach().requires_grad_(True)
                e = self.energy({**x, k: leaf}, t)
                g = torch.autograd.grad(e.sum(), leaf)[0]
            rate = torch.full_like(e, self.scale * s**2).detach()
            if self.safe:
                rate = self._best(x0g, g, rate, t)
            x0g = x0g.detach() - _per_sample(rate, g) * g
        return x0g

    def _direction(self, model, x: dict[str, Tensor], t: Tensor, a: float, s: float):
        """Prediction, guidance direction and its rate at ``x``."""
        k = self.key
        with torch.enable_grad():
            if self.gradient == "x0":
                x0, eps = model.raw_predict(x, t)
                x0 = {kk: v.detach() for kk, v in x0.items()}
                leaf = x0[k].requires_grad_(True)
                e = self.energy({**x, **x0}, t)
                rate = self.scale * s**2
            else:
                leaf = x[k].detach().requires_grad_(True)
                xg = {**x, k: leaf}
                x0, eps = model.raw_predict(xg, t)
                e = self.energy({**xg, **x0}, t)
                rate = self.scale * s**2 / a
            d = torch.autograd.grad(e.sum(), leaf)[0]
        x0 = {kk: v.detach() for kk, v in x0.items()}
        eps = {kk: v.detach() for kk, v in eps.items()}
        return x0, eps, d, torch.full_like(e, rate).detach()


def _stack(windows: Sequence[dict], key: str) -> Tensor:
    return torch.as_tensor(np.stack([w[key] for w in windows]))


def _past_observed(windows: Sequence[dict]) -> Tensor:
    """The lag history's observed masks (all ones for windows made without one)."""
    return torch.as_tensor(np.stack([w["past_observed"] if "past_observed" in w
                                     else np.ones_like(w["past"]) for w in windows]))


@torch.no_grad()
def forecast(model, windows: Sequence[dict], num_samples: int = 100, *, guidance: str = "quantile",
             scale: float = 4.0, sampler: str = "ancestral", steps: int | None = None,
             scenario: str = "none", missing: float = 0.5, batch_size: int = 800,
             seed: int = 0, progress: bool = True, gradient: str = "network", safe: bool = True,
             inner_steps: int = 1, ddpm_rule: bool = True, stats: dict | None = None,
             x0_steps: int = 0,
             covariates: Sequence[np.ndarray] | None = None, **options) -> np.ndarray:
    """Probabilistic forecasts of the windows' horizons.

    Args:
        model: a trained :class:`~domaindiff_timeseries.model.TSDiff` (or ``TSDiffCond``).
        windows: test windows from :meth:`TimeSeriesData.test_windows`.
        num_samples: samples per window.
        guidance: ``quantile`` (TSDiff-Q), ``mse`` (TSDiff-MS), or ``none`` (conditional model or
            plain unconditional samples).
        scale: guidance scale ``s``.
        sampler: core sampler name (``ancestral`` = DDPM, ``ddim``, ``dpm_solver_pp_2m``, ...).
        steps: sampler steps (default: the diffusion's ``T``).
        scenario: missing-value scenario of the context (see :func:`scenario_mask`).
        missing: missing fraction of the scenario.
        batch_size: sequences sampled at once.
        seed: noise seed.
        progress: tqdm bar over batches.
        gradient: ``network`` (TSDiff) or ``x0`` (see :class:`PredictionSelfGuidance`).
        safe: overshoot-safe guidance steps (``False``: the paper's rules exactly).
        inner_steps: guidance steps per sampler step (extra network evaluations).
        x0_steps: guidance steps on the prediction per network evaluation, no network call
            (see :class:`PredictionSelfGuidance`; not with the DDPM rule).
        ddpm_rule: with ``sampler="ancestral"``, TSDiff's DDPM rule (:class:`DDPMSelfGuidance`,
            two network evaluations per step); ``False``: guidance on the prediction (one).
        stats: if given, receives ``nfe`` (network evaluations per sampled sequence: the core's
            count ``model.last_nfe`` per batch, plus the DDPM rule's own guidance evaluations,
            counted by its denoiser's ``nfe``; averaged over the batches).
        covariates: per window ``(L, C)`` dynamic covariates (TSDiffCond with covariates).
        **options: sampler options (e.g. ``eta``).

    Returns:
        ``(W, num_samples, prediction_length, D)`` samples in the data's units.
    """
    c, h = model.context_length, model.prediction_length
    length = c + h
    if x0_steps and sampler in ("ancestral", "ddpm") and ddpm_rule:
        raise ValueError("x0_steps guides the prediction: not with TSDiff's DDPM rule (use "
                         "ddpm_rule=False or another sampler)")
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
    # missing targets (NaN) are unknown: masked out of the guidance and the condition
    target = torch.nan_to_num(_stack(windows, "target"))
    x_obs = target / scale_all[:, None, :] * mask_all
    # the lag history is rescaled with the scenario's scale
    past = _stack(windows, "past") * _stack(windows, "scale")[:, None, :] / scale_all[:, None, :]
    past_obs = _past_observed(windows)
    n_cov = int(getattr(model, "covariates", 0) or 0)
    if n_cov:
        if covariates is None:
            covariates = [w.get("covariates") for w in windows]
        if any(cv is None for cv in covariates):
            raise ValueError(f"the model reads {n_cov} covariate channels: give covariates "
                             "(windows with 'covariates')")
        cov_all = torch.as_tensor(np.stack(covariates), dtype=torch.float32)
    n_total = len(windows) * num_samples
    win_idx = torch.arange(len(windows)).repeat_interleave(num_samples)
    q_all = quantile_levels(num_samples).repeat(len(windows))
    out = []
    calls = 0
    starts = range(0, n_total, batch_size)
    for s0 in tqdm(starts, desc=f"forecast {guidance}/{sampler}-{steps}", disable=not progress):
        idx = win_idx[s0: s0 + batch_size]
        dev = model.device
        y, m = x_obs[idx].to(dev), mask_all[idx].to(dev)
        template = {"x": torch.zeros_like(y), "past": past[idx].to(dev),
                    "past_observed": past_obs[idx].to(dev)}
        if not model.lags:
            template["past"] = y.new_zeros(len(idx), 0, y.shape[-1])
            template["past_observed"] = template["past"]
        if n_cov:
            template["covariates"] = cov_all[idx].to(dev)
        guide_den = None  # the DDPM rule's own denoiser (its calls are counted in its nfe)
        if getattr(model, "conditional", False):
            template["cond"] = torch.cat([y * m, m], -1)
            guide = None
        elif guidance == "none":
            guide = None
        else:
            energy = guidance_energy(y, m, guidance, q_all[s0: s0 + batch_size].to(dev))
            if sampler in ("ancestral", "ddpm") and ddpm_rule:
                guide_den = model.denoiser()
                guide = DDPMSelfGuidance(guide_den, model.processes["x"], energy, scale,
                                         safe=safe)
            else:
                guide = PredictionSelfGuidance(energy, scale, gradient=gradient, safe=safe,
                                               inner_steps=inner_steps, x0_steps=x0_steps)
        x = model.sample(template=template, sampler=sampler, steps=steps, guidance=guide,
                         generator=gen, **options)["x"]
        calls += model.last_nfe + (guide_den.nfe if guide_den is not None else 0)
        out.append((x[:, c:] * scale_all[idx].to(dev)[:, None, :]).cpu())
    if stats is not None:
        stats["nfe"] = calls / len(starts)
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
    pobs = _past_observed(windows)[:, None].expand(-1, s_n, -1, -1).reshape(pst.shape)
    if not model.lags:
        pst = x.new_zeros(len(x), 0, x.shape[-1])
        pobs = pst
    obs = x[:, :c].clone()
    # missing context steps hold placeholders: not part of the observation energy
    ctx_mask = torch.stack([torch.as_tensor(np.asarray(w.get("observed", np.ones_like(w["x"])),
                                                       np.float32)[:c]) for w in windows])
    ctx_mask = ctx_mask[:, None].expand(-1, s_n, -1, -1).reshape(w_n * s_n, c, -1)
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
            pred = net({"x": a * x + sg * eps, "past": pst, "past_observed": pobs}, t)["x"]
            e = ((pred - eps) ** 2).flatten(1).sum(1)
            r = (obs - x[:, :c]) * ctx_mask
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
