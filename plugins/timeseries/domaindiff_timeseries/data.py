"""Time-series data: the offline default, GluonTS datasets, JSON-lines / CSV files, windows.

The offline default is pmdarima's Taylor electricity demand (summed to hourly); GluonTS datasets
come through ``get_dataset``; custom data from GluonTS JSON lines or wide CSV files.

A series is an array ``(T, D)`` (``D = 1`` for univariate). Training draws random windows of
``context + prediction`` steps from the series truncated before the test range; testing uses the
GluonTS rolling evaluation: ``num_test_windows`` forecasts of ``prediction_length`` steps at the
end of each series. Every window is mean-scaled by the mean absolute value of its observed context
and comes with ``max(lags)`` steps of scaled history (``past``) for the lag channels.

Missing values (NaN, ``null`` or ``"NaN"`` in a file, empty CSV cells) are data, not zeros, as in
GluonTS: each window carries its ``observed`` mask (and ``past_observed`` for the lag history); a
missing step's input value is the last observed value before it (the first observed one at the
window's start), only a placeholder: the loss, the mean scale, the guidance and the metrics ignore
it. A window with no observed value in its context is skipped (counted, with a warning); the
number of missing values of each dataset is reported as a :class:`MissingValuesWarning`. Infinite
values, non-numeric entries, series without any observed value, unsorted or duplicated timestamps
are errors naming the file, the series and the position.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from domaindiff.data import DatasetUnavailableError, DomainDataModule
from domaindiff_timeseries.frequency import (
    check_freq,
    check_steps,
    default_lags,
    default_lengths,
    family,
    same_freq,
)
from domaindiff_timeseries.frequency import seasonality as _seasonality

#: GluonTS name -> (frequency, context length, prediction length, lags) as in TSDiff.
HOURLY_LAGS = [24 * k for k in (1, 2, 3, 4, 5, 6, 7, 14, 21, 28)]
DAILY_LAGS = [30 * k for k in range(1, 13)]
DATASETS: dict[str, tuple[str, int, int, list[int]]] = {
    "solar_nips": ("h", 336, 24, HOURLY_LAGS),
    "electricity_nips": ("h", 336, 24, HOURLY_LAGS),
    "traffic_nips": ("h", 336, 24, HOURLY_LAGS),
    "exchange_rate_nips": ("B", 360, 30, DAILY_LAGS),
    "m4_hourly": ("h", 312, 48, []),
    "uber_tlc_hourly": ("h", 336, 24, HOURLY_LAGS),
    "kdd_cup_2018_without_missing": ("h", 312, 48, HOURLY_LAGS),
    "wiki2000_nips": ("D", 360, 30, []),
}
OFFLINE = "taylor"


class MissingValuesWarning(UserWarning):
    """A dataset has missing values (treated as unobserved) or windows skipped for them."""


def _warn(message: str) -> None:
    warnings.warn(message, MissingValuesWarning, stacklevel=3)


def check_offset(freq: str, field: str = "freq") -> str:
    """Validate a pandas frequency alias (``"h"``, ``"D"``, ``"W"``, ``"MS"``, ``"B"`` ...).

    Returns its canonical spelling (see :func:`~domaindiff_timeseries.frequency.check_freq`).

    Raises:
        ValueError: naming ``field`` if pandas does not know the alias.
    """
    return check_freq(freq, field)


def _same_freq(a: str, b: str) -> bool:
    return same_freq(a, b)


def seasonality(freq: str) -> int:
    """Seasonality of a frequency (see :func:`domaindiff_timeseries.frequency.seasonality`).

    Hourly 24, business-daily 5, daily 7, weekly 52, monthly 12, quarterly 4, yearly 1.
    """
    return _seasonality(freq)


def check_series(series: list[np.ndarray], source: str, ids: list | None = None,
                 stamps: list | None = None) -> int:
    """Refuse infinite values and series without any observed value; count the missing ones.

    Args:
        series: ``(T, D)`` arrays (NaN: missing).
        source: the dataset or file, for the messages.
        ids: the item id of each series (default: its index).
        stamps: per series a function ``position -> timestamp text`` (or None).

    Returns:
        the number of missing (NaN) values over all series.

    Raises:
        ValueError: naming the source, the series and the position of the first bad value.
    """
    missing = 0
    for i, s in enumerate(series):
        name = _series_name(i, ids)
        bad = np.isinf(s)
        if bad.any():
            t, d = (int(v[0]) for v in np.nonzero(bad))
            when = _stamp(stamps, i, t)
            chan = f", channel {d}" if s.shape[1] > 1 else ""
            raise ValueError(f"{source}: series {name}: infinite value {s[t, d]} at position "
                             f"{t}{when}{chan} (missing values must be NaN/null, not infinite)")
        nan = int(np.isnan(s).sum())
        if nan == s.size:
            raise ValueError(f"{source}: series {name} has no observed value (all {len(s)} "
                             "steps are missing)")
        missing += nan
    return missing


def _series_name(i: int, ids: list | None) -> str:
    if ids is None or ids[i] is None:
        return f"{i}"
    return f"{ids[i]} (index {i})" if str(ids[i]).startswith("column ") else \
        f"{ids[i]!r} (index {i})"


def _stamp(stamps: list | None, i: int, t: int) -> str:
    if not stamps or stamps[i] is None:
        return ""
    try:
        return f" (timestamp {stamps[i](t)})"
    except Exception:  # noqa: BLE001 - a start that cannot be advanced: position only
        return ""


def report_missing(series: list[np.ndarray], source: str) -> int:
    """Warn how many values of ``series`` are missing (treated as unobserved); return the count."""
    n = sum(int(np.isnan(s).sum()) for s in series)
    if n:
        total = sum(s.size for s in series)
        k = sum(1 for s in series if np.isnan(s).any())
        _warn(f"{source}: {n} of {total} values missing ({100 * n / total:.1f}%) in {k} "
              "series; treated as unobserved")
    return n


def load_taylor_hourly() -> np.ndarray:
    """Half-hourly electricity demand of England and Wales (Taylor 2003), summed to hourly.

    Returns:
        ``(2016, 1)`` float32 array: 12 weeks of hourly demand (MW).
    """
    from pmdarima.datasets import load_taylor

    y = np.asarray(load_taylor(), dtype=np.float64)
    return y.reshape(-1, 2).sum(1).astype(np.float32)[:, None]


_MISSING = ("nan", "NaN", "NAN", "")


def _number(v) -> float:
    """One JSON entry as a float: a number, or ``null`` / ``"NaN"`` (missing)."""
    if v is None or (isinstance(v, str) and v.strip() in _MISSING):
        return np.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(repr(v))
    return float(v)


def _matrix(values, where: str = "", field: str = "target") -> np.ndarray:
    """A GluonTS list (univariate) or list of lists ``(D, T)`` as a ``(D, T)`` float32 array.

    Raises:
        ValueError: naming ``where``, the field and the position of a non-numeric entry.
    """
    if not isinstance(values, list):
        raise ValueError(f"{where}field {field!r} is not a list of numbers (got "
                         f"{type(values).__name__})")
    rows = values if values and isinstance(values[0], list) else [values]
    out = []
    for d, row in enumerate(rows):
        if not isinstance(row, list):
            raise ValueError(f"{where}field {field!r}: row {d} is not a list of numbers")
        vals = []
        for t, v in enumerate(row):
            try:
                vals.append(_number(v))
            except ValueError:
                chan = f"row {d}, " if len(rows) > 1 else ""
                raise ValueError(f"{where}field {field!r}: {chan}position {t}: {v!r} is not a "
                                 "number (missing values: null or \"NaN\")") from None
        out.append(vals)
    if len({len(r) for r in out}) > 1:
        raise ValueError(f"{where}field {field!r}: rows have different lengths "
                         f"{[len(r) for r in out]}")
    with np.errstate(over="ignore"):
        return np.array(out, dtype=np.float64).astype(np.float32)


def _parse_start(value, where: str):
    """The ``start`` timestamp of a record (``pandas.Timestamp``)."""
    import pandas as pd

    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}field 'start' must be a timestamp string, got {value!r}")
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}field 'start' {value!r} is not a timestamp") from err


def _read_record(rec, where: str, freq: str | None, covariates: bool) -> tuple:
    """``(target (T, D), covariates (T, C) | None, stamp function | None)`` of one record."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}a record must be a JSON object, got {type(rec).__name__}")
    for field in ("target", "start"):
        if field not in rec:
            raise ValueError(f"{where}record has no {field!r} field (GluonTS records: "
                             '{"start": "2020-01-01 00:00", "target": [...]})')
    start = _parse_start(rec["start"], where)
    tgt = _matrix(rec["target"], where).T
    if len(tgt) == 0:
        raise ValueError(f"{where}field 'target' is empty")
    if np.isnan(tgt).all():
        raise ValueError(f"{where}field 'target' has no observed value (all {len(tgt)} steps "
                         "are missing)")
    bad = np.isinf(tgt)
    if bad.any():
        t = int(np.nonzero(bad)[0][0])
        when = ""
        if freq:
            import pandas as pd

            when = f" (timestamp {pd.Timestamp(start) + t * pd.tseries.frequencies.to_offset(freq)})"
        raise ValueError(f"{where}field 'target': infinite value at position {t}{when} (missing "
                         "values must be null or \"NaN\")")
    cov = None
    if covariates and rec.get("feat_dynamic_real") is not None:
        cov = _matrix(rec["feat_dynamic_real"], where, "feat_dynamic_real").T
        if len(cov) != len(tgt):
            raise ValueError(f"{where}feat_dynamic_real has {len(cov)} steps, target {len(tgt)}")
        if not np.isfinite(cov).all():
            raise ValueError(f"{where}field 'feat_dynamic_real' holds NaN or infinite values "
                             "(covariates must be known at every step)")
    return tgt, cov, start


