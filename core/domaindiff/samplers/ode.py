"""Probability-flow ODE samplers: Euler, Heun (EDM, with churn) and adaptive (torchdiffeq).

The ODE is ``dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat``, the probability-flow ODE of any
Gaussian process written so that it stays finite at both ends (for EDM it is EDM's
``(x - D(x)) / sigma``; for a linear interpolant it is flow matching's velocity).
"""

from __future__ import annotations

import math

import torch

from domaindiff.samplers.base import (
    Model,
    combine,
    emit,
    noise_like,
    reference_process,
    scalar,
    setup,
    steps_iter,
    time_points,
)


def sample_euler(denoiser, process, shape_or_x_T, steps, *, guidance=None, callback=None,
                 generator=None, progress=False, prior=None, schedule=None):
    """Euler's method on the probability-flow ODE: ``steps`` evaluations, ``steps + 1`` points."""
    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    ts = time_points(st.procs, steps, schedule)
    for i in steps_iter(steps, progress, "euler"):
        t, t_next = ts[i], ts[i + 1]
        v, x0 = model.velocity(x, t)
        x = model.after_step(combine(x, {k: x[k] + (t_next - t) * v[k] for k in st.procs}),
                             t_next, generator, final=i == steps - 1)
        emit(callback, i, t_next, x, x0)
    return st.finish(x)


def sample_heun(denoiser, process, shape_or_x_T, steps, *, guidance=None, callback=None,
                generator=None, progress=False, prior=None, schedule="karras", rho=7.0, churn=0.0,
                churn_tmin=0.0, churn_tmax=float("inf"), s_noise=1.0):
    """Heun's second-order method (EDM, Karras et al. 2022, Algorithm 2).

    ``K = (steps + 1) // 2`` intervals: each costs two evaluations except the last, which is an
    Euler step, so ``2K - 1 <= steps`` evaluations are used.

    Args:
        denoiser: see :mod:`domaindiff.samplers.base`.
        process: process or dict of processes.
        shape_or_x_T: shape, ``x_T`` or state template.
        steps: NFE budget.
        guidance: optional guidance.
        callback: optional per-step callback.
        generator: random generator.
        progress: show a progress bar.
        prior: draw ``x_T`` from the prior (default for shapes and dicts) or use the given one.
        schedule: time grid ("karras" by default, with ``rho``).
        rho: Karras exponent.
        churn: EDM's ``S_churn`` (0: deterministic).
        churn_tmin: noise levels ``sigma/alpha`` below this get no churn.
        churn_tmax: noise levels above this get no churn.
        s_noise: EDM's ``S_noise``.
    """
    n = (steps + 1) // 2
    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    ref = reference_process(st.procs)
    if n < 1:
        raise ValueError(f"steps: Heun needs at least 1 network evaluation, got {steps}")
    ts = ref.time_grid(n, schedule, rho=rho).tolist()
    for i in steps_iter(n, progress, "heun"):
        t, t_next = ts[i], ts[i + 1]
        level = math.exp(-scalar(ref, "lambda_", t))
        gamma = min(churn / n, math.sqrt(2) - 1) if churn_tmin <= level <= churn_tmax else 0.0
        if gamma > 0:
            lam_hat = scalar(ref, "lambda_", t) - math.log1p(gamma)
            t_hat = min(float(ref.t_from_lambda(torch.tensor(lam_hat))), ref.T)
            z = noise_like(x, st.procs, generator)
            upd = {}
            for k, p in st.procs.items():
                r = scalar(p, "alpha", t_hat) / scalar(p, "alpha", t)
                extra = max(scalar(p, "sigma", t_hat) ** 2 - (r * scalar(p, "sigma", t)) ** 2, 0.0)
                upd[k] = r * x[k] + s_noise * math.sqrt(extra) * z[k]
            x, t = combine(x, upd), t_hat
        v, x0 = model.velocity(x, t)
        h = t_next - t
        x_euler = combine(x, {k: x[k] + h * v[k] for k in st.procs})
        if i < n - 1:
            v2, _ = model.velocity(x_euler, t_next)
            x_new = combine(x, {k: x[k] + 0.5 * h * (v[k] + v2[k]) for k in st.procs})
        else:
            x_new = x_euler
        x = model.after_step(x_new, t_next, generator, final=i == n - 1)
        emit(callback, i, t_next, x, x0)
    return st.finish(x)


def sample_ode(denoiser, process, shape_or_x_T, steps=None, *, guidance=None, callback=None,
               generator=None, progress=False, prior=None, rtol=1e-5, atol=1e-5, method="dopri5"):
    """Adaptive probability-flow ODE solve with torchdiffeq from ``T`` to ``t_min``.

    ``steps`` is ignored (the solver picks its own steps from ``rtol``/``atol``); the number of
    evaluations it took is reported to ``callback`` as ``{"nfe": n}`` at the end and stored in
    the ``nfe`` attribute of this function.
    """
    from torchdiffeq import odeint

    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    keys = list(st.procs)
    ref = reference_process(st.procs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="ode (nfe)", leave=False)

    def func(t, ys):
        state = combine(x, dict(zip(keys, ys)))
        v, _ = model.velocity(state, float(t))
        if bar is not None:
            bar.update(1)
        return tuple(v[k] for k in keys)

    y0 = tuple(x[k] for k in keys)
    t_span = torch.tensor([ref.T, ref.t_min], dtype=y0[0].dtype, device=y0[0].device)
    ys = odeint(func, y0, t_span, rtol=rtol, atol=atol, method=method)
    if bar is not None:
        bar.close()
    out = model.after_step(combine(x, {k: y[-1] for k, y in zip(keys, ys)}), ref.t_min,
                           generator, final=True)
    sample_ode.nfe = model.nfe
    if callback is not None:
        callback({"i": 0, "t": ref.t_min, "x": out, "denoised": None, "nfe": model.nfe})
    return st.finish(out)


sample_ode.nfe = 0
