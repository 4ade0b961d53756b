"""Evaluation of a TSDiff checkpoint (the core's EvalApp): the forecasting and refinement tables.

    domaindiff eval timeseries ckpt=run.ckpt
    domaindiff eval timeseries ckpt=run.ckpt sampler=ddim steps=10 methods=[tsdiff_q]
    domaindiff eval timeseries ckpt=run.ckpt deepar_epochs=5 refine=true
    domaindiff eval timeseries ckpt=run.ckpt tstr_samples=1000 tstr_deepar_epochs=5  # TSTR
    domaindiff eval timeseries ckpt=run.ckpt anomaly=true methods=[]   # ImDiffusion PA-F1

Writes into ``out_dir``, for ``<stem>`` = ``<sampler>_<steps>``: ``samples_<stem>.pt`` (each
method's forecast samples, ``(windows, num_samples, horizon, dim)`` by method name),
``fan_<stem>.png`` (history, true future and each method's bands, one column per method, a
shared y-range per window) and last ``metrics_<stem>.json`` (with the settings under
``config`` and the files under ``files``).

:class:`TimeSeriesEval` is a :class:`domaindiff.evaluation.EvalApp`: the core checks the shared
settings (``ckpt``, ``sampler``, ``steps``, ``num_samples``, ``seed``, ``sampler_options``,
``threads``), loads the checkpoint (weights only unless ``trust_checkpoint``), writes the
samples, the picture and the JSON and runs the Hydra entry point with one-line errors. This app
fills in :meth:`~TimeSeriesEval.evaluate`: it compares several forecasters (the self-guided and
conditional models and the baselines) on the same test windows, so its sampling is its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from domaindiff.cli import check_counts
from domaindiff.evaluation import EvalApp
from domaindiff.module import load_checkpoint
from domaindiff_timeseries.baselines import deepar, gluonts_seasonal_naive
from domaindiff_timeseries.data import TimeSeriesData
from domaindiff_timeseries.forecast import forecast, refine
from domaindiff_timeseries.metrics import forecast_metrics
from domaindiff_timeseries.plots import fan_chart

CONF = Path(__file__).parent / "conf" / "eval.yaml"
METHODS = ("tsdiff_q", "tsdiff_ms", "tsdiff_cond", "seasonal_naive", "deepar")


def check_settings(cfg) -> None:
    """Refuse this app's bad settings (counts, methods), each named."""
    check_counts(cfg, positive=("steps", "num_samples", "num_test_windows", "inner_steps",
                                "anomaly_steps", "anomaly_samples"),
                 nonnegative=("deepar_epochs", "tstr_samples", "tstr_deepar_epochs",
                              "plot_windows", "seed"))
    bad = [m for m in list(cfg.get("methods") or []) if m not in METHODS]
    if bad:
        raise ValueError(f"methods: unknown {bad}; choose from {METHODS}")


