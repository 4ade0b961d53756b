"""Ancestral sampling of the Bernoulli (binary) diffusion, with exact skip steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance
from domaindiff.processes import Bernoulli
from domaindiff.samplers.base import (
    Callback,
    CountingDenoiser,
    Denoiser,
    State,
    emit,
    report_nfe,
    steps_iter,
)


def bernoulli_time_points(num_steps: int, steps: int) -> list[int]:
    """``steps`` integer steps from N down to 1 (evenly spaced), then 0."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps must be in 1..{num_steps}, got {steps}")
    pts = torch.linspace(num_steps, 1, steps).round().long().tolist()
    pts = sorted(set(pts), reverse=True)
    return [*pts, 0]


def sample_bernoulli(
        denoiser: Denoiser, process: Bernoulli, shape_or_template: Sequence[int] | Mapping[str, Tensor],
        steps: int, *, guidance: Guidance | None = None, callback: Callback | None = None,
        generator: torch.Generator | None = None, progress: bool = False,
        info: dict[str, Any] | None = None, key: str = "x",
        threshold: float | None = None) -> Tensor | State:
    """Sample binary data by walking the reverse chain ``p(x_j | x_i)`` (exact skip-step posterior).

    The denoiser returns the probability that the clean value is 1 (``x0_hat``), from the state
    and the integer step as a float tensor ``t = i / N``. With ``steps < N`` the walk skips steps
    with the exact skip-step posterior (the Bernoulli analogue of DDIM's sub-sequences). The prior
    at step N is ``Bern(1/2)`` approximately (exactly ``Bern(abar_N x0 + (1 - abar_N)/2)``).
    The last step returns ``x0_hat`` (a probability map), thresholded if ``threshold`` is given.

    Args:
        denoiser: ``denoiser(state, t) -> {key: prob}`` or a tensor of probabilities.
        process: the Bernoulli process.
        shape_or_template: a shape, or a state dict holding ``key`` (shape template) and conditions.
        steps: network evaluations.
        guidance: unused (kept for the uniform signature; must be None).
        callback: per-step callback.
        generator: random generator.
        progress: show a progress bar.
        info: if a dict, receives ``info["nfe"]``, the network evaluations used.
        key: the binary component's key.
        threshold: if given, binarise the final probabilities.
    """
    if guidance is not None:
        raise ValueError("guidance is not supported by the Bernoulli sampler")
    if not isinstance(process, Bernoulli):
        raise TypeError(f"process: sample_bernoulli needs a Bernoulli process, got "
                        f"{type(process).__name__}")
    net = CountingDenoiser(denoiser)
    single = not isinstance(shape_or_template, Mapping)
    state: State = (dict(shape_or_template) if isinstance(shape_or_template, Mapping)
                    else {key: torch.zeros(tuple(shape_or_template))})
    like = state[key]
    pts = bernoulli_time_points(process.num_steps, steps)
    gdev = generator.device if generator is not None else like.device
    u = torch.rand(like.shape, generator=generator, device=gdev, dtype=like.dtype).to(like.device)
    state[key] = (u < 0.5).to(like.dtype)
    b = like.shape[0]
    prob = None
    for n in steps_iter(len(pts) - 1, progress, "bernoulli"):
        i, j = pts[n], pts[n + 1]
        t = torch.full((b,), i / process.num_steps, device=like.device, dtype=like.dtype)
        out = net(state, t)
        prob = (out[key] if isinstance(out, dict) else out).clamp(0.0, 1.0)
        if j == 0:
            state[key] = prob if threshold is None else (prob > threshold).to(like.dtype)
        else:
            ii = torch.full((b,), i, device=like.device)
            post = process.reverse_prob(state[key], prob, ii, torch.full_like(ii, j))
            r = torch.rand(post.shape, generator=generator, device=gdev,
                           dtype=post.dtype).to(post.device)
            state[key] = (r < post).to(like.dtype)
        emit(callback, n, j / process.num_steps, state, {key: prob}, net.nfe)
    report_nfe(info, net.nfe)
    return state[key] if single else state
