"""The Lightning side of distillation: a trainable :class:`Distillation` and the student file.

:class:`Distillation` holds the teacher (loaded through the allow-listed
:func:`~domaindiff.checkpoint.load_checkpoint`, frozen) and the student (a new instance of the
teacher's class with the same hyper-parameters, initialised from the teacher's EMA weights). Only
the student's network is optimised; its EMA weights are updated after every optimizer step, as
:class:`~domaindiff.module.DiffusionModule` does. Both networks are in the checkpoint (the teacher
changes between rounds of progressive distillation), and so are the batch count that seeds each
batch's randomness from ``(seed, rank, batch)``, the round and the method's own state
(:meth:`~domaindiff.distill.base.Method.state_dict`, e.g. reflow-stochastic's coupling pool; one
per rank under DDP): a run resumed from any ``last.ckpt`` repeats the uninterrupted one. Nothing
but logging and the final student file is rank-0 only, so DDP needs nothing else.

When the fit ends, rank 0 writes the student (:func:`write_student`) -- an ordinary checkpoint of
the teacher's class that :func:`~domaindiff.checkpoint.load_checkpoint`, ``domaindiff sample``
and ``domaindiff eval`` accept.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from domaindiff.checkpoint import load_checkpoint
from domaindiff.data import atomic_save
from domaindiff.distill.base import Method
from domaindiff.distill.reflow import make_method
from domaindiff.module import (
    DiffusionModule,
    last_checkpoint_callbacks,
    mix_seed,
    seed_global_rngs,
)

STUDENT_FILE = "student.ckpt"


@contextlib.contextmanager
def _own_hyperparameters() -> Iterator[None]:
    """Build modules inside LightningCLI with their own hyper-parameters.

    LightningCLI gives every LightningModule built while it instantiates the model the model's
    config as hyper-parameters (a context variable read by ``save_hyperparameters``); the teacher
    and the student built inside :class:`Distillation` must keep theirs.
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # a Lightning without the mechanism: nothing to undo
        yield
        return
    token = _given_hyperparameters.set(None)
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)


def resolve_student_class(name: str, teacher: DiffusionModule) -> type[DiffusionModule]:
    """The allow-listed DiffusionModule class ``name`` (a class path, or a short class name).

    A short name (``TSDiffCond``) is looked up among the exported models of every installed
    plugin; it must name exactly one class.

    Raises:
        ValueError: naming ``student_class`` when nothing (or more than one class) matches.
    """
    from domaindiff.checkpoint import CheckpointError, resolve_class
    from domaindiff.plugins import exported_models

    if not isinstance(name, str) or not name:
        raise ValueError(f"student_class must be a class name, got {name!r}")
    if "." in name:
        try:
            return resolve_class(name, "student_class")
        except CheckpointError as err:
            raise ValueError(str(err)) from None
    found = {c for c in exported_models().values() if c.__name__ == name}
    if len(found) != 1:
        names = sorted({c.__name__ for c in exported_models().values()})
        what = "is ambiguous" if found else "names no exported DiffusionModule"
        raise ValueError(f"student_class={name!r} {what} (teacher {type(teacher).__name__}; "
                         f"exported: {', '.join(names)})")
    return found.pop()


def build_student(teacher: DiffusionModule, parametrization: str | None = None,
                  student_class: type[DiffusionModule] | None = None) -> DiffusionModule:
    """A new module of the teacher's class and hyper-parameters, with the teacher's EMA weights.

    Args:
        teacher: the loaded teacher.
        parametrization: what the student predicts, when it should differ from the teacher's
            (its class must take a ``parametrization`` argument); None keeps the teacher's.
        student_class: another class for the student (e.g. a conditional one for a guided
            coupling), built with the teacher's hyper-parameters. Its network takes the teacher
            network's weights through its ``load_teacher_network(state_dict, teacher)`` hook when
            it has one (TSDiff-Cond: the condition's input columns start at zero), else through
            a strict ``load_state_dict``.

    Raises:
        ValueError: the class takes no ``parametrization`` argument, or the teacher's weights do
            not fit ``student_class``'s network (naming both classes).
    """
    hparams = dict(teacher.hparams)
    if parametrization is not None and parametrization != hparams.get("parametrization"):
        if "parametrization" not in hparams:
            raise ValueError(f"student_parametrization={parametrization!r}: "
                             f"{type(teacher).__name__} has no 'parametrization' argument")
        hparams["parametrization"] = parametrization
    cls = student_class or type(teacher)
    src = teacher.ema_network.module if teacher.ema_network is not None else teacher.network
    student = cls(**hparams)
    if cls is type(teacher):
        student.load_state_dict(teacher.state_dict())
        student.network.load_state_dict(src.state_dict())
    else:
        hook = getattr(student, "load_teacher_network", None)
        try:
            if callable(hook):
                hook(src.state_dict(), teacher)
            else:
                student.network.load_state_dict(src.state_dict())
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0]
            raise ValueError(f"student_class={cls.__name__}: the weights of the "
                             f"{type(teacher).__name__} teacher do not fit its network: "
                             f"{first}") from None
    if student.ema_network is not None:
        student.ema_network.module.load_state_dict(student.network.state_dict())
        student.ema_network.n_averaged.zero_()
    return student


