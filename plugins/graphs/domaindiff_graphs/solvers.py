"""GDSS's own samplers on the core's processes: the S4 solver and the GDSS PC variants.

Both follow the core's signature (``steps`` = network evaluations, ``steps + 1`` time points from
``T`` to ``t_min`` or ``eps``) and work on any dict of processes (VP, sub-VP, VE mixed per
component), so GDSS's per-dataset systems (e.g. VP for X and VE for A) are sampled jointly.

S4 (Jo et al. 2022, Alg. 1): per step ONE score evaluation ``s = score(x_t, t)`` is reused for
(i) a Langevin correction ``x += eta s + sqrt(2 eta) scale_eps z`` with
``eta = 2 a (snr |z| / |s|)^2`` (``a = 1 - beta(t) dt`` for the VP family, 1 for VE), and
(ii) a split prediction: half a step of the exact backward transition of the forward SDE's linear
part, an Euler step ``x += g(t)^2 s dt`` on the score part, another half transition. The backward
transition from ``t`` to ``u < t`` is ``x / a + sqrt(sigma_t^2 - a^2 sigma_u^2) z`` with
``a = alpha_t / alpha_u``, which is GDSS's ``transition`` for VP (std ``sqrt(1 - a^2)``) and VE
(std ``sqrt(sigma_t^2 - sigma_u^2)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess, bcast
from domaindiff.samplers import register_sampler, sample_pc
from domaindiff.samplers.base import (
    Callback,
    Denoiser,
    Model,
    Processes,
    Sample,
    Start,
    State,
    combine,
    emit,
    noise_like,
    report_nfe,
    setup,
    steps_iter,
    time_points,
)
from domaindiff.samplers.sde import langevin_update


def _ending_at(process: Processes, eps: float | None) -> Processes:
    """The process(es) ending at ``eps`` via the core's ``with_t_min`` (``None``: unchanged).

    GDSS samples to ``eps`` = 1e-4 / 1e-3 and trains to 1e-5; ``eps = 0`` is refused because the
    score ``-eps_hat / sigma(0)`` is undefined there.

    Raises:
        ValueError: if ``eps`` is not in ``(0, T)``.
    """
    if eps is None:
        return process
    procs = process if isinstance(process, Mapping) else {"": process}
    for p in procs.values():
        if not 0 < eps < p.T:
            raise ValueError(f"eps: need 0 < eps < T={p.T}, got {eps}")
    if isinstance(process, Mapping):
        return {k: p.with_t_min(eps) for k, p in process.items()}
    return process.with_t_min(eps)


def backward_transition(p: GaussianProcess, x: Tensor, t: Tensor, u: Tensor
                        ) -> tuple[Tensor, Tensor]:
    """GDSS's ``transition``: mean and std of the linear part run backward from ``t`` to ``u < t``."""
    a = p.alpha(t) / p.alpha(u)
    var = (p.sigma(t) ** 2 - a**2 * p.sigma(u) ** 2).clamp_min(0.0)
    return x / bcast(a, x), bcast(var.sqrt(), x)


def _split_prediction(procs: Mapping[str, GaussianProcess], x: State, score: State,
                      z1: State, z2: State, times: tuple[Tensor, Tensor, Tensor], dt: float,
                      noise_last: bool) -> State:
    """S4's prediction: half a backward transition, an Euler step on the score, another half."""
    t, t_half, t_next = times
    upd: State = {}
    for k, p in procs.items():
        mean, std = backward_transition(p, x[k], t, t_half)
        xk = mean + std * z1[k]
        xk = xk + bcast(p.g2(t), xk) * score[k] * dt
        mean, std = backward_transition(p, xk, t_half, t_next)
        upd[k] = mean + std * z2[k] if noise_last else mean
    return combine(x, upd)


PerKey = float | Mapping[str, float]


