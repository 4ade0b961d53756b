"""Forecast metrics exactly as GluonTS's ``Evaluator`` aggregates them.

- CRPS = ``mean_wQuantileLoss``: for each level ``q`` in 0.1..0.9 the quantile forecast is the
  sorted sample at index ``round((n - 1) q)`` (GluonTS ``SampleForecast.quantile``), the weighted
  quantile loss is ``2 sum |(y - y_q)((y <= y_q) - q)| / sum |y|`` over all items and steps, and
  CRPS is its mean over the levels.
- ND = ``sum |y - median| / sum |y|``; NRMSE = ``sqrt(mean over items of MSE(mean forecast)) /
  mean |y|``; MASE = mean over items of ``mean |y - median| / seasonal error`` where the seasonal
  error is ``mean |h_t - h_{t-m}|`` over the item's history.

Samples are ``(W, S, H)`` or ``(W, S, H, D)`` (each channel of each window is one GluonTS item).

Missing values: a NaN target is unobserved and every metric ignores it, as GluonTS's evaluator does
with ``np.ma.masked_invalid``: sums and means run over the observed steps only, per-item means
over the items that have any, and the seasonal error of MASE is the mean of ``|h_t - h_{t-m}|``
over the pairs whose two values are both observed. Infinite targets or forecasts are errors.
"""

from __future__ import annotations

import numpy as np

QUANTILES = tuple(round(0.1 * k, 1) for k in range(1, 10))


def _items(samples: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, S, H)`` samples and ``(N, H)`` targets (NaN: unobserved), one row per item."""
    samples, target = np.asarray(samples, np.float64), np.asarray(target, np.float64)
    if np.isinf(target).any():
        raise ValueError("target holds infinite values (missing values must be NaN)")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise ValueError(f"samples hold NaN or infinite values ({bad} of {samples.size}): the "
                         "forecaster diverged or was given NaN inputs")
    if samples.ndim == 3:
        samples, target = samples[..., None], target[..., None]
    if samples.ndim != 4 or target.shape != (samples.shape[0], *samples.shape[2:]):
        raise ValueError(f"samples (W, S, H[, D]) {samples.shape} and target (W, H[, D]) "
                         f"{target.shape} do not match")
    w, s, h, d = samples.shape
    return (samples.transpose(0, 3, 1, 2).reshape(w * d, s, h),
            target.transpose(0, 2, 1).reshape(w * d, h))


def sample_quantiles(samples: np.ndarray, levels=QUANTILES) -> np.ndarray:
    """GluonTS quantiles of ``(N, S, H)`` samples: ``(len(levels), N, H)``."""
    srt = np.sort(samples, axis=1)
    n = srt.shape[1]
    return np.stack([srt[:, int(np.round((n - 1) * q))] for q in levels])


def _observed(y: np.ndarray) -> np.ndarray:
    """Boolean mask of the observed (non-NaN) targets; at least one is required."""
    obs = ~np.isnan(y)
    if not obs.any():
        raise ValueError("every target value is missing (NaN): nothing to score")
    return obs


def crps(samples: np.ndarray, target: np.ndarray, levels=QUANTILES) -> float:
    """GluonTS ``mean_wQuantileLoss`` of sample forecasts against the targets (NaN ignored)."""
    s, y = _items(samples, target)
    obs = _observed(y)
    qs = sample_quantiles(s, levels)
    y0 = np.where(obs, y, 0.0)
    denom = np.abs(y0).sum()
    losses = [2 * (obs * np.abs((y0 - qs[i]) * ((y0 <= qs[i]).astype(float) - q))).sum() / denom
              for i, q in enumerate(levels)]
    return float(np.mean(losses))


def seasonal_error(history: np.ndarray, season: int) -> float:
    """``mean |h_t - h_{t-m}|`` over the pairs with both values observed (NaN: missing).

    ``m = 1`` if the history is not longer than a season (GluonTS). NaN if no pair is observed.
    """
    h = np.asarray(history, np.float64)
    m = season if len(h) > season else 1
    d = np.abs(h[m:] - h[:-m])
    d = d[~np.isnan(d)]
    return float(d.mean()) if d.size else float("nan")


def _masked_mean(v: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Per-row mean of ``v`` over ``obs`` (NaN for a row with nothing observed)."""
    n = obs.sum(1)
    tot = np.where(obs, v, 0.0).sum(1)
    return np.where(n > 0, tot / np.maximum(n, 1), np.nan)


