"""Progressive distillation (Salimans & Ho 2022), for any Gaussian process and state.

Round ``r`` distils the deterministic DDIM sampler of ``M = teacher_steps / 2^r`` steps on the grid
of :func:`~domaindiff.distill.sampling.distilled_times` into one of ``M / 2`` steps on the grid it
contains: for a clean batch ``x``, a student time ``t = t_{2i}`` and ``z_t = alpha_t x + sigma_t
eps``, the teacher takes two DDIM steps ``t -> t' -> t''`` and the student's clean prediction at
``(z_t, t)`` regresses the ``x~`` whose single DDIM step lands on the same ``z_t''``:

    x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t),

weighted by ``max(SNR(t), 1)``. After each round the student's EMA weights become the teacher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from domaindiff.distill.base import Method, batch_of, clean, coefficients, combine, noise, pick, x0_loss
from domaindiff.distill.sampling import distilled_times
from domaindiff.processes import bcast
from domaindiff.samplers.base import Denoiser, State


def two_step_target(z_t: State, z_2: State, t: Tensor, t2: Tensor,
                    procs: Mapping[str, object]) -> State:
    """The ``x0`` whose one DDIM step from ``(z_t, t)`` lands on the teacher's ``z_2`` at ``t2``.

    Solves ``z_2 = alpha_2 x0 + (sigma_2 / sigma_t) (z_t - alpha_t x0)`` for ``x0`` in every
    Gaussian component (Salimans & Ho 2022, eq. 8).
    """
    target = {}
    for k, p in procs.items():
        a, s = coefficients(p, t)
        a2, s2 = coefficients(p, t2)
        ratio = s2 / s
        target[k] = (z_2[k] - bcast(ratio, z_t[k]) * z_t[k]) / bcast(a2 - ratio * a, z_t[k])
    return target


class Progressive(Method):
    """Progressive distillation from ``teacher_steps`` down to ``student_steps`` DDIM steps.

    Args:
        procs: the model's processes.
        student_steps: the final number of steps.
        teacher_steps: the teacher's number of DDIM steps: ``student_steps * 2^rounds``
            (default ``16 * student_steps``: four rounds).
        iterations: optimizer steps per round.
        schedule: time-grid schedule.

    Raises:
        ValueError: ``teacher_steps`` is not ``student_steps`` times a power of two >= 2.
    """

    name = "progressive"

    def __init__(self, procs: Mapping[str, object], student_steps: int,
                 teacher_steps: int | None = None, iterations: int = 1000,
                 schedule: str | None = None) -> None:
        super().__init__(procs, student_steps, iterations, schedule)
        teacher_steps = 16 * student_steps if teacher_steps is None else teacher_steps
        ratio = teacher_steps // student_steps if isinstance(teacher_steps, int) else 0
        if ratio < 2 or ratio * student_steps != teacher_steps or ratio & (ratio - 1):
            raise ValueError(f"teacher_steps={teacher_steps!r}: progressive distillation halves "
                             f"the steps each round, so it must be student_steps={student_steps} "
                             f"times a power of two >= 2 (e.g. {16 * student_steps})")
        self.teacher_steps = teacher_steps
        self.rounds = int(round(math.log2(ratio)))
        self.grids = [distilled_times(self.procs, teacher_steps >> r, schedule)
                      for r in range(self.rounds)]

    @property
    def total_iterations(self) -> int:
        return self.rounds * self.iterations

    def round_at(self, step: int) -> int:
        """The round optimizer step ``step`` belongs to."""
        return min(int(step) // self.iterations, self.rounds - 1)

    def draw(self, state: State, step: int, generator: torch.Generator | None
             ) -> tuple[State, State, Tensor, Tensor, Tensor]:
        """A training point: the clean state, its noised ``z_t`` and three consecutive grid times.

        Each sample draws an even index ``i`` into the current round's grid; ``t, t1, t2`` are the
        grid's times ``i, i + 1, i + 2`` (the teacher's two steps that the student makes in one).
        """
        times = self.grids[self.round_at(step)]
        x = clean(state, self.procs)
        ref = next(iter(x[k] for k in self.procs))
        i = 2 * self.batch_index(batch_of(x, self.procs), (len(times) - 1) // 2, ref, generator)
        t, t1, t2 = (pick(times, i + j, ref) for j in range(3))
        eps = noise(x, self.procs, generator)
        return x, combine(x, x, eps, t, self.procs), t, t1, t2

    def loss(self, student: Denoiser, teacher: Denoiser, state: State,
             generator: torch.Generator | None, step: int) -> Tensor:
        x, z_t, t, t1, t2 = self.draw(state, step, generator)
        teach = self.model(teacher)
        with torch.no_grad():
            x0, e = teach.raw_predict(z_t, t)
            z_1 = combine(z_t, x0, e, t1, self.procs)
            x0, e = teach.raw_predict(z_1, t1)
            z_2 = combine(z_1, x0, e, t2, self.procs)
            target = two_step_target(z_t, z_2, t, t2, self.procs)
        pred, _ = self.model(student).raw_predict(z_t, t)
        return x0_loss(pred, target, z_t, t, self.procs, snr_weight=True)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "teacher_steps": self.teacher_steps,
                "rounds": self.rounds}