def per_key(value: PerKey, keys: Mapping[str, Any], name: str) -> dict[str, float]:
    """A scalar option, or one value per diffused component (e.g. ``{"x": 1.0, "adj": 0.7}``).

    Raises:
        ValueError: a mapping that misses a component or names one the state does not diffuse.
    """
    if not isinstance(value, Mapping):
        return {k: float(value) for k in keys}
    missing, extra = set(keys) - set(value), set(value) - set(keys)
    if missing or extra:
        raise ValueError(f"{name}: per-component values must name exactly {sorted(keys)}, got "
                         f"{sorted(value)}")
    return {k: float(value[k]) for k in keys}


def _langevin(procs: Mapping[str, GaussianProcess], x: State, score: State, z: State,
              t: Tensor, snr: dict[str, float], scale_eps: dict[str, float], dt: float) -> State:
    """The core's Langevin correction with each component's own snr and noise scale."""
    if len(set(snr.values())) == 1 and len(set(scale_eps.values())) == 1:
        k0 = next(iter(procs))
        return langevin_update(procs, x, score, z, t, snr[k0], scale_eps[k0], dt)
    out = dict(x)
    for k, p in procs.items():
        out[k] = langevin_update({k: p}, x, score, z, t, snr[k], scale_eps[k], dt)[k]
    return out


def sample_s4(denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int, *,
              guidance: Guidance | None = None, callback: Callback | None = None,
              generator: torch.Generator | None = None, progress: bool = False,
              prior: bool | None = None, info: dict[str, Any] | None = None,
              snr: PerKey = 0.1, scale_eps: PerKey = 1.0, eps: float | None = None,
              schedule: str | None = None, denoise_final: bool = True,
              final_x0: bool | Mapping[str, bool] = False) -> Sample:
    """GDSS's S4 solver: one score evaluation per step, Langevin correction + split prediction.

    The correction is the core's :func:`~domaindiff.samplers.sde.langevin_update` on the step's
    score; the common arguments are those of every sampler (:mod:`domaindiff.samplers.base`).

    Args:
        denoiser: ``denoiser(state, t)`` (any parametrization).
        process: a process or dict of processes (mixed VP / VE allowed).
        shape_or_x_T: shape, ``x_T`` or state template (masks are kept).
        steps: network evaluations = steps (without guidance that evaluates more).
        guidance: optional guidance (prediction hooks; e.g. inpainting after each step).
        callback: per-step callback; its dict carries the running ``"nfe"``.
        generator: random generator.
        progress: tqdm progress bar.
        prior: draw ``x_T`` from the prior (default for shapes and dicts) or use the given one.
        info: if a dict, receives ``info["nfe"]``, the network evaluations used.
        snr: Langevin signal-to-noise ratio (one for all components or a dict per component).
        scale_eps: scale of the corrector noise (one or a dict per component).
        eps: end time (default: the process's ``t_min``).
        schedule: time grid (default: the process's).
        denoise_final: skip the noise of the last half transition (GDSS returns the mean).
        final_x0: end with the last evaluation's denoised prediction ``x0_hat`` (Tweedie's
            ``E[x_0 | x_t]``, no extra evaluation) instead of the last step's result; one flag
            for all components or a dict per component.
    """
    st = setup(_ending_at(process, eps), shape_or_x_T, generator, prior)
    snrs, scales = per_key(snr, st.procs, "snr"), per_key(scale_eps, st.procs, "scale_eps")
    use_x0 = {k for k, v in per_key(final_x0, st.procs, "final_x0").items() if v}
    model, x = Model(denoiser, st.procs, guidance), st.x
    ts = time_points(st.procs, steps, schedule)
    for i in steps_iter(steps, progress, "s4"):
        t, t_next = ts[i], ts[i + 1]
        dt = t - t_next
        score, x0 = model.score(x, t)
        times = (model.time(t, x), model.time(t - 0.5 * dt, x), model.time(t_next, x))
        last = i == steps - 1
        z_corr, z1, z2 = (noise_like(x, st.procs, generator) for _ in range(3))
        xc = _langevin(st.procs, x, score, z_corr, times[0], snrs, scales, dt)
        x = _split_prediction(st.procs, xc, score, z1, z2, times, dt,
                              noise_last=not (last and denoise_final))
        if last and use_x0:
            x = combine(x, {k: x0[k] for k in use_x0})
        x = model.after_step(x, t, t_next, generator, final=last)
        emit(callback, i, t_next, x, x0, model.nfe)
    report_nfe(info, model.nfe)
    return st.finish(x)


