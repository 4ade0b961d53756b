"""Probability-flow ODE samplers: Euler, Heun (EDM, with churn) and adaptive (torchdiffeq).

The ODE is ``dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat``, the probability-flow ODE of any
Gaussian process written so that it stays finite at both ends (for EDM it is EDM's
``(x - D(x)) / sigma``; for a linear interpolant it is flow matching's velocity).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.samplers.base import Run, combine, explicit_grid, reference_process, scalar
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, State, Timesteps


def sample_euler(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = None, timesteps: Timesteps | None = None) -> Sample:
    """Euler's method on the probability-flow ODE: ``steps`` evaluations, ``steps + 1`` points.

    The common arguments (``timesteps`` included) are described in :mod:`domaindiff.samplers.base`.
    """
    run = Run("euler", denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    ts = run.grid(steps, timesteps, schedule)
    x, n = run.x, len(ts) - 1
    for i in run.steps(n):
        t, t_next = ts[i], ts[i + 1]
        v, x0 = run.model.velocity(x, t)
        x = run.step(i, x, {k: x[k] + (t_next - t) * v[k] for k in run.procs}, t, t_next, x0,
                     final=i == n - 1)
    return run.result(x)


def sample_heun(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = "karras", rho: float = 7.0, churn: float = 0.0,
        churn_tmin: float = 0.0, churn_tmax: float = float("inf"),
        s_noise: float = 1.0, timesteps: Timesteps | None = None) -> Sample:
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
        info: if a dict, receives ``info["nfe"]``, the network evaluations used.
        schedule: time grid ("karras" by default, with ``rho``).
        rho: Karras exponent.
        churn: EDM's ``S_churn`` (0: deterministic).
        churn_tmin: noise levels ``sigma/alpha`` below this get no churn.
        churn_tmax: noise levels above this get no churn.
        s_noise: EDM's ``S_noise``.
        timesteps: the caller's own interval end points (``K + 1`` of them: ``2K - 1``
            evaluations); ``schedule`` and ``rho`` are then not used.
    """
    run = Run("heun", denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    model, x, ref = run.model, run.x, reference_process(run.procs)

    def default(n: int) -> list[float]:
        if n < 1:
            raise ValueError(f"steps: Heun needs at least 1 network evaluation, got {steps}")
        return ref.time_grid(n, schedule, rho=rho).tolist()

    ts = run.grid(steps, timesteps, intervals=lambda s: (s + 1) // 2, nfe=lambda n: 2 * n - 1,
                  grid=default)
    n = len(ts) - 1
    for i in run.steps(n):
        t, t_next = ts[i], ts[i + 1]
        level = math.exp(-scalar(ref, "lambda_", t))
        gamma = min(churn / n, math.sqrt(2) - 1) if churn_tmin <= level <= churn_tmax else 0.0
        if gamma > 0:
            lam_hat = scalar(ref, "lambda_", t) - math.log1p(gamma)
            t_hat = min(float(ref.t_from_lambda(torch.tensor(lam_hat))), ref.T)
            z = run.noise(x)
            upd: State = {}
            for k, p in run.procs.items():
                r = scalar(p, "alpha", t_hat) / scalar(p, "alpha", t)
                extra = max(scalar(p, "sigma", t_hat) ** 2 - (r * scalar(p, "sigma", t)) ** 2, 0.0)
                upd[k] = r * x[k] + s_noise * math.sqrt(extra) * z[k]
            x, t = combine(x, upd), t_hat
        v, x0 = model.velocity(x, t)
        h = t_next - t
        x_euler = combine(x, {k: x[k] + h * v[k] for k in run.procs})
        if i < n - 1:
            v2, _ = model.velocity(x_euler, t_next)
            x_new = combine(x, {k: x[k] + 0.5 * h * (v[k] + v2[k]) for k in run.procs})
        else:
            x_new = x_euler
        x = run.step(i, x_new, {}, t, t_next, x0, final=i == n - 1)  # t: after churn
    return run.result(x)


# torchdiffeq's adaptive Runge-Kutta solvers: every stage lies in [t0, t0 + dt], and a step is cut at
# the next ``step_t`` point, so ``step_t = [end]`` keeps them inside the interval.
_ADAPTIVE_RK = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


def _solver_names() -> list[str]:
    """The method names this torchdiffeq accepts."""
    try:
        from torchdiffeq._impl.odeint import SOLVERS
    except ImportError:  # pragma: no cover - a torchdiffeq that moved its registry
        return [*_ADAPTIVE_RK, "euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams",
                "implicit_adams", "fixed_adams", "scipy_solver"]
    return sorted(SOLVERS)


class _InRange:
    """An ODE right-hand side that only ever receives times inside ``[lo, hi]``.

    Times within rounding (``tol``) of the interval are clamped onto it. The one evaluation that
    may legitimately ask for a time beyond the end is the initial-step probe of torchdiffeq's
    adaptive solvers (second call, ``f(t0 + h0, y0 + h0 f0)``, used only to guess the first step
    size, whose error is then controlled like any other step); it is evaluated at the clamped
    time. Any other request outside the interval raises, so clamping never changes the solution.
    """

    def __init__(self, func: Callable, lo: float, hi: float, method: str, probe: bool,
                 rounding: float = 0.0) -> None:
        self.func, self.lo, self.hi, self.method = func, lo, hi, method
        self.tol = 1e-9 * max(abs(lo), abs(hi), hi - lo) + 2 * rounding
        self.probe_call = 1 if probe else -1
        self.calls = 0
        self.clamped = 0

    def __call__(self, t: Tensor, y: Any) -> Any:
        tf = float(t)
        inside = self.lo - self.tol <= tf <= self.hi + self.tol
        if not inside and self.calls != self.probe_call:
            raise ValueError(f"ODE solver {self.method!r} asked for t={tf!r} outside the "
                             f"process's time range [{self.lo}, {self.hi}]; use an adaptive "
                             f"solver ({', '.join(_ADAPTIVE_RK)}) or a fixed step size")
        self.calls += 1
        tc = min(max(tf, self.lo), self.hi)
        self.clamped += int(not inside)
        return self.func(tc, y)


def odeint_in_range(func: Callable[[float, Any], Any], y0: Any, t0: float, t1: float, *,
                    rtol: float, atol: float, method: str = "dopri5",
                    options: Mapping[str, Any] | None = None) -> Any:
    """``torchdiffeq.odeint`` from ``t0`` to ``t1`` that never evaluates ``func`` outside them.

    torchdiffeq's adaptive solvers otherwise step past the end point and interpolate back,
    evaluating the network at times the process does not define (``t < 0`` or ``t > T``). Here
    the end point is added to the solver's ``step_t`` (steps are cut there) and ``func`` is
    wrapped in a guard (see :class:`_InRange`).

    Args:
        func: ``func(t, y) -> dy/dt`` with ``t`` a float in ``[min(t0, t1), max(t0, t1)]``.
        y0: initial state (tensor or tuple of tensors).
        t0: start time.
        t1: end time.
        rtol: relative tolerance (> 0).
        atol: absolute tolerance (> 0).
        method: torchdiffeq method name.
        options: extra torchdiffeq options (``step_size``, ``first_step``, ``max_step``, ...).

    Returns:
        The solution at ``[t0, t1]`` as ``odeint`` returns it (leading dimension 2).

    Raises:
        ValueError: for an unknown method, non-positive tolerances or non-mapping options, and
            when the solver asks for a time outside ``[t0, t1]`` (e.g. a user's fixed grid).
    """
    from torchdiffeq import odeint

    names = _solver_names()
    if method not in names:
        raise ValueError(f"method: unknown ODE solver {method!r}; expected one of {names}")
    for arg, val in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(val, numbers.Real) and not isinstance(val, bool)
                and math.isfinite(val) and val > 0):
            raise ValueError(f"{arg}: expected a positive number, got {val!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"options: expected a mapping of torchdiffeq options, got {options!r}")
    opts = dict(options or {})
    first = y0[0] if isinstance(y0, tuple) else y0
    t_span = torch.tensor([t0, t1], dtype=first.dtype, device=first.device)
    end = float(t_span[1])  # the end point exactly as the solver sees it
    adaptive = method in _ADAPTIVE_RK
    if adaptive:
        # as tensors: torchdiffeq negates only tensor-valued step_t/jump_t for a decreasing span
        jumps = torch.as_tensor(opts.get("jump_t", []), dtype=torch.float64).flatten()
        steps = torch.as_tensor(opts.get("step_t", []), dtype=torch.float64).flatten()
        if end not in jumps.tolist() and end not in steps.tolist():
            steps = torch.cat([steps, torch.tensor([end], dtype=torch.float64)])
        opts["step_t"] = steps.to(first.device)
        if len(jumps):
            opts["jump_t"] = jumps.to(first.device)
    # the span in a float32 state's dtype is off by up to an ulp (0.999 -> 0.99900001)
    rounding = max(abs(float(t_span[0]) - t0), abs(end - t1))
    guard = _InRange(func, min(t0, t1), max(t0, t1), method,
                     probe=adaptive and opts.get("first_step") is None, rounding=rounding)
    return odeint(guard, y0, t_span, rtol=rtol, atol=atol, method=method, options=opts or None)


def sample_ode(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None = None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5",
        options: Mapping[str, Any] | None = None, timesteps: Timesteps | None = None) -> Sample:
    """Adaptive probability-flow ODE solve with torchdiffeq from ``T`` to ``t_min``.

    ``steps`` is ignored (the solver picks its own steps from ``rtol``/``atol``); the number of
    evaluations it took is reported as every sampler reports it: ``callback``'s ``"nfe"`` (called
    once, at the end) and ``info["nfe"]``. The network is only ever evaluated at times in
    ``[t_min, T]`` (see :func:`odeint_in_range`).

    Args:
        denoiser: see :mod:`domaindiff.samplers.base`.
        process: process or dict of processes.
        shape_or_x_T: shape, ``x_T`` or state template.
        steps: ignored.
        guidance: optional guidance.
        callback: called once at the end with ``{"i", "t", "x", "denoised", "nfe"}``.
        generator: random generator (prior draw).
        progress: show the number of evaluations.
        prior: draw ``x_T`` from the prior (default for shapes and dicts) or use the given one.
        info: if a dict, receives ``info["nfe"]``, the network evaluations used.
        rtol: ODE relative tolerance.
        atol: ODE absolute tolerance.
        method: torchdiffeq method.
        options: extra torchdiffeq options (e.g. ``{"step_size": 0.01}`` for fixed-step methods,
            ``{"first_step": ...}``, ``{"max_step": ...}``), passed through to ``odeint``.
        timesteps: the caller's own times: the solve runs from the first to the last, and an
            adaptive method also cuts its steps at every point in between (torchdiffeq's
            ``step_t``); a fixed-step method takes only the two end points.
    """
    run = Run("ode", denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    model, x, keys = run.model, run.x, list(run.procs)
    ref = reference_process(run.procs)
    t_hi, t_lo = ref.T, ref.t_min
    if timesteps is not None:
        ts = explicit_grid(run.procs, timesteps)
        t_hi, t_lo = ts[0], ts[-1]
        if len(ts) > 2:
            if method not in _ADAPTIVE_RK:
                raise ValueError(f"timesteps: intermediate points need an adaptive method "
                                 f"({', '.join(_ADAPTIVE_RK)}), got method={method!r}")
            options = dict(options or {})
            cut = torch.as_tensor(options.get("step_t", []), dtype=torch.float64).flatten()
            options["step_t"] = torch.cat([cut, torch.tensor(ts[1:-1], dtype=torch.float64)])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="ode (nfe)", leave=False)

    def func(t: float, ys: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        state = combine(x, dict(zip(keys, ys)))
        v, _ = model.velocity(state, t)
        if bar is not None:
            bar.update(1)
        return tuple(v[k] for k in keys)

    y0 = tuple(x[k] for k in keys)
    try:
        ys = odeint_in_range(func, y0, t_hi, t_lo, rtol=rtol, atol=atol, method=method,
                             options=options)
    finally:
        if bar is not None:
            bar.close()
    return run.result(run.step(0, x, {k: y[-1] for k, y in zip(keys, ys)}, t_hi, t_lo, None,
                               final=True))
