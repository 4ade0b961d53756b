"""Scores as the M3 / Tourism competitions and the Monash archive report them.

- sMAPE (percent, 0 to 200): per series the mean over the horizon of
  ``200 |y - f| / (|y| + |f|)``, then the mean over series (M3's definition; the Monash archive's
  ``smape``; GluonTS's ``sMAPE`` is the same divided by 100). A step where both ``y`` and ``f``
  are 0 is a perfect forecast and counts 0 (GluonTS would give NaN); NaN targets are ignored.
- MASE: per series the mean absolute error over the horizon divided by the in-sample mean absolute
  seasonal difference at the subset's period, then the mean over series (Hyndman & Koehler 2006,
  the Tourism competition and Monash; :func:`domaindiff_timeseries.metrics.forecast_metrics`).
- CRPS: GluonTS's mean weighted quantile loss over the levels 0.1..0.9
  (:func:`domaindiff_timeseries.metrics.crps`).

The point forecast ``f`` of a sample forecast is its median (GluonTS's ``quantile(0.5)``, what
its evaluator scores MASE and sMAPE with); a point forecaster is a one-sample forecast. Quantile
forecasters (statsforecast's prediction intervals) enter through :func:`quantiles_as_samples`.
"""

from __future__ import annotations

import numpy as np

from domaindiff_timeseries.metrics import QUANTILES, _items, forecast_metrics, sample_quantiles


def smape(samples: np.ndarray, target: np.ndarray) -> float:
    """The sMAPE, in percent, of the median forecast (see the module doc).

    Args:
        samples: ``(W, S, H[, D])``.
        target: ``(W, H[, D])`` (NaN: unobserved).
    """
    s, y = _items(samples, target)
    f = sample_quantiles(s, (0.5,))[0]
    obs = ~np.isnan(y)
    if not obs.any():
        raise ValueError("every target value is missing (NaN): nothing to score")
    num = 200 * np.abs(np.where(obs, y, 0.0) - f)
    den = np.abs(np.where(obs, y, 0.0)) + np.abs(f)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(den > 0, num / den, 0.0)
    n = obs.sum(1)
    per = np.where(obs, term, 0.0).sum(1)[n > 0] / n[n > 0]
    return float(per.mean())


def competition_scores(samples: np.ndarray, target: np.ndarray, histories: list[np.ndarray],
                       season: int) -> dict[str, float]:
    """MASE, sMAPE, CRPS and ND of sample forecasts (see the module doc).

    Args:
        samples: ``(W, S, H[, D])``.
        target: ``(W, H[, D])``.
        histories: per window its in-sample series (for MASE's scale).
        season: the seasonal period of MASE (1 yearly, 4 quarterly, 12 monthly).
    """
    m = forecast_metrics(samples, target, histories, season)
    return {"MASE": m["MASE"], "sMAPE": smape(samples, target), "CRPS": m["CRPS"], "ND": m["ND"]}


def quantiles_as_samples(quantiles: np.ndarray) -> np.ndarray:
    """Quantile forecasts at 0.1..0.9 as 11 'samples' that score exactly those quantiles.

    GluonTS's quantile ``q`` of ``n`` sorted samples is the sample at ``round((n - 1) q)``; with
    ``n = 11`` that is sample ``10 q``, so ``[q_.1, q_.1, q_.2, ..., q_.9, q_.9]`` gives back each
    level (and the median ``q_.5``) in :func:`~domaindiff_timeseries.metrics.crps`, MASE and
    sMAPE.

    Args:
        quantiles: ``(W, 9, H[, D])`` at the levels :data:`~domaindiff_timeseries.metrics.QUANTILES`.

    Returns:
        ``(W, 11, H[, D])``, sorted along the sample axis.
    """
    q = np.asarray(quantiles, np.float64)
    if q.ndim < 3 or q.shape[1] != len(QUANTILES):
        raise ValueError(f"quantiles: expected (W, {len(QUANTILES)}, H[, D]) at the levels "
                         f"{QUANTILES}, got shape {q.shape}")
    q = np.sort(q, axis=1)  # crossing quantiles (rare, from fitted intervals) are reordered
    return np.concatenate([q[:, :1], q, q[:, -1:]], 1)


__all__ = ["competition_scores", "quantiles_as_samples", "smape"]
