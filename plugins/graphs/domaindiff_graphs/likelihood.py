"""Exact log-likelihood of graphs under the probability-flow ODE of the system of SDEs.

The ODE runs X and A jointly from ``t_min`` to ``T``; the change of log-density is the integral of
the divergence of the velocity, computed exactly (one backward pass per free coordinate: node
features of real nodes and upper-triangle adjacency entries between real nodes) or with
Hutchinson's estimator. The density is that of the continuous relaxation at the data graph, in
the free coordinates of the node-masked and symmetric-adjacency spaces.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from domaindiff.likelihood import log_likelihood


def graph_log_likelihood(model, batch: Any, *, exact: bool = True, rtol: float = 1e-5,
                         atol: float = 1e-5, use_ema: bool | None = None,
                         generator: torch.Generator | None = None,
                         probe: str = "rademacher") -> dict[str, Tensor]:
    """``log p(graph)`` of each graph of a PyG batch (or dense state) under ``model``.

    Args:
        model: a :class:`~domaindiff_graphs.model.GraphDiffusion`.
        batch: PyG batch or ``{"x", "adj", "mask"}`` state.
        exact: exact divergence (else Hutchinson).
        rtol: ODE relative tolerance.
        atol: ODE absolute tolerance.
        use_ema: EMA weights (default: the model's ``sample_ema``).
        generator: random generator of the Hutchinson probes.
        probe: Hutchinson probe distribution, ``"rademacher"`` or ``"gaussian"``
            (see :mod:`domaindiff.likelihood`).

    Returns:
        ``{"logp": (B,), "bpd": (B,), "prior_logp": (B,), "nfe": int}``.
    """
    state = model.batch_to_state(batch)
    ema = model.sample_ema if use_ema is None else use_ema
    was_training = model.training
    model.eval()
    try:
        return log_likelihood(model.denoiser(ema), model.processes, state, exact=exact,
                              rtol=rtol, atol=atol, generator=generator, probe=probe)
    finally:
        model.train(was_training)
