"""Time-series data: the offline default, GluonTS datasets, JSON-lines / CSV files, windows.

The offline default is pmdarima's Taylor electricity demand (summed to hourly); GluonTS datasets
come through ``get_dataset``; custom data from GluonTS JSON lines or wide CSV files.

A series is an array ``(T, D)`` (``D = 1`` for univariate). Training draws random windows of
``context + prediction`` steps from the series truncated before the test range; testing uses the
GluonTS rolling evaluation: ``num_test_windows`` forecasts of ``prediction_length`` steps at the
end of each series. Every window is mean-scaled by the mean absolute value of its observed context
and comes with ``max(lags)`` steps of scaled history (``past``) for the lag channels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from domaindiff.data import DatasetUnavailableError, DomainDataModule

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


def load_taylor_hourly() -> np.ndarray:
    """Half-hourly electricity demand of England and Wales (Taylor 2003), summed to hourly.

    Returns:
        ``(2016, 1)`` float32 array: 12 weeks of hourly demand (MW).
    """
    from pmdarima.datasets import load_taylor

    y = np.asarray(load_taylor(), dtype=np.float64)
    return y.reshape(-1, 2).sum(1).astype(np.float32)[:, None]


def _matrix(values) -> np.ndarray:
    """A GluonTS list (univariate) or list of lists ``(D, T)`` as a ``(D, T)`` float32 array."""
    rows = values if values and isinstance(values[0], list) else [values]
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows],
                    dtype=np.float32)


def read_jsonl(path: str | Path, covariates: bool = False
               ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Read a GluonTS JSON-lines file (one ``{"start": ..., "target": [...]}`` per line).

    ``target`` may be a list (univariate) or a list of lists ``(D, T)`` (multivariate, GluonTS
    layout); ``"NaN"``/null entries become NaN (missing values). With ``covariates`` the dynamic
    real features ``feat_dynamic_real`` (``(C, T)``, GluonTS layout, known over the whole
    series including the forecast range) are returned too.

    Returns:
        list of ``(T, D)`` float32 arrays; with ``covariates`` also a list of ``(T, C)`` arrays
        (``None`` for a record without ``feat_dynamic_real``).

    Raises:
        ValueError: a line that is not JSON or lacks a numeric ``target`` (naming file and line).
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
            if not isinstance(rec, dict) or "target" not in rec:
                raise ValueError(f"{path}:{i}: record has no 'target' field")
            try:
                tgt = _matrix(rec["target"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}:{i}: field 'target' is not a list of numbers") \
                    from err
            if tgt.shape[1] == 0:
                raise ValueError(f"{path}:{i}: field 'target' is empty")
            out.append(tgt.T)
            cov = None
            if covariates and rec.get("feat_dynamic_real") is not None:
                try:
                    cov = _matrix(rec["feat_dynamic_real"]).T
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{path}:{i}: field 'feat_dynamic_real' is not a list of "
                                     "lists of numbers") from err
                if len(cov) != len(tgt.T):
                    raise ValueError(f"{path}:{i}: feat_dynamic_real has {len(cov)} steps, "
                                     f"target {len(tgt.T)}")
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


def time_features(length: int, freq: str = "h", offset: int = 0) -> np.ndarray:
    """Calendar covariates ``(length, C)`` in ``[-1, 1]``.

    Sin/cos of the position in the day and week (hourly), or in the week (daily, business-daily),
    counted from ``offset``.
    """
    i = np.arange(offset, offset + length, dtype=np.float64)
    periods = {"h": (24, 168), "H": (24, 168), "D": (7,), "B": (5,)}.get(freq, (24,))
    feats = [f(2 * np.pi * i / p) for p in periods for f in (np.sin, np.cos)]
    return np.stack(feats, 1).astype(np.float32)


def read_csv(path: str | Path, columns: list[str] | None = None) -> list[np.ndarray]:
    """Read a wide CSV (one column per univariate series, first column the time index).

    Raises:
        ValueError: a requested column is missing or non-numeric (naming file and column).
    """
    import pandas as pd

    path = Path(path)
    df = pd.read_csv(path, index_col=0)
    cols = columns or list(df.columns)
    out = []
    for c in cols:
        if c not in df.columns:
            raise ValueError(f"{path}: no column {c!r} (have {list(df.columns)})")
        try:
            out.append(df[c].to_numpy(dtype=np.float32)[:, None])
        except ValueError as err:
            raise ValueError(f"{path}: column {c!r} is not numeric") from err
    return out


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
    train = [np.asarray(e["target"], np.float32).reshape(-1, 1) for e in ds.train]
    test = [np.asarray(e["target"], np.float32).reshape(-1, 1) for e in ds.test]
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


def make_window(series: np.ndarray, end: int, context_length: int, prediction_length: int,
                max_lag: int, covariates: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The window ending at ``end`` (exclusive), scaled by its context's mean absolute value.

    Returns:
        ``x`` ``(L, D)`` (context + horizon, scaled), ``past`` ``(max_lag, D)`` (scaled history
        before the window, zero-padded where the series starts later), ``observed`` ``(L, D)``
        (1 where the value is finite), ``scale`` ``(D,)``, ``target`` ``(L, D)`` unscaled and
        ``history`` (the unscaled context + past, for MASE's seasonal error); with
        ``covariates`` (``(T, C)``, known over the whole series) also ``covariates`` ``(L, C)``.
    """
    length = context_length + prediction_length
    start = end - length
    if start < 0:
        raise ValueError(f"window ending at {end} needs {length} steps; series has only {end}")
    win = series[start:end]
    observed = np.isfinite(win).astype(np.float32)
    scale = mean_scale(win[:context_length], observed[:context_length])
    past = np.zeros((max_lag, series.shape[1]), np.float32)
    if max_lag:
        lo = max(0, start - max_lag)
        past[max_lag - (start - lo):] = series[lo:start]
    past = np.nan_to_num(past) / scale
    out = {"x": np.nan_to_num(win) / scale, "past": past.astype(np.float32),
           "observed": observed, "scale": scale, "target": np.nan_to_num(win)}
    if covariates is not None:
        out["covariates"] = np.asarray(covariates[start:end], np.float32)
    return out