def read_jsonl(path: str | Path, covariates: bool = False, freq: str | None = None,
               item_ids: list | None = None, starts: list | None = None
               ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Read a GluonTS JSON-lines file (one ``{"start": ..., "target": [...]}`` per line).

    ``target`` may be a list (univariate) or a list of lists ``(D, T)`` (multivariate, GluonTS
    layout); ``"NaN"``/null entries become NaN (missing values). With ``covariates`` the dynamic
    real features ``feat_dynamic_real`` (``(C, T)``, GluonTS layout, known over the whole
    series including the forecast range) are returned too.

    Args:
        path: the file.
        covariates: also return the covariates.
        freq: the data's frequency (only used to give the timestamp of a bad value).
        item_ids: if given, receives each record's ``item_id`` (None where it has none).
        starts: if given, receives each record's ``start`` (``pandas.Timestamp``).

    Returns:
        list of ``(T, D)`` float32 arrays; with ``covariates`` also a list of ``(T, C)`` arrays
        (``None`` for a record without ``feat_dynamic_real``).

    Raises:
        ValueError: naming the file, the line, the field (and the position) of a line that is
            not JSON, lacks ``target`` or ``start``, or holds a non-numeric or infinite value.
    """
    path = Path(path)
    out, covs = [], []
    with path.open() as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not valid JSON ({err.msg})") from err
            item = rec.get("item_id") if isinstance(rec, dict) else None
            where = f"{path}:{i}: " + (f"item {item!r}: " if item is not None else "")
            tgt, cov, start = _read_record(rec, where, freq, covariates)
            if item_ids is not None:
                item_ids.append(item)
            if starts is not None:
                starts.append(start)
            out.append(tgt)
            covs.append(cov)
    if not out:
        raise ValueError(f"{path}: no series")
    return (out, covs) if covariates else out


def write_jsonl(series: list[np.ndarray], path: str | Path, start: str = "2020-01-01 00:00:00",
                covariates: list[np.ndarray] | None = None) -> None:
    """Write ``(T, D)`` series (and ``(T, C)`` ``feat_dynamic_real``) as GluonTS JSON lines."""
    from domaindiff.data import atomic_write

    with atomic_write(path, "w") as fh:
        for i, s in enumerate(series):
            s = np.asarray(s, dtype=np.float64)
            s = s[:, None] if s.ndim == 1 else s
            tgt = s[:, 0].tolist() if s.shape[1] == 1 else s.T.tolist()
            rec = {"start": start, "target": tgt}
            if covariates is not None:
                c = np.asarray(covariates[i], dtype=np.float64)
                rec["feat_dynamic_real"] = (c[:, None] if c.ndim == 1 else c).T.tolist()
            fh.write(json.dumps(rec) + "\n")


def time_features(length: int, freq: str = "h", offset: int = 0, start=None) -> np.ndarray:
    """Calendar covariates ``(length, C)`` in ``[-1, 1]``.

    Sin/cos of the position in the day and week (hourly and finer), in the week (daily,
    business-daily), in the year (weekly, monthly, quarterly), counted from ``offset`` steps, plus
    the phase of ``start`` (a timestamp: the first step's hour, weekday, week, month or quarter)
    when it is given.

    Raises:
        ValueError: for yearly data (no calendar cycle to encode).
    """
    fam = family(freq)
    n = int(getattr(_offset(freq), "n", 1) or 1)
    if fam == "Y":
        raise ValueError(f"covariates='time': yearly data (freq {freq!r}) has no calendar cycle "
                         "to encode; use covariates=null or 'file'")
    if fam in ("h", "min", "s"):
        per_day = seasonality(freq)
        periods: tuple[float, ...] = (per_day, 7 * per_day)
    else:
        periods = {"D": (7 / n,), "B": (5 / n,), "W": (365.25 / 7 / n,), "M": (12 / n,),
                   "Q": (4 / n,)}[fam]
    if start is not None:
        offset += _calendar_phase(start, fam, periods[0], n)
    i = np.arange(offset, offset + length, dtype=np.float64)
    feats = [f(2 * np.pi * i / p) for p in periods for f in (np.sin, np.cos)]
    return np.stack(feats, 1).astype(np.float32)


def _offset(freq: str):
    from domaindiff_timeseries.frequency import _offset as off

    return off(freq)


def _calendar_phase(start, fam: str, per_day: float, n: int) -> float:
    """Steps from the start of the calendar cycle to ``start``."""
    import pandas as pd

    ts = pd.Timestamp(start)
    if fam in ("h", "min", "s"):
        seconds = ts.dayofweek * 86400 + (ts - ts.normalize()).total_seconds()
        return seconds / (86400 / per_day)
    if fam in ("D", "B"):
        return ts.dayofweek / n
    if fam == "W":
        return (ts.dayofyear - 1) / 7 / n
    if fam == "M":
        return (ts.month - 1) / n
    return (ts.month - 1) // 3 / n


def read_csv(path: str | Path, columns: list[str] | None = None,
             freq: str | None = None) -> list[np.ndarray]:
    """Read a wide CSV (one column per univariate series, first column the time index).

    Empty cells (and ``NaN``) are missing values. Line numbers in messages count the header as
    line 1.

    Args:
        path: the file.
        columns: the series columns to read (default: all).
        freq: the expected frequency; timestamps spaced otherwise are an error.

    Raises:
        ValueError: naming the file, the line and the column of a missing column, a
            non-numeric or infinite value, a column without any observed value, or duplicated,
            unsorted or unevenly spaced timestamps (and a frequency other than ``freq``).
    """
    return read_csv_frame(path, columns, freq)[0]


def read_csv_frame(path: str | Path, columns: list[str] | None = None,
                   freq: str | None = None) -> tuple[list[np.ndarray], str | None]:
    """:func:`read_csv` that also returns the frequency of the timestamps (None if unknown)."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, index_col=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a CSV table ({str(err).strip().splitlines()[0]})") \
            from err
    if df.shape[1] == 0:
        raise ValueError(f"{path}: no series columns (expected a time column, then one column "
                         "per series)")
    inferred = _check_index(df.index, path, freq)
    cols = columns or list(df.columns)
    out = []
    for c in cols:
        if c not in df.columns:
            raise ValueError(f"{path}: no column {c!r} (have {list(df.columns)})")
        out.append(_csv_column(df[c], path, c))
    return out, inferred


def _csv_column(col, path: Path, name: str) -> np.ndarray:
    """One CSV column as a ``(T, 1)`` float32 array, refusing text and infinite values."""
    import pandas as pd

    num = pd.to_numeric(col, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() & col.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}:{i + 2}: column {name!r}: {col.iloc[i]!r} is not a number "
                         "(leave the cell empty for a missing value)")
    arr = num.to_numpy(dtype=np.float64)
    inf = np.flatnonzero(np.isinf(arr))
    if inf.size:
        i = int(inf[0])
        raise ValueError(f"{path}:{i + 2}: column {name!r}: infinite value at "
                         f"{col.index[i]} (leave the cell empty for a missing value)")
    if np.isnan(arr).all():
        raise ValueError(f"{path}: column {name!r} has no observed value (all {len(arr)} rows "
                         "are empty)")
    return arr.astype(np.float32)[:, None]


