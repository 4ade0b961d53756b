"""Stochastic samplers of the reverse SDE: Euler-Maruyama and predictor-corrector (PC)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import VP, DiscreteDDPM, GaussianProcess, bcast
from domaindiff.samplers.base import (
    Callback,
    Denoiser,
    Model,
    Processes,
    Sample,
    Start,
    State,
    Timesteps,
    combine,
    emit,
    grid_or_steps,
    noise_like,
    report_nfe,
    setup,
    steps_iter,
    time_points,
)


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
    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    ts = grid_or_steps(st.procs, steps, timesteps, "euler_maruyama",
                       grid=lambda n: time_points(st.procs, n, schedule))
    steps = len(ts) - 1
    for i in steps_iter(steps, progress, "euler_maruyama"):
        t, t_next = ts[i], ts[i + 1]
        dt = t - t_next
        score, x0 = model.score(x, t)
        tt = model.time(t, x)
        z = noise_like(x, st.procs, generator)
        last = i == steps - 1
        upd: State = {}
        for k, p in st.procs.items():
            drift, g = p.sde(x[k], tt)
            g = bcast(g, x[k])
            mean = x[k] - (drift - g**2 * score[k]) * dt
            upd[k] = mean if (last and denoise_final) else mean + g * math.sqrt(dt) * z[k]
        x = model.after_step(combine(x, upd), t, t_next, generator, final=last)
        emit(callback, i, t_next, x, x0, model.nfe)
    report_nfe(info, model.nfe)
    return st.finish(x)


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
    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    ts = grid_or_steps(st.procs, steps, timesteps, "pc", intervals=lambda s: s // (1 + n_corr),
                       nfe=lambda n: n * (1 + n_corr),
                       grid=lambda n: time_points(st.procs, n, schedule))
    n = len(ts) - 1
    for i in steps_iter(n, progress, "pc"):
        t, t_next = ts[i], ts[i + 1]
        dt = t - t_next
        for _ in range(n_corr):
            x = langevin_step(model, x, t, snr, scale_eps, generator, dt)
        score, x0 = model.score(x, t)
        tt = model.time(t, x)
        z = noise_like(x, st.procs, generator)
        last = i == n - 1
        upd: State = {}
        for k, p in st.procs.items():
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
        x = model.after_step(combine(x, upd), t, t_next, generator, final=last)
        emit(callback, i, t_next, x, x0, model.nfe)
    report_nfe(info, model.nfe)
    return st.finish(x)
