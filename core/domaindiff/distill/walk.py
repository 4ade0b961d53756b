"""Distilling states that exist only along a sampler's walk (e.g. Echo-DND's Bernoulli mask).

Some modules' networks read, beside their Gaussian components, a component that no Gaussian
process diffuses and that their sampler walks itself, one step per network evaluation: Echo-DND's
Bernoulli mask ``y_i ~ Bern(abar_i m + (1 - abar_i) / 2)``, moved from step to step by a reverse
kernel that averages the exact posterior over the network's ``P(m = 1 | y_i)``. The core's
methods only know the Gaussian components, so a module declares such a component with the hook

    def distill_walk(self) -> Walk

and :class:`~domaindiff.distill.lightning.Distillation` then distils with
:class:`WalkProgressive` (:func:`with_walk`): progressive distillation of the teacher's *joint*
walk. The walked entries live in the state dict under :attr:`Walk.keys` (so every core helper
passes them through, like masks and conditions), the denoiser reads them there and returns its
prediction for them under the same keys, beside the Gaussian predictions.

The walk is binary: each element is 0 or 1, the prediction is a probability per element, and the
reverse kernel ``K(y, p, t, s) = P(y_s = 1 | y_t = y)`` is affine in the prediction ``p`` (true
of any kernel that averages a posterior over the predicted clean value). One round of
progressive distillation at a student time ``t = t_{2i}`` then reads, for a clean batch:

1. ``z_t``: the Gaussian components ``alpha_t x + sigma_t eps``; the walked ones drawn from
   ``q(y_t | data)`` (:meth:`Walk.forward`, at each sample's own time);
2. two teacher steps ``t -> t' -> t''`` of the joint walk: DDIM on the Gaussian components (with
   :attr:`Walk.teacher_guidance`, as the module's sampler applies it), the walk's kernel drawn on
   the walked ones (:meth:`Walk.transition`, :meth:`Walk.draw`);
3. Gaussian targets as :class:`~domaindiff.distill.progressive.Progressive`'s; the walked target
   is the teacher's second kernel ``P_T = K(y_t', p_t', t', t'')`` -- given ``y_t'`` the exact
   probability of the teacher's ``y_t''`` (an unbiased estimate of its two-step marginal) -- and
   the student's one-step kernel ``P_S = K(y_t, p_student, t, t'')`` regresses it, per element:

       loss_walk = mean (P_S - P_T)^2

   (the squared error of ``p_student`` against ``(P_T - K(y_t, 0)) / D`` weighted by ``D^2``,
   ``D = K(y_t, 1) - K(y_t, 0)`` the kernel's sensitivity to the prediction: where the kernel
   hardly depends on the prediction, at high noise, the prediction hardly matters. Dividing by
   ``D^2`` instead -- a loss on the prediction itself -- amplifies the noise of the one-draw
   target by ``1 / D`` and made the Echo-DND student's Bernoulli branch collapse to 0 within 80
   optimizer steps.) At ``t'' = 0`` the kernel is the prediction itself (``D = 1``): the
   student's final estimate regresses the teacher's after two steps.

The student is sampled by the module's own sampler (which walks the component) on the distilled
grid. Only progressive distillation is defined for such states: consistency distillation and
training and reflow are refused by name (:func:`with_walk`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.distill.base import Method, combine, x0_loss
from domaindiff.distill.progressive import two_step_target
from domaindiff.samplers.base import Denoiser, Model, State

__all__ = ["Walk", "WalkProgressive", "with_walk", "walk_loss"]


class Walk(abc.ABC):
    """Binary components a module's sampler walks beside its Gaussian ones.

    Attributes:
        keys: the state keys of the walked components (the denoiser reads them from the state and
            returns its ``P(clean = 1)`` for them under the same keys).
        teacher_guidance: a :class:`~domaindiff.guidance.Guidance` the module's sampler applies
            to every prediction (e.g. clipping the clean estimate); applied to the teacher's.
        weight: weight of the walked components' loss against the Gaussian one.
    """

    keys: tuple[str, ...] = ()
    teacher_guidance: Any = None
    weight: float = 1.0

    @abc.abstractmethod
    def forward(self, state: State, t: Tensor, generator: torch.Generator | None) -> State:
        """The walked components at each sample's time ``t`` (``(B,)``), drawn from the clean batch.

        Args:
            state: the clean batch (the module's ``distill_state``; pass-through entries kept).
            t: per-sample times in ``(0, T]``.
            generator: the batch's generator.

        Returns:
            ``{key: 0/1 tensor}`` for every key of :attr:`keys`.
        """

    @abc.abstractmethod
    def transition(self, y: State, pred: State, t: Tensor, s: Tensor) -> State:
        """``P(y_s = 1 | y_t = y)`` per element under the walk's reverse kernel, for ``s < t``.

        Must be affine in ``pred`` (a probability per element), equal ``y`` where ``s`` and ``t``
        fall on the same step, and equal ``pred`` where ``s = 0``.
        """

    def draw(self, prob: State, generator: torch.Generator | None) -> State:
        """A 0/1 draw of every element with the given probabilities."""
        out: State = {}
        for k, p in prob.items():
            gdev = generator.device if generator is not None else p.device
            u = torch.rand(p.shape, generator=generator, device=gdev, dtype=p.dtype)
            out[k] = (u.to(p.device) < p).to(p.dtype)
        return out


class _Capture:
    """A denoiser that keeps the walked predictions of its last call (one network call serves both)."""

    def __init__(self, denoiser: Denoiser, keys: tuple[str, ...]) -> None:
        self.denoiser, self.keys = denoiser, keys
        self.parametrization = getattr(denoiser, "parametrization", "eps")
        self.last: State = {}

    def __call__(self, state: State, t: Tensor) -> Any:
        out = self.denoiser(state, t)
        missing = [k for k in self.keys if not isinstance(out, Mapping) or k not in out]
        if missing:
            raise KeyError(f"distill: the denoiser returned no prediction for the walked "
                           f"component(s) {missing} (it must read them from the state and "
                           "return P(clean = 1) under the same keys)")
        self.last = {k: out[k].clamp(0.0, 1.0) for k in self.keys}
        return out


def walk_loss(walk: Walk, y_t: State, pred: State, target: State, t: Tensor,
              s: Tensor) -> Tensor:
    """Batch mean of the walked components' kernel error (see the module docstring).

    Args:
        walk: the walk.
        y_t: the student's input state (walked entries at ``t``).
        pred: the student's predictions for the walked keys.
        target: the teacher's kernel probabilities ``P_T`` at ``s``.
        t: the student's times ``(B,)``.
        s: the times the student's single step lands on ``(B,)``.
    """
    mine = walk.transition(y_t, pred, t, s)
    total = torch.zeros((), device=t.device, dtype=t.dtype)
    for k in walk.keys:
        total = total + (mine[k] - target[k].detach()).flatten(1).pow(2).mean(1).mean()
    return total


class WalkProgressive(Method):
    """Progressive distillation of a teacher whose sampler also walks binary components.

    The Gaussian side is :class:`~domaindiff.distill.progressive.Progressive`'s (same grids,
    rounds, target and ``max(SNR, 1)`` weighting, the teacher's steps now with
    ``walk.teacher_guidance``); the walked side is in the module docstring.

    Args:
        base: the plain progressive method (its grids, rounds and iterations are used).
        walk: the module's walk.
    """

    name = "progressive"

    def __init__(self, base: Method, walk: Walk) -> None:
        from domaindiff.distill.progressive import Progressive

        if not isinstance(base, Progressive):
            raise TypeError(f"WalkProgressive wraps a Progressive method, got {type(base).__name__}")
        if not isinstance(walk, Walk) or not walk.keys:
            raise TypeError("distill_walk() must return a domaindiff.distill.walk.Walk with keys")
        clash = [k for k in walk.keys if k in base.procs]
        if clash:
            raise ValueError(f"distill: walked key(s) {clash} are also Gaussian components")
        self.base, self.walk = base, walk
        self.procs = base.procs
        self.student_steps, self.iterations, self.schedule = (base.student_steps,
                                                              base.iterations, base.schedule)

    @property
    def total_iterations(self) -> int:
        return self.base.total_iterations

    def round_at(self, step: int) -> int:
        """The round optimizer step ``step`` belongs to."""
        return self.base.round_at(step)

    def _teacher_step(self, teacher: _Capture, z: State, t: Tensor, s: Tensor,
                      generator: torch.Generator | None) -> tuple[State, State]:
        """One joint teacher step ``t -> s``: the state at ``s`` and the walked predictions at ``t``."""
        x0, e = Model(teacher, self.procs, self.walk.teacher_guidance).predict(z, t)
        w = teacher.last
        nxt = combine(z, x0, e, s, self.procs)
        nxt.update(self.walk.draw(self.walk.transition(z, w, t, s), generator))
        return nxt, w

    def loss(self, student: Denoiser, teacher: Denoiser, state: State,
             generator: torch.Generator | None, step: int) -> Tensor:
        x, z_t, t, t1, t2 = self.base.draw(state, step, generator)
        z_t.update(self.walk.forward(x, t, generator))
        teach = _Capture(teacher, self.walk.keys)
        with torch.no_grad():
            z_1, _ = self._teacher_step(teach, z_t, t, t1, generator)
            x0, e = Model(teach, self.procs, self.walk.teacher_guidance).predict(z_1, t1)
            w_target = self.walk.transition(z_1, teach.last, t1, t2)
            z_2 = combine(z_1, x0, e, t2, self.procs)
            target = two_step_target(z_t, z_2, t, t2, self.procs)
        stu = _Capture(student, self.walk.keys)
        pred, _ = Model(stu, self.procs).raw_predict(z_t, t)
        gauss = x0_loss(pred, target, z_t, t, self.procs, snr_weight=True)
        return gauss + self.walk.weight * walk_loss(self.walk, z_t, stu.last, w_target, t, t2)

    def describe(self) -> dict[str, object]:
        return {**self.base.describe(), "walked": list(self.walk.keys)}


def with_walk(method: Method, walk: Walk, owner: str = "the model") -> Method:
    """The method that distils ``method``'s teacher together with its walked components.

    Args:
        method: the method :func:`~domaindiff.distill.reflow.make_method` built.
        walk: the module's :class:`Walk` (``module.distill_walk()``).
        owner: the module's name, for the error.

    Raises:
        ValueError: ``method`` is not progressive distillation (the only one defined for walked
            states: consistency methods need the student's own prediction at a state the walk
            only reaches by sampling, and reflow's coupling is a deterministic ODE map, which a
            binary walk does not have).
    """
    from domaindiff.distill.progressive import Progressive

    if not isinstance(method, Progressive):
        raise ValueError(f"distill --method {method.name}: {owner} walks {list(walk.keys)} beside "
                         "its Gaussian sampler; only --method progressive distils such a walk")
    return WalkProgressive(method, walk)
