"""DPM-Solver (Lu et al. 2022) singlestep orders 1-3; DPM-Solver++ (2M, 3M, SDE-2M) multistep.

All are exponential integrators in the half log-SNR ``lambda = log(alpha / sigma)``. In a state
with several components (e.g. GDSS's VP node features and VE adjacency) all components share the
time points, chosen on the first component's grid (singlestep: uniform in its ``lambda``;
multistep: its process's measured default, :data:`~domaindiff.samplers.base.MULTISTEP_GRIDS`);
each component then uses its own ``lambda`` step ``h`` and its own ratios ``r``, with the
general-``r`` forms of the updates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess
from domaindiff.samplers.base import Run, Schedule, combine, reference_process, scalar
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, State, Timesteps


def _lam(p: GaussianProcess, t: float) -> float:
    return scalar(p, "lambda_", t)


def _ratio(p: GaussianProcess, s: float, t: float) -> float:
    return scalar(p, "alpha", t) / scalar(p, "alpha", s)


def singlestep_orders(steps: int, order: int) -> list[int]:
    """Orders of the singlestep solver for an NFE budget: full steps, then a lower-order final."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if steps < 1:
        raise ValueError(f"steps: need at least 1 network evaluation, got {steps}")
    k, r = divmod(steps, order)
    return [order] * k + ([r] if r else [])