def _check_index(index, path: Path, freq: str | None) -> str | None:
    """Refuse duplicated, unsorted or unevenly spaced timestamps; return their frequency."""
    import pandas as pd

    idx = index
    if idx.dtype == object:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                idx = pd.DatetimeIndex(pd.to_datetime(index, errors="raise"))
        except (ValueError, TypeError):
            return None  # labels, not timestamps: rows are consecutive steps
    if not (isinstance(idx, pd.DatetimeIndex) or pd.api.types.is_numeric_dtype(idx)):
        return None
    if not isinstance(idx, pd.DatetimeIndex):
        raw = np.asarray(idx, np.float64)
        if not np.all(np.isfinite(raw) & (raw == np.round(raw))):
            i = int(np.flatnonzero(~(np.isfinite(raw) & (raw == np.round(raw))))[0])
            raise ValueError(f"{path}:{i + 2}: the first column ({index.name!r}) must be the time "
                             f"index (timestamps or step numbers), got {index[i]}")
    inferred = check_steps(idx, lambda i: f"{path}:{i + 2}", labels=index)
    if inferred is None:
        return None
    if freq is not None and not _same_freq(freq, inferred):
        raise ValueError(f"{path}: timestamps are spaced {inferred!r} but freq={freq!r}")
    return check_freq(inferred)


