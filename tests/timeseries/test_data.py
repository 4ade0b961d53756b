"""Data: the offline default, the GluonTS-style split, and real-format loaders."""

import json

import numpy as np
import pytest

from domaindiff.data import DatasetUnavailableError
from domaindiff_timeseries.data import (
    TimeSeriesData,
    load_taylor_hourly,
    make_window,
    mean_scale,
    read_csv,
    read_jsonl,
    write_jsonl,
)


def test_taylor_is_hourly_sum_of_half_hours():
    from pmdarima.datasets import load_taylor

    raw = load_taylor()
    y = load_taylor_hourly()
    assert y.shape == (2016, 1)
    assert y[0, 0] == pytest.approx(raw[0] + raw[1])
    assert y[-1, 0] == pytest.approx(raw[-2] + raw[-1])


def test_gluonts_style_split_and_rolling_windows():
    dm = TimeSeriesData(num_test_windows=7, context_length=336, prediction_length=24,
                        lags=[24, 168])
    dm.load()
    full = dm.test_series[0]
    assert len(dm.train_series[0]) == len(full) - 7 * 24
    wins = dm.test_windows()
    assert len(wins) == 7
    # the last window forecasts the last day; consecutive windows step one day
    np.testing.assert_array_equal(wins[-1]["target"][336:], full[-24:])
    np.testing.assert_array_equal(wins[0]["target"][336:], full[-7 * 24: -6 * 24])
    # the first test horizon starts right where the training range ends
    assert len(wins[0]["history"]) == len(dm.train_series[0])
    w = wins[-1]
    np.testing.assert_allclose(w["x"] * w["scale"], w["target"], rtol=1e-6)
    np.testing.assert_allclose(w["scale"], np.abs(w["target"][:336]).mean(0), rtol=1e-6)
    # lag history: the step right before the window
    np.testing.assert_allclose(w["past"][-1] * w["scale"], full[-361], rtol=1e-6)


def test_training_windows_stay_in_training_range():
    dm = TimeSeriesData(batch_size=4, batches_per_epoch=2, context_length=48,
                        prediction_length=24, lags=[24])
    dm.setup()
    train = dm.train_series[0][:, 0]
    for i in range(len(dm.train_set)):
        b = dm.train_set[i]
        x = (b["x"] * b["scale"]).numpy()[:, 0]
        # the window occurs in the training series
        hits = np.where(np.isclose(train, x[0], rtol=1e-6))[0]
        assert any(np.allclose(train[h: h + 72], x, rtol=1e-5) for h in hits if h + 72 <= len(
            train))


def test_mean_scale_hand_case():
    ctx = np.array([[1.0, 0.0], [-3.0, 0.0], [np.nan, 0.0]], np.float32)
    s = mean_scale(ctx)
    # channel 0: mean |1|, |-3| over the observed = 2; channel 1 all zero -> falls back to 2
    np.testing.assert_allclose(s, [2.0, 2.0])
    obs = np.array([[1, 1], [0, 1], [0, 1]], np.float32)
    np.testing.assert_allclose(mean_scale(ctx, obs), [1.0, 1.0])