def student_hparams(student: DiffusionModule, method: Method) -> dict[str, Any]:
    """The student's hyper-parameters with its sampler and steps, where its class takes them.

    A ``sampler_options`` hyper-parameter (options of the teacher's default sampler, e.g. GDSS's
    ``snr``) is emptied: they do not apply to the student's sampler. A class whose sampler
    hyper-parameter has another name finishes the job with ``distilled_hparams(hparams, method)
    -> hparams`` (Echo-DND: ``dual_sampler``).
    """
    hparams = dict(student.hparams)
    params = inspect.signature(type(student).__init__).parameters
    for key, value in (("sampler", method.sampler), ("sampling_steps", method.student_steps),
                       ("sampler_options", {})):
        if key in hparams or key in params:
            hparams[key] = value
    hook = getattr(student, "distilled_hparams", None)
    return dict(hook(hparams, method)) if callable(hook) else hparams


def write_student(student: DiffusionModule, method: Method, path: str | Path,
                  teacher_ckpt: str | Path = "", global_step: int = 0) -> Path:
    """Write the student as an ordinary domaindiff checkpoint, atomically.

    The file holds only tensors and plain data (``torch.load(weights_only=True)``), the class
    path the allow-list checks, the hyper-parameters (its ``sampler`` and ``sampling_steps`` set to
    the distilled sampler and steps where the class takes them), the entries the class's own
    ``on_save_checkpoint`` adds (e.g. the image side Echo-DND was trained on) and, under
    ``domaindiff.distilled``, the method, ``student_steps``, the time grid and the teacher.
    """
    cls = type(student)
    meta = {**method.describe(), "teacher": str(teacher_ckpt), "global_step": int(global_step)}
    extras: dict[str, Any] = {}
    student.on_save_checkpoint(extras)  # the class's own entries (e.g. Echo-DND's image side)
    ckpt = {
        **{k: v for k, v in extras.items() if k not in ("domaindiff", "state_dict")},
        "state_dict": {k: v.detach().cpu() for k, v in student.state_dict().items()},
        "hyper_parameters": student_hparams(student, method),
        "domaindiff": {"class_path": f"{cls.__module__}.{cls.__qualname__}", "train_batches": 0,
                       "distilled": meta},
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": int(global_step),
    }
    path = Path(path)
    atomic_save(ckpt, path)
    return path


def _guidance_factory(teacher: DiffusionModule, options: dict[str, Any] | None,
                      method: str) -> Any:
    """The teacher's guided-coupling factory for ``teacher_guidance`` options (None: unguided).

    Raises:
        ValueError: the method is not ``reflow-stochastic``, the options are not a mapping, or
            the teacher's class has no ``distill_guidance`` hook.
    """
    if options is None:
        return None
    if method != "reflow-stochastic":
        raise ValueError(f"teacher_guidance (a guided coupling) applies to reflow-stochastic "
                         f"only, not to method {method!r}")
    if not isinstance(options, dict):
        raise ValueError(f"teacher_guidance must be a mapping of guidance options, got "
                         f"{type(options).__name__}")
    hook = getattr(teacher, "distill_guidance", None)
    if not callable(hook):
        raise ValueError(f"teacher_guidance: {type(teacher).__name__} has no distill_guidance "
                         "hook (it cannot guide its coupling)")
    return hook(**options)


