"""Metrics: hand-computed cases and agreement with GluonTS's Evaluator."""

import numpy as np
import pandas as pd
import pytest

from domaindiff_timeseries.metrics import crps, forecast_metrics, sample_quantiles, seasonal_naive


def test_crps_hand_case_point_forecast():
    # one window, one sample (all quantiles equal the point forecast), two steps
    samples = np.array([[[2.0, 4.0]]])  # (W=1, S=1, H=2)
    target = np.array([[3.0, 3.0]])
    # per q: step 1 under-forecast by 1 -> 2*q*1; step 2 over by 1 -> 2*(1-q)*1; sum = 2
    # weighted by sum|y| = 6 -> 1/3 for every q
    assert crps(samples, target) == pytest.approx(1 / 3)


def test_quantiles_follow_gluonts_rounding():
    s = np.arange(100, dtype=float)[None, :, None]  # 100 samples 0..99
    q = sample_quantiles(s, (0.1, 0.5, 0.9))[:, 0, 0]
    # GluonTS: sorted[round(99 q)] with numpy rounding (49.5 -> 50)
    np.testing.assert_array_equal(q, [10, 50, 89])


def _gluonts_eval(samples, target, histories, season):
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast

    start = pd.Period("2020-01-01 00:00", freq="h")
    tss, fcs = [], []
    for w in range(len(samples)):
        hist = np.concatenate([histories[w], target[w]])
        idx = pd.period_range(start, periods=len(hist), freq="h")
        tss.append(pd.DataFrame(hist, index=idx))
        fcs.append(SampleForecast(samples[w], start_date=idx[len(histories[w])]))
    ev = Evaluator(quantiles=[0.1 * k for k in range(1, 10)], seasonality=season,
                   num_workers=0)
    agg, _ = ev(iter(tss), iter(fcs), num_series=len(samples))
    return agg


def test_metrics_match_gluonts_evaluator():
    rng = np.random.default_rng(0)
    w, s, h, t = 5, 50, 12, 60
    histories = [rng.gamma(2.0, 3.0, size=t + 7 * k) for k in range(w)]
    target = rng.gamma(2.0, 3.0, size=(w, h))
    samples = target[:, None] + rng.normal(0, 2.0, size=(w, s, h))
    ours = forecast_metrics(samples, target, histories, season=24)
    ref = _gluonts_eval(samples, target, histories, 24)
    assert ours["CRPS"] == pytest.approx(ref["mean_wQuantileLoss"], rel=1e-9)
    assert ours["ND"] == pytest.approx(ref["ND"], rel=1e-9)
    assert ours["NRMSE"] == pytest.approx(ref["NRMSE"], rel=1e-9)
    assert ours["MASE"] == pytest.approx(ref["MASE"], rel=1e-9)


def test_seasonal_naive_matches_gluonts_and_multivariate_items():
    from domaindiff_timeseries.baselines import gluonts_seasonal_naive

    rng = np.random.default_rng(1)
    wins = [{"history": rng.normal(size=(100 + k, 2)).astype(np.float32)} for k in range(3)]
    ours = seasonal_naive(wins, 30, season=24)
    ref = gluonts_seasonal_naive(wins, 30, "h", 24)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    # the forecast repeats the last season
    np.testing.assert_allclose(ours[0, 0, :24], wins[0]["history"][-24:])
    np.testing.assert_allclose(ours[0, 0, 24:], wins[0]["history"][-24:-18])
    # multivariate: each channel is scored as its own item
    target = rng.normal(size=(3, 30, 2)) + 5
    both = crps(ours, target)
    assert both == pytest.approx(crps(np.concatenate([ours[..., 0], ours[..., 1]]),
                                      np.concatenate([target[..., 0], target[..., 1]])))


def test_metric_input_validation():
    with pytest.raises(ValueError, match="do not match"):
        crps(np.zeros((2, 3, 4)), np.zeros((2, 5)))


def test_deepar_baseline_keeps_windows_and_channels_apart():
    from domaindiff_timeseries.baselines import deepar

    # two channels on scales 1 and 1000: forecasts must come back in (W, S, H, D) with each
    # channel's level (a wrong reshape would swap windows and channels)
    t = np.arange(400)
    base = 5 + np.sin(2 * np.pi * t / 24)
    series = np.stack([base, 1000 * base], 1).astype(np.float32)
    windows = [{"history": series[:end]} for end in (352, 376)]
    out = deepar([series[:340]], windows, prediction_length=24, context_length=48, freq="h",
                 num_samples=5, epochs=1, batches_per_epoch=3)
    assert out.shape == (2, 5, 24, 2)
    assert np.isfinite(out).all()
    ratio = np.median(np.abs(out[..., 1])) / np.median(np.abs(out[..., 0]))
    assert 100 < ratio < 10000