def forecast_metrics(samples: np.ndarray, target: np.ndarray,
                     histories: list[np.ndarray] | None = None, season: int = 24) -> dict:
    """CRPS, ND, NRMSE and (with the histories) MASE, aggregated as GluonTS does.

    Args:
        samples: ``(W, S, H[, D])``.
        target: ``(W, H[, D])``.
        histories: per window the observed past ``(T_w[, D])`` (for MASE).
        season: seasonality of MASE.
    """
    s, y = _items(samples, target)
    obs = _observed(y)
    y0 = np.where(obs, y, 0.0)
    med = sample_quantiles(s, (0.5,))[0]
    mean = s.mean(1)
    abs_y = np.abs(y0).sum()
    mse = np.nanmean(_masked_mean((y0 - mean) ** 2, obs))
    abs_mean = np.nanmean(_masked_mean(np.abs(y0), obs))
    out = {"CRPS": crps(samples, target),
           "ND": float((obs * np.abs(y0 - med)).sum() / abs_y),
           "NRMSE": float(np.sqrt(mse) / abs_mean)}
    if histories is not None:
        hs = []
        for hist in histories:
            hist = np.asarray(hist, np.float64)
            hist = hist[:, None] if hist.ndim == 1 else hist
            hs += [hist[:, j] for j in range(hist.shape[1])]
        if len(hs) != len(y):
            raise ValueError(f"histories: {len(hs)} items for {len(y)} forecast items")
        se = np.array([seasonal_error(x, season) for x in hs])
        with np.errstate(divide="ignore", invalid="ignore"):
            per = _masked_mean(np.abs(y0 - med), obs) / se
        per = per[np.isfinite(per)]  # items with no observed target or seasonal error
        out["MASE"] = float(per.mean()) if per.size else float("nan")
    return out


def seasonal_naive(windows: list[dict], prediction_length: int, season: int = 24) -> np.ndarray:
    """Seasonal-naive point forecasts as one-sample forecasts ``(W, 1, H, D)``.

    ``y_{T+k} = y_{T+k-m}`` (repeating the last season), the GluonTS ``SeasonalNaivePredictor``.
    Missing (NaN) history values are first imputed with the last observed value before them (the
    first observed one at the start), as GluonTS's ``LastValueImputation``, the predictor's
    default, does.
    """
    from domaindiff_timeseries.data import fill_missing

    out = []
    for w in windows:
        hist = np.asarray(w["history"], np.float64)
        hist = fill_missing(hist[:, None] if hist.ndim == 1 else hist)
        m = season if len(hist) >= season else 1
        idx = len(hist) - m + np.arange(prediction_length) % m
        out.append(hist[idx])
    return np.stack(out)[:, None].astype(np.float32)


def metrics_table(forecasts: dict[str, np.ndarray], windows: list[dict], context_length: int,
                  season: int):
    """CRPS, ND, NRMSE and MASE of each method on the same test windows, as a DataFrame.

    Args:
        forecasts: method name -> samples ``(W, S, H[, D])``.
        windows: the test windows (:meth:`TimeSeriesData.test_windows`).
        context_length: the windows' context steps (the horizon follows).
        season: seasonality of MASE (the data's ``season``).

    Returns:
        a ``pandas.DataFrame``, one row per method.
    """
    import pandas as pd

    target = np.stack([w["target"][context_length:] for w in windows])
    histories = [w["history"] for w in windows]
    rows = {m: forecast_metrics(f, target, histories, season) for m, f in forecasts.items()}
    return pd.DataFrame(rows).T
