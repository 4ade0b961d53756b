"""TSDiff models as GluonTS ``Predictor`` s: ``SampleForecast`` s for any GluonTS dataset.

::

    from gluonts.evaluation import Evaluator
    from gluonts.evaluation.backtest import make_evaluation_predictions

    predictor = TSDiffPredictor(model, freq="MS", num_samples=100)   # TSDiff-Q by default
    forecasts, series = make_evaluation_predictions(test_dataset, predictor)
    agg, per_item = Evaluator()(series, forecasts)

Every variant: :class:`~domaindiff_timeseries.model.TSDiffCond` (conditional sampling),
:class:`~domaindiff_timeseries.model.TSDiff` with ``guidance="quantile"`` (TSDiff-Q) or ``"mse"``
(TSDiff-MS), under any core sampler (``sampler``, ``steps``); :meth:`TSDiffPredictor.fast` is
the fast guided sampler (SDE-DPM-Solver++(2M), 10 network evaluations, guidance steps on the
prediction), and a few-step student of ``domaindiff distill`` forecasts with its own sampler
and steps (the defaults: the checkpoint's ``sampler`` / ``sampling_steps``).

Each entry's forecast is drawn from its last ``context_length`` steps (a shorter entry is
left-padded with missing values, which are unobserved like every NaN of the target); the
``max(lags)`` steps before feed the lag channels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from gluonts.model.predictor import Predictor

from domaindiff_timeseries.data import make_window, time_features

__all__ = ["TSDiffPredictor"]


class TSDiffPredictor(Predictor):
    """A GluonTS predictor drawing TSDiff forecasts (see the module).

    Args:
        model: a trained ``TSDiff`` (self-guided) or ``TSDiffCond``.
        freq: the data's frequency (for calendar covariates and the forecasts' start periods;
            ``None``: each entry's ``start`` period's own).
        guidance: ``quantile`` (TSDiff-Q), ``mse`` (TSDiff-MS) for an unconditional model;
            ignored (``none``) for ``TSDiffCond``.
        num_samples: samples per forecast (``predict(..., num_samples=)`` overrides it).
        scale: guidance scale.
        sampler: core sampler (``ancestral`` = DDPM, ``ddim``, ``dpm_solver_pp_2m``,
            ``distilled`` ...; default: the model's own, e.g. ``ancestral`` for TSDiff and
            ``distilled`` for a distilled student).
        steps: sampler steps (default: the model's ``sampling_steps`` with its own sampler,
            else the diffusion's ``T``).
        covariates: for a model with covariates: ``"time"`` (calendar features of each entry's
            dates), ``"file"`` (the entry's ``feat_dynamic_real`` over history and horizon,
            standardised over the history) or ``"file+time"``.
        batch_size: sequences sampled at once.
        seed: noise seed.
        **options: further :func:`~domaindiff_timeseries.forecast.forecast` options (``eta``,
            ``safe``, ``gradient``, ``inner_steps`` ...).
    """

    def __init__(self, model: Any, freq: str | None = None, guidance: str = "quantile",
                 num_samples: int = 100, scale: float = 4.0, sampler: str | None = None,
                 steps: int | None = None, covariates: str | None = None,
                 batch_size: int = 800, seed: int = 0, **options: Any) -> None:
        if model.context_length is None or model.prediction_length is None:
            raise ValueError("model: context_length / prediction_length unknown (train it with "
                             "a TimeSeriesData or give them)")
        super().__init__(prediction_length=int(model.prediction_length))
        if getattr(model, "conditional", False):
            guidance = "none"
        elif guidance not in ("quantile", "mse"):
            raise ValueError(f"guidance: use 'quantile' (TSDiff-Q) or 'mse' (TSDiff-MS) for an "
                             f"unconditional TSDiff, got {guidance!r}")
        n_cov = int(getattr(model, "covariates", 0) or 0)
        if n_cov and covariates not in ("time", "file", "file+time"):
            raise ValueError(f"covariates: the model reads {n_cov} covariate channels: use "
                             "'time', 'file' or 'file+time' (as the data it was trained on)")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        own = getattr(model, "default_sampler", None) or "ancestral"
        if sampler is None or sampler == own:
            sampler = own
            if steps is None and own != "ancestral":
                steps = getattr(model, "sampling_steps", None)
        self.model, self.freq, self.guidance = model, freq, guidance
        self.num_samples, self.scale, self.sampler, self.steps = num_samples, scale, sampler, steps
        self.covariates = covariates if n_cov else None
        self.batch_size, self.seed, self.options = batch_size, seed, options

    #: the fast guided sampler of :meth:`fast` (the plugin's <= 10-NFE TSDiff-Q setting)
    FAST: dict[str, Any] = {"sampler": "sde_dpm_solver_pp_2m", "steps": 10, "scale": 32.0,
                            "x0_steps": 4}

    @classmethod
    def fast(cls, model: Any, freq: str | None = None, guidance: str = "quantile",
             **kwargs: Any) -> TSDiffPredictor:
        """The fast guided predictor: SDE-DPM-Solver++(2M), 10 NFE, scale 32, 4 x0 steps.

        Self-guidance on the prediction at each network evaluation with 4 extra guidance steps
        on it (no network call; see :class:`~domaindiff_timeseries.forecast.
        PredictionSelfGuidance`). ``kwargs`` override :attr:`FAST` and the other arguments.
        """
        return cls(model, freq=freq, guidance=guidance, **{**cls.FAST, **kwargs})

    @property
    def name(self) -> str:
        """``tsdiff_cond``, ``tsdiff_q`` or ``tsdiff_ms``."""
        return {"none": "tsdiff_cond", "quantile": "tsdiff_q", "mse": "tsdiff_ms"}[self.guidance]

    def predict(self, dataset: Any, num_samples: int | None = None,
                **kwargs: Any) -> Iterator[Any]:
        """``SampleForecast`` s of the horizon after each entry's target (in dataset order)."""
        from gluonts.model.forecast import SampleForecast

        from domaindiff_timeseries.forecast import forecast

        entries = list(dataset)
        if not entries:
            return
        windows, starts, ids = [], [], []
        for i, e in enumerate(entries):
            w, start = self._window(e, i)
            windows.append(w)
            starts.append(start)
            ids.append(e.get("item_id"))
        n = int(num_samples or self.num_samples)
        samples = forecast(self.model, windows, n, guidance=self.guidance, scale=self.scale,
                           sampler=self.sampler, steps=self.steps, batch_size=self.batch_size,
                           seed=self.seed, progress=False, **self.options)
        for i in range(len(entries)):
            s = samples[i]
            s = s[..., 0] if s.shape[-1] == 1 else s
            yield SampleForecast(samples=s, start_date=starts[i], item_id=ids[i],
                                 info={"method": self.name, "sampler": self.sampler,
                                       "steps": self.steps})

    def _window(self, entry: dict, i: int) -> tuple[dict, Any]:
        """The test window (context from the entry, horizon unknown) and the forecast start."""
        import pandas as pd

        m = self.model
        c, h = int(m.context_length), int(m.prediction_length)
        where = f"dataset entry {i}" + (f" (item {entry['item_id']!r})"
                                        if entry.get("item_id") is not None else "")
        if "target" not in entry or "start" not in entry:
            raise ValueError(f"{where}: a GluonTS entry needs 'start' and 'target'")
        y = np.asarray(entry["target"], dtype=np.float32)
        y = y[:, None] if y.ndim == 1 else y.T
        if y.shape[1] != m.dim:
            raise ValueError(f"{where}: target has {y.shape[1]} channels, the model {m.dim}")
        if not np.isfinite(y[-c:]).any():
            raise ValueError(f"{where}: no observed value in the last {c} steps (context_length)")
        pad = max(0, c - len(y))
        series = np.concatenate([np.full((pad, y.shape[1]), np.nan, np.float32), y,
                                 np.full((h, y.shape[1]), np.nan, np.float32)])
        start = entry["start"]
        freq = self.freq or (start.freqstr if isinstance(start, pd.Period) else None)
        if freq is None:
            raise ValueError(f"{where}: 'start' is not a pd.Period; pass freq=")
        period = start if isinstance(start, pd.Period) else pd.Period(start, freq=freq)
        cov = self._covariates(entry, series, pad, len(y), period, freq, where)
        w = make_window(series, len(series), c, h, max(m.lags, default=0), cov)
        w["history"] = y
        return w, period + len(y)

    def _covariates(self, entry: dict, series: np.ndarray, pad: int, n: int, period, freq: str,
                    where: str) -> np.ndarray | None:
        if self.covariates is None:
            return None
        parts = []
        if "file" in self.covariates:
            f = entry.get("feat_dynamic_real")
            if f is None:
                raise ValueError(f"{where}: covariates='file' needs feat_dynamic_real")
            f = np.asarray(f, dtype=np.float64)
            f = f[:, None] if f.ndim == 1 else f.T
            h = len(series) - pad - n
            if len(f) < n + h:
                raise ValueError(f"{where}: feat_dynamic_real has {len(f)} steps; it must cover "
                                 f"the target ({n}) and the horizon ({h})")
            f = f[:n + h]
            mu, sd = f[:n].mean(0), f[:n].std(0)
            f = (f - mu) / np.where(sd > 0, sd, 1.0)
            parts.append(np.concatenate([np.zeros((pad, f.shape[1])), f]).astype(np.float32))
        if "time" in self.covariates:
            first = period.to_timestamp() - pad * pd_offset(freq)
            parts.append(time_features(len(series), freq, start=first))
        return np.concatenate(parts, 1)


def pd_offset(freq: str):
    """The pandas offset of ``freq``."""
    from domaindiff_timeseries.frequency import _offset

    return _offset(freq)
