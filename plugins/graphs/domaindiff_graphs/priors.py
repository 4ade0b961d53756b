"""Where sampling starts: the process's N(0, sigma_T^2 I) prior or a moment-matched Gaussian.

GDSS's SDEs end far from their priors: community-small's VP(0.1, 1.0) has ``alpha(1) = 0.76``,
``sigma(1) = 0.65`` (SNR 1.36), ENZYMES's VE adjacency ends at ``sigma_max = 1``. The true
marginal at ``T`` of an entry whose data value has mean ``mu`` and variance ``v`` over the training
graphs has mean ``alpha(T) mu`` and variance ``alpha(T)^2 v + sigma(T)^2``; the N(0, 1) prior has
neither. The stochastic samplers mix most of that start-up error away, the deterministic ones
(DDIM, DPM-Solver, ...) transport it to a wrong distribution whatever their NFE
(``benchmarks/graphs_deterministic_samplers.py`` measures it).

``prior="moment_matched"`` starts instead from the Gaussian with those two moments per entry (per
node-feature column for X, one for all off-diagonal adjacency entries), in the component's space
(masked nodes, symmetric adjacency with an empty diagonal). Among the product Gaussians it is the
one closest to the true marginal in ``KL(marginal || Gaussian)``; what it lacks are the marginal's
correlations between entries. The moments are data statistics at ``t = 0`` (``mu``, ``v``),
estimated once from the training graphs (:func:`data_moments`) and stored in the model's
buffers, so sampling needs no data; ``alpha(T)``, ``sigma(T)`` come from the processes when
sampling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from domaindiff.processes import GaussianProcess

State = dict[str, Tensor]

#: the start distributions :meth:`GraphDiffusion.sample` accepts by name
PRIORS = ("standard", "moment_matched")


def check_prior(name: object, where: str = "prior") -> str:
    """``name`` if it is one of :data:`PRIORS`.

    Raises:
        ValueError: naming ``where`` and the accepted names.
    """
    if not isinstance(name, str) or name not in PRIORS:
        raise ValueError(f"{where}: unknown prior {name!r}; use one of {', '.join(PRIORS)}")
    return name


def entry_masks(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The real entries of ``x`` (real nodes) and ``adj`` (real off-diagonal pairs) as 0/1."""
    mask = state["mask"].to(state["x"].dtype)
    n = mask.shape[-1]
    off = 1.0 - torch.eye(n, dtype=mask.dtype, device=mask.device)
    return {"x": mask[..., None].expand_as(state["x"]),
            "adj": mask[:, :, None] * mask[:, None, :] * off}


def data_moments(states: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Mean and variance of the data entries, pooled over every real entry of every state.

    Args:
        states: dense states ``{"x": (B, N, F), "adj": (B, N, N), "mask": (B, N)}`` (any ``N``).

    Returns:
        ``{"x_mean": (F,), "x_var": (F,), "adj_mean": (1,), "adj_var": (1,)}`` in float64:
        X per feature column over real nodes, A over real off-diagonal pairs.

    Raises:
        ValueError: if the states hold no node or no node pair (nothing to estimate from).
    """
    sums: dict[str, list[Tensor]] = {}
    for st in states:
        m = entry_masks(st)
        for k, dims in (("x", (0, 1)), ("adj", (0, 1, 2))):
            v, w = st[k].double(), m[k].double()
            part = [w.sum(dims), (v * w).sum(dims), (v * v * w).sum(dims)]
            if k == "adj":
                part = [p.reshape(1) for p in part]
            acc = sums.setdefault(k, [torch.zeros_like(p) for p in part])
            for a, p in zip(acc, part, strict=True):
                a += p
    if not sums or (sums["x"][0] == 0).all() or (sums["adj"][0] == 0).all():
        raise ValueError("data_moments: the training graphs hold no node or no node pair")
    out = {}
    for k, (n, s1, s2) in sums.items():
        mean = s1 / n.clamp_min(1)
        out[f"{k}_mean"] = mean
        out[f"{k}_var"] = (s2 / n.clamp_min(1) - mean**2).clamp_min(0.0)
    return out


def moments_at_T(process: GaussianProcess, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std of the forward marginal at ``T`` of entries with data ``mean`` / ``var``."""
    t = torch.tensor(process.T, dtype=torch.float64)
    a, s = process.alpha(t).double(), process.sigma(t).double()
    return a * mean.double(), (a**2 * var.double() + s**2).sqrt()


def moment_matched_start(processes: Mapping[str, GaussianProcess], template: State,
                         moments: Mapping[str, Tensor],
                         generator: torch.Generator | None = None) -> State:
    """``template`` with X and A drawn from the moment-matched Gaussian at ``T`` (masks kept).

    Each entry is ``mean_T * 1 + std_T * z`` with ``z`` the space's standard noise, so padded nodes
    stay zero and the adjacency stays symmetric with an empty diagonal.
    """
    out = dict(template)
    for k, p in processes.items():
        mean, std = moments_at_T(p, moments[f"{k}_mean"], moments[f"{k}_var"])
        like = template[k]
        ones = p.space.project(torch.ones_like(like), template)
        mean, std = mean.to(like), std.to(like)
        if k == "adj":
            mean, std = mean.reshape(()), std.reshape(())
        out[k] = mean * ones + std * p.space.noise(like, template, generator)
    return out


__all__ = ["PRIORS", "check_prior", "data_moments", "entry_masks", "moment_matched_start",
           "moments_at_T"]
