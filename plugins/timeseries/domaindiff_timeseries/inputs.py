"""What users hold, as series: pandas DataFrames / Series, GluonTS datasets, lists of records.

:func:`read_input` turns any of these into a :class:`SeriesTable` (``(T, D)`` float32 arrays with
NaN for missing values, their item ids, start timestamps and the frequency):

- a pandas ``DataFrame`` in *long* format, one row per (item, time step): a ``target`` column
  (the values), optionally an ``item_id`` column (one series per item; none: one series) and a
  ``timestamp`` column (else the index must hold the timestamps). Column names are options.
- a pandas ``DataFrame`` in *wide* format: a ``DatetimeIndex`` / ``PeriodIndex`` and one numeric
  column per series (the column name is the item id).
- a pandas ``Series`` with a time index (one series).
- a GluonTS ``ListDataset``, ``PandasDataset`` or any iterable of GluonTS records
  (``{"start": pd.Period, "target": array, ...}``): the frequency is the starts' ``freq``.

The frequency comes from the timestamps (``pd.infer_freq``), the periods' ``freq``, or ``freq``;
a given ``freq`` that contradicts the data is an error. Duplicated, unsorted or unevenly spaced
timestamps, items of different frequencies, a missing ``target`` column, non-numeric values and
an unknown frequency are errors naming the item and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domaindiff_timeseries.frequency import check_freq, infer_freq, same_freq

__all__ = ["SeriesTable", "describe", "is_user_data", "read_input"]


@dataclass
class SeriesTable:
    """Series read from a user's object.

    Attributes:
        series: ``(T, D)`` float32 arrays (NaN: missing).
        ids: item id of each series.
        starts: first timestamp of each series (``pd.Timestamp``), or None where unknown.
        freq: the frequency (canonical pandas alias), or None where the input has none.
        covariates: ``(T, C)`` ``feat_dynamic_real`` per series (None where absent).
        source: a short description for messages.
    """

    series: list[np.ndarray]
    ids: list[Any]
    starts: list[Any]
    freq: str | None
    covariates: list[np.ndarray | None] = field(default_factory=list)
    source: str = "data"


def is_user_data(obj: Any) -> bool:
    """Whether ``obj`` is an in-memory dataset :func:`read_input` reads (not a name or a path)."""
    import pandas as pd

    if isinstance(obj, (pd.DataFrame, pd.Series)):
        return True
    if isinstance(obj, (str, bytes, dict)) or obj is None:
        return False
    return hasattr(obj, "__iter__")


def describe(obj: Any) -> str:
    """A short name of an in-memory dataset for messages (``DataFrame(1200 rows)``)."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return f"DataFrame({len(obj)} rows x {obj.shape[1]} columns)"
    if isinstance(obj, pd.Series):
        return f"Series({obj.name!r}, {len(obj)} rows)" if obj.name is not None else \
            f"Series({len(obj)} rows)"
    return type(obj).__name__


def read_input(obj: Any, freq: str | None = None, target: str = "target",
               item_id: str = "item_id", timestamp: str = "timestamp") -> SeriesTable:
    """Series of a DataFrame, Series or GluonTS dataset (see the module).

    Args:
        obj: the data.
        freq: the frequency, if the data's timestamps do not tell it (a contradiction is an error).
        target: long format's value column.
        item_id: long format's item column.
        timestamp: long format's time column (else the index).

    Raises:
        ValueError: naming the item and field of what cannot be read.
    """
    import pandas as pd

    if freq is not None:
        freq = check_freq(freq)
    src = describe(obj)
    if isinstance(obj, pd.Series):
        table = _wide(obj.to_frame(obj.name if obj.name is not None else target), src)
    elif isinstance(obj, pd.DataFrame):
        if obj.shape[1] == 0:
            raise ValueError(f"{src}: no columns")
        long = target in obj.columns or item_id in obj.columns or timestamp in obj.columns
        table = _long(obj, src, target, item_id, timestamp) if long else _wide(obj, src)
    else:
        table = _records(obj, src)
    if freq is not None:
        if table.freq is not None and not same_freq(freq, table.freq):
            raise ValueError(f"{src}: timestamps are spaced {table.freq!r} but freq={freq!r}")
        table.freq = freq
    if not table.covariates:
        table.covariates = [None] * len(table.series)
    return table


def _values(col, where: str) -> np.ndarray:
    """A column as float64, refusing text (NaN and None are missing)."""
    import pandas as pd

    num = pd.to_numeric(col, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() & col.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: row {col.index[i]!r}: {col.iloc[i]!r} is not a number "
                         "(missing values: NaN or None)")
    return num.to_numpy(dtype=np.float64)


