"""Forecast metrics exactly as GluonTS's ``Evaluator`` aggregates them.

- CRPS = ``mean_wQuantileLoss``: for each level ``q`` in 0.1..0.9 the quantile forecast is the
  sorted sample at index ``round((n - 1) q)`` (GluonTS ``SampleForecast.quantile``), the weighted
  quantile loss is ``2 sum |(y - y_q)((y <= y_q) - q)| / sum |y|`` over all items and steps, and
  CRPS is its mean over the levels.
- ND = ``sum |y - median| / sum |y|``; NRMSE = ``sqrt(mean over items of MSE(mean forecast)) /
  mean |y|``; MASE = mean over items of ``mean |y - median| / seasonal error`` where the seasonal
  error is ``mean |h_t - h_{t-m}|`` over the item's history.

Samples are ``(W, S, H)`` or ``(W, S, H, D)`` (each channel of each window is one GluonTS item).
"""

from __future__ import annotations

import numpy as np

QUANTILES = tuple(round(0.1 * k, 1) for k in range(1, 10))


def _items(samples: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples, target = np.asarray(samples, np.float64), np.asarray(target, np.float64)
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


def crps(samples: np.ndarray, target: np.ndarray, levels=QUANTILES) -> float:
    """GluonTS ``mean_wQuantileLoss`` of sample forecasts against the targets."""
    s, y = _items(samples, target)
    qs = sample_quantiles(s, levels)
    denom = np.abs(y).sum()
    losses = [2 * np.abs((y - qs[i]) * ((y <= qs[i]).astype(float) - q)).sum() / denom
              for i, q in enumerate(levels)]
    return float(np.mean(losses))


def seasonal_error(history: np.ndarray, season: int) -> float:
    """``mean |h_t - h_{t-m}|`` (``m = 1`` if the history is shorter than a season)."""
    h = np.asarray(history, np.float64)
    m = season if len(h) > season else 1
    return float(np.mean(np.abs(h[m:] - h[:-m])))


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
    med = sample_quantiles(s, (0.5,))[0]
    mean = s.mean(1)
    abs_y = np.abs(y).sum()
    out = {"CRPS": crps(samples, target), "ND": float(np.abs(y - med).sum() / abs_y),
           "NRMSE": float(np.sqrt(((y - mean) ** 2).mean(1).mean()) / (abs_y / y.size))}
    if histories is not None:
        hs = []
        for hist in histories:
            hist = np.asarray(hist, np.float64)
            hist = hist[:, None] if hist.ndim == 1 else hist
            hs += [hist[:, j] for j in range(hist.shape[1])]
        if len(hs) != len(y):
            raise ValueError(f"histories: {len(hs)} items for {len(y)} forecast items")
        se = np.array([seasonal_error(x, season) for x in hs])
        out["MASE"] = float(np.mean(np.abs(y - med).mean(1) / se))
    return out


def seasonal_naive(windows: list[dict], prediction_length: int, season: int = 24) -> np.ndarray:
    """Seasonal-naive point forecasts as one-sample forecasts ``(W, 1, H, D)``.

    ``y_{T+k} = y_{T+k-m}`` (repeating the last season), the GluonTS ``SeasonalNaivePredictor``.
    """
    out = []
    for w in windows:
        hist = np.asarray(w["history"], np.float64)
        hist = hist[:, None] if hist.ndim == 1 else hist
        m = season if len(hist) >= season else 1
        idx = len(hist) - m + np.arange(prediction_length) % m
        out.append(hist[idx])
    return np.stack(out)[:, None].astype(np.float32)