_PREDICTORS = {"euler": "euler_maruyama", "euler_maruyama": "euler_maruyama",
               "reverse": "reverse_diffusion", "reverse_diffusion": "reverse_diffusion"}


def sample_gdss_pc(denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int, *,
                   guidance: Guidance | None = None, callback: Callback | None = None,
                   generator: torch.Generator | None = None, progress: bool = False,
                   prior: bool | None = None, info: dict[str, Any] | None = None,
                   predictor: str = "reverse", corrector: str | None = "langevin",
                   snr: float = 0.15, scale_eps: float = 0.7, n_corrector: int = 1,
                   eps: float | None = None, schedule: str | None = None,
                   denoise_final: bool = True) -> Sample:
    """GDSS's PC sampler (predictor "Euler" or "Reverse", corrector "Langevin" or "None").

    The core's :func:`domaindiff.samplers.sample_pc` with GDSS's names, defaults and sampling end
    time ``eps``; the common arguments (``guidance``, ``callback``, ``generator``, ``progress``,
    ``prior``, ``info``) are passed through unchanged. ``steps`` counts network evaluations: with
    the Langevin corrector each time point costs two (so GDSS's 1000-step PC is ``steps=2000``).
    """
    if predictor.lower() not in _PREDICTORS:
        raise ValueError(f"predictor: unknown {predictor!r}; use 'euler' or 'reverse'")
    corr = corrector.lower() if isinstance(corrector, str) else "none"
    if corr not in ("langevin", "none"):
        raise ValueError(f"corrector: unknown {corrector!r}; use 'langevin' or 'none'")
    return sample_pc(denoiser, _ending_at(process, eps), shape_or_x_T, steps, guidance=guidance,
                     callback=callback, generator=generator, progress=progress, prior=prior,
                     info=info, predictor=_PREDICTORS[predictor.lower()], corrector=corr,
                     snr=snr, scale_eps=scale_eps, n_corrector=n_corrector, schedule=schedule,
                     denoise_final=denoise_final)


#: the largest Langevin snr :func:`fast_s4_options` scales up to (``snr_cap``): the corrector's
#: step is ``eta ~ 2 snr^2 sigma(t)^2``, so 0.16 keeps it near 5% of the marginal's variance
SNR_CAP = 0.16


def fast_s4_options(steps: int, snr: float, ref_steps: int = 1000,
                    snr_cap: float | None = None) -> dict[str, float]:
    """S4 options for ``steps`` evaluations that keep the 1000-step sampler's Langevin mixing.

    The corrector's step is ``eta = 2 a (snr |z| / |s|)^2 ~ 2 snr^2 sigma(t)^2`` per time point,
    so ``ref_steps / steps`` times fewer time points cover that many times less Langevin time.
    Scaling ``snr`` by ``sqrt(ref_steps / steps)`` keeps the total (``steps * eta``) equal; the
    corrector noise is then unscaled (``scale_eps = 1``): GDSS's ``scale_eps < 1`` is a cold
    Langevin chain whose bias grows with the step (benchmarks/graphs.py measures both).
    Needed because GDSS's VP SDEs (beta 0.1 -> 1.0) do not reach their N(0, I) prior at
    ``T = 1`` (``alpha(1) = 0.76``): the sampler starts off the model's ``p_T`` and only the
    stochastic and Langevin parts mix that error away, which deterministic ODE solvers cannot.

    Without a cap the scaled step outgrows the scale on which the score changes wherever the
    reference snr is already large: ENZYMES (snr 0.15) at 50 NFE gets snr 0.67, a Langevin step of
    ``0.9 sigma^2`` with noise of std ``1.3 sigma`` per time point, and its graphs fall apart; the
    QM9-like molecules (snr 0.2 -> 0.63) lose validity. ``snr_cap`` (the documented rule uses
    :data:`SNR_CAP`) bounds the scaled snr at ``max(snr, snr_cap)``: never below the reference's
    own snr, never a step above ``2 snr_cap^2 sigma^2``.

    Args:
        steps: network evaluations of the fast sampler.
        snr: the reference sampler's Langevin signal-to-noise ratio.
        ref_steps: the reference sampler's evaluations.
        snr_cap: bound of the scaled snr (None: no bound, the former rule).

    Raises:
        ValueError: for ``steps`` or ``ref_steps`` below 1 or a non-positive ``snr_cap``.
    """
    if steps < 1 or ref_steps < 1:
        raise ValueError(f"steps and ref_steps must be >= 1, got {steps}, {ref_steps}")
    scaled = float(snr) * (ref_steps / steps) ** 0.5
    if snr_cap is not None:
        if not snr_cap > 0:
            raise ValueError(f"snr_cap must be > 0, got {snr_cap}")
        scaled = min(scaled, max(float(snr), float(snr_cap)))
    return {"snr": scaled, "scale_eps": 1.0}


