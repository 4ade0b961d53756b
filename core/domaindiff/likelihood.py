"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. D.2).

``log p_{t_min}(x) = log p_T(x_T) + int_{t_min}^{T} div v(x_t, t) dt`` along the ODE
``dx/dt = v(x, t)`` started at the data. The divergence is taken in each component's space (the
trace of the Jacobian restricted to the subspace): exactly, with one vector-Jacobian product per
coordinate (small dimensions), or by Hutchinson's estimator ``E[v^T J v]`` with probe vectors ``v``
projected onto the space. The probes are Rademacher (random signs, the default) or Gaussian; both
are unbiased (``E[P v v^T P] = P``), and Rademacher probes have the smaller variance: in free
coordinates the Gaussian estimator's variance is ``2 |J_sym|_F^2``, the Rademacher one's drops the
diagonal terms, ``2 (|J_sym|_F^2 - sum_i J_ii^2)`` (Hutchinson 1990). Densities are with respect to
each space's free coordinates (see :mod:`domaindiff.spaces`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

import torch
from torch import Tensor

from domaindiff.processes import GaussianProcess
from domaindiff.samplers.base import Denoiser, Model, Processes, State, as_processes, combine
from domaindiff.samplers.ode import odeint_in_range

#: the Hutchinson probe distributions :func:`log_likelihood` accepts
PROBES = ("rademacher", "gaussian")


def check_probe(probe: str) -> str:
    """Validate a Hutchinson probe name (a ValueError naming the argument otherwise)."""
    if probe not in PROBES:
        raise ValueError(f"probe: unknown Hutchinson probe {probe!r}; choose one of {PROBES}")
    return probe


