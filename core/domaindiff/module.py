"""DiffusionModule: the LightningModule every plugin trains.

A plugin subclasses it with primitive init arguments (so checkpoints load with
``torch.load(weights_only=True)``), builds its network and per-component processes, and overrides
the hooks that know its data: :meth:`batch_to_state`, :meth:`sample_template`, :meth:`denoise`,
:meth:`configure_metrics`, :meth:`update_metrics` and :meth:`save_samples`.

What the base class provides: the denoising loss, EMA weights (used for validation, sampling and
export), :meth:`sample` with any registered sampler, per-rank noise generators under DDP,
validation metrics through torchmetrics (so DDP syncs them) and sample files written on rank 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
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
        num_val_samples: samples drawn at each validation epoch for the metrics (0: none).
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
    @property
    def generator(self) -> torch.Generator:
        """This rank's noise generator: seeded by ``seed + global_rank`` so ranks differ."""
        dev = torch.device(self.device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if self._gen is None or self._gen.device != dev:
            rank = self.global_rank if self._trainer is not None else 0
            self._gen = torch.Generator(device=dev).manual_seed(self.seed + 7919 * rank)
        return self._gen

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

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema_network is not None:
            self.ema_network.update_parameters(self.network)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        state = self.batch_to_state(batch)
        net = self.ema_network.module if self.ema_network is not None else self.network
        loss = self.loss(state, net)
        bs = next(iter(state[k] for k in self.processes)).shape[0]
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        if self.val_metrics is not None and self.num_val_samples > 0 and batch_idx == 0:
            n = min(self.num_val_samples, bs)
            samples = self.sample(n, batch=batch, generator=self.generator)
            self.update_metrics(self.val_metrics, samples, batch)
            self.log_dict(self.val_metrics, batch_size=n)

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
            out = fn(den, self.processes, template, steps or self.sampling_steps,
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
        checkpoint["domaindiff"] = {"class_path": f"{cls.__module__}.{cls.__qualname__}"}


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
