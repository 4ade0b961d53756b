"""Stochastic samplers of the reverse SDE: Euler-Maruyama and predictor-corrector (PC)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import VP, DiscreteDDPM, GaussianProcess, bcast
from domaindiff.samplers.base import Model, Run, combine, noise_like
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, State, Timesteps


def sample_euler_maruyama(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = None, denoise_final: bool = True,
        timesteps: Timesteps | None = None) -> Sample:
    """Euler-Maruyama on the reverse SDE ``dx = [f x - g^2 score] dt + g dW``.

    ``steps`` evaluations on ``steps + 1`` time points; the last step returns the mean (no noise)
    when ``denoise_final``. The common arguments (``timesteps`` included) are described in
    :mod:`domaindiff.samplers.base`.
    """
    run = Run("euler_maruyama", denoiser, process, shape_or_x_T, guidance=guidance,
              callback=callback, generator=generator, progress=progress, prior=prior, info=info)
    return _reverse_sde(run, run.grid(steps, timesteps, schedule), "euler_maruyama",
                        denoise_final)


def langevin_update(procs: Mapping[str, GaussianProcess], x: State, score: State, z: State,
                    t: Tensor, snr: float, scale_eps: float, dt: float) -> State:
    """One annealed Langevin correction (Song et al. 2021) from a given score, per component.

    The step size is ``2 a (snr |z| / |score|)^2`` with batch-mean norms as in the reference
    implementations; ``a`` is the one-step ``1 - beta`` for the VP family and 1 otherwise.
    ``scale_eps`` scales the injected noise (GDSS). Samplers that reuse one score evaluation for
    the correction and the prediction (GDSS's S4) call this directly.

    Args:
        procs: the process of each diffused key.
        x: the state at time ``t``.
        score: the score at ``(x, t)`` per diffused key.
        z: standard noise per diffused key (e.g. from ``noise_like``).
        t: ``(B,)`` time tensor.
        snr: signal-to-noise ratio of the step.
        scale_eps: scale of the injected noise.
        dt: the time step the ``1 - beta dt`` factor is taken over.
    """
    upd: State = {}
    for k, p in procs.items():
        s, zk = score[k], z[k]
        gnorm = s.reshape(s.shape[0], -1).norm(dim=-1).mean()
        znorm = zk.reshape(zk.shape[0], -1).norm(dim=-1).mean()
        a = 1.0
        if isinstance(p, (VP, DiscreteDDPM)):
            a = float((1 - p.g2(t[:1]) * dt).clamp(0.0, 1.0))
        step: Tensor = 2 * a * (snr * znorm / gnorm.clamp_min(1e-12)) ** 2
        upd[k] = x[k] + step * s + torch.sqrt(2 * step) * zk * scale_eps
    return combine(x, upd)


def langevin_step(model: Model, x: State, t: float, snr: float, scale_eps: float,
                  generator: torch.Generator | None, dt: float) -> State:
    """One annealed Langevin correction at time ``t``: a score evaluation + :func:`langevin_update`."""
    score, _ = model.score(x, t)
    z = noise_like(x, model.procs, generator)
    return langevin_update(model.procs, x, score, z, model.time(t, x), snr, scale_eps, dt)


def sample_pc(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        predictor: str = "reverse_diffusion", corrector: str | None = "langevin",
        snr: float = 0.16, scale_eps: float = 1.0, n_corrector: int = 1,
        schedule: str | None = None, denoise_final: bool = True,
        timesteps: Timesteps | None = None) -> Sample:
    """Predictor-corrector sampler: Langevin correction, then a predictor step, at each time.

    Args:
        denoiser: see :mod:`domaindiff.samplers.base`.
        process: a process or dict of processes.
        shape_or_x_T: shape, x_T or state template.
        steps: network evaluations; each time point costs ``1 + n_corrector`` of them, so
            ``steps // (1 + n_corrector)`` intervals are used.
        guidance: optional guidance.
        callback: optional per-step callback.
        generator: random generator.
        progress: show a progress bar.
        prior: draw ``x_T`` from the prior (default for shapes and dicts) or use the given one.
        info: if a dict, receives ``info["nfe"]``, the network evaluations used.
        predictor: "reverse_diffusion" (the discretised reverse of the forward transition) or
            "euler_maruyama".
        corrector: "langevin" or "none".
        snr: signal-to-noise ratio of the Langevin step.
        scale_eps: scale of the corrector's noise (GDSS's ``scale_eps``).
        n_corrector: corrector steps per time point.
        schedule: time grid (default: the process's).
        denoise_final: return the mean at the last step.
        timesteps: the caller's own time points (``K + 1`` of them:
            ``K (1 + n_corrector)`` evaluations); ``schedule`` is then not used.
    """
    if predictor not in ("reverse_diffusion", "euler_maruyama"):
        raise ValueError(f"predictor: unknown {predictor!r}; use 'reverse_diffusion' or "
                         "'euler_maruyama'")
    if corrector not in ("langevin", "none", None):
        raise ValueError(f"corrector: unknown {corrector!r}; use 'langevin' or 'none'")
    n_corr = n_corrector if corrector == "langevin" else 0
    run = Run("pc", denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    ts = run.grid(steps, timesteps, schedule, intervals=lambda s: s // (1 + n_corr),
                  nfe=lambda n: n * (1 + n_corr))
    return _reverse_sde(run, ts, predictor, denoise_final, n_corr, snr, scale_eps)


def _reverse_sde(run: Run, ts: list[float], predictor: str, denoise_final: bool,
                 n_corrector: int = 0, snr: float = 0.0, scale_eps: float = 1.0) -> Sample:
    """The reverse-SDE walk over ``ts``: Langevin corrections, then the predictor, at each time.

    ``predictor`` is ``"euler_maruyama"`` (Euler-Maruyama on ``dx = [f x - g^2 score] dt + g dW``)
    or ``"reverse_diffusion"`` (the discretised reverse of the forward transition); the last step
    returns the mean when ``denoise_final``.
    """
    model, x, n = run.model, run.x, len(ts) - 1
    for i in run.steps(n):
        t, t_next = ts[i], ts[i + 1]
        dt = t - t_next
        for _ in range(n_corrector):
            x = langevin_step(model, x, t, snr, scale_eps, run.generator, dt)
        score, x0 = model.score(x, t)
        tt = model.time(t, x)
        z = run.noise(x)
        last = i == n - 1
        upd: State = {}
        for k, p in run.procs.items():
            if predictor == "reverse_diffusion":
                f, g = p.discretize(x[k], tt, torch.full_like(tt, dt))
                g = bcast(g, x[k])
                mean = x[k] - f + g**2 * score[k]
                noise = g * z[k]
            else:
                drift, g = p.sde(x[k], tt)
                g = bcast(g, x[k])
                mean = x[k] - (drift - g**2 * score[k]) * dt
                noise = g * math.sqrt(dt) * z[k]
            upd[k] = mean if (last and denoise_final) else mean + noise
        x = run.step(i, x, upd, t, t_next, x0, final=last)
    return run.result(x)
