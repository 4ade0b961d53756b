"""Reflow on a stochastic coupling: a few-step student of the teacher's best (stochastic) sampler.

A deterministic coupling (:class:`~domaindiff.distill.reflow.Reflow`) hands the student the
distribution of the teacher's probability-flow ODE from the prior, which is not the teacher's best
when that ODE plateaus (a prior that does not match the marginal at ``T``, a briefly trained
teacher). A rectified flow keeps the marginal of *any* coupling, so this method couples the prior
with the teacher's stochastic sampler and straightens the result in two rounds (Liu et al. 2022's
1- then 2-rectified flow, in the process's own coordinates):

1. **flow** (``iterations`` optimizer steps): for a batch, ``start = prior_std z`` (``z`` drawn in
   each space, masks and conditions kept) and ``x0 = teacher_sampler(start)`` (any registered
   sampler -- ancestral, PC, a plugin's S4 -- with ``teacher_options``; its noise comes from the
   batch's generator). The student's clean prediction at ``x_t = alpha_t x0 + sigma_t e`` regresses
   ``x0`` at the times of the ``flow_steps``-step grid, with the *effective noise*
   ``e = (start - alpha_T x0) / sigma_T``: then ``x_T = start`` exactly and ``x_t / alpha_t`` runs
   on the straight line from ``start / alpha_T`` to ``x0`` in ``sigma / alpha``, the line
   deterministic DDIM steps follow. The optimum is ``E[x0 | x_t]`` of the coupling, whose DDIM ODE
   carries the prior to the coupling's ``x0`` marginal -- the stochastic sampler's distribution,
   whatever the prior's mismatch with the marginal at ``T``.
2. **straighten** (``iterations`` more): the round-1 student (its EMA weights, promoted like a
   progressive-distillation round) becomes the teacher of a deterministic reflow: its
   ``flow_steps``-step ``distilled`` ODE couples ``start`` with ``x0``, and the student regresses
   that pair at its own ``student_steps`` grid (same interpolant), as 2-rectified flow.

With ``straighten=False`` only round 1 runs, on the student's own grid (a 1-rectified flow sampled
in ``student_steps`` steps: the ablation). Every coupling is drawn from the batch's seed, so a
resumed run repeats the uninterrupted one. Only Gaussian components are distilled (as for every
method).

**A guided coupling** (``teacher_guidance``): a factory ``(teacher, batch, generator) -> Guidance``
builds, for each batch of round 1, the guidance the teacher's sampler is run with (e.g. TSDiff's
observation self-guidance on each training window's own context: ``TSDiff.distill_guidance``), so
the coupling pairs a prior draw with the teacher's *guided* sample from it. The student then needs
the guidance's information as an input (a conditional student, ``Distillation(student_class=...)``):
the batch's pass-through entries (its condition) reach it unchanged, and it is sampled without
guidance. Round 2 straightens the student's own flow and draws no guidance. The factory's random
draws come from the batch's generator, so a resumed run still repeats the uninterrupted one.
**A coupling pool** (``pool=N``): rectified flow is classically trained on a fixed set of
couplings drawn once and reused over many epochs, where a fresh coupling at every step makes
every round-1 step pay a whole teacher-sampler run. With ``pool=N`` the first round-1 steps draw
their couplings as above and keep them (:class:`~domaindiff.distill.pool.CouplingPool`: each
pair with its batch's masks and conditions) until ``N`` are kept; every later round-1 step trains
on pairs drawn from the pool with its batch's generator. The teacher's sampler then runs
``ceil(N / B)`` times (``B`` the batch size) however long round 1 is, and round 1 can be made
much longer than round 2 (``straighten_iterations``); the pool is part of the distillation's
resumable state (:meth:`StochasticReflow.state_dict`), so a resumed run still repeats the
uninterrupted one bitwise. Round 2 always draws fresh couplings (its teacher, the flow's
``flow_steps``-step ODE, is cheap).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.distill.base import Method, batch_of, clean, coefficients, noise, pick, x0_loss
from domaindiff.distill.pool import CouplingPool
from domaindiff.distill.sampling import distilled_times, sample_distilled
from domaindiff.guidance import Guidance
from domaindiff.processes import bcast
from domaindiff.samplers import get_sampler
from domaindiff.samplers.base import Denoiser, State

#: ``(teacher, clean batch, generator) -> the guidance of the teacher's sampler on that batch``
GuidanceFactory = Callable[[Denoiser, State, "torch.Generator | None"], "Guidance | None"]


def straight_state(x: State, start: Mapping[str, Tensor], x0: Mapping[str, Tensor], t: Tensor,
                   t_start: float, procs: Mapping[str, Any]) -> State:
    """The point at ``t`` of the straight DDIM line from ``start`` (at ``t_start``) to ``x0``.

    ``alpha_t x0 + sigma_t e`` with ``e = (start - alpha_T x0) / sigma_T`` (projected onto each
    space, pass-through entries of ``x`` kept): equal to ``start`` at ``t_start`` and to ``x0`` at
    ``t = 0``; ``x_t / alpha_t`` is affine in ``sigma_t / alpha_t``.
    """
    out = dict(x)
    ref = next(iter(x0.values()))
    t_T = torch.full((ref.shape[0],), float(t_start), dtype=t.dtype, device=t.device)
    for k, p in procs.items():
        a_T, s_T = coefficients(p, t_T)
        e = (start[k] - bcast(a_T, x0[k]) * x0[k]) / bcast(s_T, x0[k])
        a, s = coefficients(p, t)
        out[k] = p.space.project(bcast(a, x0[k]) * x0[k] + bcast(s, e) * e, x)
    return out


class StochasticReflow(Method):
    """Rectified flow on the teacher's stochastic coupling, then straightened (see the module).

    Args:
        procs: the model's processes.
        student_steps: the student's DDIM steps (``distilled`` sampler).
        teacher_steps: network evaluations of the teacher's sampler per coupling (default 100).
        iterations: optimizer steps of round 1 (and of round 2 unless
            ``straighten_iterations`` is given).
        schedule: the time-grid schedule of the student and the flow.
        teacher_sampler: a registered sampler name or a sampler callable with the uniform
            signature (stochastic ones are the point; default ``ancestral``).
        teacher_options: keyword options of the teacher's sampler (e.g. S4's ``snr``).
        flow_steps: the grid of the round-1 flow and of its ODE in round 2 (default 16).
        straighten: run round 2 (else the 1-rectified flow is sampled on the student's grid).
        pool: round 1's couplings drawn once, ``pool`` pairs, and reused (see the module;
            a positive integer); None draws a fresh coupling at every step.
        straighten_iterations: optimizer steps of round 2 (a positive integer; default
            ``iterations``).
        teacher_guidance: the guidance factory of a guided coupling (see the module); None: the
            teacher's sampler runs unguided.

    Raises:
        ValueError: naming a bad ``teacher_steps`` / ``flow_steps`` / ``teacher_options`` /
            ``teacher_guidance``, or an unknown sampler.
    """

    name = "reflow-stochastic"

    def __init__(self, procs: Mapping[str, object], student_steps: int,
                 teacher_steps: int | None = None, iterations: int = 1000,
                 schedule: str | None = None,
                 teacher_sampler: str | Callable[..., Any] = "ancestral",
                 teacher_options: Mapping[str, Any] | None = None,
                 flow_steps: int | None = None, straighten: bool = True,
                 pool: int | None = None, straighten_iterations: int | None = None,
                 teacher_guidance: GuidanceFactory | None = None) -> None:
        super().__init__(procs, student_steps, iterations, schedule)
        teacher_steps = 100 if teacher_steps is None else teacher_steps
        flow_steps = 16 if flow_steps is None else flow_steps
        for arg, value in (("teacher_steps", teacher_steps), ("flow_steps", flow_steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if straighten_iterations is None:
            straighten_iterations = iterations
        elif (not isinstance(straighten_iterations, int) or isinstance(straighten_iterations, bool)
              or straighten_iterations < 1):
            raise ValueError(f"straighten_iterations must be a positive integer, got "
                             f"{straighten_iterations!r}")
        self.straighten_iterations = straighten_iterations
        self.pool = None if pool is None else CouplingPool(pool, self.procs)
        if teacher_options is not None and not isinstance(teacher_options, Mapping):
            raise ValueError(f"teacher_options must be a mapping of sampler options, got "
                             f"{type(teacher_options).__name__}")
        if not isinstance(straighten, bool):
            raise ValueError(f"straighten must be true or false, got {straighten!r}")
        if teacher_guidance is not None and not callable(teacher_guidance):
            raise ValueError(f"teacher_guidance must be a callable (teacher, batch, generator) -> "
                             f"Guidance, got {type(teacher_guidance).__name__}")
        if "guidance" in (teacher_options or {}):
            raise ValueError("teacher_options: 'guidance' is not a sampler option here; a guided "
                             "coupling takes teacher_guidance")
        self.teacher_guidance = teacher_guidance
        if callable(teacher_sampler):
            self.sample_teacher = teacher_sampler
            self.teacher_sampler = getattr(teacher_sampler, "__name__", "callable")
        else:
            self.sample_teacher = get_sampler(teacher_sampler)
            self.teacher_sampler = teacher_sampler
        self.teacher_steps, self.teacher_options = teacher_steps, dict(teacher_options or {})
        self.straighten = straighten
        self.flow_steps = flow_steps if straighten else student_steps
        self.flow_grid = distilled_times(self.procs, self.flow_steps, schedule)

    @property
    def rounds(self) -> int:
        """1 (flow) or 2 (flow, straighten)."""
        return 2 if self.straighten else 1

    @property
    def total_iterations(self) -> int:
        return self.iterations + (self.straighten_iterations if self.straighten else 0)

    def round_at(self, step: int) -> int:
        """The round optimizer step ``step`` belongs to (0: flow, 1: straighten)."""
        return int(self.straighten and int(step) >= self.iterations)

    def state_dict(self) -> dict[str, Any]:
        """The resumable state: the coupling pool's pairs (empty without a pool)."""
        return {"pool": self.pool.state_dict()} if self.pool is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: a checkpoint with a pool for a run without one (or the reverse).
        """
        if (self.pool is None) != ("pool" not in state):
            have = "holds a coupling pool" if "pool" in state else "holds no coupling pool"
            raise ValueError(f"checkpoint: it {have} but this run has pool="
                             f"{self.pool.size if self.pool else None}; resume with the "
                             "interrupted run's pool")
        if self.pool is not None:
            self.pool.load_state_dict(state["pool"])

    def start(self, x: State, generator: torch.Generator | None) -> State:
        """``prior_std z`` per component (noise in the spaces), pass-through entries kept."""
        z = noise(x, self.procs, generator)
        out = dict(x)
        for k, p in self.procs.items():
            out[k] = p.prior_std * z[k]
        return out

    def coupling(self, teacher: Denoiser, x: State, generator: torch.Generator | None,
                 round_: int) -> tuple[State, State]:
        """``(start, x0)``: the prior draw and the round's teacher sample from it.

        Round 0: the teacher's (stochastic) sampler, its noise from ``generator``, guided by
        ``teacher_guidance(teacher, x, generator)`` when given; round 1: the promoted flow's
        deterministic ``distilled`` ODE on the flow grid (unguided).
        """
        start = self.start(x, generator)
        if round_ == 0:
            opts = dict(self.teacher_options)
            if self.teacher_guidance is not None:
                opts["guidance"] = self.teacher_guidance(teacher, x, generator)
            out = self.sample_teacher(teacher, self.procs, start, self.teacher_steps, prior=False,
                                      generator=generator, **opts)
        else:
            out = sample_distilled(teacher, self.procs, start, self.flow_steps, prior=False,
                                   schedule=self.schedule)
        return start, {k: p.space.project(out[k], x) for k, p in self.procs.items()}

    def loss(self, student: Denoiser, teacher: Denoiser, state: State,
             generator: torch.Generator | None, step: int) -> Tensor:
        r = self.round_at(step)
        x = clean(state, self.procs)
        with torch.no_grad():
            if r == 0 and self.pool is not None and self.pool.full:
                idx = self.batch_index(batch_of(x, self.procs), len(self.pool),
                                       next(iter(x[k] for k in self.procs)), generator)
                x, start, x0 = self.pool.draw(x, idx)
            else:
                start, x0 = self.coupling(teacher, x, generator, r)
                if r == 0 and self.pool is not None:
                    x, start, x0 = self.pool.keep(x, start, x0)
        ref = next(iter(x[k] for k in self.procs))
        times = self.flow_grid if r == 0 else self.student_times()
        j = self.batch_index(batch_of(x, self.procs), len(times) - 1, ref, generator)
        t = pick(times, j, ref)
        x_t = straight_state(x, start, x0, t, times[0], self.procs)
        pred, _ = self.model(student).raw_predict(x_t, t)
        return x0_loss(pred, x0, x_t, t, self.procs, snr_weight=True)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "teacher_steps": self.teacher_steps,
                "teacher_sampler": self.teacher_sampler,
                "teacher_options": dict(self.teacher_options), "flow_steps": self.flow_steps,
                "straighten": self.straighten, "rounds": self.rounds,
                "pool": self.pool.size if self.pool is not None else None,
                "flow_iterations": self.iterations,
                "straighten_iterations": self.straighten_iterations if self.straighten else 0,
                "guided_coupling": self.teacher_guidance is not None}
