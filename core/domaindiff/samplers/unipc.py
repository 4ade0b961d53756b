"""UniPC (Zhao et al. 2023): a unified predictor (UniP) and corrector (UniC), orders 1-3.

Data-prediction form in the half log-SNR ``lambda``. At each point the network's clean prediction
``x0_i`` first *corrects* the state the last predictor step produced (UniC, which reuses that
evaluation, so it costs nothing), then the multistep predictor UniP-``p`` moves on with the
``p`` latest predictions. With the corrector a predictor of order ``p`` gives order ``p + 1``.

Both use the B(h) family of the paper: ``bh1`` is ``B(h) = h`` and ``bh2`` is ``B(h) = e^h - 1``
(recommended for few steps / guided sampling). The update over ``h = lambda_t - lambda_s`` is

    x_t = sigma_t/sigma_s x_s - alpha_t (e^-h - 1) x0_s - alpha_t B(h) sum_m rho_m D_m,

with ``D_m = (x0_m - x0_s) / r_m`` the scaled differences to earlier points (``r_m`` their
``lambda`` offsets over ``h``) and ``rho`` solving the order conditions ``R rho = b`` built from the
``phi`` functions of ``-h``; the corrector adds the new point (``r = 1``, ``D = x0_t - x0_s``).
As in the reference implementation, UniP-2 takes ``rho = 1/2`` and UniC-1 ``rho = 1/2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess
from domaindiff.samplers.base import Run, Schedule, combine, scalar
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, State, Timesteps

#: newest first: (x0 prediction per key, lambda per key) at the last points
History = list[tuple[State, dict[str, float]]]


def unipc_coefficients(h: float, rks: Sequence[float], variant: str,
                       corrector: bool) -> tuple[float, list[float]]:
    """``B(h)`` and the weights ``rho`` of UniP (``corrector=False``) or UniC.

    Args:
        h: the half-log-SNR step ``lambda_t - lambda_s`` (> 0 from noise to data).
        rks: ``lambda`` offsets of the earlier points over ``h`` (negative), newest first; the
            corrector's new point (``r = 1``) is appended here.
        variant: ``"bh1"`` or ``"bh2"``.
        corrector: UniC (weights for ``rks`` and the new point) or UniP (weights for ``rks``).

    Returns:
        ``(B(h), rho)``.
    """
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    r = np.array([*rks, 1.0], dtype=np.float64)
    order = len(r)
    phi_k = math.expm1(hh) / hh - 1
    fact = 1.0
    rows, rhs = [], []
    for j in range(1, order + 1):
        rows.append(r ** (j - 1))
        rhs.append(phi_k * fact / b_h)
        fact *= j + 1
        phi_k = phi_k / hh - 1 / fact
    mat, vec = np.stack(rows), np.array(rhs)
    if corrector:
        rho = [0.5] if order == 1 else np.linalg.solve(mat, vec).tolist()
    elif order == 1:
        rho = []
    elif order == 2:
        rho = [0.5]
    else:
        rho = np.linalg.solve(mat[:-1, :-1], vec[:-1]).tolist()
    return b_h, [float(v) for v in rho]


def _update(p: GaussianProcess, k: str, x: Tensor, hist: History, order: int, s: float,
            t: float, variant: str, x0_t: Tensor | None) -> Tensor:
    """One UniP step (``x0_t is None``) or UniC correction of component ``k`` from ``s`` to ``t``."""
    m0, lam_s = hist[0][0][k], hist[0][1][k]
    h = scalar(p, "lambda_", t) - lam_s
    a_t, sig_t = scalar(p, "alpha", t), scalar(p, "sigma", t)
    rks, diffs = [], []
    for j in range(1, order):
        rk = (hist[j][1][k] - lam_s) / h
        rks.append(rk)
        diffs.append((hist[j][0][k] - m0) / rk)
    if x0_t is not None:
        diffs.append(x0_t - m0)
    b_h, rho = unipc_coefficients(h, rks, variant, corrector=x0_t is not None)
    out = sig_t / scalar(p, "sigma", s) * x - a_t * math.expm1(-h) * m0
    if rho:
        out = out - a_t * b_h * sum((c * d for c, d in zip(rho, diffs)), torch.zeros_like(x))
    return out


def sample_unipc(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        order: int = 3, variant: str = "bh2", corrector: bool = True,
        disable_corrector: Sequence[int] = (), schedule: Schedule | None = None,
        lower_order_final: bool = True, timesteps: Timesteps | None = None,
        final: str | None = None) -> Sample:
    """UniPC multistep sampler: ``steps`` evaluations on ``steps + 1`` points.

    Args:
        denoiser: see :mod:`domaindiff.samplers.base`.
        process: process or dict of processes.
        shape_or_x_T: shape, ``x_T`` or state template.
        steps: network evaluations (one per point but the last).
        guidance: optional guidance.
        callback: optional per-step callback.
        generator: random generator (prior draw).
        progress: show a progress bar.
        prior: draw ``x_T`` from the prior (default for shapes and dicts) or use the given one.
        info: if a dict, receives ``info["nfe"]``.
        order: predictor order 1-3 (warmed up from 1 over the first steps).
        variant: ``"bh1"`` or ``"bh2"``.
        corrector: apply UniC at every point after the first (free: it reuses the evaluation).
        disable_corrector: step indices ``i`` whose result is not corrected (the reference's
            ``disable_corrector``, useful for large guidance scales).
        schedule: time grid (default: the process's measured default,
            :data:`~domaindiff.samplers.base.MULTISTEP_GRIDS`).
        lower_order_final: with ``lower_order_final`` the order is capped by the steps left
            (``min(order, steps - i)``), as the reference does.
        timesteps: the caller's own grid; ``schedule`` is then not used. Ending it at ``0``
            makes the last step the clean prediction.
        final: the last step: ``"step"`` (to the grid's last point) or ``"denoise"`` (the clean
            prediction at the point before it, of the state before its correction: the
            evaluation there is the one the corrector reuses; orders counted as on the grid
            without the last point); ``None``: the process's measured default without
            ``schedule``, ``"step"`` with one.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant: unknown UniPC variant {variant!r}; use 'bh1' or 'bh2'")
    run = Run("unipc", denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    procs = run.procs
    ts = run.grid(steps, timesteps, schedule, multistep="unipc", final=final)
    x, n = run.x, len(ts) - 1
    n_steps = n - 1 if run.clean_end(ts[-1]) else n  # the solver's own steps
    hist: History = []
    last: State | None = None
    prev_order = 1
    skip = {int(i) for i in disable_corrector}
    for i in run.steps(n, f"unipc{order}-{variant}"):
        s, t = ts[i], ts[i + 1]
        x0, _ = run.model.predict(x, s)
        if run.clean_end(t):
            x = run.step(i, x, x0, s, t, x0, final=True)
            break
        if corrector and last is not None and (i - 1) not in skip:
            x = combine(x, {k: _update(p, k, last[k], hist, prev_order, ts[i - 1], s, variant,
                                       x0[k]) for k, p in procs.items()})
            # onto the spaces only: guidance's step hook already ran for this interval (as in
            # the reference pipelines, the corrected state is not re-guided)
            x = combine(x, {k: p.space.project(x[k], x) for k, p in procs.items()})
        hist.insert(0, (x0, {k: scalar(p, "lambda_", s) for k, p in procs.items()}))
        del hist[order:]
        o = min(order, n_steps - i) if lower_order_final else order
        o = min(o, len(hist))
        last, prev_order = x, o
        x = run.step(i, x, {k: _update(p, k, x[k], hist, o, s, t, variant, None)
                            for k, p in procs.items()}, s, t, x0, final=i == n - 1)
    return run.result(x)
