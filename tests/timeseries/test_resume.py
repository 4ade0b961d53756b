"""A resumed TSDiff run is the same run, and its random windows are drawn afresh each epoch."""

from __future__ import annotations

import torch

from domaindiff_timeseries import TimeSeriesData, TSDiff
from tests.resume_helpers import check_resume


def _model() -> TSDiff:
    torch.manual_seed(0)
    return TSDiff(dim=1, context_length=16, prediction_length=4, lags=[], hidden=4,
                  num_blocks=1, emb_dim=4, d_state=4, sampling_steps=2)


def _data() -> TimeSeriesData:
    return TimeSeriesData(context_length=16, prediction_length=4, lags=[], batch_size=4,
                          batches_per_epoch=4, num_test_windows=1)


def test_timeseries_resume_mid_epoch_is_bitwise_equal(tmp_path):
    check_resume(_model, _data, tmp_path, total=6, resume_from=(3,),
                 check_val_every_n_epoch=1000)


def test_training_windows_change_with_the_epoch():
    dm = _data()
    dm.setup("fit")
    loader = dm.train_loader(dm.train_set, shuffle=False, drop_last=True)
    first = next(iter(loader))["x"]
    loader.sampler.set_epoch(1)
    second = next(iter(loader))["x"]
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)
    assert torch.equal(next(iter(loader))["x"], first)
