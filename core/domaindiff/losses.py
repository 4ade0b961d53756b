"""Training objectives: denoising score matching and flow matching, with weightings.

For a time ``t``, noise ``eps`` drawn in each component's space and ``x_t = alpha x0 + sigma eps``,
the network's prediction is compared with the target of its parametrization. Weightings:

- ``uniform``: plain squared error of the network's own target (``eps``-prediction: Ho et al.;
  ``velocity`` on an interpolant: flow matching / rectified flow);
- ``likelihood``: ``g(t)^2 |score_hat - score|^2`` (Song et al. 2021), whose integral bounds the
  negative log-likelihood;
- ``min_snr``: ``min(SNR, gamma) / SNR`` on the ``eps`` error (Hang et al. 2023).

Non-uniform weightings are expressed in the network's parametrization through the exact factor
:func:`domaindiff.parametrization.eps_error_factor`, so every combination is consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.parametrization import check, eps_error_factor, from_x0_eps
from domaindiff.processes import GaussianProcess, bcast
from domaindiff.samplers.base import SINGLE_KEY, Processes, State, as_processes

#: ``network(state_t, t) -> {key: prediction}`` (or one tensor for a single component)
Network = Callable[[State, Tensor], Tensor | Mapping[str, Tensor]]

WEIGHTINGS = ("uniform", "likelihood", "min_snr")
TIME_SAMPLERS = ("uniform", "stratified", "lognormal")


def sample_time(n: int, process: GaussianProcess, kind: str = "uniform",
                generator: torch.Generator | None = None,
                device: torch.device | str | None = None,
                p_mean: float = -1.2, p_std: float = 1.2) -> Tensor:
    """Training times in ``[t_min, T]``.

    Args:
        n: batch size.
        process: gives the range.
        kind: ``uniform``; ``stratified`` (one shared uniform offset plus ``i / n``, the
            low-discrepancy sampler of Kingma et al. 2021); ``lognormal`` (EDM's
            ``ln sigma ~ N(p_mean, p_std^2)``, mapped through the process's noise level and clipped).
        generator: random generator.
        device: device of the result.
        p_mean: lognormal mean.
        p_std: lognormal standard deviation.
    """
    lo, hi = process.t_min, process.T
    gdev = generator.device if generator is not None else None
    if kind == "uniform":
        u = torch.rand(n, generator=generator, device=gdev)
    elif kind == "stratified":
        u = (torch.rand(1, generator=generator, device=gdev)
             + torch.arange(n, device=gdev) / n) % 1.0
    elif kind == "lognormal":
        sig = torch.exp(p_mean + p_std * torch.randn(n, generator=generator, dtype=torch.float64,
                                                     device=gdev)).cpu()
        t = process.t_from_lambda(-torch.log(sig)).clamp(lo, hi)
        return t.to(device=device, dtype=torch.get_default_dtype())
    else:
        raise ValueError(f"time_sampler: unknown {kind!r}; choose one of {TIME_SAMPLERS}")
    return (lo + (hi - lo) * u).to(device=device, dtype=torch.get_default_dtype())


def weight(weighting: str, parametrization: str, t: Tensor, process: GaussianProcess,
           min_snr_gamma: float = 5.0) -> Tensor:
    """Per-sample weight on the squared error of the network's own target."""
    if weighting == "uniform":
        return torch.ones_like(t)
    c = eps_error_factor(parametrization, t, process)
    if weighting == "likelihood":
        return process.g2(t) / process.sigma(t) ** 2 * c
    if weighting == "min_snr":
        snr = (process.alpha(t) / process.sigma(t)) ** 2
        return snr.clamp(max=min_snr_gamma) / snr * c
    raise ValueError(f"weighting: unknown {weighting!r}; choose one of {WEIGHTINGS}")


def denoising_loss(network: Network, process: Processes, x0: Tensor | Mapping[str, Tensor], *,
                   parametrization: str | Mapping[str, str] = "eps", weighting: str = "uniform",
                   reduction: str = "mean", t: Tensor | None = None,
                   time_sampler: str = "uniform", generator: torch.Generator | None = None,
                   min_snr_gamma: float = 5.0) -> Tensor:
    """Denoising score-matching loss for one batch: the sum of :func:`denoising_loss_parts`.

    The arguments are those of :func:`denoising_loss_parts`.
    """
    total, _ = denoising_loss_parts(
        network, process, x0, parametrization=parametrization, weighting=weighting,
        reduction=reduction, t=t, time_sampler=time_sampler, generator=generator,
        min_snr_gamma=min_snr_gamma)
    return total


def denoising_loss_parts(
        network: Network, process: Processes, x0: Tensor | Mapping[str, Tensor], *,
        parametrization: str | Mapping[str, str] = "eps", weighting: str = "uniform",
        reduction: str = "mean", t: Tensor | None = None, time_sampler: str = "uniform",
        generator: torch.Generator | None = None,
        min_snr_gamma: float = 5.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Denoising score-matching loss per component; one ``t`` per sample shared by components.

    Args:
        network: ``network(state_t, t) -> {key: prediction}`` (a tensor for one component).
        process: a process or a dict of processes keyed like the state.
        x0: clean data, a tensor or a state dict (pass-through keys are given to the network).
        parametrization: what the network predicts (str or per-key dict).
        weighting: ``uniform``, ``likelihood`` or ``min_snr``.
        reduction: ``mean`` (per free dimension) or ``sum`` (over free dimensions) per sample,
            then averaged over the batch.
        t: optional times ``(B,)``; sampled with ``time_sampler`` otherwise.
        time_sampler: see :func:`sample_time`.
        generator: random generator for times and noise.
        min_snr_gamma: gamma of ``min_snr``.

    Returns:
        The scalar loss and the dict of per-component losses it sums.
    """
    procs, _ = as_processes(process)
    state: State = {SINGLE_KEY: x0} if isinstance(x0, Tensor) else dict(x0)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: unknown {reduction!r}; use 'mean' or 'sum'")
    kinds = parametrization if isinstance(parametrization, Mapping) else {
        k: parametrization for k in procs}
    ref_key = next(iter(procs))
    b = state[ref_key].shape[0]
    if t is None:
        t = sample_time(b, procs[ref_key], time_sampler, generator, state[ref_key].device)
    t = t.to(state[ref_key])
    noisy: State = dict(state)
    targets: State = {}
    for k, p in procs.items():
        x = p.space.project(state[k], state)
        eps = p.space.noise(x, state, generator)
        noisy[k] = p.q_sample(x, t, eps)
        targets[k] = from_x0_eps(x, eps, check(kinds[k]), t, p)
    pred = network(noisy, t)
    out = {ref_key: pred} if isinstance(pred, Tensor) else pred
    parts: dict[str, Tensor] = {}
    total = torch.zeros((), device=t.device, dtype=t.dtype)
    for k, p in procs.items():
        err = p.space.project(out[k] - targets[k], noisy)
        per = p.space.sq_norm(err, noisy)
        if reduction == "mean":
            per = per / p.space.dim(err, noisy).clamp_min(1.0)
        w = weight(weighting, kinds[k], t, p, min_snr_gamma)
        parts[k] = (bcast(w, per) * per).mean()
        total = total + parts[k]
    return total, parts


def flow_matching_loss(network: Network, process: Processes, x0: Tensor | Mapping[str, Tensor],
                       **kwargs: Any) -> Tensor:
    """Flow matching: the uniform-weighted velocity loss (use with an :class:`Interpolant`)."""
    kwargs.setdefault("parametrization", "velocity")
    kwargs.setdefault("weighting", "uniform")
    return denoising_loss(network, process, x0, **kwargs)
