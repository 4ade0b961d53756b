"""Samplers of distilled students, on the grid they were distilled for.

Both visit the ``steps`` evaluation times of :func:`distilled_times` -- the first ``steps`` points
of the process's ``time_grid(steps)``, ``T = t_0 > ... > t_{steps-1}`` -- and end at ``t = 0``
(clean data: the sample is the last clean prediction), as the DDIM convention of
:mod:`domaindiff.samplers`. The grid of ``2 n`` steps contains the grid of ``n`` steps (every
schedule is a monotone map of evenly spaced points), which is what progressive distillation needs.

- ``distilled``: deterministic DDIM steps ``x_s = alpha_s x0_hat + sigma_s eps_hat``
  (progressive-distillation and reflow students; any model, in fact);
- ``consistency``: Song et al.'s multistep consistency sampling: ``x0_hat = f(x_t, t)``, then
  fresh noise ``x_s = alpha_s x0_hat + sigma_s z`` in each space.

Both have the uniform sampler signature (see :mod:`domaindiff.samplers.base`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from domaindiff.guidance import Guidance
from domaindiff.processes import GaussianProcess


def distilled_times(procs: Mapping[str, GaussianProcess], steps: int,
                    schedule: str | None = None) -> list[float]:
    """The ``steps`` evaluation times of a ``steps``-step student, then 0.

    Args:
        procs: the processes (the first one's grid is shared by all components).
        steps: network evaluations, >= 1.
        schedule: the time-grid schedule (default: the process's ``default_schedule``).

    Raises:
        ValueError: ``steps`` < 1.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: need at least 1 network evaluation, got {steps!r}")
    grid = reference_process(procs).time_grid(steps, schedule).tolist()
    return [*grid[:steps], 0.0]


def subset_grids(fine_steps: int, steps: int) -> list[tuple[int, ...]]:
    """Every ``steps``-point sub-grid of a ``fine_steps``-step grid that starts at ``T``.

    The grids are index tuples into the fine grid's evaluation times, increasing and starting at
    0 (``T``): ``C(fine_steps - 1, steps - 1)`` of them. With :func:`grid_times` each becomes a
    ``timesteps=`` grid, so a few-step grid can be picked for a trained flow by its ODE error
    against the fine grid (a search over the model's own grid, not a fitted schedule).

    Raises:
        ValueError: ``steps`` outside ``[1, fine_steps]``.
    """
    if not 1 <= steps <= fine_steps:
        raise ValueError(f"steps must be in [1, flow_steps={fine_steps}], got {steps}")
    return [(0, *rest) for rest in itertools.combinations(range(1, fine_steps), steps - 1)]


def grid_times(fine: Sequence[float], index: Sequence[int]) -> list[float]:
    """The times ``fine[i]`` for ``i`` in ``index``, then 0 (a ``timesteps=`` grid)."""
    return [float(fine[i]) for i in index] + [0.0]


def explicit_times(procs: Mapping[str, GaussianProcess], steps: int | None,
                   timesteps: Sequence[float]) -> list[float]:
    """A caller's own grid: strictly decreasing times in ``[t_min, T]``, optionally ending at 0.

    Raises:
        ValueError: naming ``timesteps`` (too short, not decreasing, out of range) or a ``steps``
            that is not ``len(timesteps) - 1``.
    """
    ts = [float(v) for v in torch.as_tensor(timesteps, dtype=torch.float64).reshape(-1).tolist()]
    if len(ts) < 2 or any(b >= a for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"timesteps: expected at least 2 strictly decreasing times, got {ts}")
    ref = reference_process(procs)
    inner = ts[:-1] if ts[-1] == 0.0 else ts
    if inner[0] > ref.T + 1e-9 or inner[-1] < ref.t_min - 1e-9:
        raise ValueError(f"timesteps: times must lie in [t_min={ref.t_min}, T={ref.T}] (the "
                         f"last may be 0), got {ts[0]} .. {ts[-1]}")
    if steps is not None and steps != len(ts) - 1:
        raise ValueError(f"steps={steps} does not match timesteps: {len(ts)} points are "
                         f"{len(ts) - 1} network evaluations")
    return ts


def alpha_sigma(p: GaussianProcess, t: float) -> tuple[float, float]:
    """``(alpha, sigma)`` at a scalar time; ``t = 0`` is clean data ``(1, 0)``."""
    if t == 0.0:
        return 1.0, 0.0
    return scalar(p, "alpha", t), scalar(p, "sigma", t)


def _run(denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int | None,
         guidance: Guidance | None, callback: Callback | None,
         generator: torch.Generator | None, progress: bool, prior: bool | None,
         info: dict[str, Any] | None, schedule: str | None, renoise: bool, name: str,
         timesteps: Sequence[float] | None) -> Sample:
    run = Run(name, denoiser, process, shape_or_x_T, guidance=guidance, callback=callback,
              generator=generator, progress=progress, prior=prior, info=info)
    if timesteps is not None:
        ts = explicit_times(run.procs, steps, timesteps)
    elif steps is None:
        raise ValueError(f"steps: {name} needs a number of network evaluations or timesteps=")
    else:
        ts = distilled_times(run.procs, steps, schedule)
    x, n = run.x, len(ts) - 1
    for i in run.steps(n):
        t, s = ts[i], ts[i + 1]
        x0, eps = run.model.predict(x, t)
        last = i == n - 1
        if last:
            upd = {k: x0[k] for k in run.procs}
        else:
            z = run.noise(x) if renoise else eps
            upd = {}
            for k, p in run.procs.items():
                a_s, s_s = alpha_sigma(p, s)
                upd[k] = a_s * x0[k] + s_s * z[k]
        x = run.step(i, x, upd, t, s, x0, final=last)
    return run.result(x)


def sample_distilled(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int, *,
        guidance: Guidance | None = None, callback: Callback | None = None,
        generator: torch.Generator | None = None, progress: bool = False,
        prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = None, timesteps: Sequence[float] | None = None) -> Sample:
    """Deterministic DDIM steps on the distilled grid (:func:`distilled_times`).

    The common arguments are described in :mod:`domaindiff.samplers.base`; ``schedule`` must be
    the one the student was distilled with (the process's default unless changed);
    ``timesteps`` replaces the grid by the caller's own (decreasing, optionally ending at 0).
    """
    return _run(denoiser, process, shape_or_x_T, steps, guidance, callback, generator, progress,
                prior, info, schedule, False, "distilled", timesteps)


def sample_consistency(
        denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps: int, *,
        guidance: Guidance | None = None, callback: Callback | None = None,
        generator: torch.Generator | None = None, progress: bool = False,
        prior: bool | None = None, info: dict[str, Any] | None = None,
        schedule: str | None = None, timesteps: Sequence[float] | None = None) -> Sample:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1) on the distilled grid.

    ``x0 = f(x_T, T)``; then for each later grid time ``x_t = alpha_t x0 + sigma_t z`` (noise in
    each space) and ``x0 = f(x_t, t)``. The common arguments are described in
    :mod:`domaindiff.samplers.base`; ``schedule`` and ``timesteps`` as for
    :func:`sample_distilled`.
    """
    return _run(denoiser, process, shape_or_x_T, steps, guidance, callback, generator, progress,
                prior, info, schedule, True, "consistency", timesteps)


# Imported last: ``domaindiff.samplers`` registers this module's samplers when it is imported, so
# a program whose first import is this module must have defined them before the package runs.
from domaindiff.samplers.base import Run, reference_process, scalar  # noqa: E402
from domaindiff.samplers.signature import Callback, Denoiser, Processes, Sample, Start  # noqa: E402
