"""Samplers on the discrete DDPM posterior: ancestral sampling and DDIM.

Both visit ``steps`` time points ``T = t_0 > ... > t_{steps-1} = t_min`` where the network is
evaluated, and a last point ``t = 0`` (clean data) where the sample is the final ``x0`` prediction:
``steps + 1`` points in all. For a :class:`~domaindiff.processes.DiscreteDDPM` with ``N`` steps the
points ``t_j`` are the integer steps ``N, ..., 1, 0`` and ``sample_ancestral(..., steps=N)`` is
exactly the DDPM sampler of Ho et al. (2020).

With ``timesteps=`` (the caller's own points, each but the last an evaluation) the walk may end at
``0`` (the last step returns the clean prediction, as by default) or at any time in
``[t_min, T]`` (the last step is then an ordinary posterior step to that time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess
from domaindiff.samplers.base import Run, scalar
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, Timesteps

#: ``update(posterior coefficients, x_t, x0_hat, eps_hat, z) -> x_s`` (``z`` is None when the
#: sampler adds no noise)
Update = Callable[[dict[str, float], Tensor, Tensor, Tensor, Tensor | None], Tensor]


def ddpm_time_points(procs: Mapping[str, GaussianProcess], steps: int,
                     schedule: str | None = None) -> list[float]:
    """``steps`` evaluation times from ``T`` to ``t_min``, then 0."""
    if steps < 1:
        raise ValueError(f"steps: need at least 1 network evaluation, got {steps}")
    ref = next(iter(procs.values()))
    grid = [ref.T] if steps == 1 else ref.time_grid(steps - 1, schedule).tolist()
    return [*grid, 0.0]


def _posterior(p: GaussianProcess, t: float, s: float) -> dict[str, float]:
    """Coefficients of ``q(x_s | x_t, x0) = N(c_xt x_t + c_x0 x0, var)``."""
    a_t, s_t = scalar(p, "alpha", t), scalar(p, "sigma", t)
    a_s, s_s = scalar(p, "alpha", s), scalar(p, "sigma", s)
    a_ts = a_t / a_s
    var_ts = max(s_t**2 - a_ts**2 * s_s**2, 0.0)
    return {
        "c_xt": a_ts * s_s**2 / s_t**2,
        "c_x0": a_s * var_ts / s_t**2,
        "var": var_ts * s_s**2 / s_t**2,
        "a_s": a_s,
        "s_s": s_s,
    }


def _run(denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None,
         guidance: Guidance | None, callback: Callback | None,
         generator: torch.Generator | None, progress: bool, schedule: str | None,
         update: Update, name: str, prior: bool | None, info: dict[str, Any] | None,
         timesteps: Timesteps | None, noise: bool = True) -> Sample:
    run = Run(name, denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    ts = run.grid(steps, timesteps, zero_end=True,
                  grid=lambda n: ddpm_time_points(run.procs, n, schedule))
    x, n = run.x, len(ts) - 1
    for i in run.steps(n):
        t, s = ts[i], ts[i + 1]
        x0, eps = run.model.predict(x, t)
        last = i == n - 1
        if last and s == 0.0:
            upd = {k: x0[k] for k in run.procs}
        else:
            # eta = 0 DDIM adds no noise: drawing it would cost a full-size randn per step
            z = run.noise(x) if noise else dict.fromkeys(run.procs)
            upd = {k: update(_posterior(p, t, s), x[k], x0[k], eps[k], z[k])
                   for k, p in run.procs.items()}
        x = run.step(i, x, upd, t, s, x0, final=last)
    return run.result(x)


def sample_ancestral(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = None, timesteps: Timesteps | None = None) -> Sample:
    """Ancestral sampling from the Gaussian posterior ``q(x_s | x_t, x0_hat)`` (DDPM).

    Works for any Gaussian process (the posterior of ``x_t = alpha x0 + sigma eps`` is exact for
    every pair of times); ``steps`` network evaluations. The common arguments are described in
    :mod:`domaindiff.samplers.base`.
    """

    def update(c: dict[str, float], xt: Tensor, x0: Tensor, eps: Tensor,
               z: Tensor | None) -> Tensor:
        assert z is not None  # ancestral steps always draw noise
        return c["c_xt"] * xt + c["c_x0"] * x0 + math.sqrt(c["var"]) * z

    return _run(denoiser, process, shape_or_x_T, steps, guidance, callback, generator, progress,
                schedule, update, "ancestral", prior, info, timesteps)


def sample_ddim(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        eta: float = 0.0, schedule: str | None = None,
        timesteps: Timesteps | None = None) -> Sample:
    """DDIM (Song et al. 2021): ``x_s = a_s x0 + sqrt(s_s^2 - c^2) eps + c z``.

    ``c = eta * sqrt(posterior variance)``: ``eta = 0`` is deterministic, ``eta = 1`` is ancestral.
    The common arguments are described in :mod:`domaindiff.samplers.base`.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")

    def update(c: dict[str, float], xt: Tensor, x0: Tensor, eps: Tensor,
               z: Tensor | None) -> Tensor:
        noise_std = eta * math.sqrt(c["var"])
        keep = math.sqrt(max(c["s_s"] ** 2 - noise_std**2, 0.0))
        out = c["a_s"] * x0 + keep * eps
        return out if z is None else out + noise_std * z

    return _run(denoiser, process, shape_or_x_T, steps, guidance, callback, generator, progress,
                schedule, update, "ddim", prior, info, timesteps, noise=eta > 0)
