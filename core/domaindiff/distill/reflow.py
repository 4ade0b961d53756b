"""Rectified-flow reflow (2-rectified flow, Liu et al. 2022), for any Gaussian process.

The teacher's deterministic sampler couples noise and data: ``x_T = prior_std z`` (``z`` drawn in
each space, the batch's masks and conditions kept) is carried to ``x0 = teacher(x_T)``. The student
is trained on the straight interpolation of that pair in the process's own coordinates,
``x_t = alpha_t x0 + sigma_t z``, to predict ``x0`` (weighted by ``max(SNR, 1)``); at the first
grid time ``T`` its input is the sampler's own start ``prior_std z`` (not ``alpha_T x0 + sigma_T z``,
whose small ``alpha_T x0`` term would otherwise bias a one-step student). Since
``x_t / alpha_t = x0 + (sigma_t / alpha_t) z`` is a straight line in the DDIM variable, the student's
deterministic DDIM steps (the ``distilled`` sampler) follow it exactly where the coupling is
learned: for an interpolant ``alpha = 1 - t, sigma = t`` this is rectified flow's reflow. The
student is trained at its own grid's times; the coupling is drawn afresh for every batch from the
batch's seed (so a resumed run repeats the uninterrupted one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.distill.base import Method, batch_of, clean, combine, noise, pick, x0_loss
from domaindiff.samplers import get_sampler
from domaindiff.samplers.base import Denoiser, State


class Reflow(Method):
    """Reflow onto the teacher's deterministic noise-to-data coupling.

    Args:
        procs: the model's processes.
        student_steps: the student's DDIM steps.
        teacher_steps: network evaluations of the teacher's sampler per coupling.
        iterations: optimizer steps.
        schedule: the student's time-grid schedule.
        teacher_sampler: a deterministic registered sampler (default ``dpm_solver_pp_2m``).

    Raises:
        ValueError: unknown sampler, a stochastic one, or a bad ``teacher_steps``.
    """

    name = "reflow"
    STOCHASTIC = ("ancestral", "ddpm", "euler_maruyama", "em", "pc", "consistency",
                  "sde_dpm_solver_pp_2m")

    def __init__(self, procs: Mapping[str, object], student_steps: int,
                 teacher_steps: int | None = None, iterations: int = 1000,
                 schedule: str | None = None, teacher_sampler: str = "dpm_solver_pp_2m") -> None:
        super().__init__(procs, student_steps, iterations, schedule)
        teacher_steps = 20 if teacher_steps is None else teacher_steps
        if not isinstance(teacher_steps, int) or teacher_steps < 1:
            raise ValueError(f"teacher_steps must be a positive integer, got {teacher_steps!r}")
        if teacher_sampler in self.STOCHASTIC:
            raise ValueError(f"teacher_sampler={teacher_sampler!r} is stochastic; reflow needs a "
                             "deterministic coupling (e.g. dpm_solver_pp_2m, deis, heun, ddim); "
                             "method 'reflow-stochastic' distils a stochastic sampler")
        self.sample_teacher = get_sampler(teacher_sampler)
        self.teacher_sampler, self.teacher_steps = teacher_sampler, teacher_steps

    def coupling(self, teacher: Denoiser, x: State, generator: torch.Generator | None
                 ) -> tuple[State, State]:
        """``(z, x0)``: standard noise in the spaces and the teacher's sample from ``prior_std z``."""
        z = noise(x, self.procs, generator)
        start = dict(x)
        for k, p in self.procs.items():
            start[k] = p.prior_std * z[k]
        out = self.sample_teacher(teacher, self.procs, start, self.teacher_steps, prior=False,
                                  generator=generator)
        return z, {k: out[k] for k in self.procs}

    def loss(self, student: Denoiser, teacher: Denoiser, state: State,
             generator: torch.Generator | None, step: int) -> Tensor:
        x = clean(state, self.procs)
        with torch.no_grad():
            z, x0 = self.coupling(teacher, x, generator)
        ref = next(iter(x[k] for k in self.procs))
        times = self.student_times()
        j = self.batch_index(batch_of(x, self.procs), len(times) - 1, ref, generator)
        t = pick(times, j, ref)
        x_t = combine(x, x0, z, t, self.procs)
        first = (j == 0).to(ref.device)  # at T the student sees what the sampler starts from
        for k, p in self.procs.items():
            mask = first.reshape(-1, *([1] * (x_t[k].dim() - 1)))
            x_t[k] = torch.where(mask, p.prior_std * z[k], x_t[k])
        pred, _ = self.model(student).raw_predict(x_t, t)
        return x0_loss(pred, x0, x_t, t, self.procs, snr_weight=True)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "teacher_steps": self.teacher_steps,
                "teacher_sampler": self.teacher_sampler}


def make_method(name: str, procs: Mapping[str, object], student_steps: int,
                teacher_steps: int | None = None, iterations: int = 1000,
                schedule: str | None = None, teacher_sampler: str | None = None,
                teacher_options: Mapping[str, Any] | None = None,
                teacher_guidance: Callable[..., Any] | None = None,
                coupling_pool: int | None = None,
                straighten_iterations: int | None = None) -> Method:
    """The method called ``name`` (one of :data:`domaindiff.distill.METHODS`).

    ``teacher_sampler`` applies to ``reflow`` (deterministic samplers) and ``reflow-stochastic``
    (any sampler, default ``ancestral``); ``teacher_options`` (the teacher sampler's keyword
    options) and ``teacher_guidance`` (a guided coupling's guidance factory, see
    :mod:`domaindiff.distill.stochastic`) to ``reflow-stochastic`` only, and so do
    ``coupling_pool`` (round 1's couplings drawn once and reused, :mod:`domaindiff.distill.pool`)
    and ``straighten_iterations`` (round 2's length).

    Raises:
        ValueError: an unknown name (listing the known ones) or bad settings.
    """
    from domaindiff.distill import METHODS
    from domaindiff.distill.consistency import ConsistencyDistillation, ConsistencyTraining
    from domaindiff.distill.progressive import Progressive
    from domaindiff.distill.stochastic import StochasticReflow

    if name == "reflow-stochastic":
        return StochasticReflow(procs, student_steps, teacher_steps, iterations, schedule,
                                teacher_sampler or "ancestral", teacher_options,
                                teacher_guidance=teacher_guidance, pool=coupling_pool,
                                straighten_iterations=straighten_iterations)
    for arg, value in (("coupling_pool", coupling_pool),
                       ("straighten_iterations", straighten_iterations)):
        if value is not None:
            raise ValueError(f"{arg} applies to reflow-stochastic only, not to method {name!r}")
    if teacher_guidance is not None:
        raise ValueError(f"teacher_guidance (a guided coupling) applies to reflow-stochastic "
                         f"only, not to method {name!r}")
    if teacher_options:
        raise ValueError(f"teacher_options apply to reflow-stochastic only, not to method "
                         f"{name!r}")
    if name == "reflow":
        return Reflow(procs, student_steps, teacher_steps, iterations, schedule,
                      teacher_sampler or "dpm_solver_pp_2m")
    classes: dict[str, Any] = {"progressive": Progressive,
                               "consistency": ConsistencyDistillation,
                               "consistency-training": ConsistencyTraining}
    if name not in classes:
        raise ValueError(f"method: unknown {name!r}; choose one of {', '.join(METHODS)}")
    if teacher_sampler is not None:
        raise ValueError(f"teacher_sampler applies to reflow and reflow-stochastic only, not to "
                         f"method {name!r}")
    return classes[name](procs, student_steps, teacher_steps, iterations, schedule)
