"""Bad time-series inputs (GluonTS JSON lines, wide CSV, arguments): each refused in one line.

Every ``check`` writes a tiny file into ``tmp_path`` in the real format the loaders read (GluonTS
JSON lines as ``json.dumps`` writes them, so an infinite value is the literal ``Infinity``; a
pandas-written wide CSV) and runs the real loader (``TimeSeriesData.setup``, as ``domaindiff fit``
does) or the real CLI, and returns the message. Missing values are not in this list: they are a
supported case (see ``test_data.py`` and ``test_model.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from domaindiff_timeseries.data import TimeSeriesData
from tests.catalogue import BadInput, assert_refused, cli_message, raised

ERRORS = (ValueError, FileNotFoundError)
N = 120  # steps of the tiny series: enough for context 24 + 2 x horizon 8


def _values(n: int = N, level: float = 10.0) -> list[float]:
    return [level + float(np.sin(2 * np.pi * t / 8)) for t in range(n)]


def _jsonl(tmp: Path, records: list, name: str = "s.jsonl") -> Path:
    p = tmp / name
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return p


def _csv(tmp: Path, index, columns: dict, name: str = "wide.csv") -> Path:
    p = tmp / name
    pd.DataFrame(columns, index=pd.Index(index, name="timestamp")).to_csv(p)
    return p


def _setup(path: Path, **kw) -> Callable[[], None]:
    """``TimeSeriesData(dataset="file", path=...).setup()`` with tiny lengths."""
    args = {"context_length": 24, "prediction_length": 8, "lags": [8], "num_test_windows": 1,
            "batch_size": 4, "batches_per_epoch": 2,
            **({"freq": "h"} if path.suffix == ".jsonl" else {}), **kw}
    return lambda: TimeSeriesData(dataset="file", path=str(path), **args).setup("fit")


def _hours(n: int = N) -> pd.DatetimeIndex:
    return pd.date_range("2021-01-01", periods=n, freq="h")


# -- checks ---------------------------------------------------------------------------------------
def _jsonl_infinity(tmp: Path) -> str:
    bad = _values()
    bad[5] = float("inf")  # json.dumps writes Infinity, which json.loads reads back as inf
    p = _jsonl(tmp, [{"start": "2021-01-01 00:00", "target": _values(), "item_id": "a"},
                     {"start": "2021-01-01 00:00", "target": bad, "item_id": "b"}])
    assert "Infinity" in p.read_text()
    return raised(ERRORS, _setup(p, freq="h"))


def _csv_infinity(tmp: Path) -> str:
    col = _values()
    col[3] = float("-inf")
    p = _csv(tmp, _hours(), {"a": col})
    return raised(ERRORS, _setup(p))


def _jsonl_text_value(tmp: Path) -> str:
    bad: list = _values()
    bad[7] = "12,5"
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": bad}])
    return raised(ERRORS, _setup(p))


def _csv_text_value(tmp: Path) -> str:
    col: list = _values()
    col[2] = "n/a?"
    p = _csv(tmp, _hours(), {"load": col})
    return raised(ERRORS, _setup(p))


def _jsonl_no_start(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values()}, {"target": _values()}])
    return raised(ERRORS, _setup(p))


def _jsonl_no_target(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "values": _values()}])
    return raised(ERRORS, _setup(p))


def _jsonl_bad_start(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "yesterday-ish", "target": _values()}])
    return raised(ERRORS, _setup(p))


def _jsonl_all_missing(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values()},
                     {"start": "2021-01-01", "target": [None] * N}])
    return raised(ERRORS, _setup(p))


def _csv_all_missing(tmp: Path) -> str:
    p = _csv(tmp, _hours(), {"a": _values(), "empty": [np.nan] * N})
    return raised(ERRORS, _setup(p))


def _csv_duplicated(tmp: Path) -> str:
    idx = list(_hours())
    idx[10] = idx[9]
    p = _csv(tmp, idx, {"a": _values()})
    return raised(ERRORS, _setup(p))


def _csv_unsorted(tmp: Path) -> str:
    idx = list(_hours())
    idx[20], idx[21] = idx[21], idx[20]
    p = _csv(tmp, idx, {"a": _values()})
    return raised(ERRORS, _setup(p))


def _csv_uneven(tmp: Path) -> str:
    idx = list(_hours(N + 1))
    del idx[50]  # a dropped row: a silent one-step shift of everything after it
    p = _csv(tmp, idx, {"a": _values()})
    return raised(ERRORS, _setup(p))


def _csv_freq_mismatch(tmp: Path) -> str:
    p = _csv(tmp, pd.date_range("2021-01-01", periods=N, freq="D"), {"a": _values()})
    return raised(ERRORS, _setup(p, freq="h"))


def _unknown_freq(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values()}])
    return raised(ERRORS, _setup(p, freq="fortnightly"))


def _freq_contradicts_dataset(tmp: Path) -> str:
    return raised(ERRORS, lambda: TimeSeriesData(dataset="taylor", freq="D"))


def _zero_horizon(tmp: Path) -> str:
    return raised(ERRORS, lambda: TimeSeriesData(dataset="taylor", prediction_length=0))


def _negative_context(tmp: Path) -> str:
    return raised(ERRORS, lambda: TimeSeriesData(dataset="taylor", context_length=-24))


def _context_longer_than_series(tmp: Path) -> str:
    return raised(ERRORS, lambda: TimeSeriesData(dataset="taylor", context_length=5000,
                                                 lags=[]).setup("fit"))


def _all_series_too_short(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values(30), "item_id": "short"},
                     {"start": "2021-01-01", "target": _values(31)}])
    return raised(ERRORS, _setup(p))


def _unknown_file_type(tmp: Path) -> str:
    p = tmp / "series.parquet"
    p.write_bytes(b"PAR1")
    return raised(ERRORS, _setup(p))


class _FakeRepository:
    """What ``gluonts.dataset.repository.get_dataset`` returns: ``train`` and ``test`` entries."""

    def __init__(self, bad_item: str, position: int) -> None:
        good = np.asarray(_values(), np.float32)
        bad = good.copy()
        bad[position] = np.inf
        self.train = [{"target": good, "item_id": "MT_000"}, {"target": bad, "item_id": bad_item}]
        self.test = self.train


def _gluonts_infinity(tmp: Path) -> str:
    import gluonts.dataset.repository as repo

    real = repo.get_dataset
    repo.get_dataset = lambda *a, **k: _FakeRepository("MT_007", 17)
    try:
        return raised(ERRORS, lambda: TimeSeriesData(dataset="electricity_nips", root=str(tmp))
                      .setup("fit"))
    finally:
        repo.get_dataset = real


def _number_as_dataset(tmp: Path) -> str:
    return raised(ERRORS, lambda: TimeSeriesData(dataset=42))


def _long(items: dict, freq: str = "h") -> pd.DataFrame:
    parts = [pd.DataFrame({"item_id": k, "timestamp": pd.date_range("2021-01-01", periods=len(v),
                                                                      freq=freq), "target": v})
             for k, v in items.items()]
    return pd.concat(parts, ignore_index=True)


def _df_setup(df, **kw) -> Callable[[], None]:
    args = {"context_length": 24, "prediction_length": 8, "lags": [8], "num_test_windows": 1,
            "batch_size": 4, "batches_per_epoch": 2, **kw}
    return lambda: TimeSeriesData(dataset=df, **args).setup("fit")


def _df_no_target(tmp: Path) -> str:
    df = _long({"a": _values()}).rename(columns={"target": "load"})
    return raised(ERRORS, _df_setup(df))


def _df_unsorted(tmp: Path) -> str:
    df = _long({"a": _values(), "b": _values()})
    df.loc[[130, 131], "timestamp"] = df.loc[[131, 130], "timestamp"].to_numpy()
    return raised(ERRORS, _df_setup(df))


def _df_mixed_freq(tmp: Path) -> str:
    df = pd.concat([_long({"a": _values()}), _long({"b": _values()}, freq="D")])
    return raised(ERRORS, _df_setup(df))


def _df_uneven(tmp: Path) -> str:
    df = _long({"a": _values()}).drop(index=50)
    return raised(ERRORS, _df_setup(df))


def _df_unknown_freq(tmp: Path) -> str:
    return raised(ERRORS, _df_setup(_long({"a": _values()}), freq="every other tuesday"))


def _df_wide_without_time_index(tmp: Path) -> str:
    return raised(ERRORS, _df_setup(pd.DataFrame({"a": _values(), "b": _values()})))


def _jsonl_without_freq(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values()}])
    return raised(ERRORS, _setup(p, freq=None))


def _series_text(tmp: Path) -> str:
    vals: list = _values()
    vals[3] = "oops"
    s = pd.Series(vals, index=_hours(), name="load")
    return raised(ERRORS, _df_setup(s))


def _zero_test_windows(tmp: Path) -> str:
    return raised(ERRORS, lambda: TimeSeriesData(dataset="taylor", num_test_windows=0))


def _jsonl_mixed_channels(tmp: Path) -> str:
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values()},
                     {"start": "2021-01-01", "target": [_values(), _values()], "item_id": "mv"}])
    return raised(ERRORS, _setup(p))


def _csv_no_time_column(tmp: Path) -> str:
    p = tmp / "wide.csv"
    pd.DataFrame({"a": _values(), "b": _values(level=20.0)}).to_csv(p, index=False)
    return raised(ERRORS, _setup(p))


def _jsonl_missing_covariate(tmp: Path) -> str:
    cov: list = [float(t % 24) for t in range(N)]
    cov[9] = None
    p = _jsonl(tmp, [{"start": "2021-01-01", "target": _values(), "feat_dynamic_real": [cov]}])
    return raised(ERRORS, _setup(p, covariates="file"))


def _config(tmp: Path, data: dict) -> Path:
    cfg = {
        "trainer": {"max_steps": 1, "accelerator": "cpu", "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "model": {"class_path": "domaindiff_timeseries.TSDiff",
                  "init_args": {"context_length": 24, "prediction_length": 8, "lags": [8],
                                "hidden": 8, "num_blocks": 1, "emb_dim": 8, "d_state": 4}},
        "data": {"class_path": "domaindiff_timeseries.TimeSeriesData",
                 "init_args": {"context_length": 24, "prediction_length": 8, "lags": [8],
                               "num_test_windows": 1, "batch_size": 4, "batches_per_epoch": 2,
                               **data}},
    }
    p = tmp / "fit.yaml"
    OmegaConf.save(OmegaConf.create(cfg), p)
    return p


def _cli_unknown_dataset(tmp: Path) -> str:
    return cli_message(["fit", "--config", str(_config(tmp, {"dataset": "taylour"}))], cwd=tmp)


def _cli_infinity(tmp: Path) -> str:
    bad = _values()
    bad[40] = float("inf")
    p = _jsonl(tmp, [{"start": "2021-01-01 00:00", "target": bad}], "load.jsonl")
    cfg = _config(tmp, {"dataset": "file", "path": str(p), "freq": "h"})
    return cli_message(["fit", "--config", str(cfg)], cwd=tmp)


def _cli_length_mismatch(tmp: Path) -> str:
    cfg = _config(tmp, {"dataset": "taylor", "context_length": 48})
    return cli_message(["fit", "--config", str(cfg)], cwd=tmp)


def _model_data_mismatch(tmp: Path) -> str:
    from domaindiff_timeseries.model import TSDiff

    dm = TimeSeriesData(dataset="taylor", context_length=48, prediction_length=8, lags=[24])
    model = TSDiff(lags=[24, 48], hidden=4, num_blocks=1, emb_dim=8, d_state=4)
    return raised(ERRORS, lambda: model.link_data(dm))


CATALOGUE: list[BadInput] = [
    BadInput("ts-jsonl-infinity",
             'TimeSeriesData(dataset="file", path="s.jsonl", freq="h").setup()  # Infinity',
             r"s\.jsonl:2: item 'b': field 'target': infinite value at position 5 \(timestamp "
             r"2021-01-01 05:00:00\)", _jsonl_infinity),
    BadInput("ts-gluonts-infinity", 'TimeSeriesData(dataset="electricity_nips").setup()',
             r"GluonTS dataset 'electricity_nips' \(train\): series 'MT_007' \(index 1\): "
             r"infinite value inf at position 17", _gluonts_infinity),
    BadInput("ts-csv-infinity", 'TimeSeriesData(dataset="file", path="wide.csv").setup()  # -inf',
             r"wide\.csv:5: column 'a': infinite value at 2021-01-01 03:00:00", _csv_infinity),
    BadInput("ts-jsonl-non-numeric", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl:1: field 'target': position 7: '12,5' is not a number",
             _jsonl_text_value),
    BadInput("ts-csv-non-numeric", 'TimeSeriesData(dataset="file", path="wide.csv").setup()',
             r"wide\.csv:4: column 'load': 'n/a\?' is not a number", _csv_text_value),
    BadInput("ts-jsonl-no-start", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl:2: record has no 'start' field", _jsonl_no_start),
    BadInput("ts-jsonl-no-target", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl:1: record has no 'target' field", _jsonl_no_target),
    BadInput("ts-jsonl-bad-start", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl:1: field 'start' 'yesterday-ish' is not a timestamp", _jsonl_bad_start),
    BadInput("ts-jsonl-all-missing", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl:2: field 'target' has no observed value \(all 120 steps are missing\)",
             _jsonl_all_missing),
    BadInput("ts-csv-all-missing", 'TimeSeriesData(dataset="file", path="wide.csv").setup()',
             r"wide\.csv: column 'empty' has no observed value", _csv_all_missing),
    BadInput("ts-csv-duplicated-timestamp",
             'TimeSeriesData(dataset="file", path="wide.csv").setup()',
             r"wide\.csv:12: duplicated timestamp", _csv_duplicated),
    BadInput("ts-csv-unsorted-timestamps",
             'TimeSeriesData(dataset="file", path="wide.csv").setup()',
             r"wide\.csv:23: timestamps are not increasing: 2021-01-01 20:00:00 comes after "
             r"2021-01-01 21:00:00",
             _csv_unsorted),
    BadInput("ts-csv-uneven-timestamps",
             'TimeSeriesData(dataset="file", path="wide.csv").setup()  # a row dropped',
             r"wide\.csv:52: timestamps are not evenly spaced", _csv_uneven),
    BadInput("ts-csv-freq-mismatch",
             'TimeSeriesData(dataset="file", path="daily.csv", freq="h").setup()',
             r"wide\.csv: timestamps are spaced 'D' but freq='h'", _csv_freq_mismatch),
    BadInput("ts-unknown-freq", 'TimeSeriesData(dataset="file", path="s.jsonl", freq="fortnightly")',
             r"freq: unknown frequency 'fortnightly'", _unknown_freq),
    BadInput("ts-freq-contradicts-dataset", 'TimeSeriesData(dataset="taylor", freq="D")',
             r"freq: 'D' contradicts dataset 'taylor', whose frequency is 'h'",
             _freq_contradicts_dataset),
    BadInput("ts-zero-prediction-length", 'TimeSeriesData(prediction_length=0)',
             r"prediction_length must be an integer >= 1, got 0", _zero_horizon),
    BadInput("ts-negative-context-length", 'TimeSeriesData(context_length=-24)',
             r"context_length must be an integer >= 1, got -24", _negative_context),
    BadInput("ts-context-longer-than-series", 'TimeSeriesData(context_length=5000).setup()',
             r"taylor: every series is shorter than 5192 steps \(context_length 5000 \+ "
             r"\(num_test_windows 7 \+ 1\) x prediction_length 24\): series 0 \(2016 steps\)",
             _context_longer_than_series),
    BadInput("ts-all-series-too-short", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl: every series is shorter than 40 steps .*series 'short' \(index 0\) "
             r"\(30 steps\), series 1 \(31 steps\)", _all_series_too_short),
    BadInput("ts-unknown-file-type",
             'TimeSeriesData(dataset="file", path="series.parquet").setup()',
             r"series\.parquet: unknown file type '\.parquet'", _unknown_file_type),
    BadInput("ts-number-as-dataset", "TimeSeriesData(dataset=42)",
             r"dataset: expected a name .*a pandas DataFrame / Series or a GluonTS dataset, got "
             r"a int", _number_as_dataset),
    BadInput("ts-df-no-target-column", "TimeSeriesData(dataset=df)  # columns item_id, timestamp, load",
             r"DataFrame\(120 rows x 3 columns\): no target column 'target' \(have \['item_id', "
             r"'timestamp', 'load'\]\); pass target=", _df_no_target),
    BadInput("ts-df-unsorted-timestamps", "TimeSeriesData(dataset=df)  # two rows swapped",
             r"DataFrame\(240 rows x 3 columns\): item 'b': 'timestamp': timestamps are not "
             r"increasing: 2021-01-01 10:00:00 comes after 2021-01-01 11:00:00", _df_unsorted),
    BadInput("ts-df-mixed-freq", "TimeSeriesData(dataset=df)  # hourly item a, daily item b",
             r"mixed frequencies: item 'a' is 'h', item 'b' is 'D'", _df_mixed_freq),
    BadInput("ts-df-uneven-timestamps", "TimeSeriesData(dataset=df)  # a row dropped",
             r"item 'a': 'timestamp': timestamps are not evenly spaced \(2021-01-03 01:00:00 -> "
             r"2021-01-03 03:00:00", _df_uneven),
    BadInput("ts-df-unknown-freq", 'TimeSeriesData(dataset=df, freq="every other tuesday")',
             r"freq: unknown frequency 'every other tuesday'", _df_unknown_freq),
    BadInput("ts-df-wide-without-time-index", "TimeSeriesData(dataset=df)  # a RangeIndex",
             r"no 'target' column and the index is not timestamps \(RangeIndex\)",
             _df_wide_without_time_index),
    BadInput("ts-jsonl-without-freq", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl: JSON lines carry no frequency; pass freq=", _jsonl_without_freq),
    BadInput("ts-series-non-numeric", "TimeSeriesData(dataset=pd.Series([...'oops'...]))",
             r"Series\('load', 120 rows\): column 'load': row Timestamp\('2021-01-01 "
             r"03:00:00'\): 'oops' is not a number", _series_text),
    BadInput("ts-zero-test-windows", "TimeSeriesData(num_test_windows=0)",
             r"num_test_windows must be an integer >= 1, got 0", _zero_test_windows),
    BadInput("ts-jsonl-mixed-channels", 'TimeSeriesData(dataset="file", path="s.jsonl").setup()',
             r"s\.jsonl: series 'mv' \(index 1\) has 2 channels, series 0 has 1",
             _jsonl_mixed_channels),
    BadInput("ts-csv-no-time-column", 'TimeSeriesData(dataset="file", path="wide.csv").setup()',
             r"wide\.csv:3: the first column \('a'\) must be the time index \(timestamps or "
             r"step numbers\), got 10\.70", _csv_no_time_column),
    BadInput("ts-jsonl-missing-covariate",
             'TimeSeriesData(dataset="file", path="s.jsonl", covariates="file").setup()',
             r"s\.jsonl:1: field 'feat_dynamic_real' holds NaN or infinite values",
             _jsonl_missing_covariate),
    BadInput("ts-cli-context-mismatch",
             "domaindiff fit --config fit.yaml  # model context_length 24, data 48",
             r"context_length: the model has 24 but the data \(taylor\) has 48; set it once, in "
             r"the data", _cli_length_mismatch),
    BadInput("ts-model-lags-mismatch", "TSDiff(lags=[24, 48]).link_data(TimeSeriesData(lags=[24]))",
             r"lags: the model has \[24, 48\] but the data \(taylor\) has \[24\]",
             _model_data_mismatch),
    BadInput("ts-cli-unknown-dataset", "domaindiff fit --config fit.yaml  # dataset: taylour",
             r"dataset: unknown 'taylour'; use 'taylor', 'file' or one of \[.*'solar_nips'",
             _cli_unknown_dataset),
    BadInput("ts-cli-infinity",
             "domaindiff fit --config fit.yaml  # dataset: file, path: load.jsonl (Infinity)",
             r"load\.jsonl:1: field 'target': infinite value at position 40 \(timestamp "
             r"2021-01-02 16:00:00\)", _cli_infinity),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)


def test_short_series_among_long_ones_are_dropped_with_a_count(tmp_path):
    from domaindiff_timeseries.data import MissingValuesWarning

    p = _jsonl(tmp_path, [{"start": "2021-01-01", "target": _values()},
                          {"start": "2021-01-01", "target": _values(30)}])
    with pytest.warns(MissingValuesWarning, match=r"1 of 2 series shorter than 40 steps .* "
                                                  r"dropped: series 1 \(30 steps\)"):
        dm = TimeSeriesData(dataset="file", path=str(p), context_length=24,
                            prediction_length=8, lags=[8], num_test_windows=1, freq="h")
        dm.load()
    assert len(dm.test_series) == 1 and len(dm.test_series[0]) == N


def test_frequency_comes_from_the_csv_timestamps(tmp_path):
    p = _csv(tmp_path, pd.date_range("2021-01-04", periods=N, freq="D"), {"a": _values()})
    dm = TimeSeriesData(dataset="file", path=str(p), context_length=24, prediction_length=8,
                        lags=[], num_test_windows=1)
    dm.load()
    assert dm.freq == "D" and dm.season == 7
    monthly = _csv(tmp_path, pd.date_range("2001-01-01", periods=N, freq="MS"), {"a": _values()},
                   "monthly.csv")
    dm = TimeSeriesData(dataset="file", path=str(monthly), context_length=24, prediction_length=8,
                        lags=[], num_test_windows=1)
    dm.load()
    assert dm.freq == "MS" and dm.season == 12