def sample_dpm_solver(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        order: int = 3, schedule: str | None = "logsnr",
        timesteps: Timesteps | None = None) -> Sample:
    """Singlestep DPM-Solver-1/2/3 (noise prediction form).

    ``steps // order`` steps of the given order and, if ``steps`` is not a multiple of ``order``,
    one final step of the remaining lower order: exactly ``steps`` evaluations. DPM-Solver-1 is
    DDIM. Intermediate points use ``r1 = 1/2`` (order 2) and ``r1, r2 = 1/3, 2/3`` (order 3).
    With ``timesteps`` (``K + 1`` step end points) every step has the given order
    (``order * K`` evaluations). The common arguments are described in
    :mod:`domaindiff.samplers.base`.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    run = Run(f"dpm_solver{order}", denoiser, process, shape_or_x_T, guidance=guidance,
              callback=callback, generator=generator, progress=progress, prior=prior, info=info)
    model, x, procs = run.model, run.x, run.procs
    ref = reference_process(procs)
    ts = run.grid(steps, timesteps, schedule, intervals=lambda s: len(singlestep_orders(s, order)),
                  nfe=lambda n: order * n)
    orders = singlestep_orders(steps, order) if steps is not None else [order] * (len(ts) - 1)

    def t_at(s: float, t: float, r: float) -> float:
        lam = _lam(ref, s) + r * (_lam(ref, t) - _lam(ref, s))
        return float(ref.t_from_lambda(torch.tensor(lam, dtype=torch.float64)))

    for i in run.steps(len(orders)):
        s, t, o = ts[i], ts[i + 1], orders[i]
        x0, eps_s = model.predict(x, s)
        h = {k: _lam(p, t) - _lam(p, s) for k, p in procs.items()}
        sig_t = {k: scalar(p, "sigma", t) for k, p in procs.items()}

        def first(k: str, p: GaussianProcess, tt: float, s: float = s, x: State = x,
                  eps_s: State = eps_s) -> Tensor:  # DDIM / DPM-Solver-1 from s to tt
            hh = _lam(p, tt) - _lam(p, s)
            return _ratio(p, s, tt) * x[k] - scalar(p, "sigma", tt) * math.expm1(hh) * eps_s[k]

        upd: State = {}
        if o == 1:
            upd = {k: first(k, p, t) for k, p in procs.items()}
        elif o == 2:
            s1 = t_at(s, t, 0.5)
            u = combine(x, {k: first(k, p, s1) for k, p in procs.items()})
            _, eps1 = model.predict(u, s1)
            for k, p in procs.items():
                r1 = (_lam(p, s1) - _lam(p, s)) / h[k]
                upd[k] = (first(k, p, t)
                          - sig_t[k] / (2 * r1) * math.expm1(h[k]) * (eps1[k] - eps_s[k]))
        else:
            s1, s2 = t_at(s, t, 1 / 3), t_at(s, t, 2 / 3)
            u1 = combine(x, {k: first(k, p, s1) for k, p in procs.items()})
            _, eps1 = model.predict(u1, s1)
            u2: State = {}
            r: dict[str, tuple[float, float]] = {}
            for k, p in procs.items():
                r1 = (_lam(p, s1) - _lam(p, s)) / h[k]
                r2 = (_lam(p, s2) - _lam(p, s)) / h[k]
                r[k] = (r1, r2)
                phi = math.expm1(r2 * h[k]) / (r2 * h[k]) - 1
                u2[k] = (first(k, p, s2) - scalar(p, "sigma", s2) * (r2 / r1) * phi
                         * (eps1[k] - eps_s[k]))
            _, eps2 = model.predict(combine(x, u2), s2)
            for k, p in procs.items():
                phi2 = math.expm1(h[k]) / h[k] - 1
                upd[k] = first(k, p, t) - sig_t[k] / r[k][1] * phi2 * (eps2[k] - eps_s[k])
        x = run.step(i, x, upd, s, t, x0, final=i == len(orders) - 1)
    return run.result(x)


def _multistep_pp(denoiser: Denoiser, process: Processes, shape_or_x_T: Start,
                  steps: int | None, guidance: Guidance | None, callback: Callback | None,
                  generator: torch.Generator | None, progress: bool, prior: bool | None,
                  info: dict[str, Any] | None, schedule: str | None, lower_order_final: bool,
                  timesteps: Timesteps | None, order: int, sde: bool, name: str,
                  reference_d2: bool = False, final: str | None = None) -> Sample:
    """Multistep DPM-Solver++ of order 1-3, as an ODE or (``sde``) an SDE solver.

    With ``x0`` the data predictions at the last points and ``r_j`` the ratios of the previous
    half-log-SNR steps to the current one ``h``, the divided differences
    ``D1 = (x0_0 - x0_1) / r_0`` (and, at order 3, ``D1, D2`` from the three-point formula)
    enter the exponential-integrator update

        ODE: x_t = sigma_t/sigma_s x_s - alpha_t (e^-h - 1) D0 + alpha_t phi_2 D1 + alpha_t c_2 D2
        SDE: x_t = sigma_t/sigma_s e^-h x_s + alpha_t (1 - e^-2h) (D0 + D1 / 2)
                   + sigma_t sqrt(1 - e^-2h) z

    (``phi_2 = (e^-h - 1)/h + 1``; ``c_2 = 1 - 2 phi_2 / h``, the exact weight of ``D2 ~ h^2 x0''/2``;
    ``reference_d2`` uses ``1/2 - phi_2 / h`` instead, the weight in the DPM-Solver, k-diffusion and
    diffusers code, which halves the second-difference term and makes their 3M second order
    overall; at order 2 the ODE uses the midpoint form ``- alpha_t (e^-h - 1) D1 / 2``). The first
    steps warm up with lower orders;
    with ``lower_order_final`` and fewer than 15 steps the last step is first order and the one
    before at most second order, as the reference implementations do. A grid ending at ``t = 0``
    (``final="denoise"``) ends with the clean prediction at the point before, and the orders are
    counted as on the grid without that point (the clean end is k-diffusion's ``sigma = 0``).
    """
    run = Run(name, denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    procs = run.procs
    ts = run.grid(steps, timesteps, schedule, multistep=name, final=final)
    x, n = run.x, len(ts) - 1
    n_steps = n - 1 if run.clean_end(ts[-1]) else n  # the solver's own steps
    # newest first: (x0 prediction, lambda per key) at the last points
    hist: list[tuple[State, dict[str, float]]] = []
    for i in run.steps(n):
        s, t = ts[i], ts[i + 1]
        x0, _ = run.model.predict(x, s)
        if run.clean_end(t):
            x = run.step(i, x, x0, s, t, x0, final=True)
            break
        hist.insert(0, (x0, {k: _lam(p, s) for k, p in procs.items()}))
        del hist[order:]
        o = min(order, len(hist))
        if lower_order_final and n_steps < 15:
            o = min(o, n_steps - i)
        z = run.noise(x) if sde else None
        upd: State = {}
        for k, p in procs.items():
            lam_s, lam_t = hist[0][1][k], _lam(p, t)
            h = lam_t - lam_s
            a_t, sig_t = scalar(p, "alpha", t), scalar(p, "sigma", t)
            sig_ratio = sig_t / scalar(p, "sigma", s)
            d0 = x0[k]
            d1: Tensor | None = None
            d2: Tensor | None = None
            if o >= 2:
                r0 = (lam_s - hist[1][1][k]) / h
                d1_0 = (d0 - hist[1][0][k]) / r0
                d1 = d1_0
                if o == 3:
                    r1 = (hist[1][1][k] - hist[2][1][k]) / h
                    d1_1 = (hist[1][0][k] - hist[2][0][k]) / r1
                    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
            if sde:
                assert z is not None
                e2 = -math.expm1(-2 * h)
                out = sig_ratio * math.exp(-h) * x[k] + a_t * e2 * d0
                if d1 is not None:
                    out = out + 0.5 * a_t * e2 * d1
                out = out + sig_t * math.sqrt(e2) * z[k]
            else:
                em1 = math.expm1(-h)
                out = sig_ratio * x[k] - a_t * em1 * d0
                if d2 is not None and d1 is not None:
                    # D2 ~ h^2 x0''/2 needs (1/h^2) int_0^h e^(u-h) u^2 du = 1 - 2 phi_2 / h;
                    # the reference codes use half of it, (1/2 - phi_2 / h) (second order overall)
                    c2 = 0.5 - (em1 + h) / h**2 if reference_d2 else 1 - 2 * (em1 + h) / h**2
                    out = out + a_t * (em1 / h + 1) * d1 + a_t * c2 * d2
                elif d1 is not None:
                    out = out - 0.5 * a_t * em1 * d1
            upd[k] = out
        x = run.step(i, x, upd, s, t, x0, final=i == n - 1)
    return run.result(x)


def sample_dpm_solver_pp_2m(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: Schedule | None = None, lower_order_final: bool = True,
        timesteps: Timesteps | None = None, final: str | None = None) -> Sample:
    """DPM-Solver++(2M) (Lu et al. 2022b), data-prediction multistep, second order.

    ``steps`` evaluations on ``steps + 1`` points. The first step is first order (no history);
    with ``lower_order_final`` the last step is first order too when ``steps < 15``, as the
    reference does for stability at few steps. ``final`` is the last step (``"step"`` or
    ``"denoise"``, the clean prediction at the last-but-one point; ``None``: the process's
    measured default without ``schedule``, :data:`~domaindiff.samplers.base.MULTISTEP_DEFAULTS`).
    The common arguments (``timesteps`` included) are described in
    :mod:`domaindiff.samplers.base`.
    """
    return _multistep_pp(denoiser, process, shape_or_x_T, steps, guidance, callback, generator,
                         progress, prior, info, schedule, lower_order_final, timesteps, order=2,
                         sde=False, name="dpm_solver_pp_2m", final=final)


def sample_dpm_solver_pp_3m(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: Schedule | None = None, lower_order_final: bool = True,
        timesteps: Timesteps | None = None, reference_d2: bool = False,
        final: str | None = None) -> Sample:
    """DPM-Solver++(3M) (Lu et al. 2022b), data-prediction multistep, third order.

    ``steps`` evaluations on ``steps + 1`` points; orders 1, 2, then 3 (and, with
    ``lower_order_final`` below 15 steps, 2 and 1 for the last two). ``reference_d2=True``
    reproduces the DPM-Solver / k-diffusion / diffusers update, whose second-difference weight is
    half the exact one (see :func:`_multistep_pp`; measured second order). ``final`` as in
    :func:`sample_dpm_solver_pp_2m`. The common arguments (``timesteps`` included) are described
    in :mod:`domaindiff.samplers.base`.
    """
    return _multistep_pp(denoiser, process, shape_or_x_T, steps, guidance, callback, generator,
                         progress, prior, info, schedule, lower_order_final, timesteps, order=3,
                         sde=False, name="dpm_solver_pp_3m", reference_d2=reference_d2,
                         final=final)


def sample_sde_dpm_solver_pp_2m(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: Schedule | None = None, lower_order_final: bool = True,
        timesteps: Timesteps | None = None, final: str | None = None) -> Sample:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b; k-diffusion / diffusers "sde-dpmsolver++").

    The reverse SDE integrated exactly in its linear part with a multistep (midpoint) estimate of
    the data prediction: ``steps`` evaluations on ``steps + 1`` points, fresh noise at every step
    (also the last, whose noise is the ``sigma(t_min)`` of the end point; with
    ``final="denoise"`` the clean prediction at the last-but-one point instead). The common
    arguments (``timesteps`` included) are described in :mod:`domaindiff.samplers.base`.
    """
    return _multistep_pp(denoiser, process, shape_or_x_T, steps, guidance, callback, generator,
                         progress, prior, info, schedule, lower_order_final, timesteps, order=2,
                         sde=True, name="sde_dpm_solver_pp_2m", final=final)
