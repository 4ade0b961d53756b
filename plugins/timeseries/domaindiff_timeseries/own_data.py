"""Check the plugin on users' series at other frequencies: weekly CO2 (with gaps), monthly sunspots.

``python -m domaindiff_timeseries.own_data --epochs 8 --out own_data.json`` reads statsmodels'
weekly Mauna Loa CO2 (59 missing weeks; statsmodels comes with pmdarima) and pmdarima's monthly
sunspots as pandas objects, lets :class:`~domaindiff_timeseries.data.TimeSeriesData` take the
frequency, season, lengths and lags from them, and scores on the same 7 rolling test windows:
seasonal naive at the data's season, at season 1 (GluonTS's weekly default) and at 24 (what an
hourly default would force), and TSDiff-Q (DDIM 10) after a short fit; it reports the range of
the median forecast next to the data's (missing values must not pull it out of range).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np


def _series():
    import pandas as pd
    from pmdarima.datasets import load_sunspots
    from statsmodels.datasets import co2

    sun = load_sunspots(as_series=True)
    sun.index = pd.period_range("1749-01", periods=len(sun), freq="M")
    return {"co2 (weekly)": (co2.load_pandas().data["co2"], {"prediction_length": 52}),
            "sunspots (monthly)": (sun, {})}


def run(epochs: int = 8, samples: int = 16, seed: int = 0) -> dict:
    """Score every method on both series (see the module); returns the table."""
    import lightning as L
    import torch

    from domaindiff_timeseries.data import TimeSeriesData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import forecast_metrics, seasonal_naive
    from domaindiff_timeseries.model import TSDiff

    out: dict = {}
    for name, (data, kw) in _series().items():
        L.seed_everything(seed, verbose=False)
        dm = TimeSeriesData(dataset=data, num_test_windows=7, batch_size=32, batches_per_epoch=32,
                            seed=seed, **kw)
        wins = dm.test_windows()
        c, h = dm.context_length, dm.prediction_length
        target = np.stack([w["target"][c:] for w in wins])
        hist = [w["history"] for w in wins]
        row: dict = {"freq": dm.freq, "season": dm.season, "context_length": c,
                     "prediction_length": h, "lags": dm.lags,
                     "missing": int(sum(np.isnan(s).sum() for s in dm.test_series))}
        for label, m in ((f"seasonal naive (season {dm.season})", dm.season),
                         ("seasonal naive (season 1)", 1), ("seasonal naive (season 24)", 24)):
            row[label] = forecast_metrics(seasonal_naive(wins, h, m), target, hist, dm.season)
        if epochs <= 0:  # the baselines only
            out[name] = row
            continue
        model = TSDiff(hidden=32, num_blocks=2, emb_dim=64, d_state=32, lr=2e-3, ema_decay=0.99)
        t0 = time.perf_counter()
        L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                  gradient_clip_val=0.5).fit(model, datamodule=dm)
        row["train_seconds"] = time.perf_counter() - t0
        with torch.no_grad():
            f = forecast(model, wins, samples, guidance="quantile", scale=4.0, sampler="ddim",
                         steps=10, eta=1.0, progress=False, seed=seed)
        row["TSDiff-Q (DDIM 10)"] = forecast_metrics(f, target, hist, dm.season)
        med = np.median(f, 1)
        obs = np.concatenate([s[np.isfinite(s)] for s in dm.test_series])
        row["median_forecast_range"] = [float(med.min()), float(med.max())]
        row["data_range"] = [float(obs.min()), float(obs.max())]
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    """Run, print a table, write the JSON (atomically)."""
    from domaindiff.data import atomic_write_text
    from domaindiff.quiet import quiet_third_party

    quiet_third_party()
    warnings.filterwarnings("ignore", category=UserWarning)
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=8, help="TSDiff training epochs (0: baselines only)")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="own_data.json")
    args = p.parse_args(argv)
    res = run(args.epochs, args.samples, args.seed)
    print("| series | freq, season, context/horizon | method | CRPS | MASE |")
    print("|---|---|---|---|---|")
    for name, row in res.items():
        what = (f"{row['freq']}, {row['season']}, {row['context_length']}/"
                f"{row['prediction_length']}")
        for k, v in row.items():
            if isinstance(v, dict):
                print(f"| {name} | {what} | {k} | {v['CRPS']:.4f} | {v['MASE']:.3f} |")
        if "median_forecast_range" not in row:
            continue
        print(f"| {name} | | median forecast range / data range | "
              f"{row['median_forecast_range'][0]:.1f}..{row['median_forecast_range'][1]:.1f} | "
              f"{row['data_range'][0]:.1f}..{row['data_range'][1]:.1f} |")
    atomic_write_text(args.out, json.dumps({"settings": vars(args), "results": res}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
