"""TSDiff as a GluonTS Predictor: GluonTS's backtest and evaluators run on it unchanged."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from domaindiff_timeseries.metrics import crps, forecast_metrics
from domaindiff_timeseries.model import TSDiff, TSDiffCond
from domaindiff_timeseries.predictor import TSDiffPredictor

C, H = 24, 6
TINY = {"dim": 1, "context_length": C, "prediction_length": H, "lags": [12], "hidden": 8,
        "num_blocks": 1, "emb_dim": 8, "d_state": 4, "num_steps": 10}


def _dataset(n: int = 60):
    from gluonts.dataset.common import ListDataset

    t = np.arange(n)
    rows = []
    for k, level in enumerate((10.0, 20.0, 30.0)):
        y = level + 2 * np.sin(2 * np.pi * t / 12) + 0.1 * k
        if k == 1:
            y[n - 20: n - 17] = np.nan  # missing values in a context
        rows.append({"start": pd.Period("2001-01", freq="M"), "target": y, "item_id": f"s{k}"})
    rows.append({"start": pd.Period("2001-01", freq="M"), "target": 15 + np.sin(t[:20]),
                 "item_id": "short"})  # shorter than the context: left-padded, unobserved
    return ListDataset(rows, freq="M")


def _predictor(variant: str):
    """The predictor of each TSDiff variant (tiny untrained models) and its name."""
    torch.manual_seed(0)
    if variant == "tsdiff_cond":
        return TSDiffPredictor(TSDiffCond(**TINY), num_samples=8, sampler="ddim", steps=3), variant
    if variant == "tsdiff_q_fast":  # the fast guided sampler: SDE-DPM-Solver++(2M), x0 steps
        pred = TSDiffPredictor.fast(TSDiff(**TINY), num_samples=8)
        assert (pred.sampler, pred.steps, pred.scale, pred.options) == \
            ("sde_dpm_solver_pp_2m", 10, 32.0, {"x0_steps": 4})
        return pred, "tsdiff_q"
    if variant == "student":  # a distilled few-step student: its own sampler and steps
        model = TSDiff(**TINY, sampler="distilled", sampling_steps=2, parametrization="v")
        pred = TSDiffPredictor(model, num_samples=8)
        assert (pred.sampler, pred.steps) == ("distilled", 2)
        return pred, "tsdiff_q"
    pred = TSDiffPredictor(TSDiff(**TINY), guidance="mse" if variant == "tsdiff_ms"
                           else "quantile", num_samples=8, sampler="ddim", steps=3)
    return pred, variant


def test_the_predictor_is_exported_lazily():
    """``from domaindiff_timeseries import TSDiffPredictor``; importing the package alone does not
    import GluonTS's model stack."""
    import subprocess
    import sys

    import domaindiff_timeseries

    assert domaindiff_timeseries.TSDiffPredictor is TSDiffPredictor
    assert "TSDiffPredictor" in domaindiff_timeseries.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        domaindiff_timeseries.Nope  # noqa: B018
    code = ("import sys, domaindiff_timeseries; "
            "print(sorted(m for m in sys.modules if m.startswith('gluonts.model')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("variant", ["tsdiff_q", "tsdiff_ms", "tsdiff_cond", "tsdiff_q_fast",
                                     "student"])
def test_backtest_and_gluonts_evaluators_run_and_agree_with_the_plugins_crps(variant):
    from gluonts.dataset.split import split
    from gluonts.ev.metrics import MeanWeightedSumQuantileLoss
    from gluonts.evaluation import Evaluator
    from gluonts.evaluation.backtest import make_evaluation_predictions
    from gluonts.model import evaluate_forecasts
    from gluonts.model.forecast import SampleForecast

    pred, name = _predictor(variant)
    assert pred.name == name and pred.prediction_length == H
    ds = _dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc_it, ts_it = make_evaluation_predictions(ds, pred, num_samples=8)
        forecasts, series = list(fc_it), list(ts_it)
        assert all(isinstance(f, SampleForecast) for f in forecasts)
        assert [f.item_id for f in forecasts] == ["s0", "s1", "s2", "short"]
        assert forecasts[0].samples.shape == (8, H)
        assert forecasts[0].info["sampler"] == pred.sampler
        # network evaluations per sequence: the sampler's steps (x0 steps cost none)
        assert pred.model.last_nfe == pred.steps
        assert forecasts[0].start_date == pd.Period("2001-01", freq="M") + 60 - H
        agg, _ = Evaluator(quantiles=[0.1 * k for k in range(1, 10)], num_workers=0)(
            series, forecasts)
        samples = np.stack([f.samples for f in forecasts])
        target = np.stack([s.to_numpy()[-H:, 0] for s in series])
        assert agg["mean_wQuantileLoss"] == pytest.approx(crps(samples, target), rel=1e-6)
        # the new evaluation API on a split of the same data
        _, test_gen = split(ds, offset=-H)
        test = test_gen.generate_instances(prediction_length=H, windows=1)
        fc2 = list(pred.predict(test.input))
        df = evaluate_forecasts(fc2, test_data=test, metrics=[MeanWeightedSumQuantileLoss(
            quantile_levels=[0.1 * k for k in range(1, 10)])])
        s2 = np.stack([f.samples for f in fc2])
        assert float(df.iloc[0, 0]) == pytest.approx(crps(s2, target), rel=1e-6)
    assert np.isfinite(forecast_metrics(samples, target)["CRPS"])


def test_predictor_refuses_what_it_cannot_forecast():
    model = TSDiff(**TINY)
    with pytest.raises(ValueError, match="guidance: use 'quantile'"):
        TSDiffPredictor(model, guidance="none")
    cov = TSDiffCond(**{**TINY, "covariates": 2})
    with pytest.raises(ValueError, match="covariates: the model reads 2 covariate channels"):
        TSDiffPredictor(cov)
    from gluonts.dataset.common import ListDataset

    blank = ListDataset([{"start": pd.Period("2001-01", "M"), "target": [np.nan] * 30,
                          "item_id": "x"}], freq="M")
    with pytest.raises(ValueError, match=r"item 'x'\): no observed value in the last 24 steps"):
        list(TSDiffPredictor(model, sampler="ddim", steps=2).predict(blank))


def test_calendar_covariates_of_a_predictor_follow_the_entry_dates():
    model = TSDiffCond(**{**TINY, "covariates": 2})
    pred = TSDiffPredictor(model, covariates="time", num_samples=2, sampler="ddim", steps=2)
    from gluonts.dataset.common import ListDataset

    ds = ListDataset([{"start": pd.Period("2001-04", "M"), "target": np.ones(40)}], freq="M")
    w, start = pred._window(next(iter(ds)), 0)
    assert start == pd.Period("2001-04", "M") + 40
    # step 16 of the series is the window's first (40 - 24): August 2002, month index 7
    np.testing.assert_allclose(w["covariates"][0], [np.sin(2 * np.pi * 7 / 12),
                                                    np.cos(2 * np.pi * 7 / 12)], atol=1e-6)
    assert next(pred.predict(ds)).samples.shape == (2, H)
