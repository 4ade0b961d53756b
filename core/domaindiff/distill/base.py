"""What every distillation method shares: grids, noisy states, per-sample coefficients, losses.

A method sees the student and the teacher as denoisers (``denoiser(state, t) -> predictions`` with
a ``parametrization`` attribute, e.g. ``DiffusionModule.denoiser()``) and reads them through
:class:`domaindiff.samplers.base.Model`, so their ``(x0, eps)`` predictions are projected onto each
component's space exactly as the samplers do. Noise is drawn with each space's ``noise`` (masked,
symmetric, zero centre of mass), errors are measured with the space's ``project``/``sq_norm``/``dim``
and every network call receives the batch's pass-through entries (node masks, conditions)
unchanged.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.processes import GaussianProcess, bcast
from domaindiff.samplers.base import Denoiser, Model, State

#: a method's training-time view of the teacher and student
Procs = Mapping[str, GaussianProcess]


def gaussian_processes(processes: Mapping[str, object]) -> dict[str, GaussianProcess]:
    """The processes, checked to be Gaussian (what these methods distil).

    Raises:
        ValueError: naming a component whose process is not a
            :class:`~domaindiff.processes.GaussianProcess` (e.g. a Bernoulli mask).
    """
    out: dict[str, GaussianProcess] = {}
    for k, p in processes.items():
        if not isinstance(p, GaussianProcess):
            raise ValueError(f"distill: component {k!r} has a {type(p).__name__} process; only "
                             "Gaussian components can be distilled (deterministic samplers of "
                             "the Bernoulli process are not defined)")
        out[k] = p
    if not out:
        raise ValueError("distill: the model has no diffused component")
    return out


def coefficients(p: GaussianProcess, t: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``(alpha, sigma)``; ``t = 0`` is the clean end ``(1, 0)``."""
    clean = t == 0
    safe = torch.where(clean, torch.full_like(t, p.t_min if p.t_min > 0 else p.T), t)
    a = torch.where(clean, torch.ones_like(t), p.alpha(safe).to(t))
    s = torch.where(clean, torch.zeros_like(t), p.sigma(safe).to(t))
    return a, s


def pick(times: list[float], index: Tensor, like: Tensor) -> Tensor:
    """``times[index]`` as a tensor on ``like``'s device and dtype."""
    grid = torch.tensor(times, dtype=torch.float64)
    return grid[index.cpu()].to(device=like.device, dtype=like.dtype)


def clean(state: State, procs: Procs) -> State:
    """The batch with each diffused component projected onto its space."""
    out = dict(state)
    for k, p in procs.items():
        out[k] = p.space.project(state[k], state)
    return out


def noise(state: State, procs: Procs, generator: torch.Generator | None) -> State:
    """Standard noise in each component's space."""
    return {k: p.space.noise(state[k], state, generator) for k, p in procs.items()}


def combine(state: State, x0: Mapping[str, Tensor], eps: Mapping[str, Tensor], t: Tensor,
            procs: Procs) -> State:
    """``alpha(t) x0 + sigma(t) eps`` per component (projected), pass-through entries kept."""
    out = dict(state)
    for k, p in procs.items():
        a, s = coefficients(p, t)
        out[k] = p.space.project(bcast(a, x0[k]) * x0[k] + bcast(s, eps[k]) * eps[k], state)
    return out


def x0_loss(pred: Mapping[str, Tensor], target: Mapping[str, Tensor], state: State, t: Tensor,
            procs: Procs, snr_weight: bool) -> Tensor:
    """Mean over the batch of the squared x0 error per free dimension, summed over components.

    Args:
        pred: the student's clean prediction per component.
        target: the target per component (no gradient).
        state: the state the prediction was made from (masks).
        t: the student's times ``(B,)``.
        procs: processes.
        snr_weight: weight each sample by ``max(SNR(t), 1)`` (Salimans & Ho's "truncated SNR"
            weighting, which is the eps-error weighting at high noise and the x0-error one at low
            noise); else uniform.
    """
    total = torch.zeros((), device=t.device, dtype=t.dtype)
    for k, p in procs.items():
        err = p.space.project(pred[k] - target[k].detach(), state)
        per = p.space.sq_norm(err, state) / p.space.dim(err, state).clamp_min(1.0)
        if snr_weight:
            a, s = coefficients(p, t)
            per = per * (a**2 / s.clamp_min(1e-12) ** 2).clamp_min(1.0).to(per)
        total = total + per.mean()
    return total


