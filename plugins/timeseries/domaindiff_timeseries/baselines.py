"""GluonTS baselines on the same test windows: seasonal naive and DeepAR."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _freq(freq: str) -> str:
    """The ``pd.Period`` spelling GluonTS datasets need (``"MS"`` -> ``"M"``, ``"QS"`` -> ``"Q"``)."""
    from domaindiff_timeseries.frequency import period_alias

    return period_alias(freq)


def gluonts_seasonal_naive(windows: Sequence[dict], prediction_length: int, freq: str = "h",
                           season: int = 24) -> np.ndarray:
    """GluonTS ``SeasonalNaivePredictor`` forecasts ``(W, 1, H, D)`` (one sample per window)."""
    from gluonts.dataset.common import ListDataset
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    out = []
    pred = SeasonalNaivePredictor(prediction_length=prediction_length, season_length=season)
    for w in windows:
        hist = np.asarray(w["history"])
        hist = hist[:, None] if hist.ndim == 1 else hist
        ds = ListDataset([{"start": pd.Period("2000-01-01", freq=_freq(freq)),
                           "target": hist[:, j]} for j in range(hist.shape[1])],
                         freq=_freq(freq))
        fc = list(pred.predict(ds))
        out.append(np.stack([f.samples[0] for f in fc], -1))
    return np.stack(out)[:, None].astype(np.float32)


def deepar(train_series: Sequence[np.ndarray], windows: Sequence[dict], prediction_length: int,
           context_length: int, freq: str = "h", num_samples: int = 100, epochs: int = 5,
           batches_per_epoch: int = 50, seed: int = 0) -> np.ndarray:
    """Train GluonTS's (torch) DeepAR on the training series and forecast the test windows.

    Returns:
        ``(W, num_samples, H, D)`` samples.
    """
    import tempfile

    import lightning as L
    from gluonts.dataset.common import ListDataset
    from gluonts.torch.model.deepar import DeepAREstimator

    L.seed_everything(seed, verbose=False)
    f = _freq(freq)
    start = pd.Period("2000-01-01", freq=f)
    train = ListDataset([{"start": start, "target": s[:, j]} for s in train_series
                         for j in range(s.shape[1])], freq=f)
    est = DeepAREstimator(freq=f, prediction_length=prediction_length,
                          context_length=context_length, num_batches_per_epoch=batches_per_epoch,
                          trainer_kwargs={"max_epochs": epochs, "accelerator": "cpu",
                                          "enable_progress_bar": False,
                                          "enable_model_summary": False, "logger": False,
                                          "default_root_dir": tempfile.mkdtemp()})
    predictor = est.train(train)
    items = []
    for w in windows:
        hist = np.asarray(w["history"])
        hist = hist[:, None] if hist.ndim == 1 else hist
        items += [{"start": start, "target": hist[:, j]} for j in range(hist.shape[1])]
    fcs = list(predictor.predict(ListDataset(items, freq=f), num_samples=num_samples))
    d = np.asarray(windows[0]["history"]).reshape(len(windows[0]["history"]), -1).shape[1]
    samples = np.stack([fc.samples for fc in fcs])  # (W*D, S, H)
    return samples.reshape(len(windows), d, num_samples, prediction_length) \
        .transpose(0, 2, 3, 1).astype(np.float32)
