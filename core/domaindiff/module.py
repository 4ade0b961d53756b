"""DiffusionModule: the LightningModule every plugin trains.

A plugin subclasses it with primitive init arguments (so checkpoints load with
``torch.load(weights_only=True)``), builds its network and per-component processes, and overrides
the hooks that know its data: :meth:`batch_to_state`, :meth:`sample_template`, :meth:`denoise`,
:meth:`configure_metrics`, :meth:`update_metrics` and :meth:`save_samples`.

What the base class provides: the denoising loss, EMA weights (used for validation, sampling and
export), :meth:`sample` with any registered sampler, per-rank noise generators under DDP,
validation metrics through torchmetrics (so DDP syncs them) and sample files written on rank 0.

Resuming is exact: the EMA update is part of the optimizer step (so every checkpoint holds it),
each training batch's randomness is seeded from ``(seed, rank, batch count)`` (the count is in
the checkpoint), validation draws from its own generator, and the train loaders of
:class:`~domaindiff.data.DomainDataModule` resume mid-epoch (:mod:`domaindiff.resume`). A
:class:`LastCheckpoint` is added to any fit that does not already write ``last.ckpt``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from domaindiff.checkpoint import (  # noqa: F401 - CheckpointError, load_checkpoint re-exported
    CheckpointError,
    load_checkpoint,
    record_init_args,
)
from domaindiff.data import atomic_save
from domaindiff.losses import denoising_loss
from domaindiff.parametrization import check
from domaindiff.processes import GaussianProcess
from domaindiff.samplers import get_sampler

State = dict[str, Tensor]

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (splitmix64 finaliser, chained).

    Nearby inputs (``step`` and ``step + 1``) give unrelated seeds, so streams seeded from
    ``(seed, rank, step)`` do not overlap in any useful sense.
    """
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def seed_global_rngs(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), NumPy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))
    random.seed(seed)


def share_of(total: int, world_size: int, rank: int) -> int:
    """Rank ``rank``'s share of ``total`` items split over ``world_size`` processes.

    The shares differ by at most one and sum to ``total`` exactly.
    """
    base, extra = divmod(int(total), max(1, int(world_size)))
    return base + (1 if rank < extra else 0)