class Distillation(L.LightningModule):
    """Distil a DiffusionModule checkpoint into a few-step student of the same class.

    Args:
        teacher_ckpt: the teacher's checkpoint (allow-listed, read weights-only).
        method: ``progressive``, ``consistency``, ``consistency-training`` or ``reflow``.
        student_steps: the student's network evaluations (1-4 is the point).
        teacher_steps: the teacher's grid (progressive: ``student_steps * 2^rounds``, default
            16x; consistency: a multiple of ``student_steps``, default 32x; reflow: the teacher
            sampler's NFE, default 20).
        iterations: optimizer steps (per round for progressive). Sets the trainer's
            ``max_steps`` when it is not given.
        lr: Adam learning rate (default: the teacher's ``lr``).
        teacher_sampler: reflow's deterministic teacher sampler (default ``dpm_solver_pp_2m``);
            reflow-stochastic's sampler, stochastic ones allowed (default ``ancestral``).
        teacher_options: reflow-stochastic's teacher-sampler keyword options (e.g. S4's ``snr``).
        teacher_guidance: reflow-stochastic only: draw the coupling with the teacher's guidance,
            these options given to the teacher's ``distill_guidance(**options)`` hook (which
            returns the per-batch guidance factory; e.g. TSDiff's ``{kind: quantile, scale: 4}``);
            the student should then be conditional (``student_class``).
        student_class: the student's class when it is not the teacher's (a short name such as
            ``TSDiffCond`` or a class path, allow-listed), built with the teacher's
            hyper-parameters and initialised from its weights (see :func:`build_student`).
        coupling_pool: reflow-stochastic only: round 1 trains on this many couplings, drawn once
            (the teacher's sampler runs ``ceil(pool / batch)`` times) and reused; stored in
            ``last.ckpt`` (see :mod:`domaindiff.distill.pool`). Default: fresh every step.
        straighten_iterations: reflow-stochastic only: round 2's optimizer steps (default
            ``iterations``, which is then round 1's alone).
        schedule: the time-grid schedule (default: the process's own).
        student_parametrization: what the student predicts, if not the teacher's (e.g. ``v`` or
            ``x0``: an ``eps`` prediction is ill-conditioned in one step from pure noise).
        student_out: where the student is written when the fit ends (default
            ``<log dir>/student.ckpt``).
        seed: base seed of the per-rank, per-batch noise.
        trust_checkpoint: allow full unpickling of a teacher file you trust.
    """

    def __init__(self, teacher_ckpt: str, method: str = "progressive", student_steps: int = 1,
                 teacher_steps: int | None = None, iterations: int = 1000,
                 lr: float | None = None, teacher_sampler: str | None = None,
                 schedule: str | None = None, student_parametrization: str | None = None,
                 student_out: str | None = None, seed: int = 0,
                 trust_checkpoint: bool = False,
                 teacher_options: dict[str, Any] | None = None,
                 teacher_guidance: dict[str, Any] | None = None,
                 student_class: str | None = None, coupling_pool: int | None = None,
                 straighten_iterations: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        from domaindiff.distill import METHODS

        if method not in METHODS:  # before the teacher is read: a typo is reported at once
            raise ValueError(f"method: unknown {method!r}; choose one of {', '.join(METHODS)}")
        with _own_hyperparameters():
            teacher = load_checkpoint(teacher_ckpt, trust=trust_checkpoint)
            guide = _guidance_factory(teacher, teacher_guidance, method)
            self.method = make_method(method, teacher.processes, student_steps, teacher_steps,
                                      iterations, schedule, teacher_sampler, teacher_options,
                                      guide, coupling_pool, straighten_iterations)
            walk = getattr(teacher, "distill_walk", None)
            if callable(walk):  # components its sampler walks (domaindiff.distill.walk)
                from domaindiff.distill.walk import with_walk

                self.method = with_walk(self.method, walk(), type(teacher).__name__)
            cls = resolve_student_class(student_class, teacher) if student_class else None
            self.student = build_student(teacher, student_parametrization, cls)
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher
        self.lr = float(lr) if lr is not None else float(getattr(teacher, "lr", 1e-4))
        self.seed = int(seed)
        self._batches = 0  # training batches done (seeds each batch)
        self._round = 0  # progressive distillation: the round the teacher belongs to
        self._gen: torch.Generator | None = None

    # --- training ---------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Run ``method.total_iterations`` optimizer steps unless ``max_steps`` was given.

        The iteration count then decides alone: a ``max_epochs`` of a training config (e.g. the
        toy demo's 30) is lifted.
        """
        loop = self.trainer.fit_loop
        if loop.epoch_loop.max_steps == -1:
            loop.epoch_loop.max_steps = self.method.total_iterations
            loop.max_epochs = -1
        self.teacher.eval()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed this batch from ``(seed, rank, batch count)``; start a new round when due."""
        seed = mix_seed(self.seed, self.global_rank, self._batches, 11)
        dev = torch.device(self.device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self._gen = torch.Generator(device=dev).manual_seed(seed)
        seed_global_rngs(mix_seed(seed, 2))
        self._batches += 1
        round_at = getattr(self.method, "round_at", None)
        if round_at is not None and round_at(self.global_step) > self._round:
            self.promote_student()
            self._round = round_at(self.global_step)

    def _teacher_like_student(self) -> None:
        """Make the teacher a frozen module of the student's class, when their classes differ.

        A student of another class (``student_class``) has another network: a promoted student
        can only be the teacher as a module of its own class (its weights are loaded next).
        """
        s = self.student
        if type(self.teacher) is type(s):
            return
        with _own_hyperparameters():
            teacher = type(s)(**dict(s.hparams))
        teacher.load_state_dict(s.state_dict())
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher.to(s.device)

    @torch.no_grad()
    def promote_student(self) -> None:
        """The student's EMA weights become the teacher (the next round of halving)."""
        s = self.student
        self._teacher_like_student()
        src = s.ema_network.module if s.ema_network is not None else s.network
        self.teacher.network.load_state_dict(src.state_dict())
        if self.teacher.ema_network is not None:
            self.teacher.ema_network.module.load_state_dict(src.state_dict())

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        # a module whose processes diffuse something else than batch_to_state's state (e.g. a
        # residual around a learned reference) says so with distill_state(batch)
        prepare = getattr(self.student, "distill_state", self.student.batch_to_state)
        state = prepare(batch)
        student = self.student.denoiser(use_ema=False)
        teacher = self.teacher.denoiser(use_ema=True)
        if self._round > 0:  # a promoted student predicts what the student predicts
            teacher.parametrization = self.student.parametrization
        loss = self.method.loss(student, teacher, state, self._gen, self.global_step)
        bs = next(iter(state[k] for k in self.method.procs)).shape[0]
        self.log("distill/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimizer, then the student's EMA weights (before this step's checkpoint)."""
        super().optimizer_step(*args, **kwargs)
        self.student.update_ema()

    def configure_optimizers(self):
        return torch.optim.Adam(self.student.network.parameters(), lr=self.lr)

    def configure_callbacks(self) -> list:
        """Add a :class:`~domaindiff.module.LastCheckpoint` unless ``last.ckpt`` is written."""
        return last_checkpoint_callbacks(self._trainer)

    # --- state ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["distillation"] = {"batches": int(self._batches), "round": int(self._round),
                                      "method": self.method.name}
        state = self.method.state_dict()
        world = self._trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks: list[Any] = [None] * world  # every rank saves (Lightning): gather their states
            torch.distributed.all_gather_object(ranks, state)
            checkpoint["distillation"]["method_state_per_rank"] = ranks
        elif state:
            checkpoint["distillation"]["method_state"] = state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("distillation")
        if not isinstance(meta, dict) or not isinstance(meta.get("batches"), int):
            raise ValueError("checkpoint: no 'distillation' entry; resume a distillation from "
                             "the last.ckpt `domaindiff distill` wrote")
        if meta.get("method") != self.method.name:
            raise ValueError(f"checkpoint: written by method {meta.get('method')!r}, not "
                             f"{self.method.name!r}")
        self._batches, self._round = meta["batches"], int(meta.get("round", 0))
        state = meta.get("method_state", {})
        if "method_state_per_rank" in meta:
            ranks = meta["method_state_per_rank"]
            world = self._trainer.world_size if self._trainer is not None else 1
            if len(ranks) != world:
                raise ValueError(f"checkpoint: written by {len(ranks)} ranks, resumed on {world}; "
                                 "resume a distillation on as many devices as it ran on")
            state = ranks[self.global_rank]
        self.method.load_state_dict(state)
        if self._round > 0:  # the stored teacher is the promoted student (its class's weights)
            self._teacher_like_student()

    def student_path(self) -> Path:
        """Where the student is written (``student_out``, else the log directory)."""
        out = self.hparams.get("student_out")
        if out:
            return Path(out)
        trainer = self.trainer
        root = trainer.log_dir or trainer.default_root_dir
        return Path(root) / STUDENT_FILE

    def on_train_end(self) -> None:
        """Rank 0 writes the student."""
        if self.trainer.is_global_zero:
            path = write_student(self.student, self.method, self.student_path(),
                                 self.hparams["teacher_ckpt"], self.global_step)
            rank_zero_info(f"wrote the {self.method.student_steps}-step {self.method.name} "
                           f"student to {path}")
