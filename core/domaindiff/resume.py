"""Resumable training data order: a seeded, sharded sampler that can start mid-epoch.

Lightning 2.x resumes a mid-epoch checkpoint by restoring its loop counters and iterating the
train loader again from its start; it neither skips the batches already seen nor restores a
sampler's random state (only loaders with ``state_dict`` / ``load_state_dict`` are restored, and
counting batches inside a loader is off by its prefetch). Here the order of epoch ``e`` is a pure
function of ``(seed, e)``, the position in the epoch is read from the trainer's progress counters
when a checkpoint is written, and a resumed loader starts exactly at the next unseen batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _mix(seed: int, epoch: int) -> int:
    from domaindiff.module import mix_seed

    return mix_seed(seed, epoch, 3)


class ResumableSampler(DistributedSampler):
    """Per-epoch seeded order, sharded over ranks, that can skip the start of an epoch.

    Epoch ``e``'s order is ``DistributedSampler``'s (a permutation seeded by ``seed + e`` when
    shuffling, padded to a multiple of ``num_replicas``; rank ``r`` takes every ``num_replicas``-th
    index). Being a ``DistributedSampler``, Lightning uses it as is under DDP. Calling
    :meth:`set_epoch` also sets the dataset's epoch (``dataset.set_epoch``) when it has one, for
    datasets whose items are random per epoch (random windows, crops, augmentations).

    Args:
        dataset: a map-style dataset.
        num_replicas: number of processes.
        rank: this process.
        shuffle: shuffle each epoch.
        seed: seed of the order.
        epoch: the epoch to start in.
        skip: samples of this rank to skip at the start of ``epoch`` (once).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, skip: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.skip = int(skip)
        self.loader_generator: torch.Generator | None = None  # reseeded per epoch if set
        self._set_dataset_epoch(epoch)
        self.epoch = int(epoch)

    def _set_dataset_epoch(self, epoch: int) -> None:
        fn = getattr(self.dataset, "set_epoch", None)
        if callable(fn):
            fn(int(epoch))

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (a new epoch starts at its beginning; the same epoch is unchanged)."""
        if int(epoch) != self.epoch:
            self.skip = 0
            self._set_dataset_epoch(epoch)
            if self.loader_generator is not None:
                self.loader_generator.manual_seed(_mix(self.seed, int(epoch)))
        super().set_epoch(int(epoch))

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


def loader_position(trainer: Any) -> dict[str, int] | None:
    """``{"epoch", "batches"}``: the epoch in progress and its batches done, from the trainer.

    Between epochs (after epoch ``e``'s end hooks started) this is ``(e + 1, 0)``; inside epoch
    ``e`` (including its validation and a checkpoint written at its last batch) it is ``(e, k)``
    with ``k`` batches done. None without a fit loop.
    """
    loop = getattr(trainer, "fit_loop", None)
    if loop is None:
        return None
    ep = loop.epoch_progress.current
    if ep.started > ep.processed:  # inside the epoch
        return {"epoch": int(ep.processed),
                "batches": int(loop.epoch_loop.batch_progress.current.ready)}
    return {"epoch": int(ep.processed), "batches": 0}


def make_train_loader(dataset: Dataset, *, batch_size: int, seed: int, trainer: Any = None,
                      position: dict[str, int] | None = None, shuffle: bool = True,
                      drop_last: bool = False, loader_cls: type = DataLoader,
                      **kwargs: Any) -> DataLoader:
    """A train loader whose order is ``(seed, epoch)``-determined and that resumes mid-epoch.

    Args:
        dataset: map-style dataset.
        batch_size: batch size per process.
        seed: order seed.
        trainer: the Lightning trainer (world size, rank, current epoch), if any.
        position: where to start (``{"epoch", "batches"}``, from a checkpoint); default: the
            trainer's current epoch, from its start.
        shuffle: shuffle each epoch.
        drop_last: drop the last incomplete batch.
        loader_cls: the DataLoader class (e.g. PyG's ``DataLoader``).
        **kwargs: further loader arguments (``num_workers``, ``collate_fn``, ...).
    """
    world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
    rank = int(getattr(trainer, "global_rank", 0) or 0) if trainer is not None else 0
    epoch = int(getattr(trainer, "current_epoch", 0) or 0) if trainer is not None else 0
    skip = 0
    if position is not None:
        epoch, skip = int(position["epoch"]), int(position["batches"]) * batch_size
        sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle,
                                   seed=seed, epoch=epoch)
        per_rank = len(sampler)
        full = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        if int(position["batches"]) >= full:  # the saved epoch was complete: start the next
            epoch, skip = epoch + 1, 0
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle,
                               seed=seed, epoch=epoch, skip=skip)
    # the loader's own generator only seeds worker processes: make it a function of the epoch
    gen = torch.Generator().manual_seed(_mix(seed, epoch))
    sampler.loader_generator = gen
    loader = loader_cls(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                        generator=gen, **kwargs)
    _mark_resumable(loader)
    return loader


def _mark_resumable(loader: DataLoader) -> None:
    """Tell Lightning the loader resumes (else it warns that a mid-epoch resume is unreliable).

    The position itself travels in the DataModule's state (:func:`loader_position`): counting
    batches in the loader would be off by Lightning's prefetch. The loader's own state records
    the sampler's epoch, for information.
    """
    sampler = cast(ResumableSampler, loader.sampler)  # made by make_train_loader

    def state_dict() -> dict[str, int]:
        return {"sampler_epoch": int(sampler.epoch)}

    def load_state_dict(state: dict[str, Any]) -> None:  # the DataModule restores the position
        del state

    loader.state_dict = state_dict
    loader.load_state_dict = load_state_dict
