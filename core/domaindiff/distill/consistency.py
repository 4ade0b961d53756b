"""Consistency distillation and consistency training (Song et al. 2023).

Both train the student's clean prediction ``f(x_t, t)`` to agree along probability-flow
trajectories on the grid of ``teacher_steps`` DDIM steps (:func:`~domaindiff.distill.sampling.
distilled_times`, ending at ``t = 0``). For adjacent grid times ``t > s``, a clean batch ``x`` and
``x_t = alpha_t x + sigma_t z``:

- distillation: ``x_s`` is one teacher step from ``x_t`` (Heun, as Song et al., or DDIM);
- training (no teacher): ``x_s = alpha_s x + sigma_s z`` with the same ``z``;

and the loss is ``|f(x_t, t) - sg(f(x_s, s))|^2`` per free dimension, the target being the
student's own current weights without gradient (the ``mu = 0`` target network of Song &
Dhariwal's improved consistency training) and ``f(x, 0) = x`` at the clean end. The student
samples with the ``consistency`` sampler on any grid of ``student_steps`` points it contains.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from domaindiff.distill.base import Method, batch_of, clean, coefficients, combine, noise, pick, x0_loss
from domaindiff.distill.sampling import distilled_times
from domaindiff.processes import bcast
from domaindiff.samplers.base import Denoiser, State


class ConsistencyDistillation(Method):
    """Consistency distillation from one-step DDIM updates of the teacher.

    Args:
        procs: the model's processes.
        student_steps: steps of the student's multistep consistency sampler.
        teacher_steps: the training grid's number of steps, a multiple of ``student_steps``
            (default ``32 * student_steps``).
        iterations: optimizer steps.
        schedule: time-grid schedule.

    Raises:
        ValueError: ``teacher_steps`` is not a multiple of ``student_steps`` (the student's grid
            would not lie on the training grid).
    """

    name = "consistency"
    sampler = "consistency"

    SOLVERS = ("heun", "ddim")

    def __init__(self, procs: Mapping[str, object], student_steps: int,
                 teacher_steps: int | None = None, iterations: int = 1000,
                 schedule: str | None = None, solver: str = "heun") -> None:
        super().__init__(procs, student_steps, iterations, schedule)
        if solver not in self.SOLVERS:
            raise ValueError(f"solver: unknown {solver!r}; choose one of {', '.join(self.SOLVERS)}")
        self.solver = solver
        teacher_steps = 32 * student_steps if teacher_steps is None else teacher_steps
        if not isinstance(teacher_steps, int) or teacher_steps < 2 or \
                teacher_steps % student_steps:
            raise ValueError(f"teacher_steps={teacher_steps!r}: the consistency grid must be a "
                             f"multiple of student_steps={student_steps} (>= 2), so that the "
                             "student's grid lies on it")
        self.teacher_steps = teacher_steps
        self.grid = distilled_times(self.procs, teacher_steps, schedule)

    def next_state(self, teacher: Denoiser, x: State, x_t: State, z: State, t: Tensor,
                   s: Tensor) -> State:
        """The state at ``s`` on the same trajectory: one teacher step.

        ``ddim``: ``x_s = alpha_s x0_hat + sigma_s eps_hat`` (one evaluation); ``heun``: Heun's
        method on the probability-flow ODE in DDIM's variables ``x / alpha`` against
        ``sigma / alpha`` (two evaluations; the step into ``t = 0`` stays an Euler step, as in
        EDM's sampler).
        """
        model = self.model(teacher)
        x0, e = model.raw_predict(x_t, t)
        x_s = combine(x_t, x0, e, s, self.procs)
        if self.solver == "ddim":
            return x_s
        at_end = s == 0
        s_eval = torch.where(at_end, torch.full_like(s, self.grid[-2]), s)
        _, e2 = model.raw_predict(x_s, s_eval)
        e_mid = {k: torch.where(_rows(at_end, e[k]), e[k], 0.5 * (e[k] + e2[k]))
                 for k in self.procs}
        # the DDIM update with the averaged slope eps, keeping the same x_t / alpha_t
        out = dict(x_t)
        for k, p in self.procs.items():
            a_t, s_t = coefficients(p, t)
            a_s, s_s = coefficients(p, s)
            xbar = x_t[k] / bcast(a_t, x_t[k])
            sbar_t, sbar_s = s_t / a_t, s_s / a_s
            out[k] = p.space.project(bcast(a_s, xbar) * (
                xbar + bcast(sbar_s - sbar_t, xbar) * e_mid[k]), x_t)
        return out

    def loss(self, student: Denoiser, teacher: Denoiser, state: State,
             generator: torch.Generator | None, step: int) -> Tensor:
        x = clean(state, self.procs)
        ref = next(iter(x[k] for k in self.procs))
        j = self.batch_index(batch_of(x, self.procs), len(self.grid) - 1, ref, generator)
        t, s = pick(self.grid, j, ref), pick(self.grid, j + 1, ref)
        z = noise(x, self.procs, generator)
        x_t = combine(x, x, z, t, self.procs)
        stu = self.model(student)
        with torch.no_grad():
            x_s = self.next_state(teacher, x, x_t, z, t, s)
            # f(x, 0) = x; elsewhere the student's own prediction (evaluated at a valid time)
            at_end = s == 0
            s_eval = torch.where(at_end, torch.full_like(s, self.grid[-2]), s)
            f_s, _ = stu.raw_predict(x_s, s_eval)
            target = {k: torch.where(_rows(at_end, x_s[k]), x_s[k], f_s[k]) for k in self.procs}
        pred, _ = stu.raw_predict(x_t, t)
        return x0_loss(pred, target, x_t, t, self.procs, snr_weight=False)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "teacher_steps": self.teacher_steps, "solver": self.solver}


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """A ``(B,)`` mask broadcast over ``like``'s trailing dimensions."""
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


class ConsistencyTraining(ConsistencyDistillation):
    """Consistency training: the pair shares its noise; the teacher is never called.

    The student starts from the teacher checkpoint's weights (its architecture and a good
    initialisation); the arguments are :class:`ConsistencyDistillation`'s.
    """

    name = "consistency-training"
    uses_teacher = False

    def next_state(self, teacher: Denoiser, x: State, x_t: State, z: State, t: Tensor,
                   s: Tensor) -> State:
        return combine(x_t, x, z, s, self.procs)
