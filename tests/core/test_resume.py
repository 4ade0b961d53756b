"""A resumed run is the same run (toy plugin), and every run leaves a last.ckpt."""

from __future__ import annotations

import lightning as L
import torch

from domaindiff.module import LastCheckpoint, load_checkpoint
from domaindiff.resume import ResumableSampler
from domaindiff.toy import GaussianMixtureData, ToyDiffusion
from tests.resume_helpers import assert_bitwise_equal, check_resume, fit


def _model() -> ToyDiffusion:
    return ToyDiffusion(hidden=16, depth=1, sampling_steps=2, num_val_samples=8, lr=1e-2)


def _data() -> GaussianMixtureData:
    return GaussianMixtureData(num_train=64, num_val=16, batch_size=16)  # 4 batches an epoch


def test_toy_resume_mid_epoch_and_at_epoch_end_is_bitwise_equal(tmp_path):
    # step 3: mid-epoch; step 4: the last batch of epoch 0, before its validation
    check_resume(_model, _data, tmp_path, total=6, resume_from=(3, 4))


def test_resume_from_last_ckpt_written_at_max_steps(tmp_path):
    """A run stopped by max_steps before any validation leaves last.ckpt; resuming it repeats
    the longer run bitwise."""
    full = fit(_model, _data, tmp_path / "full", 6, check_val_every_n_epoch=1000)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, deterministic=True,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        check_val_every_n_epoch=1000, default_root_dir=tmp_path / "short")
    trainer.fit(_model(), datamodule=_data())
    last = tmp_path / "short" / "checkpoints" / "last.ckpt"
    assert last.is_file(), "a run stopped by max_steps before any validation wrote no last.ckpt"
    assert any(isinstance(c, LastCheckpoint) for c in trainer.callbacks)
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert int(load_checkpoint(last).ema_network.n_averaged) == 3
    resumed = fit(_model, _data, tmp_path / "resumed", 6, ckpt_path=last,
                  check_val_every_n_epoch=1000)
    assert_bitwise_equal(full, resumed)


def test_sampler_order_is_a_function_of_seed_and_epoch_and_skips_once():
    data = list(range(10))
    a = ResumableSampler(data, seed=1, epoch=2)
    b = ResumableSampler(data, seed=1, epoch=2, skip=4)
    order = list(a)
    assert list(b) == order[4:]
    assert list(b) == order  # the skip applies once
    b.set_epoch(3)
    assert list(b) != order and sorted(b) == data
    shards = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=1, epoch=2))
              for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == data