class TimeSeriesEval(EvalApp):
    """``domaindiff eval timeseries`` on the core's app (see the module)."""

    dpi = 90

    def __init__(self, plugin: str = "timeseries") -> None:
        super().__init__(plugin)
        self.config_file = CONF  # its defaults also for evaluate(cfg) from Python

    def check(self, cfg) -> None:
        """The core's checks, then this app's."""
        super().check(cfg)
        check_settings(cfg)

    def evaluate(self, model, cfg: Mapping[str, Any], generator: torch.Generator | None = None
                 ) -> tuple[dict, dict, list]:
        """Forecast the test windows with each method and score them (see :func:`compare`)."""
        result, forecasts, windows = compare(model, OmegaConf.create(dict(cfg)))
        self.context_length = model.context_length
        head = {"plugin": self.plugin, "ckpt": str(cfg["ckpt"]), "seed": int(cfg["seed"])}
        return ({**head, **result, "config": dict(cfg)},
                {m: torch.as_tensor(np.asarray(f, dtype=np.float32)) for m, f in forecasts.items()},
                windows)

    def save(self, model, samples: dict, cfg: Mapping[str, Any], out: Path,
             stem: str) -> list[Path]:
        """Each method's forecast samples (none when no method ran, e.g. ``methods=[]``)."""
        return super().save(model, samples, cfg, out, stem) if samples else []

    def title(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """Which run: checkpoint, sampler, steps, samples and the data."""
        data = Path(str(cfg["path"])).name if cfg.get("path") else cfg["dataset"]
        return (f"{Path(str(cfg['ckpt'])).name}, {cfg['sampler']}, {int(cfg['steps'])} steps, "
                f"{int(cfg['num_samples'])} samples, {data}")

    def plot(self, model, samples: dict, references: list, cfg: Mapping[str, Any],
             title: str) -> dict | None:
        """Fan charts of the first ``plot_windows`` test windows, one column per method."""
        if not samples or int(cfg["plot_windows"]) <= 0:
            return None
        forecasts = {m: f.numpy() for m, f in samples.items()}
        return {"fan": fan_chart(references, forecasts, self.context_length, None,
                                 int(cfg["plot_windows"]), run=title)}


def compare(model, cfg: DictConfig) -> tuple[dict, dict[str, np.ndarray], list[dict]]:
    """Forecast the test windows with each method and score them.

    Returns:
        the tables (forecasting, and as configured refinement, synthesis, anomaly), each
        method's forecast samples and the test windows.
    """
    methods = list(cfg.methods)
    trust = bool(cfg.trust_checkpoint)
    dm = TimeSeriesData(dataset=cfg.dataset, path=cfg.get("path"),
                        context_length=model.context_length,
                        prediction_length=model.prediction_length, lags=model.lags,
                        num_test_windows=int(cfg.num_test_windows),
                        covariates=cfg.get("covariates"), freq=cfg.get("freq"),
                        season=cfg.get("season"))
    windows = dm.test_windows()
    target = np.stack([w["target"][model.context_length:] for w in windows])
    histories = [w["history"] for w in windows]
    opts = dict(cfg.get("sampler_options") or {})
    if cfg.get("eta") is not None:
        opts["eta"] = float(cfg.eta)
    guide_opts = {"safe": bool(cfg.get("safe", True)),
                  "gradient": str(cfg.get("gradient", "network")),
                  "inner_steps": int(cfg.get("inner_steps", 1))}
    forecasts: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    nfe: dict[str, dict] = {}  # the diffusion methods' network evaluations (forecast's stats)
    h = model.prediction_length
    for m in methods:
        t0 = time.perf_counter()
        if m in ("tsdiff_q", "tsdiff_ms"):
            forecasts[m] = forecast(model, windows, int(cfg.num_samples),
                                    guidance="quantile" if m == "tsdiff_q" else "mse",
                                    scale=float(cfg.scale), sampler=cfg.sampler,
                                    steps=int(cfg.steps), scenario=cfg.scenario,
                                    missing=float(cfg.missing), seed=int(cfg.seed),
                                    stats=nfe.setdefault(m, {}), **guide_opts, **opts)
        elif m == "tsdiff_cond":
            if not cfg.get("cond_ckpt"):
                raise ValueError("methods: tsdiff_cond needs cond_ckpt=<a TSDiffCond checkpoint>")
            cond = load_checkpoint(cfg.cond_ckpt, trust=trust)
            theirs = (getattr(cond, "context_length", None), getattr(cond, "prediction_length", None))
            if theirs != (model.context_length, model.prediction_length):
                raise ValueError(f"cond_ckpt {cfg.cond_ckpt}: context/prediction length {theirs[0]}/"
                                 f"{theirs[1]}, but ckpt {cfg.ckpt} has {model.context_length}/"
                                 f"{model.prediction_length}; both must be trained on the same windows")
            forecasts[m] = forecast(cond, windows, int(cfg.num_samples), guidance="none",
                                    sampler=cfg.sampler, steps=int(cfg.steps),
                                    scenario=cfg.scenario, missing=float(cfg.missing),
                                    seed=int(cfg.seed), stats=nfe.setdefault(m, {}), **opts)
        elif m == "seasonal_naive":
            forecasts[m] = gluonts_seasonal_naive(windows, h, dm.freq, dm.season)
        elif m == "deepar":
            if int(cfg.deepar_epochs) <= 0:
                raise ValueError("methods: deepar needs deepar_epochs > 0")
            forecasts[m] = deepar(dm.train_series, windows, h, model.context_length, dm.freq,
                                  int(cfg.num_samples), int(cfg.deepar_epochs), seed=int(cfg.seed))
        seconds[m] = (time.perf_counter() - t0) / len(windows)
    if int(cfg.deepar_epochs) > 0 and "deepar" not in forecasts:
        t0 = time.perf_counter()
        forecasts["deepar"] = deepar(dm.train_series, windows, h, model.context_length, dm.freq,
                                     int(cfg.num_samples), int(cfg.deepar_epochs),
                                     seed=int(cfg.seed))
        seconds["deepar"] = (time.perf_counter() - t0) / len(windows)
    table = {m: {**forecast_metrics(f, target, histories, dm.season),
                 "seconds_per_window": seconds[m], **nfe.get(m, {})}
             for m, f in forecasts.items()}
    result = {"dataset": cfg.dataset, "sampler": cfg.sampler, "steps": int(cfg.steps),
              "scale": float(cfg.scale), "num_samples": int(cfg.num_samples),
              "scenario": cfg.scenario, "num_windows": len(windows), "forecasting": table}
    if bool(cfg.refine):
        ref_table = {}
        for base in [b for b in ("seasonal_naive", "deepar") if b in forecasts]:
            s = forecasts[base]
            if s.shape[1] == 1:
                s = np.repeat(s, int(cfg.num_samples), 1)
            for how in ("most_likely", "langevin"):
                r = refine(model, windows, s, method=how,
                           iterations=int(cfg.refine_iterations), seed=int(cfg.seed))
                ref_table[f"{base}+{how}"] = forecast_metrics(r, target, histories, dm.season)
            ref_table[base] = table[base]
        result["refinement"] = ref_table
    if int(cfg.get("tstr_samples", 0)) > 0:
        from domaindiff_timeseries.synthesis import real_windows, ridge_score, synthesize

        n = int(cfg.tstr_samples)
        synth = synthesize(model, dm, n, sampler=cfg.sampler, steps=int(cfg.steps),
                           seed=int(cfg.seed))
        result["synthesis"] = {
            "num_synthetic": n,
            "linear_predictive_score_tstr": ridge_score(synth, windows, model.context_length),
            "linear_predictive_score_trtr": ridge_score(real_windows(dm, n), windows,
                                                        model.context_length)}
        if int(cfg.get("tstr_deepar_epochs", 0)) > 0:
            from domaindiff_timeseries.synthesis import deepar_score

            kw = {"freq": dm.freq, "epochs": int(cfg.tstr_deepar_epochs),
                  "num_samples": int(cfg.num_samples), "seed": int(cfg.seed)}
            result["synthesis"]["deepar_tstr"] = deepar_score(synth, windows,
                                                              model.context_length, **kw)
            result["synthesis"]["deepar_trtr"] = deepar_score(real_windows(dm, n), windows,
                                                              model.context_length, **kw)
    if bool(cfg.get("anomaly", False)):
        from domaindiff_timeseries.anomaly import evaluate_anomalies

        if getattr(model, "conditional", False):
            raise ValueError("anomaly=true needs an unconditional TSDiff checkpoint (ckpt)")
        dm.load()
        result["anomaly"] = evaluate_anomalies(
            model, dm.test_series[0], int(cfg.anomaly_region),
            num_anomalies=int(cfg.anomaly_count), repeats=int(cfg.anomaly_repeats),
            seed=int(cfg.seed), season=dm.season, mask=str(cfg.anomaly_mask),
            steps=int(cfg.anomaly_steps), num_samples=int(cfg.anomaly_samples))
    return result, forecasts, windows


APP = TimeSeriesEval("timeseries")
#: Hydra entry point (``domaindiff eval timeseries ...``)
main = APP.hydra_main(CONF.parent, "eval")
#: the same from Python: settings (a dict or DictConfig) -> the metrics JSON's content
evaluate = APP.run


if __name__ == "__main__":
    main()