def _wide(df, src: str) -> SeriesTable:
    """One series per numeric column of a frame indexed by time."""
    import pandas as pd

    idx = df.index
    if not isinstance(idx, (pd.DatetimeIndex, pd.PeriodIndex)):
        raise ValueError(f"{src}: no 'target' column and the index is not timestamps "
                         f"({type(idx).__name__}); give a long table with columns item_id, "
                         "timestamp, target or a wide one indexed by a DatetimeIndex")
    freq = infer_freq(idx, f"{src}: index")
    start = idx[0].to_timestamp() if isinstance(idx, pd.PeriodIndex) else idx[0]
    series, ids = [], []
    for c in df.columns:
        v = _values(df[c], f"{src}: column {c!r}")
        series.append(v.astype(np.float32)[:, None])
        ids.append(c)
    return SeriesTable(series, ids, [start] * len(series), freq, source=src)


def _long(df, src: str, target: str, item_id: str, timestamp: str) -> SeriesTable:
    """One series per item of a long table."""
    import pandas as pd

    if target not in df.columns:
        raise ValueError(f"{src}: no target column {target!r} (have {list(df.columns)}); pass "
                         "target=<the value column>")
    groups = df.groupby(item_id, sort=False) if item_id in df.columns else [(None, df)]
    series, ids, starts, freqs = [], [], [], []
    for key, part in groups:
        name = f"item {key!r}" if key is not None else "the series"
        if timestamp in part.columns:
            try:
                stamps = pd.DatetimeIndex(pd.to_datetime(part[timestamp]))
            except (ValueError, TypeError) as err:
                raise ValueError(f"{src}: {name}: column {timestamp!r} is not timestamps "
                                 f"({err})") from None
        elif isinstance(part.index, (pd.DatetimeIndex, pd.PeriodIndex)):
            stamps = part.index
        else:
            raise ValueError(f"{src}: {name}: no timestamp column {timestamp!r} and the index is "
                             "not timestamps; pass timestamp=<the time column>")
        f = infer_freq(stamps, f"{src}: {name}: {timestamp!r}")
        v = _values(part[target].reset_index(drop=True), f"{src}: {name}: column {target!r}")
        series.append(v.astype(np.float32)[:, None])
        ids.append(key)
        first = stamps[0]
        starts.append(first.to_timestamp() if isinstance(first, pd.Period) else first)
        freqs.append(f)
    _one_freq(freqs, ids, src)
    return SeriesTable(series, ids, starts, freqs[0], source=src)


def _one_freq(freqs: list[str], ids: list, src: str) -> None:
    for i, f in enumerate(freqs):
        if not same_freq(f, freqs[0]):
            raise ValueError(f"{src}: mixed frequencies: item {ids[0]!r} is {freqs[0]!r}, item "
                             f"{ids[i]!r} is {f!r} (one frequency per dataset)")


def _records(obj: Any, src: str) -> SeriesTable:
    """A GluonTS dataset or an iterable of GluonTS records."""
    import pandas as pd

    try:
        it = iter(obj)
    except TypeError:
        raise ValueError(f"dataset: cannot read a {src} (give a name, a path, a pandas DataFrame "
                         "or Series, or a GluonTS dataset)") from None
    series, ids, starts, freqs, covs = [], [], [], [], []
    for i, rec in enumerate(it):
        if not isinstance(rec, dict):
            raise ValueError(f"{src}: entry {i} is a {type(rec).__name__}, not a GluonTS record "
                             "(a dict with 'start' and 'target')")
        item = rec.get("item_id", i)
        where = f"{src}: entry {i} (item {item!r})"
        for key in ("start", "target"):
            if key not in rec:
                raise ValueError(f"{where}: no {key!r} field")
        tgt = np.asarray(rec["target"], dtype=np.float64)
        if tgt.ndim not in (1, 2) or tgt.size == 0:
            raise ValueError(f"{where}: field 'target' must be a non-empty (T,) or (D, T) array, "
                             f"got shape {tgt.shape}")
        tgt = tgt[:, None] if tgt.ndim == 1 else tgt.T
        start = rec["start"]
        if isinstance(start, pd.Period):
            freqs.append(check_freq(start.freqstr, f"{where}: start"))
            start = start.to_timestamp()
        else:
            try:
                start = pd.Timestamp(start)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: field 'start' {rec['start']!r} is not a "
                                 "timestamp") from err
            freqs.append(None)
        cov = rec.get("feat_dynamic_real")
        if cov is not None:
            cov = np.asarray(cov, dtype=np.float32)
            cov = cov[:, None] if cov.ndim == 1 else cov.T
            if len(cov) != len(tgt):
                raise ValueError(f"{where}: feat_dynamic_real has {len(cov)} steps, target "
                                 f"{len(tgt)}")
        series.append(tgt.astype(np.float32))
        ids.append(item)
        starts.append(start)
        covs.append(cov)
    if not series:
        raise ValueError(f"{src}: no series")
    known = [f for f in freqs if f is not None]
    if known:
        _one_freq(known, [ids[i] for i, f in enumerate(freqs) if f is not None], src)
    freq = known[0] if known else None
    return SeriesTable(series, ids, starts, freq, covs, source=src)
