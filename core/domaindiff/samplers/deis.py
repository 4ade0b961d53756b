"""The exponential-integrator sampler DEIS (Zhang & Chen 2023), polynomial in time (tAB-DEIS).

Over an interval ``[t_i, t_{i+1}]`` the probability-flow ODE ``dx/dt = f x + k(t) eps`` with
``k = sigma' - f sigma`` is integrated exactly in its linear part,

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + sum_j C_ij eps_{i-j},

where ``eps`` is extrapolated by the Lagrange polynomial through the last ``order`` evaluations
and ``C_ij = int alpha_{i+1}/alpha(tau) k(tau) l_j(tau) dtau`` is computed by Gauss-Legendre
quadrature (no network evaluations). The first steps warm up with lower orders.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess
from domaindiff.samplers.base import Run
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, State, Timesteps

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def deis_coefficients(p: GaussianProcess, t0: float, t1: float,
                      nodes: list[float]) -> list[float]:
    """``int_{t0}^{t1} alpha(t1)/alpha(tau) k(tau) l_j(tau) dtau`` for the Lagrange basis on nodes."""
    tau = 0.5 * (t1 - t0) * _GL_NODES + 0.5 * (t1 + t0)
    w = 0.5 * (t1 - t0) * _GL_WEIGHTS
    tt = torch.tensor(tau, dtype=torch.float64)
    a1 = float(p.alpha(torch.tensor(t1, dtype=torch.float64)))
    kern = (a1 / p.alpha(tt) * (p.d_sigma(tt) - p.f(tt) * p.sigma(tt))).numpy()
    out = []
    for j, tj in enumerate(nodes):
        basis = np.ones_like(tau)
        for m, tm in enumerate(nodes):
            if m != j:
                basis *= (tau - tm) / (tj - tm)
        out.append(float(np.sum(w * kern * basis)))
    return out


def sample_deis(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        order: int = 3, schedule: str | None = None,
        timesteps: Timesteps | None = None) -> Sample:
    """tAB-DEIS of the given order (1-4): ``steps`` evaluations on ``steps + 1`` points.

    Order 1 is DDIM (exactly, since the exponential integral of a constant ``eps`` is exact).
    Without ``schedule`` the grid is the process's measured default
    (:data:`~domaindiff.samplers.base.MULTISTEP_GRIDS`).
    The common arguments (``timesteps`` included) are described in
    :mod:`domaindiff.samplers.base`.
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1..4, got {order}")
    run = Run(f"deis{order}", denoiser, process, shape_or_x_T, guidance=guidance,
              callback=callback, generator=generator, progress=progress, prior=prior, info=info)
    ts = run.grid(steps, timesteps, schedule, multistep=True)
    x, n = run.x, len(ts) - 1
    hist_t: list[float] = []
    hist_eps: list[State] = []
    for i in run.steps(n):
        t, t_next = ts[i], ts[i + 1]
        x0, eps = run.model.predict(x, t)
        hist_t.insert(0, t)
        hist_eps.insert(0, eps)
        del hist_t[order:], hist_eps[order:]
        upd: State = {}
        for k, p in run.procs.items():
            coeff = deis_coefficients(p, t, t_next, hist_t)
            ratio = float(p.alpha(torch.tensor(t_next, dtype=torch.float64))
                          / p.alpha(torch.tensor(t, dtype=torch.float64)))
            upd[k] = ratio * x[k] + sum(
                (c * e[k] for c, e in zip(coeff, hist_eps)), torch.zeros_like(x[k]))
        x = run.step(i, x, upd, t, t_next, x0, final=i == n - 1)
    return run.result(x)