def probe_noise(probe: str, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Unprojected probe entries shaped like ``like``: random signs or standard normals.

    Drawn on the generator's device (the CPU for ``None``) and moved to ``like``'s.
    """
    check_probe(probe)
    if probe == "gaussian":
        z = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    else:
        z = torch.randint(0, 2, like.shape, generator=generator).to(like.dtype).mul_(2).sub_(1)
    return z.to(like.device)


class LogLikelihood(TypedDict):
    """What :func:`log_likelihood` returns (a plain dict at run time)."""

    logp: Tensor  #: ``(B,)`` log-density in nats
    bpd: Tensor  #: ``(B,)`` bits per dimension
    prior_logp: Tensor  #: ``(B,)`` log-density of the prior at ``x_T``
    nfe: int  #: network evaluations the ODE solve used


def _basis(x: Tensor, cols: Tensor, p: GaussianProcess, state: State) -> Tensor:
    """Projected unit vectors ``P e_i`` for the flat coordinates ``cols``: ``(len(cols), *x.shape)``."""
    e = torch.zeros(len(cols), x.shape[0], x[0].numel(), dtype=x.dtype, device=x.device)
    e[torch.arange(len(cols), device=x.device), :, cols] = 1.0
    return torch.stack([p.space.project(ei.reshape(x.shape), state) for ei in e])


def _divergence_exact(v: State, x: State, procs: Mapping[str, GaussianProcess], state: State,
                      chunk: int = 64) -> Tensor:
    """Trace of each component's projected Jacobian, one vector-Jacobian product per coordinate.

    The products for ``chunk`` coordinates at a time go through one batched backward pass
    (``is_grads_batched``); a network whose operations do not support batched gradients falls
    back to one backward pass per coordinate, with the same result.
    """
    parts: list[Tensor] = []  # (B,) per chunk of coordinates
    for k, p in procs.items():
        batch, n = x[k].shape[0], x[k][0].numel()
        for start in range(0, n, chunk):
            cols = torch.arange(start, min(start + chunk, n), device=x[k].device)
            basis = _basis(x[k], cols, p, state)
            try:
                (g,) = torch.autograd.grad(v[k], x[k], grad_outputs=basis, retain_graph=True,
                                           is_grads_batched=True)
            except RuntimeError:
                g = torch.stack([torch.autograd.grad(v[k], x[k], grad_outputs=b,
                                                     retain_graph=True)[0] for b in basis])
            g = g.reshape(len(cols), batch, n)
            parts.append(g[torch.arange(len(cols), device=g.device), :, cols].sum(0))
    return torch.stack(parts).sum(0)


def _divergence_hutchinson(v: State, x: State, noise: State) -> Tensor:
    """Hutchinson's estimate ``noise^T J noise`` of the divergence, ``(B,)``."""
    keys = list(noise)
    grads = torch.autograd.grad([v[k] for k in keys], [x[k] for k in keys],
                                grad_outputs=[noise[k] for k in keys], retain_graph=True)
    return torch.stack([(g * noise[k]).reshape(g.shape[0], -1).sum(1)
                        for k, g in zip(keys, grads)]).sum(0)


def log_likelihood(denoiser: Denoiser, process: Processes, x0: Tensor | Mapping[str, Tensor], *,
                   exact: bool = True, hutchinson_samples: int = 1,
                   probe: str = "rademacher", rtol: float = 1e-5,
                   atol: float = 1e-5, method: str = "dopri5",
                   generator: torch.Generator | None = None,
                   options: Mapping[str, Any] | None = None,
                   chunk: int = 64) -> LogLikelihood:
    """Log-likelihood of data under the probability-flow ODE of a trained denoiser.

    Args:
        denoiser: the denoiser (any parametrization, see :mod:`domaindiff.samplers.base`).
        process: a process or dict of processes.
        x0: data, a tensor or a state dict (pass-through keys such as masks are kept).
        exact: exact divergence (one backward pass per dimension) or Hutchinson's estimator.
        hutchinson_samples: probe vectors per evaluation (Hutchinson; fixed along the path).
        probe: the Hutchinson probe distribution, ``"rademacher"`` (random signs; lower
            variance, see the module docstring) or ``"gaussian"``; projected onto each space.
        rtol: ODE relative tolerance.
        atol: ODE absolute tolerance.
        method: torchdiffeq method.
        generator: random generator for the Hutchinson probes.
        options: extra torchdiffeq options (e.g. ``{"step_size": 0.01}`` for fixed-step methods,
            ``{"first_step": ...}``), passed through to ``odeint``.
        chunk: coordinates per batched backward pass in the exact divergence (memory grows
            with ``chunk`` x batch x dimension).

    The network is only ever evaluated at times in ``[t_min, T]`` (see
    :func:`domaindiff.samplers.ode.odeint_in_range`).

    Returns:
        ``{"logp": (B,) nats, "bpd": (B,) bits per dimension, "prior_logp": (B,), "nfe": int}``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    check_probe(probe)
    if not exact and hutchinson_samples < 1:
        raise ValueError(f"hutchinson_samples must be >= 1, got {hutchinson_samples}")
    procs, _ = as_processes(process)
    if isinstance(x0, Tensor):
        if len(procs) != 1:
            raise ValueError("x0 is a tensor but the process has several components; pass a dict")
        state = {next(iter(procs)): x0}
    else:
        state = dict(x0)
    keys = list(procs)
    model = Model(denoiser, procs)
    ref = next(iter(procs.values()))
    probes: list[State] = []
    if not exact:
        probes = [{k: p.space.project(probe_noise(probe, state[k], generator), state)
                   for k, p in procs.items()} for _ in range(hutchinson_samples)]

    def func(t: float, ys: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        xs, _ = ys[:-1], ys[-1]
        with torch.enable_grad():
            xg = {k: y.detach().requires_grad_(True) for k, y in zip(keys, xs)}
            cur = combine(state, xg)
            v, _ = model.velocity(cur, t)
            if exact:
                div = _divergence_exact(v, xg, procs, cur, chunk)
            else:
                div = torch.stack([_divergence_hutchinson(v, xg, pr)
                                   for pr in probes]).mean(0)
        return (*[v[k].detach() for k in keys], div.detach())

    first = state[keys[0]]
    y0 = (*[state[k] for k in keys], torch.zeros(first.shape[0], dtype=first.dtype,
                                                 device=first.device))
    ys = odeint_in_range(func, y0, ref.t_min, ref.T, rtol=rtol, atol=atol, method=method,
                         options=options)
    x_T = {k: y[-1] for k, y in zip(keys, ys[:-1])}
    delta = ys[-1][-1]
    end = combine(state, x_T)
    prior = torch.stack([p.prior_logp(x_T[k], end).to(delta) for k, p in procs.items()]).sum(0)
    logp = prior + delta
    dims = torch.stack([p.space.dim(state[k], state).to(logp) for k, p in procs.items()]).sum(0)
    return {"logp": logp, "bpd": -logp / (dims * math.log(2)), "prior_logp": prior,
            "nfe": model.nfe}
