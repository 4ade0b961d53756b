"""Training windows: fresh every epoch, the same in two runs with the same seed."""

from __future__ import annotations

import lightning as L
import torch

from domaindiff_timeseries.data import TimeSeriesData
from domaindiff_timeseries.model import TSDiff


class _FirstBatches(L.Callback):
    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.seen.append(batch["x"].clone())


def _first_batches(seed: int, tmp_path) -> list[torch.Tensor]:
    L.seed_everything(0, verbose=False)
    dm = TimeSeriesData(dataset="taylor", context_length=48, prediction_length=24, lags=[24],
                        batch_size=4, batches_per_epoch=2, seed=seed, num_test_windows=1)
    model = TSDiff(hidden=4, num_blocks=1, emb_dim=8, d_state=4, num_steps=10)
    rec = _FirstBatches()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, callbacks=[rec],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    return rec.seen


def test_windows_are_fresh_each_epoch_and_reproducible_from_the_seed(tmp_path):
    a = _first_batches(7, tmp_path / "a")
    b = _first_batches(7, tmp_path / "b")
    assert len(a) == 3
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    # another seed draws other windows
    dm = TimeSeriesData(dataset="taylor", context_length=48, prediction_length=24, lags=[24],
                        batch_size=4, batches_per_epoch=2, seed=8, num_test_windows=1)
    dm.setup("fit")
    assert not torch.equal(a[0][0], dm.train_set[0]["x"])