def test_seasonal_error_uses_only_observed_pairs():
    from domaindiff_timeseries.metrics import seasonal_error

    h = np.array([1.0, np.nan, 3.0, 4.0, np.nan, 8.0])
    # season 2: pairs (1, 3) -> 2, (nan, 4) and (3, nan) skipped, (4, 8) -> 4: mean 3
    # (filling the gaps with 0 gave (2 + 4 + 3 + 4) / 4 = 3.25)
    assert seasonal_error(h, 2) == pytest.approx(3.0)
    assert np.isnan(seasonal_error(np.array([1.0, np.nan, np.nan, np.nan]), 2))


def test_mase_with_missing_values_hand_case():
    # history 0, 1, nan, 3 (season 1): observed pairs (0, 1) -> 1 and nothing else with the nan;
    # pair (nan, 3) skipped: seasonal error 1. Target 4, nan, 6 against median 5, 5, 5:
    # |4-5|, |6-5| over the 2 observed steps -> 1; MASE = 1 / 1
    samples = np.full((1, 3, 3), 5.0)
    target = np.array([[4.0, np.nan, 6.0]])
    hist = [np.array([0.0, 1.0, np.nan, 3.0])]
    out = forecast_metrics(samples, target, hist, season=1)
    assert out["MASE"] == pytest.approx(1.0)
    # ND: sum |y - med| / sum |y| over observed = 2 / 10; CRPS of a point forecast: per level
    # 2 (q * 1 + (1 - q) * 1) / 10 = 0.2
    assert out["ND"] == pytest.approx(0.2)
    assert out["CRPS"] == pytest.approx(0.2)
    assert out["NRMSE"] == pytest.approx(1.0 / 5.0)
    # the 0-filled version is what the old code computed: a different MASE
    filled = forecast_metrics(samples, np.nan_to_num(target), [np.nan_to_num(hist[0])], 1)
    assert filled["MASE"] != pytest.approx(1.0)


def test_metrics_with_missing_values_match_gluonts_evaluator():
    rng = np.random.default_rng(3)
    w, s, h, t = 4, 40, 12, 60
    histories = [rng.gamma(2.0, 3.0, size=t + 5 * k) for k in range(w)]
    for k, hist in enumerate(histories):
        hist[rng.choice(len(hist), 8 + k, replace=False)] = np.nan
    target = rng.gamma(2.0, 3.0, size=(w, h))
    samples = target[:, None] + rng.normal(0, 2.0, size=(w, s, h))
    target[0, [1, 5]] = np.nan
    target[2, 7] = np.nan
    ours = forecast_metrics(samples, target, histories, season=24)
    ref = _gluonts_eval(samples, target, histories, 24)
    assert ref["num_masked_target_values"] == 3
    for ours_key, ref_key in (("CRPS", "mean_wQuantileLoss"), ("ND", "ND"), ("NRMSE", "NRMSE"),
                              ("MASE", "MASE")):
        assert ours[ours_key] == pytest.approx(ref[ref_key], rel=1e-9), ours_key


def test_seasonal_naive_imputes_missing_history_like_gluonts():
    from domaindiff_timeseries.baselines import gluonts_seasonal_naive

    hist = np.arange(1.0, 13.0)  # 3 seasons of 4
    hist[-3] = np.nan  # phase 1 of the last season missing: the last value before it, 9
    hist[0] = np.nan  # a leading gap: the first observed value
    out = seasonal_naive([{"history": hist}], 6, season=4)[0, 0, :, 0]
    np.testing.assert_allclose(out, [9.0, 9.0, 11.0, 12.0, 9.0, 9.0])
    ref = gluonts_seasonal_naive([{"history": hist}], 6, "h", 4)[0, 0, :, 0]
    np.testing.assert_allclose(ref, out)
    assert np.isfinite(out).all()


def test_infinite_targets_and_nan_forecasts_are_refused():
    with pytest.raises(ValueError, match="infinite"):
        crps(np.ones((1, 2, 3)), np.array([[1.0, np.inf, 1.0]]))
    with pytest.raises(ValueError, match="samples hold NaN"):
        crps(np.full((1, 2, 3), np.nan), np.ones((1, 3)))
    with pytest.raises(ValueError, match="every target value is missing"):
        crps(np.ones((1, 2, 3)), np.full((1, 3), np.nan))
