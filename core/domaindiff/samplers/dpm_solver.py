"""DPM-Solver (Lu et al. 2022) singlestep orders 1-3 and DPM-Solver++(2M) multistep.

Both are exponential integrators in the half log-SNR ``lambda = log(alpha / sigma)``. In a state
with several components (e.g. GDSS's VP node features and VE adjacency) all components share the
time points, chosen uniformly in the first component's ``lambda``; each component then uses its own
``lambda`` step ``h`` and its own ratios ``r``, with the general-``r`` forms of the updates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess
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
    reference_process,
    report_nfe,
    scalar,
    setup,
    steps_iter,
    time_points,
)


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
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        order: int = 3, schedule: str | None = "logsnr") -> Sample:
    """Singlestep DPM-Solver-1/2/3 (noise prediction form).

    ``steps // order`` steps of the given order and, if ``steps`` is not a multiple of ``order``,
    one final step of the remaining lower order: exactly ``steps`` evaluations. DPM-Solver-1 is
    DDIM. Intermediate points use ``r1 = 1/2`` (order 2) and ``r1, r2 = 1/3, 2/3`` (order 3).
    The common arguments are described in :mod:`domaindiff.samplers.base`.
    """
    orders = singlestep_orders(steps, order)
    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    procs = st.procs
    ref = reference_process(procs)
    ts = time_points(procs, len(orders), schedule)

    def t_at(s: float, t: float, r: float) -> float:
        lam = _lam(ref, s) + r * (_lam(ref, t) - _lam(ref, s))
        return float(ref.t_from_lambda(torch.tensor(lam, dtype=torch.float64)))

    for i in steps_iter(len(orders), progress, f"dpm_solver{order}"):
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
        x = model.after_step(combine(x, upd), s, t, generator, final=i == len(orders) - 1)
        emit(callback, i, t, x, x0, model.nfe)
    report_nfe(info, model.nfe)
    return st.finish(x)


def sample_dpm_solver_pp_2m(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = "logsnr", lower_order_final: bool = True) -> Sample:
    """DPM-Solver++(2M) (Lu et al. 2022b), data-prediction multistep, second order.

    ``steps`` evaluations on ``steps + 1`` points. The first step is first order (no history);
    with ``lower_order_final`` the last step is first order too when ``steps < 15``, as the
    reference does for stability at few steps. The common arguments are described in
    :mod:`domaindiff.samplers.base`.
    """
    st = setup(process, shape_or_x_T, generator, prior)
    model, x = Model(denoiser, st.procs, guidance), st.x
    procs = st.procs
    ts = time_points(procs, steps, schedule)
    # (x0 at the previous point, lambda step of the previous interval per key)
    prev: tuple[State, dict[str, float]] | None = None
    for i in steps_iter(steps, progress, "dpm_solver_pp_2m"):
        s, t = ts[i], ts[i + 1]
        x0, _ = model.predict(x, s)
        first_order = prev is None or (lower_order_final and steps < 15 and i == steps - 1)
        upd: State = {}
        h_now: dict[str, float] = {}
        for k, p in procs.items():
            h = _lam(p, t) - _lam(p, s)
            h_now[k] = h
            if first_order or prev is None:
                d = x0[k]
            else:
                r = prev[1][k] / h
                d = (1 + 1 / (2 * r)) * x0[k] - (1 / (2 * r)) * prev[0][k]
            sig_ratio = scalar(p, "sigma", t) / scalar(p, "sigma", s)
            upd[k] = sig_ratio * x[k] - scalar(p, "alpha", t) * math.expm1(-h) * d
        prev = (x0, h_now)
        x = model.after_step(combine(x, upd), s, t, generator, final=i == steps - 1)
        emit(callback, i, t, x, x0, model.nfe)
    report_nfe(info, model.nfe)
    return st.finish(x)