def ema_with_warmup(decay: float):
    """EMA update with the usual warm-up ``min(decay, (1 + n) / (10 + n))``.

    Without warm-up a short run's EMA is dominated by the random initial weights.
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


class _Denoiser:
    """Callable view of a network as a denoiser, carrying its parametrization.

    ``nfe`` counts its calls (network evaluations), guidance passes included.
    """

    def __init__(self, module: DiffusionModule, net: nn.Module) -> None:
        self.module, self.net = module, net
        self.parametrization = module.parametrization
        self.nfe = 0

    def __call__(self, state: State, t: Tensor) -> State:
        self.nfe += 1
        return self.module.denoise(self.net, state, t)


class DiffusionModule(L.LightningModule):
    """Denoiser network + per-component processes + loss, trained with Lightning.

    Args:
        network: the denoiser ``network(state, t) -> {key: prediction}``.
        processes: forward process of each diffused state key.
        parametrization: what the network predicts ("eps", "x0", "v", "score", "velocity"), or a
            per-key dict.
        weighting: loss weighting (see :mod:`domaindiff.losses`).
        reduction: "mean" or "sum" over free dimensions.
        time_sampler: training-time sampler ("uniform", "stratified", "lognormal").
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        ema_decay: EMA decay of the weights (0 disables EMA: the raw weights are used).
        sampler: default sampler name for :meth:`sample` and validation.
        sampling_steps: default number of network evaluations.
        num_val_samples: samples drawn at each validation epoch for the metrics, in total over
            all processes (each rank draws its share; 0: none).
        lr_gamma: ExponentialLR factor per epoch (None: constant).
        seed: base seed of the per-rank noise generators.
    """

    def __init__(self, network: nn.Module, processes: Mapping[str, GaussianProcess], *,
                 parametrization: str | Mapping[str, str] = "eps", weighting: str = "uniform",
                 reduction: str = "mean", time_sampler: str = "uniform", lr: float = 1e-3,
                 weight_decay: float = 0.0, ema_decay: float = 0.999, sampler: str = "ddim",
                 sampling_steps: int = 50, num_val_samples: int = 0,
                 lr_gamma: float | None = None, seed: int = 0) -> None:
        super().__init__()
        record_init_args(self)  # hparams of a subclass that forgot save_hyperparameters()
        if not isinstance(ema_decay, (int, float)) or not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 disables EMA), got {ema_decay!r}")
        if not isinstance(processes, Mapping) or not processes:
            raise ValueError("processes must be a non-empty dict {state key: process}")
        self.network = network
        self.processes = dict(processes)
        if isinstance(parametrization, str):
            check(parametrization)
        else:
            for v in parametrization.values():
                check(v)
        self.parametrization = parametrization
        self.weighting, self.reduction, self.time_sampler = weighting, reduction, time_sampler
        self.lr, self.weight_decay, self.lr_gamma = lr, weight_decay, lr_gamma
        self.ema_decay = ema_decay
        self.ema_network = (AveragedModel(network, multi_avg_fn=ema_with_warmup(ema_decay),
                                          use_buffers=True) if ema_decay > 0 else None)
        if self.ema_network is not None:  # a frozen copy: not trained, not seen by DDP
            self.ema_network.requires_grad_(False)
        self.default_sampler, self.sampling_steps = sampler, sampling_steps
        self.last_nfe = 0
        get_sampler(sampler)  # fail early on a bad name
        self.num_val_samples = num_val_samples
        self.seed = seed
        self._gen: torch.Generator | None = None
        self._eval_gen: torch.Generator | None = None
        self._train_batches = 0  # training batches done (seeds each batch's randomness)
        self._val_drawn = 0  # validation samples drawn by this rank in the current epoch
        self.val_metrics = self.configure_metrics()

    # --- hooks for plugins -----------------------------------------------------------------------
    def batch_to_state(self, batch: Any) -> State:
        """Turn a DataLoader batch into a clean state (default: a tensor -> ``{"x": tensor}``)."""
        if torch.is_tensor(batch):
            return {"x": batch}
        if isinstance(batch, (list, tuple)) and torch.is_tensor(batch[0]):
            return {"x": batch[0]}
        if isinstance(batch, Mapping):
            return dict(batch)
        raise TypeError(f"{type(self).__name__}.batch_to_state: cannot read a {type(batch)}")

    def sample_template(self, n: int, batch: Any = None) -> State:
        """A state to start sampling from (shapes, masks, conditions); plugins override."""
        if batch is not None:
            state = self.batch_to_state(batch)
            return {k: v[:n] for k, v in state.items()}
        raise NotImplementedError(f"{type(self).__name__} must define sample_template(n)")

    def denoise(self, net: nn.Module, state: State, t: Tensor) -> State:
        """Call the network (plugins may add preconditioning or conditioning here)."""
        return net(state, t)

    def configure_metrics(self):
        """A ``torchmetrics.MetricCollection`` of validation metrics, or None."""
        return None

    def update_metrics(self, metrics, samples: State, batch: Any) -> None:
        """Feed one batch of samples (and the matching data batch) to the metrics."""
        raise NotImplementedError(f"{type(self).__name__} defines metrics but not update_metrics")

    def save_samples(self, samples: State, path: str | Path) -> None:
        """Write samples (default: an atomic ``torch.save`` of the tensor dict)."""
        atomic_save({k: v.detach().cpu() for k, v in samples.items()}, path)

    # --- core behaviour --------------------------------------------------------------------------
    def _rank(self) -> int:
        return self.global_rank if self._trainer is not None else 0

    def _gen_device(self) -> torch.device:
        dev = torch.device(self.device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        return dev

    def _evaluating(self) -> bool:
        """Whether a trainer runs validation, testing or prediction (not a training step)."""
        trainer = self._trainer
        return trainer is not None and not getattr(trainer, "training", True) and any(
            getattr(trainer, k, False) for k in ("validating", "sanity_checking", "testing",
                                                 "predicting"))

    @property
    def generator(self) -> torch.Generator:
        """This rank's noise generator.

        Training noise comes from a generator seeded by ``seed + 7919 * global_rank`` and reseeded
        from ``(seed, rank, batch)`` before every training batch, so a run resumed from any
        checkpoint draws exactly the noise of the uninterrupted run. Validation, testing and
        prediction under a trainer use a separate generator (seeded from ``(seed, rank,
        global_step)`` at each epoch start), so they never change the training noise.
        """
        dev = self._gen_device()
        if self._evaluating():
            if self._eval_gen is None or self._eval_gen.device != dev:
                self._eval_gen = torch.Generator(device=dev).manual_seed(self._eval_seed())
            return self._eval_gen
        if self._gen is None or self._gen.device != dev:
            self._gen = torch.Generator(device=dev).manual_seed(self.seed + 7919 * self._rank())
        return self._gen

    def _eval_seed(self) -> int:
        step = self.trainer.global_step if self._trainer is not None else 0
        return mix_seed(self.seed, self._rank(), step, 1)

    def _reseed_eval(self) -> None:
        self._eval_gen = torch.Generator(device=self._gen_device()).manual_seed(self._eval_seed())

    def batch_seed(self, batch_index: int) -> int:
        """Seed of training batch ``batch_index`` (counted over the whole run) on this rank."""
        return mix_seed(self.seed, self._rank(), batch_index)

    def denoiser(self, use_ema: bool = True) -> _Denoiser:
        """The network as a denoiser (EMA weights by default)."""
        net = self.ema_network.module if (use_ema and self.ema_network is not None) \
            else self.network
        return _Denoiser(self, net)

    def loss(self, state: State, net: nn.Module | None = None) -> Tensor:
        """Denoising loss of a clean state."""
        net = self.network if net is None else net
        return denoising_loss(lambda s, t: self.denoise(net, s, t), self.processes, state,
                              parametrization=self.parametrization, weighting=self.weighting,
                              reduction=self.reduction, time_sampler=self.time_sampler,
                              generator=self.generator)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        state = self.batch_to_state(batch)
        loss = self.loss(state)
        bs = next(iter(state[k] for k in self.processes)).shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed this batch's randomness from ``(seed, rank, batch count)``.

        The training-noise generator and the global torch / NumPy / Python generators (dropout and
        the like) are reseeded, so the randomness of a batch depends on nothing but its place in
        the run: a resumed run repeats the uninterrupted one exactly.
        """
        seed = self.batch_seed(self._train_batches)
        self.generator.manual_seed(seed)
        seed_global_rngs(mix_seed(seed, 2))
        self._train_batches += 1

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step the optimizer, then the EMA weights (before any checkpoint of this step).

        Lightning calls callbacks' ``on_train_batch_end`` (where ``ModelCheckpoint`` saves)
        before the module's, so an EMA update there would be missing from that step's checkpoint.
        """
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def update_ema(self) -> None:
        """One EMA update of the averaged weights from the current ones (no-op without EMA)."""
        if self.ema_network is not None:
            self.ema_network.update_parameters(self.network)

    def on_validation_epoch_start(self) -> None:
        self._val_drawn = 0
        self._reseed_eval()

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_predict_epoch_start(self) -> None:
        self._reseed_eval()

    def val_sample_share(self) -> int:
        """Validation samples this rank draws: its share of ``num_val_samples`` over all ranks."""
        world = self.trainer.world_size if self._trainer is not None else 1
        return share_of(self.num_val_samples, world, self._rank())

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        state = self.batch_to_state(batch)
        net = self.ema_network.module if self.ema_network is not None else self.network
        loss = self.loss(state, net)
        bs = next(iter(state[k] for k in self.processes)).shape[0]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        if self.val_metrics is None or self.num_val_samples <= 0:
            return
        n = min(self.val_sample_share() - self._val_drawn, bs)
        if n > 0:
            samples = self.sample(n, batch=batch, generator=self.generator)
            self.update_metrics(self.val_metrics, samples, batch)
            self._val_drawn += n
        if batch_idx == 0:  # every rank logs (torchmetrics syncs the states at epoch end)
            self.log_dict(self.val_metrics, batch_size=max(n, 1))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> State:
        """Sample as many states as the batch holds (the :class:`SampleWriter` callback saves them)."""
        state = self.batch_to_state(batch)
        n = next(iter(state[k] for k in self.processes)).shape[0]
        return self.sample(n, batch=batch, generator=self.generator)

    @torch.no_grad()
    def sample(self, n: int | None = None, *, template: State | None = None,
               sampler: str | None = None, steps: int | None = None, guidance: Any = None,
               generator: torch.Generator | None = None, progress: bool = False,
               use_ema: bool = True, batch: Any = None, **options: Any) -> State:
        """Draw samples with a registered sampler.

        Args:
            n: number of samples (used by :meth:`sample_template`).
            template: a ready state to start from (overrides ``n``).
            sampler: sampler name (default: the module's).
            steps: network evaluations (default: the module's).
            guidance: optional guidance object.
            generator: random generator.
            progress: show a progress bar.
            use_ema: use the EMA weights.
            batch: a data batch the template may copy masks or conditions from.
            **options: sampler options (eta, order, snr, ...).

        The network evaluations the call made (per sampled batch) are left in ``last_nfe``.
        """
        if template is None:
            if n is None:
                raise ValueError("sample: give n or template")
            template = self.sample_template(n, batch) if batch is not None else \
                self.sample_template(n)
        fn = get_sampler(sampler or self.default_sampler)
        was_training = self.training
        self.eval()
        den = self.denoiser(use_ema)
        try:
            # with the caller's own grid (options["timesteps"]) the grid sets the evaluations
            default = None if options.get("timesteps") is not None else self.sampling_steps
            out = fn(den, self.processes, template, steps or default,
                     guidance=guidance, generator=generator, progress=progress, **options)
        finally:
            self.train(was_training)
            self.last_nfe = den.nfe
        return out

    def export(self, path: str | Path, use_ema: bool = True) -> None:
        """Write the denoiser's weights (EMA by default) and hyperparameters, atomically.

        The file holds only tensors and primitives: ``torch.load(path, weights_only=True)`` reads
        it, and ``type(model)(**hparams).network.load_state_dict(weights)`` rebuilds the network.
        """
        net = self.ema_network.module if (use_ema and self.ema_network is not None) \
            else self.network
        cls = type(self)
        atomic_save({"class_path": f"{cls.__module__}.{cls.__qualname__}",
                     "hyper_parameters": dict(self.hparams),
                     "network": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, path)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.network.parameters(), lr=self.lr,
                               weight_decay=self.weight_decay)
        if self.lr_gamma is None:
            return opt
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint["domaindiff"] = {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                                    "train_batches": int(self._train_batches)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume the batch count that seeds each training batch's randomness."""
        meta = checkpoint.get("domaindiff")
        if isinstance(meta, dict) and isinstance(meta.get("train_batches"), int):
            self._train_batches = meta["train_batches"]
        else:
            rank_zero_warn("checkpoint has no 'domaindiff.train_batches' (written by an older "
                           "version): the resumed run's noise is seeded from the global step and "
                           "will not repeat the uninterrupted run exactly")
            self._train_batches = int(checkpoint.get("global_step", 0))

    def configure_callbacks(self) -> list:
        """Add a :class:`LastCheckpoint` unless the trainer already saves a ``last.ckpt``.

        The trainer's own checkpoint callbacks are kept (returned again, because Lightning
        replaces trainer callbacks of the same type). Nothing is added when checkpointing is
        disabled (``enable_checkpointing: false`` and no checkpoint callback).
        """
        return last_checkpoint_callbacks(self._trainer)


def last_checkpoint_callbacks(trainer: L.Trainer | None) -> list:
    """A module's ``configure_callbacks``: the trainer's checkpoint callbacks + a LastCheckpoint.

    Empty (nothing added) without a trainer, when checkpointing is disabled (no checkpoint
    callback) or when one of them already saves ``last.ckpt``. The trainer's own checkpoint
    callbacks are returned again because Lightning replaces trainer callbacks of the same type.
    """
    if trainer is None:
        return []
    # Trainer.callbacks is set by Lightning's callback connector, undeclared on the class
    ckpts = [c for c in trainer.callbacks  # type: ignore[attr-defined]
             if isinstance(c, ModelCheckpoint)]
    if not ckpts or any(c.save_last for c in ckpts):
        return []
    return [*ckpts, LastCheckpoint()]


class LastCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` every ``every_n_train_steps`` optimizer steps and when any fit ends.

    A run stopped by ``max_steps``, ``max_time`` or ``max_epochs`` before its first validation
    still leaves a checkpoint to resume from (``domaindiff fit ... --ckpt_path .../last.ckpt``).
    ``last.ckpt`` is overwritten in place (atomically by Lightning's checkpoint IO), never
    versioned, so it is always the newest state. Other arguments are ModelCheckpoint's
    (``save_top_k`` defaults to 0: only ``last.ckpt``).

    Args:
        dirpath: directory (default: the logger's ``checkpoints`` folder, as ModelCheckpoint).
        every_n_train_steps: step interval.
        **kwargs: further ``ModelCheckpoint`` arguments.
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: int = 1000,
                 **kwargs: Any) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"LastCheckpoint: every_n_train_steps must be >= 1, got "
                             f"{every_n_train_steps}")
        kwargs.setdefault("save_top_k", 0)
        kwargs.setdefault("enable_version_counter", False)
        kwargs["save_last"] = True
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, **kwargs)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """Save at the interval, and at the batch after which the run stops.

        A stop by ``max_steps`` or ``max_time`` (``trainer.should_stop``) is saved here, where
        the loops' counters say "inside the epoch": Lightning's own end-of-fit state counts the
        interrupted epoch as finished, and a run resumed from it would start a new epoch early.
        """
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        max_steps = trainer.max_steps if trainer.max_steps is not None else -1
        stopping = trainer.should_stop or (max_steps >= 0 and trainer.global_step >= max_steps)
        if stopping and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save ``last.ckpt`` at the final step, unless it was just saved."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def fitted_checkpoint(trainer: L.Trainer) -> str:
    """The checkpoint a finished fit should be evaluated from.

    The best checkpoint of any monitoring ``ModelCheckpoint`` if one was saved, else the newest
    ``last.ckpt`` (a run that never validated still has one: :class:`LastCheckpoint`).

    Raises:
        FileNotFoundError: the fit wrote no checkpoint (checkpointing disabled).
    """
    callbacks = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, ModelCheckpoint)]
    for cb in callbacks:
        if cb.best_model_path and Path(cb.best_model_path).is_file():
            return cb.best_model_path
    for cb in callbacks:
        if cb.last_model_path and Path(cb.last_model_path).is_file():
            return cb.last_model_path
    raise FileNotFoundError("the fit wrote no checkpoint (is enable_checkpointing false, or did it "
                            "stop before its first step?)")


class SampleWriter(BasePredictionWriter):
    """Writes ``predict`` samples: gathered from all ranks, saved by rank 0 only (atomically).

    Args:
        out_dir: directory of the ``samples_<batch>.pt`` files.
    """

    def __init__(self, out_dir: str = "samples") -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:
        gathered = pl_module.all_gather(prediction) if trainer.world_size > 1 else prediction
        if trainer.global_rank != 0:
            return
        if trainer.world_size > 1:
            gathered = {k: v.reshape(-1, *v.shape[2:]) for k, v in gathered.items()}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pl_module.save_samples(gathered, self.out_dir / f"samples_{batch_idx:05d}.pt")


def _import_class(path: str) -> type:
    """The allow-listed DiffusionModule subclass named ``path`` (never imports ``path`` itself)."""
    from domaindiff.checkpoint import resolve_class

    return resolve_class(path)
