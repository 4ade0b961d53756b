"""The exponential-integrator sampler DEIS (Zhang & Chen 2023), polynomial in time (tAB-DEIS).

Over an interval ``[t_i, t_{i+1}]`` the probability-flow ODE ``dx/dt = f x + k(t) eps`` with
``k = sigma' - f sigma`` is integrated exactly in its linear part,

    x_{i+1} = (alpha_{i+1} / alpha_i) x_i + sum_j C_ij eps_{i-j},

where ``eps`` is extrapolated by the Lagrange polynomial through the last ``order`` evaluations
and ``C_ij = int alpha_{i+1}/alpha(tau) k(tau) l_j(tau) dtau`` is computed by Gauss-Legendre
quadrature (no network evaluations). The first steps warm up with lower orders.

``basis="logsnr"`` takes the Lagrange polynomial in the half log-SNR ``lambda = log(alpha/sigma)``
instead of in ``t`` (and integrates in ``lambda``). In the variables ``y = x / alpha`` and
``s = sigma / alpha`` every Gaussian process's probability-flow ODE is ``dy/ds = eps``, so this
variant gives the same samples on every process for the same grid of ``lambda`` (and the same
``y`` at the start): it is the time-polynomial DEIS of VE, whose ``t`` is affine in ``lambda``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess
from domaindiff.samplers.base import Run, Schedule
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start, State, Timesteps

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


BASES = ("time", "logsnr")


def _lagrange(u: np.ndarray, nodes: list[float]) -> list[np.ndarray]:
    """The Lagrange basis polynomials on ``nodes``, evaluated at ``u``."""
    out = []
    for j, uj in enumerate(nodes):
        basis = np.ones_like(u)
        for m, um in enumerate(nodes):
            if m != j:
                basis *= (u - um) / (uj - um)
        out.append(basis)
    return out


def deis_coefficients(p: GaussianProcess, t0: float, t1: float,
                      nodes: list[float], basis: str = "time") -> list[float]:
    """The weights ``C_j`` of the ``eps`` evaluations at ``nodes`` over one step ``t0 -> t1``.

    Args:
        p: the process.
        t0: where the step starts.
        t1: where it ends.
        nodes: the times of the evaluations (newest first).
        basis: ``"time"``: ``int_{t0}^{t1} alpha(t1)/alpha(tau) k(tau) l_j(tau) dtau`` with the
            Lagrange basis ``l_j`` in ``t``; ``"logsnr"``: ``alpha(t1) int l_j(lambda) ds`` over
            ``s = sigma/alpha = exp(-lambda)``, the basis in ``lambda`` (the same integral when
            ``t`` is affine in ``lambda``).

    Raises:
        ValueError: for an unknown ``basis``.
    """
    if basis not in BASES:
        raise ValueError(f"basis: unknown DEIS basis {basis!r}; use one of {BASES}")
    if basis == "logsnr":
        a1 = p.coefficient("alpha", t1)
        l0, l1 = p.coefficient("lambda_", t0), p.coefficient("lambda_", t1)
        lam = 0.5 * (l1 - l0) * _GL_NODES + 0.5 * (l1 + l0)
        w = 0.5 * (l1 - l0) * _GL_WEIGHTS * -np.exp(-lam)  # ds = -e^-lambda dlambda
        lnodes = [p.coefficient("lambda_", t) for t in nodes]
        return [float(a1 * np.sum(w * b)) for b in _lagrange(lam, lnodes)]
    tau = 0.5 * (t1 - t0) * _GL_NODES + 0.5 * (t1 + t0)
    w = 0.5 * (t1 - t0) * _GL_WEIGHTS
    tt = torch.tensor(tau, dtype=torch.float64)
    a1 = float(p.alpha(torch.tensor(t1, dtype=torch.float64)))
    kern = (a1 / p.alpha(tt) * (p.d_sigma(tt) - p.f(tt) * p.sigma(tt))).numpy()
    return [float(np.sum(w * kern * b)) for b in _lagrange(tau, nodes)]


def sample_deis(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None, *,
        guidance: Guidance | None = None,
        callback: Callback | None = None, generator: torch.Generator | None = None,
        progress: bool = False, prior: bool | None = None, info: dict[str, Any] | None = None,
        order: int = 3, schedule: Schedule | None = None,
        timesteps: Timesteps | None = None, basis: str = "logsnr",
        final: str | None = None) -> Sample:
    """DEIS of the given order (1-4): ``steps`` evaluations on ``steps + 1`` points.

    Order 1 is DDIM (exactly, since the exponential integral of a constant ``eps`` is exact).

    Args:
        denoiser: see :mod:`domaindiff.samplers.base` (as the other common arguments,
            ``timesteps`` included).
        process: process or dict of processes.
        shape_or_x_T: shape, ``x_T`` or state template.
        steps: network evaluations.
        guidance: optional guidance.
        callback: optional per-step callback.
        generator: random generator (prior draw).
        progress: show a progress bar.
        prior: draw ``x_T`` from the prior (default for shapes and dicts) or use the given one.
        info: if a dict, receives ``info["nfe"]``.
        order: 1-4 (the first steps warm up with lower orders).
        schedule: the grid (a name or a callable, see
            :data:`~domaindiff.samplers.base.Schedule`). Without it (and without ``final``) the
            grid and last step are the process's measured default
            (:data:`~domaindiff.samplers.base.MULTISTEP_DEFAULTS`).
        timesteps: the caller's own grid; ending it at ``0`` makes the last step the clean
            prediction.
        basis: ``"logsnr"`` (the polynomial in ``lambda``: the same samples on every process
            for the same log-SNR grid) or ``"time"`` (tAB-DEIS, the polynomial in ``t``; the
            default before the per-process grids, and the same as ``"logsnr"`` on VE).
        final: the last step, ``"step"`` (to the grid's last point) or ``"denoise"`` (the clean
            prediction at the point before it, for the same NFE); ``None``: the default's with
            no ``schedule``, ``"step"`` with one, the grid's end with ``timesteps``.

    Raises:
        ValueError: for an unknown ``order``, ``basis`` or ``final``.
    """
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1..4, got {order}")
    if basis not in BASES:
        raise ValueError(f"basis: unknown DEIS basis {basis!r}; use one of {BASES}")
    run = Run(f"deis{order}", denoiser, process, shape_or_x_T, guidance=guidance,
              callback=callback, generator=generator, progress=progress, prior=prior, info=info)
    ts = run.grid(steps, timesteps, schedule, multistep="deis", final=final)
    x, n = run.x, len(ts) - 1
    hist_t: list[float] = []
    hist_eps: list[State] = []
    for i in run.steps(n):
        t, t_next = ts[i], ts[i + 1]
        x0, eps = run.model.predict(x, t)
        if run.clean_end(t_next):
            x = run.step(i, x, x0, t, t_next, x0, final=True)
            break
        hist_t.insert(0, t)
        hist_eps.insert(0, eps)
        del hist_t[order:], hist_eps[order:]
        upd: State = {}
        for k, p in run.procs.items():
            coeff = deis_coefficients(p, t, t_next, hist_t, basis)
            ratio = float(p.alpha(torch.tensor(t_next, dtype=torch.float64))
                          / p.alpha(torch.tensor(t, dtype=torch.float64)))
            upd[k] = ratio * x[k] + sum(
                (c * e[k] for c, e in zip(coeff, hist_eps)), torch.zeros_like(x[k]))
        x = run.step(i, x, upd, t, t_next, x0, final=i == n - 1)
    return run.result(x)