class _RandomWindows(Dataset):
    """``num_batches * batch_size`` random training windows (fresh every epoch via the index)."""

    def __init__(self, series: list[np.ndarray], context_length: int, prediction_length: int,
                 max_lag: int, size: int, seed: int,
                 covariates: list[np.ndarray] | None = None) -> None:
        self.series, self.size, self.seed = series, size, seed
        self.covariates = covariates
        self.c, self.p, self.max_lag = context_length, prediction_length, max_lag
        length = context_length + prediction_length
        self.valid = [i for i, s in enumerate(series) if len(s) >= length]
        if not self.valid:
            raise ValueError(f"no training series has {length} steps (context + prediction)")
        w = np.array([len(series[i]) - length + 1 for i in self.valid], dtype=np.float64)
        self.p_series = w / w.sum()
        self.epoch = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, idx))
        i = self.valid[rng.choice(len(self.valid), p=self.p_series)]
        s = self.series[i]
        end = int(rng.integers(self.c + self.p, len(s) + 1))
        cov = None if self.covariates is None else self.covariates[i]
        w = make_window(s, end, self.c, self.p, self.max_lag, cov)
        return {k: torch.from_numpy(v) for k, v in w.items() if k != "target"}


class TimeSeriesData(DomainDataModule):
    """Windows of a time-series dataset for TSDiff.

    Args:
        dataset: ``"taylor"`` (offline default), a GluonTS name (see :data:`DATASETS`), or
            ``"file"`` with ``path``.
        path: a GluonTS JSON-lines (``.json``/``.jsonl``) or wide CSV file (``dataset="file"``).
        context_length: context steps (default from the dataset's settings, 336 for taylor).
        prediction_length: forecast steps (24 for taylor).
        lags: lag channels (steps); ``None``: the dataset's TSDiff lags.
        num_test_windows: rolling test windows per series (GluonTS ``windows``).
        batches_per_epoch: training batches per epoch (TSDiff: 128).
        batch_size: batch size (TSDiff: 64).
        num_workers: DataLoader workers.
        seed: window sampling seed.
        root: cache directory.
        covariates: dynamic covariates per window (``covariates`` ``(L, C)``, known over context
            and horizon): ``None`` (none), ``"time"`` (calendar features, see
            :func:`time_features`), ``"file"`` (the JSON-lines ``feat_dynamic_real``, standardised
            per series over its training range) or ``"file+time"``.
    """

    name = "timeseries"

    def __init__(self, dataset: str = OFFLINE, path: str | None = None,
                 context_length: int | None = None, prediction_length: int | None = None,
                 lags: list[int] | None = None, num_test_windows: int = 7,
                 batches_per_epoch: int = 128, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, root: str | None = None, covariates: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset == OFFLINE:
            freq, c, p, default_lags = "h", 336, 24, HOURLY_LAGS[:7]
        elif dataset == "file":
            if not path:
                raise ValueError("dataset='file' needs path=<.jsonl or .csv file>")
            freq, c, p, default_lags = "h", 336, 24, []
        elif dataset in DATASETS:
            freq, c, p, default_lags = DATASETS[dataset]
        else:
            raise ValueError(f"dataset: unknown {dataset!r}; use 'taylor', 'file' or one of "
                             f"{sorted(DATASETS)}")
        self.dataset, self.path, self.freq = dataset, path, freq
        self.context_length = int(context_length or c)
        self.prediction_length = int(prediction_length or p)
        self.lags = sorted(int(x) for x in (default_lags if lags is None else lags))
        if any(x < 1 for x in self.lags):
            raise ValueError(f"lags must be positive, got {self.lags}")
        if num_test_windows < 1 or batches_per_epoch < 1:
            raise ValueError("num_test_windows and batches_per_epoch must be >= 1")
        self.num_test_windows, self.batches_per_epoch = num_test_windows, batches_per_epoch
        self.max_lag = max(self.lags, default=0)
        self.season = 24 if freq == "h" else (5 if freq == "B" else 7)
        if covariates not in (None, "time", "file", "file+time"):
            raise ValueError(f"covariates: use null, 'time', 'file' or 'file+time', got "
                             f"{covariates!r}")
        if covariates and "file" in covariates and dataset != "file":
            raise ValueError("covariates='file' reads feat_dynamic_real of dataset='file' "
                             "(a .jsonl path)")
        self.covariates = covariates
        self.train_cov: list[np.ndarray] | None = None
        self.test_cov: list[np.ndarray] | None = None
        self._loaded = False

    # -- loading ----------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the series and split training / test the GluonTS way."""
        if self._loaded:
            return
        h, k = self.prediction_length, self.num_test_windows
        if self.dataset in DATASETS:
            train, test = load_gluonts(self.dataset, self.cache_dir)
            self.test_series = test
            self.train_series = train
        else:
            if self.dataset == OFFLINE:
                full = [load_taylor_hourly()]
            else:
                p = Path(self.path)
                if not p.is_file():
                    raise FileNotFoundError(f"path: {p} does not exist")
                if p.suffix in (".json", ".jsonl"):
                    full, file_cov = read_jsonl(p, covariates=True)
                else:
                    full, file_cov = read_csv(p), [None]
                if self.covariates and "file" in self.covariates:
                    if any(c is None for c in file_cov):
                        raise ValueError(f"{p}: covariates='file' needs feat_dynamic_real in "
                                         "every record")
                    self.test_cov = [self._standardise(c, len(c) - k * h) for c in file_cov]
            need = self.context_length + h * (k + 1)
            for i, s in enumerate(full):
                if len(s) < need:
                    raise ValueError(f"series {i} has {len(s)} steps; need {need} "
                                     "(context + (num_test_windows + 1) * prediction_length)")
            self.test_series = full
            self.train_series = [s[: len(s) - k * h] for s in full]
        if self.covariates and "time" in self.covariates:
            cal = [time_features(len(s), self.freq) for s in self.test_series]
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
        out = []
        for i, s in enumerate(self.test_series):
            cov = None if self.test_cov is None else self.test_cov[i]
            for j in range(per - 1, -1, -1):
                end = len(s) - j * self.prediction_length
                w = make_window(s, end, self.context_length, self.prediction_length,
                                self.max_lag, cov)
                w["history"] = np.nan_to_num(s[:end - self.prediction_length])
                out.append(w)
        return out

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
                                        self.train_cov)
        # validation: the last window of each training series (no overlap with the test range)
        covs = self.train_cov or [None] * len(self.train_series)
        val = [make_window(s, len(s), self.context_length, self.prediction_length, self.max_lag,
                           c)
               for s, c in zip(self.train_series, covs) if len(s) >= self.context_length
               + self.prediction_length]
        self.val_set = [{k: torch.from_numpy(v) for k, v in w.items() if k != "target"}
                        for w in val]

    def train_dataloader(self) -> DataLoader:
        self.train_set.epoch = self.trainer.current_epoch if self.trainer else 0
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(1, min(len(self.val_set), 256)))


__all__ = ["DATASETS", "TimeSeriesData", "load_taylor_hourly", "make_window", "mean_scale",
           "read_csv", "read_jsonl", "time_features", "write_jsonl"]
