"""Anomaly detection by imputation (ImDiffusion, Chen et al. 2023) with the unconditional model.

Each window is split by a mask into two complementary halves; each half is hidden in turn and
imputed by TSDiff from the other (replacement/inpainting guidance, :class:`domaindiff.guidance.
Inpainting`). A point the model cannot impute from its neighbours is anomalous: its score is the
imputation error ``|x - x0_hat_t|`` of the hidden points, taken from the denoised estimates at
several steps of the reverse process (ImDiffusion's ensemble along the denoising trajectory; each
step's errors are divided by their median over the window so that steps weigh alike), averaged
over the recorded steps, the imputation samples and every window covering the point.

Masks: ``grating`` (alternating blocks of ``grating_width`` steps) and ``random`` (each step
hidden with probability 1/2; the complement is the other half).

Metric: point-adjusted F1 (Xu et al. 2018): a true anomaly segment counts as detected entirely if
any of its points is flagged; :func:`best_point_adjusted_f1` scans thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from domaindiff.guidance import Inpainting
from domaindiff_timeseries.data import make_window


def complementary_masks(length: int, kind: str = "grating", width: int = 6,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Two complementary observation masks ``(2, length)`` (1 = observed).

    Args:
        length: window length.
        kind: ``grating`` (alternating blocks of ``width``) or ``random`` (i.i.d. halves).
        width: block width of the grating.
        rng: generator for ``random``.
    """
    if kind == "grating":
        if width < 1:
            raise ValueError(f"grating width must be >= 1, got {width}")
        m = ((np.arange(length) // width) % 2 == 0).astype(np.float32)
    elif kind == "random":
        m = ((rng or np.random.default_rng(0)).random(length) < 0.5).astype(np.float32)
    else:
        raise ValueError(f"mask kind: use 'grating' or 'random', got {kind!r}")
    return np.stack([m, 1 - m])


@torch.no_grad()
def imputation_scores(model, windows: Sequence[dict], *, mask: str = "grating",
                      grating_width: int = 6, num_samples: int = 4, sampler: str = "ancestral",
                      steps: int = 50, record_last: int = 10, seed: int = 0,
                      **options) -> np.ndarray:
    """Anomaly scores ``(W, L)`` of every step of every window (scaled units, see module doc).

    Args:
        model: an unconditional :class:`~domaindiff_timeseries.model.TSDiff`.
        windows: windows from :func:`~domaindiff_timeseries.data.make_window` (``x``, ``past``).
        mask: ``grating`` or ``random``.
        grating_width: block width of the grating mask.
        num_samples: imputations per mask and window.
        sampler: core sampler.
        steps: sampler steps.
        record_last: denoising steps (the last ones) whose estimates enter the score.
        seed: noise and mask seed.
        **options: sampler options (e.g. ``eta``).

    Missing steps (``observed`` 0) are never given to the inpainting as known values nor scored:
    their score is NaN (never flagged).
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    x = torch.as_tensor(np.stack([w["x"] for w in windows]), dtype=torch.float32)
    past = torch.as_tensor(np.stack([w["past"] for w in windows]), dtype=torch.float32)
    obs = torch.as_tensor(np.stack([w.get("observed", np.ones_like(w["x"])) for w in windows]),
                          dtype=torch.float32)
    past_obs = torch.as_tensor(np.stack([w.get("past_observed", np.ones_like(w["past"]))
                                         for w in windows]), dtype=torch.float32)
    n_w, length, d = x.shape
    obs_r = obs.repeat_interleave(num_samples, 0)
    seen = (obs_r.sum(-1) > 0).float()  # (B, L): steps with an observed channel
    scores = torch.zeros(n_w, length)
    record_last = max(1, min(record_last, steps))
    for half in range(2):
        masks = torch.as_tensor(np.stack([complementary_masks(length, mask, grating_width, rng)
                                          [half] for _ in range(n_w)]))  # (W, L)
        known = masks[:, :, None].expand(-1, -1, d).repeat_interleave(num_samples, 0) * obs_r
        y = x.repeat_interleave(num_samples, 0)
        tmpl = {"x": torch.zeros_like(y), "past": past.repeat_interleave(num_samples, 0),
                "past_observed": past_obs.repeat_interleave(num_samples, 0)}
        if not model.lags:
            tmpl["past"] = tmpl["past_observed"] = y.new_zeros(len(y), 0, d)
        errs = []

        def record(info, y=y, errs=errs):
            if info["i"] >= steps - record_last:
                err = (info["denoised"]["x"] - y).abs() * obs_r.to(y.device)
                errs.append(err.sum(-1) / obs_r.to(y.device).sum(-1).clamp_min(1))  # (B, L)

        guide = Inpainting({"x": y.to(model.device)}, {"x": known.to(model.device)})
        model.sample(template={k: v.to(model.device) for k, v in tmpl.items()},
                     sampler=sampler, steps=steps, guidance=guide, generator=gen,
                     callback=record, **options)
        e = torch.stack(errs).cpu()  # (R, B, L)
        hidden = (1 - masks).repeat_interleave(num_samples, 0) * seen  # (B, L)
        med = (e * hidden).sum(-1, keepdim=True) / hidden.sum(-1, keepdim=True).clamp_min(1)
        e = (e / med.clamp_min(1e-8)).mean(0) * hidden  # normalised, averaged over steps
        scores += e.reshape(n_w, num_samples, length).mean(1)
    scores[obs.sum(-1) == 0] = float("nan")
    return scores.numpy()


def series_scores(model, series: np.ndarray, start: int, *, stride: int = 24,
                  **kwargs) -> np.ndarray:
    """Anomaly scores ``(T - start,)`` of ``series[start:]``.

    Each point's score is the mean over the windows covering it: windows of the model's length
    ending every ``stride`` steps back from the end of the series, as long as they reach
    ``series[start:]`` (and start at or after 0).

    Args:
        model: an unconditional TSDiff.
        series: ``(T, D)`` series (``T >= model.length``).
        start: first scored step.
        stride: step between window ends.
        **kwargs: :func:`imputation_scores` options.
    """
    length, max_lag = model.length, max(model.lags, default=0)
    if len(series) < length:
        raise ValueError(f"series has {len(series)} steps; the model's windows need {length}")
    ends = [e for e in range(len(series), length - 1, -stride) if e > start][::-1]
    wins = [make_window(series, e, model.context_length, model.prediction_length, max_lag)
            for e in ends]
    sc = imputation_scores(model, wins, **kwargs)
    total = np.zeros(len(series))
    count = np.zeros(len(series))
    for e, s in zip(ends, sc):
        ok = ~np.isnan(s)
        total[e - length: e][ok] += s[ok]
        count[e - length: e][ok] += 1
    out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out[start:]


def point_adjust(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Point adjustment: flag a whole true anomaly segment if any of its points is flagged."""
    pred, label = np.asarray(pred, bool).copy(), np.asarray(label, bool)
    i, n = 0, len(label)
    while i < n:
        if label[i]:
            j = i
            while j < n and label[j]:
                j += 1
            if pred[i:j].any():
                pred[i:j] = True
            i = j
        else:
            i += 1
    return pred


def f1_score(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of binary predictions."""
    pred, label = np.asarray(pred, bool), np.asarray(label, bool)
    tp = float((pred & label).sum())
    fp = float((pred & ~label).sum())
    fn = float((~pred & label).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def point_adjusted_f1(scores: np.ndarray, label: np.ndarray, threshold: float) -> dict:
    """Point-adjusted precision, recall and F1 at ``scores > threshold``."""
    return f1_score(point_adjust(np.asarray(scores) > threshold, label), label)


def best_point_adjusted_f1(scores: np.ndarray, label: np.ndarray) -> dict:
    """The best point-adjusted F1 over all thresholds (each distinct score), with the threshold."""
    scores = np.asarray(scores, np.float64)
    best = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "threshold": float("inf")}
    for thr in np.unique(scores)[::-1]:
        r = point_adjusted_f1(scores, label, thr - 1e-12 * max(1.0, abs(thr)))
        if r["f1"] > best["f1"]:
            best = {**r, "threshold": float(thr)}
    return best


def inject_anomalies(series: np.ndarray, start: int, num: int = 6, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Inject ``num`` anomalies into ``series[start:]``; returns the series and 0/1 labels.

    Kinds, in turn: a spike (one step, +/-30% of the local level), a level shift (6 steps,
    +15%), a dip (4 steps, -20%), a noise burst (8 steps, noise of 8% of the level), and a
    flat-line (6 steps held at the first value). Anomalies do not overlap.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(series, np.float64).copy()
    label = np.zeros(len(y), np.int64)
    kinds = [("spike", 1), ("shift", 6), ("dip", 4), ("noise", 8), ("flat", 6)]
    placed = 0
    tries = 0
    while placed < num and tries < 1000:
        tries += 1
        kind, width = kinds[placed % len(kinds)]
        a = int(rng.integers(start + 2, len(y) - width - 1))
        if label[a - 3: a + width + 3].any():
            continue
        level = np.abs(y[max(0, a - 24): a]).mean()
        if kind == "spike":
            y[a] += rng.choice([-1, 1]) * 0.3 * level
        elif kind == "shift":
            y[a: a + width] += 0.15 * level
        elif kind == "dip":
            y[a: a + width] -= 0.2 * level
        elif kind == "noise":
            y[a: a + width] += 0.08 * level * rng.normal(size=(width, *y.shape[1:]))
        else:
            y[a: a + width] = y[a]
        label[a: a + width] = 1
        placed += 1
    return y.astype(np.float32), label


def seasonal_difference_scores(series: np.ndarray, start: int, season: int = 24) -> np.ndarray:
    """A simple reference detector: ``|y_t - y_{t - season}|`` summed over channels."""
    y = np.asarray(series, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    return np.abs(y[start:] - y[start - season: len(y) - season]).sum(-1)


def evaluate_anomalies(model, series: np.ndarray, region: int, *, num_anomalies: int = 6,
                       repeats: int = 1, seed: int = 0, season: int = 24, **kwargs) -> dict:
    """Inject anomalies into the last ``region`` steps, score them, report point-adjusted F1.

    Args:
        model: an unconditional TSDiff.
        series: the clean ``(T, D)`` series.
        region: scored steps at the end of the series.
        num_anomalies: anomalies injected per repeat.
        repeats: independent injections (seeds ``seed .. seed + repeats - 1``); F1 is averaged.
        seed: first seed.
        season: season of the seasonal-difference reference detector.
        **kwargs: :func:`imputation_scores` options (mask, steps, num_samples, ...).

    Returns:
        best point-adjusted precision/recall/F1 of the imputation detector and of the
        seasonal-difference reference, averaged over the repeats, and the per-repeat F1s.
    """
    start = len(series) - region
    runs = []
    for r in range(repeats):
        y, label = inject_anomalies(series, start, num_anomalies, seed + r)
        s = series_scores(model, y, start, seed=seed + r, **kwargs)
        ref = seasonal_difference_scores(y, start, season)
        lab = label[start:]
        runs.append({"imputation": best_point_adjusted_f1(s, lab),
                     "seasonal_difference": best_point_adjusted_f1(ref, lab),
                     "anomalous_points": int(lab.sum())})

    def mean(name: str) -> dict:
        return {k: float(np.mean([r[name][k] for r in runs]))
                for k in ("precision", "recall", "f1")}

    return {"region": region, "num_anomalies": num_anomalies, "repeats": repeats,
            "imputation": mean("imputation"), "seasonal_difference": mean("seasonal_difference"),
            "per_repeat_f1": [{"imputation": r["imputation"]["f1"],
                               "seasonal_difference": r["seasonal_difference"]["f1"]}
                              for r in runs],
            "options": dict(kwargs)}