def load_gluonts(name: str, cache: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train and test targets of a GluonTS repository dataset (cached under ``cache``).

    Raises:
        DatasetUnavailableError: the dataset cannot be downloaded (offline).
    """
    try:
        from gluonts.dataset.repository import get_dataset

        ds = get_dataset(name, path=cache, regenerate=False)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise DatasetUnavailableError(
            f"GluonTS dataset {name!r} could not be loaded into {cache} ({type(err).__name__}: "
            f"{err}). It needs internet access once; offline, use dataset='taylor' or a local "
            "file (path=...jsonl)") from err
    train, test, ids = [], [], []
    for e in ds.train:
        train.append(np.asarray(e["target"], np.float32).reshape(-1, 1))
        ids.append(e.get("item_id"))
    test_ids = []
    for e in ds.test:
        test.append(np.asarray(e["target"], np.float32).reshape(-1, 1))
        test_ids.append(e.get("item_id"))
    check_series(train, f"GluonTS dataset {name!r} (train)", ids)
    check_series(test, f"GluonTS dataset {name!r} (test)", test_ids)
    return train, test


def mean_scale(context: np.ndarray, observed: np.ndarray | None = None,
               minimum: float = 1e-10) -> np.ndarray:
    """Mean absolute value of the observed context per channel (GluonTS ``MeanScaler``).

    A channel with no observed non-zero value falls back to the batch mean, then to 1.
    """
    obs = np.isfinite(context) if observed is None else observed.astype(bool) & np.isfinite(
        context)
    vals = np.where(obs, np.abs(np.nan_to_num(context)), 0.0)
    n = obs.sum(0)
    scale = vals.sum(0) / np.maximum(n, 1)
    default = scale[scale > 0].mean() if (scale > 0).any() else 1.0
    return np.maximum(np.where(scale > 0, scale, default), minimum).astype(np.float32)


def fill_missing(values: np.ndarray) -> np.ndarray:
    """Placeholders for missing (NaN) steps of ``(T, D)`` values: the last observed value before.

    Leading missing steps take the first observed value; a channel with none observed takes 0.
    Only inputs are filled this way: they are marked unobserved and never scored or trained on.
    """
    obs = ~np.isnan(values)
    if obs.all():
        return values
    pos = np.arange(len(values))[:, None]
    last = np.maximum.accumulate(np.where(obs, pos, -1), axis=0)
    first = np.where(obs.any(0), obs.argmax(0), 0)
    last = np.where(last < 0, first[None, :], last)
    return np.nan_to_num(np.take_along_axis(values, last, 0))


def make_window(series: np.ndarray, end: int, context_length: int, prediction_length: int,
                max_lag: int, covariates: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The window ending at ``end`` (exclusive), scaled by its context's mean absolute value.

    Missing (NaN) steps are marked unobserved in ``observed`` / ``past_observed`` and their
    input values are placeholders (see :func:`fill_missing`); ``target`` keeps them as NaN.

    Returns:
        ``x`` ``(L, D)`` (context + horizon, scaled), ``past`` ``(max_lag, D)`` (scaled history
        before the window, zero-padded where the series starts later), ``observed`` ``(L, D)``
        (1 where the value is observed), ``past_observed`` ``(max_lag, D)`` (0 where the
        history is missing or before the series starts), ``scale`` ``(D,)``, ``target``
        ``(L, D)`` unscaled (NaN where missing); with ``covariates`` (``(T, C)``, known over the
        whole series) also ``covariates`` ``(L, C)``.
    """
    length = context_length + prediction_length
    start = end - length
    if start < 0:
        raise ValueError(f"window ending at {end} needs {length} steps; series has only {end}")
    lo = max(0, start - max_lag) if max_lag else start
    seen = series[lo:end]
    observed_all = np.isfinite(seen).astype(np.float32)
    filled = fill_missing(np.where(np.isinf(seen), np.nan, seen))
    k = start - lo
    win, observed = filled[k:], observed_all[k:]
    scale = mean_scale(seen[k:][:context_length], observed[:context_length])
    past = np.zeros((max_lag, series.shape[1]), np.float32)
    past_obs = np.zeros((max_lag, series.shape[1]), np.float32)
    if max_lag and k:
        past[max_lag - k:] = filled[:k]
        past_obs[max_lag - k:] = observed_all[:k]
    out = {"x": (win / scale).astype(np.float32), "past": (past / scale).astype(np.float32),
           "observed": observed, "past_observed": past_obs, "scale": scale,
           "target": np.asarray(seen[k:], np.float32)}
    if covariates is not None:
        out["covariates"] = np.asarray(covariates[start:end], np.float32)
    return out


def observed_context_ends(series: np.ndarray, context_length: int,
                          prediction_length: int) -> np.ndarray:
    """The window ends (exclusive) of ``series`` whose context has at least one observed value."""
    length = context_length + prediction_length
    if len(series) < length:
        return np.zeros(0, np.int64)
    seen = np.concatenate([[0], np.cumsum(np.isfinite(series).any(1))])
    starts = np.arange(len(series) - length + 1)
    ok = seen[starts + context_length] - seen[starts] > 0
    return starts[ok] + length


class _RandomWindows(Dataset):
    """``num_batches * batch_size`` random training windows (fresh every epoch via the index).

    Windows are drawn uniformly among those whose context has an observed value; the others
    (and the series shorter than one window) are counted in ``skipped_windows`` /
    ``short_series`` and reported by :class:`TimeSeriesData`.
    """

    def __init__(self, series: list[np.ndarray], context_length: int, prediction_length: int,
                 max_lag: int, size: int, seed: int,
                 covariates: list[np.ndarray] | None = None, source: str = "data") -> None:
        self.series, self.size, self.seed = series, size, seed
        self.covariates = covariates
        self.c, self.p, self.max_lag = context_length, prediction_length, max_lag
        length = context_length + prediction_length
        self.valid, self.ends, counts = [], [], []
        self.short_series = self.skipped_windows = 0
        for i, s in enumerate(series):
            if len(s) < length:
                self.short_series += 1
                continue
            ends = observed_context_ends(s, context_length, prediction_length)
            self.skipped_windows += len(s) - length + 1 - len(ends)
            if len(ends):
                self.valid.append(i)
                # all windows usable: draw the end directly (keeps the original random stream)
                self.ends.append(None if len(ends) == len(s) - length + 1 else ends)
                counts.append(len(ends))
        if not self.valid:
            longest = max((len(s) for s in series), default=0)
            why = f"the longest has {longest}" if self.short_series == len(series) else \
                "the others have no observed value in any window's context"
            raise ValueError(f"{source}: no training window: {self.short_series} of "
                             f"{len(series)} training series are shorter than {length} steps "
                             f"(context_length {context_length} + prediction_length "
                             f"{prediction_length}); {why}")
        w = np.array(counts, dtype=np.float64)
        self.p_series = w / w.sum()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s windows (the train sampler calls this before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, idx))
        j = rng.choice(len(self.valid), p=self.p_series)
        i = self.valid[j]
        s = self.series[i]
        ends = self.ends[j]
        end = int(rng.integers(self.c + self.p, len(s) + 1)) if ends is None else \
            int(ends[rng.integers(len(ends))])
        cov = None if self.covariates is None else self.covariates[i]
        w = make_window(s, end, self.c, self.p, self.max_lag, cov)
        return {k: torch.from_numpy(v) for k, v in w.items() if k != "target"}


