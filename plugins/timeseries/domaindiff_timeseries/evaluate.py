"""Evaluation of a TSDiff checkpoint (the core's EvalApp): the forecasting and refinement tables.

    domaindiff eval timeseries ckpt=run.ckpt
    domaindiff eval timeseries ckpt=run.ckpt sampler=ddim steps=10 methods=[tsdiff_q]
    domaindiff eval timeseries ckpt=run.ckpt deepar_epochs=5 refine=true
    domaindiff eval timeseries ckpt=run.ckpt tstr_samples=1000 tstr_deepar_epochs=5  # TSTR
    domaindiff eval timeseries ckpt=run.ckpt anomaly=true methods=[]   # ImDiffusion PA-F1

Writes ``<out_dir>/metrics_<sampler>_<steps>.json`` and ``fan_<sampler>_<steps>.png``.

:class:`TimeSeriesEval` is a :class:`domaindiff.evaluation.EvalApp`: the core checks the shared
settings (``ckpt``, ``sampler``, ``steps``, ``num_samples``, ``seed``, ``sampler_options``),
loads the checkpoint (weights only unless ``trust_checkpoint``) and runs the Hydra entry point
with one-line errors; the driver is this plugin's, because it compares several forecasters
(the self-guided and conditional models and the baselines) on the same test windows.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from domaindiff.cli import check_counts
from domaindiff.data import atomic_write_text
from domaindiff.evaluation import EvalApp
from domaindiff.module import load_checkpoint
from domaindiff_timeseries.baselines import deepar, gluonts_seasonal_naive
from domaindiff_timeseries.data import TimeSeriesData
from domaindiff_timeseries.forecast import forecast, refine
from domaindiff_timeseries.metrics import forecast_metrics
from domaindiff_timeseries.plots import fan_chart

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

    def check(self, cfg) -> None:
        """The core's checks, then this app's."""
        super().check(cfg)
        check_settings(cfg)

    def run(self, cfg) -> dict:
        """Check, load, forecast with every method, score, write JSON and PNG."""
        base = {k: v for k, v in self.base().items() if k not in cfg}
        cfg = OmegaConf.merge(OmegaConf.create(base), cfg)
        self.check(OmegaConf.to_container(cfg, resolve=True))
        return evaluate(cfg, app=self)

    def base(self) -> dict:
        """The core's shared settings (without Hydra's)."""
        from domaindiff.evaluation import base_config

        return {k: v for k, v in base_config(self.plugin).items() if k != "hydra"}


def evaluate(cfg: DictConfig, app: EvalApp | None = None) -> dict:
    """Forecast the test windows with each method, score them, write JSON and PNG."""
    check_settings(cfg)
    methods = list(cfg.methods)
    trust = bool(cfg.get("trust_checkpoint", False))
    model = app.load(cfg) if app is not None else load_checkpoint(cfg.ckpt, trust=trust)
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
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.sampler}_{int(cfg.steps)}"
    atomic_write_text(out / f"metrics_{stem}.json", json.dumps(
        {**result, "config": OmegaConf.to_container(cfg, resolve=False)}, indent=2, default=str))
    if forecasts:
        fan_chart(windows, forecasts, model.context_length, out / f"fan_{stem}.png",
                  int(cfg.plot_windows), run=f"{Path(cfg.ckpt).name}, {cfg.sampler}, "
                  f"{int(cfg.steps)} steps, "
                  f"{Path(str(cfg.path)).name if cfg.get('path') else cfg.dataset}")
    print(json.dumps(result, indent=2))
    return result


#: Hydra entry point (``domaindiff eval timeseries ...``)
main = TimeSeriesEval("timeseries").hydra_main(Path(__file__).parent / "conf", "eval")


if __name__ == "__main__":
    main()