class Method(abc.ABC):
    """A distillation method: its student's sampler, its length and its loss.

    Args:
        procs: the model's processes (Gaussian).
        student_steps: network evaluations of the student.
        iterations: optimizer steps (per round for progressive distillation).
        schedule: the time-grid schedule (default: the process's).
    """

    name = ""
    #: the registered sampler the student is drawn with
    sampler = "distilled"
    #: whether the loss calls the teacher
    uses_teacher = True

    def __init__(self, procs: Mapping[str, object], student_steps: int, iterations: int,
                 schedule: str | None = None) -> None:
        for arg, value in (("student_steps", student_steps), ("iterations", iterations)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        self.procs = gaussian_processes(procs)
        self.student_steps, self.iterations, self.schedule = student_steps, iterations, schedule

    @property
    def total_iterations(self) -> int:
        """Optimizer steps of the whole distillation."""
        return self.iterations

    def student_times(self) -> list[float]:
        """The grid the student is sampled on (see :func:`~domaindiff.distill.sampling.distilled_times`)."""
        from domaindiff.distill.sampling import distilled_times

        return distilled_times(self.procs, self.student_steps, self.schedule)

    def model(self, denoiser: Denoiser) -> Model:
        """A denoiser seen through its parametrization, projected onto the spaces."""
        return Model(denoiser, self.procs)

    @abc.abstractmethod
    def loss(self, student: Denoiser, teacher: Denoiser, state: State,
             generator: torch.Generator | None, step: int) -> Tensor:
        """The loss of one batch of clean states at optimizer step ``step``.

        Args:
            student: the trained network as a denoiser (with gradients).
            teacher: the teacher as a denoiser (called without gradients).
            state: the clean batch (pass-through entries included).
            generator: this batch's random generator.
            step: the optimizer step (selects the round of progressive distillation).
        """

    def batch_index(self, n: int, high: int, like: Tensor,
                    generator: torch.Generator | None) -> Tensor:
        """``n`` uniform integers in ``[0, high)`` (drawn on the generator's device)."""
        dev = generator.device if generator is not None else like.device
        return torch.randint(high, (n,), generator=generator, device=dev)

    def state_dict(self) -> dict[str, Any]:
        """The method's own resumable state (stored in the distillation's checkpoint; none here)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a stateless method accepts only an empty one).

        Raises:
            ValueError: a non-empty state for a method that keeps none.
        """
        if state:
            raise ValueError(f"checkpoint: it holds method state {sorted(state)} that method "
                             f"{self.name!r} does not keep")

    def describe(self) -> dict[str, object]:
        """Plain data recorded in the student checkpoint."""
        return {"method": self.name, "student_steps": self.student_steps,
                "sampler": self.sampler, "schedule": self.schedule,
                "times": self.student_times(), "iterations": self.total_iterations}


def batch_of(state: State, procs: Procs) -> int:
    """Batch size of the diffused components."""
    return next(iter(state[k] for k in procs)).shape[0]


def train_plain(method: Method, student: torch.nn.Module, teacher: Denoiser,
                data: Callable[[int, torch.Generator], State], *, lr: float = 1e-3,
                seed: int = 0, promote: Callable[[torch.nn.Module], Denoiser] | None = None,
                progress: bool = False) -> list[float]:
    """Distil without Lightning: a plain Adam loop over ``method.total_iterations`` steps.

    For networks that are not a DiffusionModule (the closed-form tests, benchmarks). The student
    is a module called as a denoiser (with a ``parametrization`` attribute). Between the rounds of
    progressive distillation the teacher becomes ``promote(student)`` (default: a frozen deep
    copy of the student).

    Args:
        method: the distillation method.
        student: the network trained in place.
        teacher: the teacher denoiser.
        data: ``data(step, generator) -> clean state`` (one batch).
        lr: Adam learning rate.
        seed: seed of the per-step generators (``mix_seed(seed, step)``).
        promote: how a round's student becomes the next round's teacher.
        progress: show a tqdm bar.

    Returns:
        The loss of every step.
    """
    from domaindiff.module import mix_seed

    def copy_of(net: torch.nn.Module) -> Denoiser:
        frozen = copy.deepcopy(net).requires_grad_(False)
        return frozen

    promote = promote or copy_of
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    round_at = getattr(method, "round_at", None)
    current = 0
    losses: list[float] = []
    steps: Iterable[int] = range(method.total_iterations)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"distill {method.name}", leave=False)
    for step in steps:
        if round_at is not None and round_at(step) > current:
            teacher, current = promote(student), round_at(step)
        gen = torch.Generator().manual_seed(mix_seed(seed, step))
        loss = method.loss(student, teacher, data(step, gen), gen, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
