"""TSDiff-Cond uses dynamic covariates and multivariate series."""

import numpy as np
import pytest
import torch

from domaindiff_timeseries.data import TimeSeriesData, read_jsonl, time_features, write_jsonl
from domaindiff_timeseries.forecast import forecast
from domaindiff_timeseries.metrics import crps
from domaindiff_timeseries.model import TSDiffCond

C, H = 24, 8


def _driven_series(n: int = 2, length: int = 600, seed: int = 0):
    """Level 10 plus 4 times a random on/off covariate known in advance (not periodic)."""
    rng = np.random.default_rng(seed)
    series, covs = [], []
    for _ in range(n):
        u = np.repeat(rng.integers(0, 2, length // 3 + 1), 3)[:length].astype(np.float64)
        y = 10 + 4 * u + 0.2 * rng.normal(size=length)
        series.append(y[:, None])
        covs.append(u[:, None])
    return series, covs


def _fit(dm: TimeSeriesData, covariates: int, steps: int = 120) -> TSDiffCond:
    torch.manual_seed(0)
    model = TSDiffCond(dim=dm.dim, context_length=C, prediction_length=H, lags=[], hidden=16,
                       num_blocks=1, emb_dim=16, d_state=8, lr=3e-3, ema_decay=0.0,
                       covariates=covariates)
    dm.setup()
    opt = torch.optim.Adam(model.network.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=32)
    done = 0
    while done < steps:
        for batch in loader:
            loss = model.loss(model.batch_to_state(batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return model.eval()


def test_jsonl_covariates_roundtrip_and_time_features(tmp_path):
    series, covs = _driven_series(1, 100)
    p = tmp_path / "s.jsonl"
    write_jsonl(series, p, covariates=covs)
    ys, cs = read_jsonl(p, covariates=True)
    np.testing.assert_allclose(ys[0], series[0], rtol=1e-6)
    np.testing.assert_allclose(cs[0], covs[0])
    tf = time_features(48, "h")
    assert tf.shape == (48, 4) and np.abs(tf).max() <= 1
    np.testing.assert_allclose(tf[0], tf[24][:2].tolist() + [tf[0][2], tf[0][3]], atol=1e-6)
    dm = TimeSeriesData(covariates="time", context_length=48, prediction_length=24, lags=[24])
    w = dm.test_windows()[0]
    assert dm.num_covariates == 4 and w["covariates"].shape == (72, 4)
    with pytest.raises(ValueError, match="feat_dynamic_real"):
        TimeSeriesData(covariates="file")


def test_covariates_change_and_improve_the_forecast(tmp_path):
    torch.set_num_threads(1)
    series, covs = _driven_series()
    p = tmp_path / "driven.jsonl"
    write_jsonl(series, p, covariates=covs)
    kw = dict(dataset="file", path=str(p), context_length=C, prediction_length=H, lags=[],
              num_test_windows=6, batch_size=32, batches_per_epoch=8, freq="h")
    with_cov = TimeSeriesData(covariates="file", **kw)
    without = TimeSeriesData(**kw)
    assert with_cov.num_covariates == 1
    m_cov, m_plain = _fit(with_cov, 1), _fit(without, 0)
    wins = with_cov.test_windows()
    target = np.stack([w["target"][C:] for w in wins])
    f_cov = forecast(m_cov, wins, 16, guidance="none", sampler="ddim", steps=10, eta=1.0,
                     progress=False)
    f_plain = forecast(m_plain, without.test_windows(), 16, guidance="none", sampler="ddim",
                       steps=10, eta=1.0, progress=False)
    # the same model with the covariate flipped forecasts differently
    flipped = [1.0 - w["covariates"] for w in wins]
    f_flip = forecast(m_cov, wins, 16, guidance="none", sampler="ddim", steps=10, eta=1.0,
                      progress=False, covariates=flipped)
    assert np.abs(np.median(f_cov, 1) - np.median(f_flip, 1)).mean() > 1.0
    crps_cov, crps_plain = crps(f_cov, target), crps(f_plain, target)
    assert crps_cov < 0.7 * crps_plain, (crps_cov, crps_plain)


def test_multivariate_conditional_forecast_shapes(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(200)
    two = np.stack([10 + np.sin(2 * np.pi * t / 8), 5 + np.cos(2 * np.pi * t / 8)], 1)
    p = tmp_path / "mv.jsonl"
    write_jsonl([two + 0.05 * rng.normal(size=two.shape)], p)
    dm = TimeSeriesData(dataset="file", path=str(p), context_length=C, prediction_length=H,
                        lags=[8], num_test_windows=2, batch_size=8, batches_per_epoch=2,
                        covariates="time", freq="h")
    assert dm.dim == 2
    model = TSDiffCond(dim=2, context_length=C, prediction_length=H, lags=[8], hidden=8,
                       num_blocks=1, emb_dim=8, d_state=4, covariates=dm.num_covariates)
    dm.setup()
    batch = next(iter(torch.utils.data.DataLoader(dm.train_set, batch_size=4)))
    assert torch.isfinite(model.loss(model.batch_to_state(batch)))
    s = forecast(model, dm.test_windows(), 3, guidance="none", sampler="ddim", steps=3,
                 progress=False)
    assert s.shape == (2, 3, H, 2) and np.isfinite(s).all()
