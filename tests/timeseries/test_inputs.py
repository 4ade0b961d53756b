"""Users' own data at any frequency: DataFrames, Series, GluonTS datasets, CSV, JSON lines.

Each frequency path (hourly, daily, weekly, monthly, quarterly, yearly) is checked on a small
generated series with an exact seasonal cycle: the frequency, the season, the default lengths
and lags must follow the data, and seasonal naive at that season forecasts it exactly (at a
wrong season it does not).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from domaindiff_timeseries.baselines import gluonts_seasonal_naive
from domaindiff_timeseries.data import TimeSeriesData
from domaindiff_timeseries.frequency import default_lags, default_lengths, seasonality
from domaindiff_timeseries.metrics import crps, seasonal_naive

# freq alias -> (season, context, horizon) the data must get without any option
PATHS = {"h": (24, 336, 24), "D": (7, 56, 14), "B": (5, 40, 10), "W-SUN": (52, 104, 13),
         "MS": (12, 72, 18), "ME": (12, 72, 18), "QS-JAN": (4, 32, 8), "QE-DEC": (4, 32, 8),
         "YS-JAN": (1, 24, 6), "YE-DEC": (1, 24, 6)}
# the default lags of each path, written out (README's frequency table)
LAGS = {"h": [23, 24, 25, 47, 48, 49, 71, 72, 73, 95, 96, 97, 119, 120, 121, 143, 144, 145, 167,
              168, 169, 335, 336],
        "D": [7, 8, 13, 14, 15, 20, 21, 22, 27, 28, 29, 30, 31, 56],
        "B": [5, 9, 10, 11, 14, 15, 16, 19, 20, 21, 22, 23, 39],
        "W-SUN": [8, 12, 51, 52, 53, 103, 104],
        "MS": [11, 12, 13, 23, 24, 25, 35, 36, 37], "ME": [11, 12, 13, 23, 24, 25, 35, 36, 37],
        "QS-JAN": [4, 8, 9, 11, 12, 13], "QE-DEC": [4, 8, 9, 11, 12, 13], "YS-JAN": [],
        "YE-DEC": []}


def _cycle(freq: str, season: int, n: int, level: float = 50.0) -> pd.Series:
    idx = pd.date_range("2001-01-01", periods=n, freq=freq)
    rng = np.random.default_rng(0)
    pattern = rng.uniform(0.5, 1.5, season) * level
    return pd.Series(np.tile(pattern, n // season + 1)[:n], index=idx, name="y")


@pytest.mark.parametrize("freq", list(PATHS))
def test_each_frequency_sets_season_lengths_and_lags_from_the_data(freq):
    season, context, horizon = PATHS[freq]
    n = context + 3 * horizon + season
    s = _cycle(freq, season, n)
    dm = TimeSeriesData(dataset=s, num_test_windows=2)
    # the data's steps ("QS-JAN" data is inferred "QS-OCT": the same quarters)
    assert pd.date_range(s.index[0], periods=n, freq=dm.freq).equals(s.index)
    assert dm.season == season
    assert (dm.context_length, dm.prediction_length) == (context, horizon)
    assert dm.lags == default_lags(dm.freq, context)
    assert all(1 < lag <= context for lag in dm.lags)
    if season > 1:
        assert season in dm.lags  # GluonTS's lags hold the seasonal one
    wins = dm.test_windows()
    assert len(wins) == 2
    # the forecast start is the timestamp after the context, in the data's calendar
    last = wins[-1]
    assert last["forecast_start"] == s.index[n - horizon]
    target = np.stack([w["target"][context:] for w in wins])
    right = seasonal_naive(wins, horizon, dm.season)
    assert crps(right, target) < 1e-6
    np.testing.assert_allclose(gluonts_seasonal_naive(wins, horizon, dm.freq, dm.season), right,
                               rtol=1e-6)
    if season > 1:
        assert crps(seasonal_naive(wins, horizon, 1), target) > 0.01


@pytest.mark.parametrize("freq", list(PATHS))
def test_each_frequency_path_follows_gluonts(freq):
    """Season: GluonTS's ``get_seasonality`` (daily 7 and weekly 52 as the Monash archive);
    lags: GluonTS's ``get_lags_for_frequency`` up to the context, lag 1 dropped, the season added;
    horizon: the M4 competition's; context: ``max(4 horizons, 2 seasons)`` (hourly: TSDiff's 336).
    """
    from gluonts.time_feature import get_lags_for_frequency, get_seasonality

    season, context, horizon = PATHS[freq]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_seasonality(freq)
        glags = get_lags_for_frequency(freq, lag_ub=context, num_default_lags=1)
    assert seasonality(freq) == ({"D": 7, "W-SUN": 52}.get(freq) or theirs) == season
    assert default_lengths(freq) == (context, horizon)
    assert context == (336 if freq == "h" else max(4 * horizon, 2 * season))
    assert default_lags(freq, context) == LAGS[freq]
    want = {g for g in glags if 1 < g <= context} | ({season} if season > 1 else set())
    assert set(LAGS[freq]) == want
    # a shorter context cuts the lags there
    assert default_lags(freq, 12) == [g for g in LAGS[freq] if g <= 12]


def test_frequency_helpers_agree_with_gluonts_and_monash():
    from gluonts.time_feature import get_seasonality

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in ("h", "30min", "B", "MS", "QS"):
            assert seasonality(f) == get_seasonality(f)
    assert (seasonality("D"), seasonality("W"), seasonality("2h")) == (7, 52, 12)
    assert default_lengths("h") == (336, 24)
    assert default_lengths("30min") == (14 * 48, 48)
    assert 1 not in default_lags("h", 336) and max(default_lags("h", 336)) <= 336


def test_explicit_options_win_and_a_contradicting_freq_is_an_error():
    s = _cycle("MS", 12, 240)
    dm = TimeSeriesData(dataset=s, context_length=36, prediction_length=6, lags=[12], season=6,
                        num_test_windows=1)
    assert (dm.context_length, dm.prediction_length, dm.lags, dm.season) == (36, 6, [12], 6)
    assert TimeSeriesData(dataset=s, freq="MS").freq == "MS"
    with pytest.raises(ValueError, match=r"timestamps are spaced 'MS' but freq='W-SUN'"):
        TimeSeriesData(dataset=s, freq="W").load()


def _long_frame() -> pd.DataFrame:
    parts = []
    for k, level in (("a", 10.0), ("b", 20.0)):
        s = _cycle("D", 7, 140, level)
        parts.append(pd.DataFrame({"item_id": k, "timestamp": s.index, "target": s.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def _windows_values(dm) -> np.ndarray:
    return np.stack([w["target"] for w in dm.test_windows()])


def test_every_input_kind_gives_the_same_series(tmp_path):
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.pandas import PandasDataset

    long = _long_frame()
    kw = {"num_test_windows": 2}
    ref = TimeSeriesData(dataset=long, **kw)  # long DataFrame
    assert (ref.freq, ref.season, len(ref.test_windows())) == ("D", 7, 4)
    want = _windows_values(ref)
    wide = long.pivot(index="timestamp", columns="item_id", values="target")
    wide.index.freq = None
    kinds = {"wide DataFrame": wide,
             "ListDataset": ListDataset(
                 [{"start": pd.Period(g["timestamp"].iloc[0], "D"), "target": g["target"].to_numpy(),
                   "item_id": k} for k, g in long.groupby("item_id")], freq="D"),
             "PandasDataset": PandasDataset.from_long_dataframe(
                 long.set_index("timestamp"), target="target", item_id="item_id", freq="D")}
    long_csv = tmp_path / "long.csv"
    long.to_csv(long_csv, index=False)
    wide_csv = tmp_path / "wide.csv"
    wide.to_csv(wide_csv)
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("".join(json.dumps({"start": str(g["timestamp"].iloc[0]), "item_id": k,
                                         "target": g["target"].tolist()}) + "\n"
                             for k, g in long.groupby("item_id")))
    for name, data in kinds.items():
        dm = TimeSeriesData(dataset=data, **kw)
        assert (dm.freq, dm.season) == ("D", 7), name
        np.testing.assert_allclose(_windows_values(dm), want, rtol=1e-6, err_msg=name)
    for path, extra in ((long_csv, {}), (wide_csv, {}), (jsonl, {"freq": "D"})):
        dm = TimeSeriesData(dataset="file", path=str(path), **kw, **extra)
        assert dm.freq == "D", path
        np.testing.assert_allclose(_windows_values(dm), want, rtol=1e-6, err_msg=str(path))
        assert dm.test_windows()[0]["forecast_start"] == ref.test_windows()[0]["forecast_start"]


def test_missing_values_in_a_dataframe_are_unobserved():
    s = _cycle("W-SAT", 52, 300)
    s.iloc[[10, 11, 200]] = np.nan
    with pytest.warns(UserWarning, match=r"3 of 300 values missing"):
        dm = TimeSeriesData(dataset=s, num_test_windows=1)
        dm.setup("fit")
    assert dm.freq == "W-SAT" and dm.season == 52
    assert np.isnan(dm.train_series[0][[10, 11, 200], 0]).all()


def test_calendar_covariates_follow_the_start():
    jan = TimeSeriesData(dataset=_cycle("MS", 12, 200), covariates="time", num_test_windows=1)
    s = _cycle("MS", 12, 200)
    s.index = pd.date_range("2001-04-01", periods=200, freq="MS")
    apr = TimeSeriesData(dataset=s, covariates="time", num_test_windows=1)
    jan.load()
    apr.load()
    # April's first step has the phase of January's fourth
    np.testing.assert_allclose(apr.test_cov[0][0], jan.test_cov[0][3], atol=1e-6)


def test_co2_weekly_with_gaps_gets_its_yearly_season():
    """The issue's case: statsmodels' weekly CO2 (59 missing weeks), a year ahead, 7 windows."""
    from domaindiff_timeseries.own_data import run

    res = run(epochs=0)
    co2 = res["co2 (weekly)"]
    assert (co2["freq"], co2["season"], co2["missing"]) == ("W-SAT", 52, 59)
    assert co2["seasonal naive (season 52)"]["CRPS"] == pytest.approx(0.00468, abs=5e-5)
    assert co2["seasonal naive (season 24)"]["CRPS"] == pytest.approx(0.00879, abs=5e-5)
    sun = res["sunspots (monthly)"]
    assert (sun["season"], sun["context_length"], sun["prediction_length"]) == (12, 72, 18)