def test_make_window_pads_missing_history():
    s = np.arange(1, 11, dtype=np.float32)[:, None]
    w = make_window(s, 10, 4, 2, max_lag=6)
    np.testing.assert_allclose(w["target"][:, 0], [5, 6, 7, 8, 9, 10])
    np.testing.assert_allclose(w["past"][:, 0] * w["scale"][0], [0, 0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="needs 6 steps"):
        make_window(s, 5, 4, 2, 0)


def test_jsonl_round_trip_uni_multi_and_missing(tmp_path):
    a = np.arange(50, dtype=np.float32)
    b = np.stack([np.arange(30), np.arange(30) * 2.0], 1).astype(np.float32)
    p = tmp_path / "train.jsonl"
    write_jsonl([a, b], p)
    back = read_jsonl(p)
    np.testing.assert_array_equal(back[0][:, 0], a)
    np.testing.assert_array_equal(back[1], b)
    # GluonTS writes missing values as "NaN" strings or null
    p2 = tmp_path / "nan.jsonl"
    p2.write_text(json.dumps({"start": "2020", "target": [1, "NaN", None, 4]}) + "\n")
    got = read_jsonl(p2)[0][:, 0]
    assert np.isnan(got[1]) and np.isnan(got[2]) and got[3] == 4


def test_jsonl_bad_input_names_file_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"start": "2020", "target": [1, 2]}) + "\n"
                 + json.dumps({"start": "2020", "values": [1]}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: record has no 'target'"):
        read_jsonl(p)
    p.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
        read_jsonl(p)
    p.write_text(json.dumps({"start": "2020", "target": [1, "b"]}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: field 'target': position 1: 'b' is not "
                                         "a number"):
        read_jsonl(p)


def test_csv_loader_and_file_dataset(tmp_path):
    import pandas as pd

    idx = pd.date_range("2021-01-01", periods=400, freq="h")
    df = pd.DataFrame({"a": np.sin(np.arange(400) / 5) + 2, "b": np.arange(400.0)}, index=idx)
    p = tmp_path / "wide.csv"
    df.to_csv(p)
    got = read_csv(p)
    np.testing.assert_allclose(got[1][:, 0], df["b"].to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="no column 'z'"):
        read_csv(p, ["z"])
    dm = TimeSeriesData(dataset="file", path=str(p), context_length=48, prediction_length=24,
                        lags=[24], num_test_windows=2)
    assert len(dm.test_windows()) == 4  # 2 series x 2 rolling windows
    short = TimeSeriesData(dataset="file", path=str(p), context_length=336, prediction_length=24,
                           num_test_windows=3)
    with pytest.raises(ValueError, match=r"wide.csv: every series is shorter than 432 steps "
                       r"\(context_length 336 \+ \(num_test_windows 3 \+ 1\) x prediction_length "
                       r"24\): series column a \(index 0\) \(400 steps\)"):
        short.load()


def test_gluonts_dataset_offline_gives_clear_error(monkeypatch):
    import gluonts.dataset.repository as repo

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(repo, "get_dataset", offline)
    dm = TimeSeriesData(dataset="solar_nips")
    assert (dm.context_length, dm.prediction_length) == (336, 24)
    with pytest.raises(DatasetUnavailableError, match="solar_nips.*dataset='taylor'"):
        dm.load()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown 'nope'"):
        TimeSeriesData(dataset="nope")
    with pytest.raises(ValueError, match="needs path"):
        TimeSeriesData(dataset="file")
    with pytest.raises(ValueError, match="lags must be positive"):
        TimeSeriesData(lags=[0])


def _gappy_series(n: int = 240, gaps=((50, 53), (120, 121))) -> np.ndarray:
    t = np.arange(n)
    s = (10 + np.sin(2 * np.pi * t / 24)).astype(np.float32)[:, None]
    for a, b in gaps:
        s[a:b] = np.nan
    return s


def test_missing_values_are_reported_and_marked_unobserved_never_zero(tmp_path):
    from domaindiff_timeseries.data import MissingValuesWarning

    s = _gappy_series()
    p = tmp_path / "gaps.jsonl"
    write_jsonl([s], p)  # NaN is written as JSON NaN and read back as missing
    dm = TimeSeriesData(dataset="file", path=str(p), context_length=48, prediction_length=24,
                        lags=[24], num_test_windows=1, batch_size=8, batches_per_epoch=8,
                        freq="h")
    with pytest.warns(MissingValuesWarning, match=r"gaps.jsonl: 4 of 240 values missing "
                                                  r"\(1.7%\) in 1 series; treated as unobserved"):
        dm.setup()
    seen_gap = 0
    for i in range(len(dm.train_set)):
        b = {k: v.numpy() for k, v in dm.train_set[i].items()}
        obs, x = b["observed"][:, 0], b["x"][:, 0]
        assert np.isfinite(x).all() and np.isfinite(b["past"]).all()
        if (obs == 0).any():
            seen_gap += 1
            # the placeholder is the last observed value before the gap, never 0
            j = int(np.flatnonzero(obs == 0)[0])
            assert x[j] != 0 and x[j] == pytest.approx(x[j - 1]) if j else True
        # the scale is the mean |value| of the observed context only
        win = (x * b["scale"][0])[:48][obs[:48] > 0]
        assert b["scale"][0] == pytest.approx(np.abs(win).mean(), rel=1e-5)
    assert seen_gap > 0
    # each batch's mask equals the source's missing positions: locate the window by its values
    w = make_window(s, 80, 48, 24, 24)
    np.testing.assert_array_equal(w["observed"][:, 0], np.isfinite(s[8:80, 0]))
    # the window starts at step 8: 16 lag steps lie before the series (padding, unobserved)
    np.testing.assert_array_equal(w["past_observed"][:, 0], np.r_[np.zeros(16), np.ones(8)])
    assert np.isnan(w["target"][42:45, 0]).all()  # the target keeps the gap as NaN
    np.testing.assert_allclose(w["x"][42:45, 0] * w["scale"][0], s[49, 0])
    # lags of missing steps are marked missing
    w2 = make_window(s, 100, 48, 24, 24)
    np.testing.assert_array_equal(w2["past_observed"][:, 0], np.isfinite(s[4:28, 0]))
    w3 = make_window(s, 146, 48, 24, 24)
    np.testing.assert_array_equal(w3["past_observed"][:, 0], np.isfinite(s[50:74, 0]))
    assert w3["past_observed"][:3].sum() == 0


def test_windows_without_observed_context_are_skipped_with_a_count(tmp_path):
    from domaindiff_timeseries.data import MissingValuesWarning, observed_context_ends

    s = _gappy_series(300, gaps=((60, 130),))  # a 70-step gap: contexts of 48 inside it
    c, h = 48, 24
    ends = observed_context_ends(s, c, h)
    starts = ends - c - h
    # hand count: a window is skipped when its whole context lies in [60, 130)
    skipped = [st for st in range(300 - c - h + 1) if 60 <= st and st + c <= 130]
    assert len(skipped) == 23 and set(skipped).isdisjoint(starts)
    assert len(ends) + len(skipped) == 300 - c - h + 1
    p = tmp_path / "gap.jsonl"
    write_jsonl([s], p)
    dm = TimeSeriesData(dataset="file", path=str(p), context_length=c, prediction_length=h,
                        lags=[], num_test_windows=1, batch_size=16, batches_per_epoch=4,
                        freq="h")
    with pytest.warns(MissingValuesWarning, match=r"gap.jsonl: 23 training windows have no "
                                                  r"observed value in their context; skipped"):
        dm.setup()
    for i in range(len(dm.train_set)):
        assert dm.train_set[i]["observed"][:c].sum() > 0


def test_complete_series_keep_the_original_window_stream():
    dm = TimeSeriesData(batch_size=4, batches_per_epoch=2, context_length=48,
                        prediction_length=24, lags=[24], seed=3)
    dm.setup()
    series = dm.train_series[0]
    for idx in range(len(dm.train_set)):
        rng = np.random.default_rng((3, 0, idx))
        rng.choice(1, p=[1.0])
        end = int(rng.integers(72, len(series) + 1))
        want = make_window(series, end, 48, 24, 24)["x"]
        np.testing.assert_array_equal(dm.train_set[idx]["x"].numpy(), want)