#: the end noise above which a component keeps the reference's colder corrector (see fast_s4_rule)
END_NOISE_MAX = 0.05


def fast_s4_rule(processes: Mapping[str, GaussianProcess], steps: int,
                 ref_options: Mapping[str, Any], ref_steps: int = 1000) -> dict[str, Any]:
    """The documented fast-S4 settings for ``steps`` NFE from a reference sampler's options.

    One rule for every dataset, derived from the reference's ``snr`` / ``scale_eps`` / ``eps`` and
    the processes alone (no constant tuned per dataset):

    * ``snr``: the reference's, scaled by ``sqrt(ref_steps / steps)`` to keep the total Langevin
      time, bounded by ``max(snr, SNR_CAP)`` (:func:`fast_s4_options`);
    * ``scale_eps`` per component: 1 (an unbiased Langevin chain) where the component ends with
      little noise, ``sigma(eps) <= END_NOISE_MAX``; the reference's own ``scale_eps`` where it
      ends noisy. A hot chain samples the marginal at ``eps``, whose noise ``sigma(eps)`` stays in
      the sample: ENZYMES's VE adjacency ends at ``sigma = 0.2``, where N(0, 0.2^2) noise crosses
      the 0.5 edge threshold for 0.6% of the node pairs (measured: 2.40 edges per node against
      the test graphs' 1.94 at 50 NFE). QM9's VE components end at 0.1: with unit noise there
      (a first threshold of 0.13) the released QM9 weights gave 8.3% validity without correction
      at 100 NFE, so the threshold is 0.05, which only GDSS's VP components (``sigma(1e-4) =
      0.003``) meet. QM9 then samples S4 with its reference options at 100 NFE.

    Args:
        processes: the model's processes per component.
        steps: network evaluations of the fast sampler.
        ref_options: the reference sampler's options (``snr``, ``scale_eps``, ``eps``).
        ref_steps: the reference's time points.

    Returns:
        ``{"snr", "scale_eps": {component: value}, "eps"}`` for :func:`sample_s4`.
    """
    snr = float(ref_options.get("snr", 0.1))
    ref_scale = float(ref_options.get("scale_eps", 1.0))
    eps = ref_options.get("eps")
    opts: dict[str, Any] = {"snr": fast_s4_options(steps, snr, ref_steps, SNR_CAP)["snr"]}
    scale = {}
    for k, p in processes.items():
        t_end = torch.tensor(float(eps) if eps is not None else p.t_min, dtype=torch.float64)
        scale[k] = 1.0 if float(p.sigma(t_end)) <= END_NOISE_MAX else ref_scale
    opts["scale_eps"] = scale
    if eps is not None:
        opts["eps"] = float(eps)
    return opts


register_sampler("s4", sample_s4)
register_sampler("gdss_pc", sample_gdss_pc)

__all__ = ["END_NOISE_MAX", "SNR_CAP", "backward_transition", "fast_s4_options", "fast_s4_rule",
           "sample_gdss_pc", "sample_s4"]