class TimeSeriesData(DomainDataModule):
    """Windows of a time-series dataset for TSDiff.

    Args:
        dataset: ``"taylor"`` (offline default), a GluonTS name (see :data:`DATASETS`),
            ``"file"`` with ``path``, or the data itself: a pandas ``DataFrame`` (long: columns
            ``item_id``, ``timestamp``, ``target``; or wide: a time index and one column per
            series), a pandas ``Series``, a GluonTS ``ListDataset`` / ``PandasDataset`` (see
            :mod:`domaindiff_timeseries.inputs`).
        path: a GluonTS JSON-lines (``.json``/``.jsonl``), a wide CSV (time column first, one
            column per series) or a long CSV (with a ``target`` column) (``dataset="file"``).
        context_length: context steps (default: the dataset's settings, else the frequency's,
            see :func:`~domaindiff_timeseries.frequency.default_lengths`).
        prediction_length: forecast steps (default as ``context_length``).
        lags: lag channels (steps); ``None``: the dataset's TSDiff lags, else GluonTS's lags of
            the frequency (:func:`~domaindiff_timeseries.frequency.default_lags`).
        num_test_windows: rolling test windows per series (GluonTS ``windows``).
        batches_per_epoch: training batches per epoch (TSDiff: 128).
        batch_size: batch size (TSDiff: 64).
        num_workers: DataLoader workers.
        seed: window sampling seed.
        root: cache directory.
        covariates: dynamic covariates per window (``covariates`` ``(L, C)``, known over context
            and horizon): ``None`` (none), ``"time"`` (calendar features from each series' start,
            see :func:`time_features`), ``"file"`` (the JSON-lines or GluonTS records'
            ``feat_dynamic_real``, standardised per series over its training range) or
            ``"file+time"``.
        freq: the data's frequency (pandas alias: ``"h"``, ``"D"``, ``"W"``, ``"MS"`` ...). ``None``:
            the dataset's own, or the data's timestamps (CSV, DataFrame, GluonTS periods). Data
            whose timestamps do not tell it (JSON lines, a CSV indexed by step numbers) need it;
            a value that contradicts the dataset or the timestamps is an error.
        season: seasonal period of MASE and seasonal naive (``None``: the frequency's, see
            :func:`~domaindiff_timeseries.frequency.seasonality`).
        target: the value column of a long DataFrame / CSV.
        item_id: the item column of a long DataFrame / CSV.
        timestamp: the time column of a long DataFrame / CSV.

    The frequency and everything that follows from it (season, default lengths and lags) are
    known once the data is read: for a file or a DataFrame without ``freq``, reading
    :attr:`context_length`, :attr:`prediction_length`, :attr:`lags`, :attr:`freq` or
    :attr:`season` reads the data first.

    Missing values are reported (:class:`MissingValuesWarning`) and treated as unobserved;
    series shorter than the test windows need are dropped with a warning naming them (an error
    if none is left); training, validation and test windows without any observed context value
    are skipped with a count.
    """

    name = "timeseries"

    def __init__(self, dataset: Any = OFFLINE, path: str | None = None,
                 context_length: int | None = None, prediction_length: int | None = None,
                 lags: list[int] | None = None, num_test_windows: int = 7,
                 batches_per_epoch: int = 128, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, root: str | None = None, covariates: str | None = None,
                 freq: str | None = None, season: int | None = None, target: str = "target",
                 item_id: str = "item_id", timestamp: str = "timestamp") -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        from domaindiff_timeseries.inputs import describe, is_user_data

        self.user_data = None
        if is_user_data(dataset):
            self.user_data, dataset = dataset, "data"
            own, table = None, None
        elif not isinstance(dataset, str):
            raise ValueError(f"dataset: expected a name ('taylor', 'file' or one of "
                             f"{sorted(DATASETS)}), a pandas DataFrame / Series or a GluonTS "
                             f"dataset, got a {type(dataset).__name__}")
        elif dataset == OFFLINE:
            own, table = "h", (336, 24, HOURLY_LAGS[:7])
        elif dataset == "file":
            if not path:
                raise ValueError("dataset='file' needs path=<.jsonl or .csv file>")
            own, table = None, None
        elif dataset in DATASETS:
            f, c, p, lg = DATASETS[dataset]
            own, table = f, (c, p, lg)
        else:
            raise ValueError(f"dataset: unknown {dataset!r}; use 'taylor', 'file' or one of "
                             f"{sorted(DATASETS)}")
        if freq is not None:
            freq = check_offset(freq)
            if own is not None and not _same_freq(freq, own):
                raise ValueError(f"freq: {freq!r} contradicts dataset {dataset!r}, whose "
                                 f"frequency is {own!r}")
        self._source_name = describe(self.user_data) if self.user_data is not None else None
        self.columns = {"target": target, "item_id": item_id, "timestamp": timestamp}
        self.freq_option = freq
        self.dataset, self.path = dataset, path
        self._options = {"context_length": None if context_length is None else
                         _length("context_length", context_length, 1),
                         "prediction_length": None if prediction_length is None else
                         _length("prediction_length", prediction_length, 1),
                         "lags": None if lags is None else sorted(int(x) for x in lags),
                         "season": None if season is None else _length("season", season, 1)}
        if self._options["lags"] is not None and any(x < 1 for x in self._options["lags"]):
            raise ValueError(f"lags must be positive, got {self._options['lags']}")
        self._table_defaults = table
        for name, v in (("num_test_windows", num_test_windows),
                        ("batches_per_epoch", batches_per_epoch)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        self.num_test_windows, self.batches_per_epoch = num_test_windows, batches_per_epoch
        if covariates not in (None, "time", "file", "file+time"):
            raise ValueError(f"covariates: use null, 'time', 'file' or 'file+time', got "
                             f"{covariates!r}")
        if covariates and "file" in covariates and dataset not in ("file", "data"):
            raise ValueError("covariates='file' reads feat_dynamic_real of dataset='file' "
                             "(a .jsonl path) or of a GluonTS dataset")
        self.covariates = covariates
        self.train_cov: list[np.ndarray] | None = None
        self.test_cov: list[np.ndarray] | None = None
        self.starts: list | None = None
        self._loaded = False
        self._resolved = False
        if own is not None or freq is not None:
            self._resolve(freq or own)

    # -- frequency and what follows from it -------------------------------------------------------
    def _resolve(self, freq: str) -> None:
        """Fix the frequency, the season, the lengths and the lags (options win)."""
        opt = self._options
        self._set_freq(freq)
        if opt["season"] is not None:
            self._season = opt["season"]
        if self._table_defaults is not None:
            c, p, lg = self._table_defaults
        else:
            c, p = default_lengths(self._freq)
            lg = None
        self._context_length = opt["context_length"] or c
        self._prediction_length = opt["prediction_length"] or p
        if opt["lags"] is not None:
            lags = opt["lags"]
        elif lg is not None:
            lags = lg
        else:
            lags = default_lags(self._freq, self._context_length)
        self._lags = sorted(int(x) for x in lags)
        self._resolved = True

    def _set_freq(self, freq: str) -> None:
        self._freq = freq
        self._season = self._options["season"] or seasonality(freq)

    def _need(self, attr: str):
        if not self._resolved:
            self.load()
        if not self._resolved:  # a subclass's load that did not resolve
            raise RuntimeError(f"{self.source}: {attr} is not known before the data is read")
        return getattr(self, "_" + attr)

    @property
    def freq(self) -> str:
        """The data's frequency (pandas alias)."""
        return self._need("freq")

    @freq.setter
    def freq(self, value: str) -> None:
        self._freq = value

    @property
    def season(self) -> int:
        """Seasonal period of MASE and seasonal naive."""
        return self._need("season")

    @season.setter
    def season(self, value: int) -> None:
        self._season = int(value)

    @property
    def context_length(self) -> int:
        """Context steps."""
        return self._need("context_length")

    @context_length.setter
    def context_length(self, value: int) -> None:
        self._context_length = int(value)

    @property
    def prediction_length(self) -> int:
        """Forecast steps."""
        return self._need("prediction_length")

    @prediction_length.setter
    def prediction_length(self, value: int) -> None:
        self._prediction_length = int(value)

    @property
    def lags(self) -> list[int]:
        """Lag channels (steps)."""
        return self._need("lags")

    @lags.setter
    def lags(self, value: list[int]) -> None:
        self._lags = sorted(int(x) for x in value)

    @property
    def max_lag(self) -> int:
        """The longest lag (0 without lags)."""
        return max(self.lags, default=0)

    @property
    def source(self) -> str:
        """The dataset's name, the file's path or the object's description, for messages."""
        if self.dataset == "data":
            return f"dataset {self._source_name}"
        return str(self.path) if self.dataset == "file" else self.dataset

    # -- loading ----------------------------------------------------------------------------------
    def _freq_of(self, found: str | None) -> str:
        """The frequency: the option (checked against the data's), the data's, else an error."""
        opt = self.freq_option
        if opt is not None and found is not None and not _same_freq(opt, found):
            raise ValueError(f"{self.source}: timestamps are spaced {found!r} but freq={opt!r}")
        if opt is None and found is None:
            what = ("JSON lines carry no frequency" if self.dataset == "file" and
                    Path(self.path).suffix in (".json", ".jsonl") else
                    "its timestamps do not tell the frequency")
            raise ValueError(f"{self.source}: {what}; pass freq=... (a pandas alias such as "
                             "'h', 'D', 'W', 'MS', 'QS' or 'YS')")
        return opt or found

    def _read_table(self):
        """The series of ``path`` or of the user's object, as a SeriesTable."""
        from domaindiff_timeseries.inputs import SeriesTable, read_input

        cols = self.columns
        if self.user_data is not None:
            return read_input(self.user_data, None, **cols)
        p = Path(self.path)
        if not p.is_file():
            raise FileNotFoundError(f"path: {p} does not exist")
        if p.suffix in (".json", ".jsonl"):
            ids, starts = [], []
            full, covs = read_jsonl(p, covariates=True, freq=self.freq_option, item_ids=ids,
                                    starts=starts)
            return SeriesTable(full, ids, starts, None, covs, str(p))
        if p.suffix not in (".csv", ".txt", ".tsv"):
            raise ValueError(f"path: {p}: unknown file type {p.suffix!r} (use GluonTS JSON lines "
                             ".jsonl/.json or a .csv)")
        import pandas as pd

        try:
            head = pd.read_csv(p, nrows=0)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"{p}: not a CSV table ({str(err).strip().splitlines()[0]})") \
                from err
        if cols["target"] in head.columns:  # long format
            table = read_input(pd.read_csv(p), None, **cols)
            table.source = str(p)
            return table
        full, inferred = read_csv_frame(p, freq=self.freq_option)
        index = pd.read_csv(p, index_col=0, usecols=[0]).index
        start = None
        if inferred is not None:
            start = pd.Timestamp(pd.to_datetime(index[:1])[0])
        ids = [f"column {c}" for c in head.columns[1:]]
        return SeriesTable(full, ids, [start] * len(full), inferred, [None] * len(full), str(p))

    def _read_file(self) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """The series (and ``feat_dynamic_real``) of ``path`` or of the user's object.

        Sets the frequency (and what follows from it), the item ids and the starts.
        """
        table = self._read_table()
        freq = self._freq_of(table.freq)
        if not self._resolved:
            self._resolve(freq)
        self._ids, self.starts = list(table.ids), list(table.starts)
        return table.series, list(table.covariates)

    def _drop_short(self, full: list, covs: list, need: int) -> tuple[list, list]:
        """Drop (and report) the series shorter than ``need`` steps; refuse if none is left."""
        short = [i for i, s in enumerate(full) if len(s) < need]
        if not short:
            return full, covs
        what = (f"shorter than {need} steps (context_length {self.context_length} + "
                f"(num_test_windows {self.num_test_windows} + 1) x prediction_length "
                f"{self.prediction_length})")
        ids = getattr(self, "_ids", None)
        listed = ", ".join(f"series {_series_name(i, ids)} ({len(full[i])} steps)"
                           for i in short[:5])
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        if len(short) == len(full):
            raise ValueError(f"{self.source}: every series is {what}: {listed}{more}")
        _warn(f"{self.source}: {len(short)} of {len(full)} series {what} dropped: {listed}{more}")
        keep = [i for i in range(len(full)) if i not in set(short)]
        if ids is not None:
            self._ids = [ids[i] for i in keep]
        if self.starts is not None:
            self.starts = [self.starts[i] for i in keep]
        return [full[i] for i in keep], [covs[i] for i in keep]

    def load(self) -> None:
        """Read the series and split training / test the GluonTS way."""
        if self._loaded:
            return
        if self.dataset in DATASETS:
            train, test = load_gluonts(self.dataset, self.cache_dir)
            self.test_series = test
            self.train_series = train
            report_missing(train, self.source)
        else:
            if self.dataset == OFFLINE:
                full, file_cov = [load_taylor_hourly()], [None]
            else:
                full, file_cov = self._read_file()
            h, k = self.prediction_length, self.num_test_windows
            check_series(full, self.source, getattr(self, "_ids", None))
            dims = sorted({s.shape[1] for s in full})
            if len(dims) > 1:
                i = next(i for i, s in enumerate(full) if s.shape[1] != full[0].shape[1])
                raise ValueError(f"{self.source}: series {_series_name(i, getattr(self, '_ids', None))}"
                                 f" has {full[i].shape[1]} channels, series 0 has "
                                 f"{full[0].shape[1]} (every series needs the same number)")
            full, file_cov = self._drop_short(full, file_cov,
                                              self.context_length + h * (k + 1))
            report_missing(full, self.source)
            if self.covariates and "file" in self.covariates:
                if any(c is None for c in file_cov):
                    raise ValueError(f"{self.source}: covariates='file' needs feat_dynamic_real "
                                     "in every record")
                for i, c in enumerate(file_cov):
                    if not np.isfinite(c).all():
                        raise ValueError(f"{self.source}: series {_series_name(i, self._ids)}: "
                                         "feat_dynamic_real holds NaN or infinite values "
                                         "(covariates must be known at every step)")
                self.test_cov = [self._standardise(c, len(c) - k * h) for c in file_cov]
            self.test_series = full
            self.train_series = [s[: len(s) - k * h] for s in full]
        if self.covariates and "time" in self.covariates:
            starts = self.starts or [None] * len(self.test_series)
            cal = [time_features(len(s), self.freq, start=st)
                   for s, st in zip(self.test_series, starts)]
            self.test_cov = cal if self.test_cov is None else [
                np.concatenate([c, t], 1) for c, t in zip(self.test_cov, cal)]
        if self.test_cov is not None:
            if self.dataset in DATASETS:  # nips test series extend the training series
                self.train_cov = [time_features(len(s), self.freq) for s in self.train_series]
            else:
                self.train_cov = [c[: len(s)] for c, s in zip(self.test_cov, self.train_series)]
        self._loaded = True

    @staticmethod
    def _standardise(cov: np.ndarray, train_len: int) -> np.ndarray:
        """Zero mean, unit variance per channel over the training range."""
        ref = cov[:train_len]
        mu, sd = np.nanmean(ref, 0), np.nanstd(ref, 0)
        return np.nan_to_num((cov - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32)

    @property
    def num_covariates(self) -> int:
        """Covariate channels per step (0 without covariates)."""
        self.load()
        return 0 if self.test_cov is None else int(self.test_cov[0].shape[1])

    def test_windows(self) -> list[dict[str, np.ndarray]]:
        """The rolling test windows: the last ``num_test_windows`` forecasts of each series.

        GluonTS ``*_nips`` test sets already hold one series per rolling date, so there each test
        series contributes its last window.
        """
        self.load()
        per = 1 if self.dataset in DATASETS else self.num_test_windows
        out, skipped, total = [], 0, 0
        length = self.context_length + self.prediction_length
        for i, s in enumerate(self.test_series):
            cov = None if self.test_cov is None else self.test_cov[i]
            for j in range(per - 1, -1, -1):
                end = len(s) - j * self.prediction_length
                if end < length:
                    continue
                total += 1
                if not np.isfinite(s[end - length: end - self.prediction_length]).any():
                    skipped += 1
                    continue
                w = make_window(s, end, self.context_length, self.prediction_length,
                                self.max_lag, cov)
                w["history"] = np.asarray(s[:end - self.prediction_length])
                w["series_index"] = i
                w["forecast_start"] = self._stamp_at(i, end - self.prediction_length)
                out.append(w)
        if skipped:
            _warn(f"{self.source}: {skipped} of {total} test windows have no observed value in "
                  "their context; skipped")
        if not out:
            raise ValueError(f"{self.source}: no test window (each needs {length} steps with an "
                             "observed value in its context)")
        return out

    def _stamp_at(self, i: int, position: int):
        """The timestamp of step ``position`` of test series ``i`` (None if its start is unknown)."""
        starts = getattr(self, "starts", None)
        if not starts or i >= len(starts) or starts[i] is None:
            return None
        import pandas as pd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pd.Timestamp(starts[i]) + position * _offset(self.freq)

    @property
    def dim(self) -> int:
        """Channels per time step."""
        self.load()
        return int(self.train_series[0].shape[1])

    def setup(self, stage: str | None = None) -> None:
        self.load()
        self.train_set = _RandomWindows(self.train_series, self.context_length,
                                        self.prediction_length, self.max_lag,
                                        self.batches_per_epoch * self.batch_size, self.seed,
                                        self.train_cov, self.source)
        ts = self.train_set
        if ts.short_series:
            _warn(f"{self.source}: {ts.short_series} of {len(self.train_series)} training series "
                  f"are shorter than one window ({self.context_length + self.prediction_length} "
                  "steps); not trained on")
        if ts.skipped_windows:
            _warn(f"{self.source}: {ts.skipped_windows} training windows have no observed value "
                  "in their context; skipped")
        self.val_set = self._val_windows()

    def _val_windows(self) -> list[dict[str, torch.Tensor]]:
        """The last window of each training series (no overlap with the test range)."""
        covs = self.train_cov or [None] * len(self.train_series)
        c, p = self.context_length, self.prediction_length
        val, skipped = [], 0
        for s, cv in zip(self.train_series, covs):
            if len(s) < c + p:
                continue
            if not np.isfinite(s[len(s) - c - p: len(s) - p]).any():
                skipped += 1
                continue
            w = make_window(s, len(s), c, p, self.max_lag, cv)
            val.append({k: torch.from_numpy(v) for k, v in w.items() if k != "target"})
        if skipped:
            _warn(f"{self.source}: {skipped} validation windows have no observed value in their "
                  "context; skipped")
        return val

    def train_dataloader(self) -> DataLoader:
        # windows are random per (seed, epoch, index); the sampler sets the epoch and resumes
        return self.train_loader(self.train_set, shuffle=False, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(1, min(len(self.val_set), 256)))


def _length(name: str, value: int | None, default: int) -> int:
    """A context / prediction length: ``None`` takes the default, else an integer >= 1."""
    if value is None:
        return int(default)
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


__all__ = ["DATASETS", "MissingValuesWarning", "TimeSeriesData", "check_series", "fill_missing",
           "read_csv_frame", "report_missing", "load_taylor_hourly", "make_window", "mean_scale",
           "read_csv", "read_jsonl", "time_features", "write_jsonl"]
