"""GeoTDM fidelity at equal budget: GeoTDM, its ablations and the EGTN regression, one run.

Every row trains for the same number of optimiser steps (``--steps``, batch ``--batch-size``, one
torch thread; on a shared machine equal steps is the fair budget, the seconds are recorded) on the same
N-body files (the GeoTDM generator's ``loc_/vel_/edges_/charges_{split}_charged5_initvel1.npy`` in
``--root``, read unchanged by :class:`~domaindiff_trajectories.data.NBody`) with the same
optimiser (Adam, clip 1.0, the learning rate decayed linearly to 10 % over the steps), then is
scored on the first ``--num-eval`` test trajectories: ADE/FDE averaged over K samples (what
GeoTDM reports) and minimum over K. During training every row is scored at ``--curve-points``
fractions of its budget (the training clock stops while it is scored), giving learning curves of
ADE against steps and against training seconds. The first row is then swept over K and over the
number of network evaluations (NFE).

Rows (``--rows``): ``geotdm`` (learnable prior, x0 prediction with the alpha skip, residual scale
0.5), ``geotdm_eps`` (the paper's parametrisation: eps prediction, scale 1, prior starting from
the last frame), ``prior_normal`` (no prior: N(0, I) around the origin), ``prior_com`` (the
condition's centre of mass), ``prior_last`` (the paper's point-wise prior: the last condition
frame, fixed), ``no_equivariance`` (the non-equivariant spatial layer), ``no_attention`` (temporal
weights learnt per frame offset, independent of the features: ``temporal='fixed'``),
``no_shift_invariance`` (absolute instead of relative frame embeddings: ``temporal='absolute'``)
and ``regression`` (the same EGTN trained with MSE as a deterministic forecaster).

    python benchmarks/trajectories_fidelity.py --root DIR_OF_GENERATOR_FILES --steps 1500 \\
        --out benchmarks/results/trajectories_fidelity.json

Writes the JSON, ``<out>.png`` (learning curves: ADE avg / min against steps and seconds) and
``<out>_k_nfe.png`` (ADE against K and against NFE) and prints the table. On a shared machine the
rows can run as parallel processes (``--rows`` subsets, each its own ``--out``) started together,
then ``--merge a.json,b.json,...`` writes the one table, JSON and plots of them all.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "trajectories")]

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff.plotting import pyplot, save_figure  # noqa: E402
from domaindiff.resume import make_train_loader  # noqa: E402
from domaindiff_trajectories.data import NBody  # noqa: E402
from domaindiff_trajectories.metrics import ade_fde, ade_fde_k, constant_velocity  # noqa: E402
from domaindiff_trajectories.model import GeoTDM  # noqa: E402
from domaindiff_trajectories.networks import EGTNRegressor  # noqa: E402

# skip_sigma_data 1 (plain alpha skip), as in every run recorded before its default became 0.25:
# the geotdm_skip_sd row (--skip-sigma-data) and --ablation-skip-sigma-data set other values
TUNED = {"parametrization": "x0", "x0_skip": "alpha", "scale": 0.5, "prior": "learnable",
         "prior_init": "velocity", "spatial": "egnn", "skip_sigma_data": 1.0}
ROWS = {
    "geotdm": ("GeoTDM (learnable prior, skip_sigma_data 1)", TUNED),
    "geotdm_eps": ("GeoTDM, paper parametrisation (eps, scale 1, last-frame start)",
                   {**TUNED, "parametrization": "eps", "x0_skip": "identity", "scale": 1.0,
                    "prior_init": "last"}),
    "prior_normal": ("GeoTDM, N(0, I) prior (no prior)", {**TUNED, "prior": "none"}),
    "prior_com": ("GeoTDM, CoM prior", {**TUNED, "prior": "com"}),
    "no_equivariance": ("GeoTDM, no equivariance", {**TUNED, "spatial": "plain"}),
    "prior_last": ("GeoTDM, point-wise prior (last condition frame)", {**TUNED, "prior": "last"}),
    "no_attention": ("GeoTDM, no attention (weights per frame offset)",
                     {**TUNED, "temporal": "fixed"}),
    "no_shift_invariance": ("GeoTDM, no shift invariance (absolute frame embeddings)",
                            {**TUNED, "temporal": "absolute"}),
    "geotdm_skip_sd": ("GeoTDM, skip for a residual of std 0.5 (skip_sigma_data 0.5)",
                       {**TUNED, "skip_sigma_data": 0.5}),
    "regression": ("EGTN regression", None),
}


ABLATIONS = ("prior_normal", "prior_com", "prior_last", "no_equivariance", "no_attention",
             "no_shift_invariance")


def _batches(loader: DataLoader) -> list[dict[str, torch.Tensor]]:
    return [dict(b) for b in loader]


@torch.no_grad()
def score(model, batches, k: int, sampler: str, steps: int, seed: int = 0,
          use_ema: bool = True) -> dict[str, float]:
    """ADE/FDE avg and min over ``k`` (GeoTDM) or of the single forecast (regression).

    GeoTDM also gets ``ade_meank``/``fde_meank``: the error of the mean of its ``k`` samples (a
    point forecast, the quantity the regression estimates; not what GeoTDM reports).
    ``sample_cpu_seconds``: CPU time of the scoring (one thread).
    """
    sums: dict[str, float] = {}
    count = 0
    gen = torch.Generator().manual_seed(seed)
    c0 = time.process_time()
    for b in batches:
        if isinstance(model, EGTNRegressor):
            a, f = ade_fde(model(b), b["x"], b["mask"])
            res = {"ade_avg": a, "fde_avg": f, "ade_min": a, "fde_min": f}
        else:
            s = model.forecast(b, k=k, sampler=sampler, steps=steps, generator=gen,
                               use_ema=use_ema)
            res = ade_fde_k(s, b["x"], b["mask"])
            a, f = ade_fde(s.mean(0), b["x"], b["mask"])
            res = {**res, "ade_meank": a, "fde_meank": f}
        for key, v in res.items():
            sums[key] = sums.get(key, 0.0) + float(v.sum())
        count += len(b["x"])
    out = {key: v / count for key, v in sums.items() if key.endswith(("avg", "min", "meank"))}
    return {**out, "sample_cpu_seconds": time.process_time() - c0}


@torch.no_grad()
def k_sweep(model, batches, k_max: int, sampler: str, steps: int) -> list[dict]:
    """ADE/FDE avg and min over the first k of ``k_max`` samples, k = 1..k_max."""
    gen = torch.Generator().manual_seed(1)
    per = []  # (K, items) per batch
    for b in batches:
        s = model.forecast(b, k=k_max, sampler=sampler, steps=steps, generator=gen)
        d = ((s - b["x"][None]) ** 2).sum(-1).sqrt()  # (K, B, N, T)
        m = b["mask"][None, :, :, None]
        d = (d * m).sum(2) / m.sum(2)  # (K, B, T)
        per.append((d.mean(-1), d[..., -1]))
    ade = torch.cat([p[0] for p in per], 1)
    fde = torch.cat([p[1] for p in per], 1)
    return [{"k": k, "ade_avg": float(ade[:k].mean()), "fde_avg": float(fde[:k].mean()),
             "ade_min": float(ade[:k].min(0).values.mean()),
             "fde_min": float(fde[:k].min(0).values.mean())} for k in range(1, k_max + 1)]


def parse_spec(spec: str) -> tuple[str, int, dict[str, float]]:
    """``sampler:nfe[:opt=value...]`` -> (sampler, nfe, options), e.g. ``ddim:10:eta=0.5``.

    ``tau`` is not a sampler option: it multiplies the prior draw ``x_T`` (a temperature).
    """
    parts = spec.split(":")
    if len(parts) < 2:
        raise ValueError(f"sampler spec {spec!r}: expected sampler:nfe[:opt=value...]")
    opts = {}
    for part in parts[2:]:
        key, _, value = part.partition("=")
        if not value:
            raise ValueError(f"sampler spec {spec!r}: option {part!r} is not key=value")
        opts[key] = float(value)
    return parts[0], int(parts[1]), opts


@torch.no_grad()
def draw(model, batch, k: int, sampler: str, steps: int, opts: dict[str, float],
         gen: torch.Generator) -> torch.Tensor:
    """``k`` forecasts ``(k, B, N, T, 3)``; ``opts['tau']`` scales the prior draw ``x_T``."""
    opts = dict(opts)
    tau = opts.pop("tau", None)
    if tau is None:
        return model.forecast(batch, k=k, sampler=sampler, steps=steps, generator=gen, **opts)
    template = model.sample_template(len(batch["x"]), batch)
    proc = model.processes["x"]
    outs = []
    for _ in range(k):
        tpl = dict(template)
        tpl["x"] = tau * proc.prior_sample(tpl["x"], tpl, gen)
        outs.append(model.sample(template=tpl, sampler=sampler, steps=steps, generator=gen,
                                 prior=False, **opts)["x"])
    return torch.stack(outs)


@torch.no_grad()
def spread_study(model, batches, specs: list[str], k_max: int, seed: int = 2) -> list[dict]:
    """Per sampler spec: avg / min over K = 5 and ``k_max`` of the same draws, and the spread.

    ``spread`` is the mean distance of a sample to the mean of its ``k_max`` samples (averaged
    over nodes, frames, samples and trajectories; ADE units): 0 when the K samples coincide.
    ``ade_meank``: ADE of that mean (a point forecast).
    """
    out = []
    for spec in specs:
        sampler, nfe, opts = parse_spec(spec)
        gen = torch.Generator().manual_seed(seed)
        c0 = time.process_time()
        dists, spreads, means = [], [], []
        for b in batches:
            s = draw(model, b, k_max, sampler, nfe, opts, gen)  # (K, B, N, T, 3)
            m = b["mask"][None, :, :, None]
            d = ((s - b["x"][None]) ** 2).sum(-1).sqrt()
            dists.append((d * m).sum(2) / m.sum(2))  # (K, B, T)
            c = s.mean(0, keepdim=True)
            sp = ((s - c) ** 2).sum(-1).sqrt()
            spreads.append(((sp * m).sum(2) / m.sum(2)).mean((0, 2)))  # (B,)
            dm = ((c - b["x"][None]) ** 2).sum(-1).sqrt()
            means.append(((dm * m).sum(2) / m.sum(2))[0])  # (B, T)
        d = torch.cat(dists, 1)
        mean_d = torch.cat(means, 0)
        row = {"spec": spec, "sampler": sampler, "nfe": nfe, **opts, "k_max": k_max,
               "spread": float(torch.cat(spreads).mean()),
               "ade_meank": float(mean_d.mean()), "fde_meank": float(mean_d[:, -1].mean()),
               "sample_cpu_seconds": time.process_time() - c0}
        for k in sorted({min(5, k_max), k_max}):
            ade, fde = d[:k].mean(-1), d[:k, :, -1]
            row[f"k{k}"] = {"ade_avg": float(ade.mean()), "fde_avg": float(fde.mean()),
                            "ade_min": float(ade.min(0).values.mean()),
                            "fde_min": float(fde.min(0).values.mean())}
        out.append(row)
        print(f"    spread {spec}: {json.dumps(row)}", flush=True)
    return out


def row_model(settings: dict | None, data: NBody, args) -> tuple[torch.nn.Module,
                                                                  torch.optim.Optimizer]:
    """A row's model and its Adam: the EGTN regressor (``settings`` None) or a GeoTDM.

    Both use ``args.hidden`` x ``args.layers`` (time embedding ``args.time_dim``); a GeoTDM
    takes ``settings`` as its options, ``args.prior_layers`` for its learnable prior and
    ``args.ema`` as its EMA decay, and its optimiser holds its network's parameters.
    """
    if settings is None:
        model = EGTNRegressor(1, args.hidden, args.layers, data.pred_frames, args.time_dim)
        return model, torch.optim.Adam(model.parameters(), lr=args.lr)
    model = GeoTDM(hidden=args.hidden, layers=args.layers, time_dim=args.time_dim,
                   prior_layers=args.prior_layers, pred_frames=data.pred_frames,
                   lr=args.lr, ema_decay=args.ema, x0_clip=20.0, **settings)
    return model, torch.optim.Adam(model.network.parameters(), lr=args.lr)


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor],
               opt: torch.optim.Optimizer, diffusion: bool, lr: float, step: int, budget: int,
               seed: int) -> torch.Tensor:
    """One optimiser step of a benchmark row, shared by this script and the plateau study.

    The learning rate decays linearly from ``lr`` to 10 % over ``budget`` steps; gradients are
    clipped to norm 1. A GeoTDM (``diffusion``) draws its noise from a generator seeded by
    ``(seed, step)`` and updates its EMA; a regressor is trained with the squared error of its
    forecast.

    Returns:
        The step's loss (detached).
    """
    for g in opt.param_groups:  # linear decay to 10 % over the budget
        g["lr"] = lr * (1.0 - 0.9 * min(step / budget, 1.0))
    model.train()
    if diffusion:
        model.generator.manual_seed(seed * 100003 + step)
        loss = model.loss(model.batch_to_state(batch))
    else:
        loss = ((model(batch) - batch["x"]) ** 2).sum(-1).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if diffusion:
        model.update_ema()
    return loss.detach()


def train_row(name: str, settings: dict | None, data: NBody, eval_batches, args,
              seed: int = 0) -> dict:
    """Train one row for ``args.steps`` optimiser steps; score at the curve points.

    ``seed`` seeds the initial weights (``torch.manual_seed``), the training noise (step ``i``
    draws from ``seed * 100003 + i``) and, with ``args.reshuffle``, the batch order.
    """
    torch.manual_seed(seed)
    model, opt = row_model(settings, data, args)
    budget = int(args.steps)
    points = [round(budget * (i + 1) / args.curve_points) for i in range(args.curve_points)]
    curve, steps, trained, trained_cpu, epoch = [], 0, 0.0, 0.0, 0
    subset: dict = {}
    t_wall = time.perf_counter()
    while steps < budget:
        if args.reshuffle:  # a new (seed, epoch) order every epoch
            loader = make_train_loader(data.train_set, batch_size=data.batch_size, seed=seed,
                                       position={"epoch": epoch, "batches": 0}, drop_last=True)
        else:  # without a trainer: epoch 0's (data seed) order every epoch (the earlier runs)
            loader = data.train_loader(data.train_set, drop_last=True)
        for batch in loader:
            t0, c0 = time.perf_counter(), time.process_time()
            loss = train_step(model, batch, opt, diffusion=settings is not None, lr=args.lr,
                              step=steps, budget=budget, seed=seed)
            steps += 1
            trained += time.perf_counter() - t0
            trained_cpu += time.process_time() - c0
            if points and steps >= points[0]:
                points.pop(0)
                model.eval()
                row = {"steps": steps, "train_seconds": trained,
                       "train_cpu_seconds": trained_cpu, "epoch": epoch,
                       "loss": float(loss.detach()),
                       **score(model, eval_batches, args.k, args.sampler, args.nfe)}
                if settings is not None:
                    for spec in filter(None, args.curve_samplers.split(",")):
                        sampler, nfe = spec.split(":")
                        row[spec] = score(model, eval_batches, args.k, sampler, int(nfe))
                    if args.curve_raw:
                        row["raw_weights"] = score(model, eval_batches, args.k, args.sampler,
                                                   args.nfe, use_ema=False)
                curve.append(row)
                print(f"  {name}: {json.dumps(row)}", flush=True)
                if args.on_curve:
                    args.on_curve(name, {"curve": curve})
            if steps == args.subset_at and args.subset_n:
                model.eval()
                sub = args.subset_batches
                specs = args.subset_samplers.split(",") if settings is not None else ["-:1"]
                for spec in specs:
                    sampler, nfe = spec.split(":")
                    subset[spec] = {"steps": steps, "train_seconds": trained,
                                    "train_cpu_seconds": trained_cpu,
                                    **score(model, sub, args.k, sampler, int(nfe))}
                    print(f"  {name} subset {spec}: {json.dumps(subset[spec])}", flush=True)
            if steps >= budget:
                break
        epoch += 1
    model.eval()
    return {"name": name, "label": ROWS[name][0], "settings": settings, "seed": seed,
            "steps": steps,
            "train_seconds": trained, "train_cpu_seconds": trained_cpu,
            "wall_seconds": time.perf_counter() - t_wall,
            "epochs": epoch, "curve": curve, "final": curve[-1] if curve else {},
            "subset": subset,
            "_model": model}


def curve_series(rows: list[dict], main: str = "") -> list[dict]:
    """Learning-curve series, one per (row, sampler), averaged over the row's seeds.

    Each series: ``name``, ``label`` (the row's label, plus the sampler), ``sampler`` (``""``
    for the main sampler, else the ``--curve-samplers`` spec), ``seeds`` and, per metric
    (``steps``, ``train_seconds``, ``ade_avg``, ...), ``mean`` and sample ``std`` lists over
    the seeds at each curve point (std 0 with one seed). Seeds are aligned by curve point.
    """
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name and r["curve"]]
        if not group:
            continue
        n = min(len(r["curve"]) for r in group)
        specs = [""] + sorted({k for p in group[0]["curve"] for k, v in p.items()
                               if isinstance(v, dict) and "ade_avg" in v})
        for spec in specs:
            if name == "regression" and spec:
                continue
            series = {"name": name, "sampler": spec, "seeds": [r.get("seed", 0) for r in group],
                      "label": group[0]["label"] + (f", {spec}" if spec else
                                                    (f", {main}" if main and name != "regression"
                                                     else ""))}
            for key in ("steps", "train_seconds", "ade_avg", "fde_avg", "ade_min", "fde_min"):
                vals = []
                for i in range(n):
                    pts = [r["curve"][i] if key in ("steps", "train_seconds") or not spec
                           else r["curve"][i][spec] for r in group]
                    vals.append(_mean_std([float(p[key]) for p in pts]))
                series[key] = {"mean": [v["mean"] for v in vals], "std": [v["std"] for v in vals]}
            out.append(series)
    return out


def plot_curves(rows: list[dict], path: Path, title: str, main: str = "") -> None:
    """ADE and FDE avg over K (solid) and min over K (dashed) against steps; ADE against seconds.

    One line per (row, sampler) (:func:`curve_series`): the mean over seeds, with a band of
    ± one standard deviation over seeds when there are several; ``main`` names the main sampler.
    """
    plt = pyplot()
    series = curve_series(rows, main)
    ncol = 2 if max((len(se["label"]) for se in series), default=0) > 60 else 3
    legend_rows = math.ceil(len(series) / ncol)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4 + 0.22 * legend_rows))
    panels = (("steps", "ade"), ("steps", "fde"), ("train_seconds", "ade"))
    colours = plt.get_cmap("tab20" if len(series) > 10 else "tab10")
    for i, se in enumerate(series):
        c = colours(i % colours.N)
        nseeds = len(se["seeds"])
        label = se["label"] + (f" (mean of {nseeds} seeds)" if nseeds > 1 else "")
        for ax, (key, metric) in zip(axes, panels, strict=True):
            xs = se[key]["mean"]
            avg = se[f"{metric}_avg"]
            ax.plot(xs, avg["mean"], "o-", color=c, label=label, ms=4)
            label = None
            if nseeds > 1:
                lo = [m - s for m, s in zip(avg["mean"], avg["std"], strict=True)]
                hi = [m + s for m, s in zip(avg["mean"], avg["std"], strict=True)]
                ax.fill_between(xs, lo, hi, color=c, alpha=0.15, lw=0)
            if se["name"] != "regression":
                ax.plot(xs, se[f"{metric}_min"]["mean"], "s--", color=c, alpha=0.6, ms=3)
    labels = ("training steps", "training steps", "training seconds (wall, 1 thread)")
    for ax, xl, (_, metric) in zip(axes, labels, panels, strict=True):
        ax.set_xlabel(xl)
        ax.set_ylabel(f"{metric.upper()} (solid: avg over K; dashed: min over K)")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    bottom = (0.3 + 0.22 * legend_rows) / (4.4 + 0.22 * legend_rows)
    fig.legend(loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    save_figure(fig, path)


def write_curve_csv(rows: list[dict], path: Path) -> None:
    """One line per (row, curve point): steps, seconds and the scores."""
    keys = ["steps", "train_seconds", "train_cpu_seconds", "loss", "ade_avg", "fde_avg",
            "ade_min", "fde_min", "ade_meank", "fde_meank"]
    extra = sorted({spec for r in rows for p in r["curve"] for spec, v in p.items()
                    if isinstance(v, dict)})
    cols = [f"{spec}_{m}" for spec in extra for m in ("ade_avg", "fde_avg", "ade_min", "fde_min")]
    lines = [",".join(["row", "seed"] + keys + cols)]
    for r in rows:
        for p in r["curve"]:
            vals = [f"{p[k]:.6g}" if k in p else "" for k in keys]
            vals += [f"{p[spec][m]:.6g}" if spec in p else "" for spec in extra
                     for m in ("ade_avg", "fde_avg", "ade_min", "fde_min")]
            lines.append(",".join([r["name"], str(r.get("seed", 0))] + vals))
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot_k_nfe(ks: list[dict], nfes: list[dict], reg: float | None, path: Path,
               title: str) -> None:
    """ADE against K (avg and min over the first K samples) and against NFE."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot([r["k"] for r in ks], [r["ade_avg"] for r in ks], "o-", label="avg over K")
    axes[0].plot([r["k"] for r in ks], [r["ade_min"] for r in ks], "s--", label="min over K")
    axes[0].set_xlabel("K (samples per trajectory)")
    for sampler in sorted({r["sampler"] for r in nfes}):
        sub = [r for r in nfes if r["sampler"] == sampler]
        axes[1].plot([r["nfe"] for r in sub], [r["ade_avg"] for r in sub], "o-",
                     label=f"{sampler}: avg over K")
        axes[1].plot([r["nfe"] for r in sub], [r["ade_min"] for r in sub], "s--",
                     label=f"{sampler}: min over K")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("network evaluations per sample (NFE)")
    for ax in axes:
        if reg is not None:
            ax.axhline(reg, color="k", lw=1, ls=":", label="EGTN regression")
        ax.set_ylabel("ADE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _mean_std(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std(unbiased=True)) if len(values) > 1 else 0.0
    return {"mean": float(t.mean()), "std": std, "n": len(values)}


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Mean and sample std over seeds of every row's final scores (and curve-sampler scores)."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name and r["final"]]
        if not group:
            continue
        entry = {"label": group[0]["label"], "seeds": [r.get("seed", 0) for r in group],
                 "steps": group[0]["steps"]}
        keys = [k for k, v in group[0]["final"].items() if isinstance(v, float)]
        entry.update({k: _mean_std([r["final"][k] for r in group]) for k in keys})
        for spec, v in group[0]["final"].items():
            if isinstance(v, dict):
                entry[spec] = {k: _mean_std([r["final"][spec][k] for r in group])
                               for k in v if isinstance(v[k], float)}
        if all("spread" in r for r in group):
            entry["spread"] = {}
            for i, sp in enumerate(group[0]["spread"]):
                flat = {"spread": [r["spread"][i]["spread"] for r in group],
                        "ade_meank": [r["spread"][i]["ade_meank"] for r in group],
                        "fde_meank": [r["spread"][i]["fde_meank"] for r in group]}
                e = {k: _mean_std(v) for k, v in flat.items()}
                for kk in (k for k in sp if k.startswith("k") and isinstance(sp[k], dict)):
                    e[kk] = {m: _mean_std([r["spread"][i][kk][m] for r in group])
                             for m in sp[kk]}
                entry["spread"][sp["spec"]] = e
        out[name] = entry
    return out


def print_summary(summary: dict[str, dict]) -> None:
    """Mean ± std over seeds of the final avg / min over K (main sampler and curve samplers)."""
    def ms(d: dict, k: str) -> str:
        return f"{d[k]['mean']:.3f}±{d[k]['std']:.3f}" if k in d else "-"

    print("\nmean ± std over seeds (final step)")
    for e in summary.values():
        line = (f"{e['label'][:56]:<57} seeds {e['seeds']}: ADE/FDE avg {ms(e, 'ade_avg')} / "
                f"{ms(e, 'fde_avg')}  min {ms(e, 'ade_min')} / {ms(e, 'fde_min')}")
        for spec, d in e.items():
            if ":" in spec and isinstance(d, dict) and "ade_avg" in d:
                line += f"  [{spec}: {ms(d, 'ade_avg')} / {ms(d, 'fde_avg')}]"
        print(line)
        for spec, d in e.get("spread", {}).items():
            ks = "  ".join(f"K={kk[1:]} avg {ms(d[kk], 'ade_avg')}/{ms(d[kk], 'fde_avg')} "
                           f"min {ms(d[kk], 'ade_min')}/{ms(d[kk], 'fde_min')}"
                           for kk in d if kk.startswith("k"))
            print(f"    {spec:<22} spread {ms(d, 'spread')}  {ks}")


def print_table(result: dict) -> None:
    """The table of a result (final scores of every row, constant velocity)."""
    print(f"\n{result['title']}")
    print(f"{'method':<64}{'steps':>7}{'train s':>8}{'ADE avg':>9}{'FDE avg':>9}"
          f"{'ADE min':>9}{'FDE min':>9}")
    for r in result["rows"]:
        f = r["final"]
        label = r["label"] + (f" [seed {r['seed']}]" if "seed" in r else "")
        print(f"{label[:63]:<64}{r['steps']:>7}{r['train_seconds']:>8.0f}{f['ade_avg']:>9.4f}"
              f"{f['fde_avg']:>9.4f}{f['ade_min']:>9.4f}{f['fde_min']:>9.4f}")
        if "ancestral_1000" in r:
            a = r["ancestral_1000"]
            print(f"{'  the same, ancestral 1000 steps (paper sampler)':<64}{'':>15}"
                  f"{a['ade_avg']:>9.4f}{a['fde_avg']:>9.4f}{a['ade_min']:>9.4f}"
                  f"{a['fde_min']:>9.4f}")
    cv = result["constant_velocity"]
    print(f"{'constant velocity':<64}{0:>7}{'':>8}{cv['ade']:>9.4f}{cv['fde']:>9.4f}")
    if "summary" in result:
        print_summary(result["summary"])


def merge(paths: list[str], out: Path) -> int:
    """Join the results of parallel runs (same data and settings) into one JSON, table, plots."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    result = dict(parts[0])
    result["rows"] = [r for part in parts for r in part["rows"]]
    result["merged_from"] = paths
    for key in ("k_sweep", "nfe_sweep"):
        found = [part[key] for part in parts if key in part]
        if found:
            result[key] = found[0]
    if len({r.get("seed", 0) for r in result["rows"]}) > 1:
        result["summary"] = summarize(result["rows"])
    atomic_write_text(out, json.dumps(result, indent=2))
    st = result.get("settings", {})
    plot_curves(result["rows"], out.with_suffix(".png"), result["title"],
                f"{st['sampler']}:{st['nfe']}" if "sampler" in st else "")
    write_curve_csv(result["rows"], out.with_suffix(".csv"))
    reg = next((r["final"]["ade_avg"] for r in result["rows"] if r["name"] == "regression"),
               None)
    if "k_sweep" in result and "nfe_sweep" in result:
        label = next(r["label"] for r in result["rows"] if r["name"] != "regression")
        plot_k_nfe(result["k_sweep"], result["nfe_sweep"], reg,
                   out.with_name(out.stem + "_k_nfe.png"), f"{label}: {result['title']}")
    print_table(result)
    print(f"wrote {out}, {out.with_suffix('.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run every row; print the table, write JSON and the two PNGs."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="folder of the generator's N-body files")
    p.add_argument("--merge", default=None, help="comma list of result JSONs to join (no training)")
    p.add_argument("--no-sweeps", action="store_true", help="skip the K and NFE sweeps")
    p.add_argument("--system", default="charged")
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-eval", type=int, default=50)
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps per row")
    p.add_argument("--curve-points", type=int, default=4)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--time-dim", type=int, default=16)
    p.add_argument("--prior-layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--k-max", type=int, default=20)
    p.add_argument("--nfe-sweep", default="ddim:2,ddim:5,ddim:10,ddim:20,ddim:50,"
                                          "ancestral:10,ancestral:100,ancestral:1000")
    p.add_argument("--ancestral-rows", default="geotdm_eps",
                   help="rows also scored with the paper's sampler, ancestral over all T steps "
                        "(the reference's p_sample_loop), for the side-by-side")
    p.add_argument("--skip-sigma-data", type=float, default=0.5,
                   help="skip_sigma_data of the geotdm_skip_sd row")
    p.add_argument("--curve-samplers", default="",
                   help="extra GeoTDM scores at every curve point, e.g. ddim:2")
    p.add_argument("--curve-raw", action="store_true",
                   help="also score the raw (non-EMA) weights at every curve point")
    p.add_argument("--subset-at", type=int, default=0,
                   help="step at which every row is also scored on the first --subset-n test "
                        "trajectories (the side-by-side with the reference's own sampler)")
    p.add_argument("--subset-n", type=int, default=0)
    p.add_argument("--subset-samplers", default="ancestral:1000,ddim:10")
    p.add_argument("--seeds", default="0",
                   help="comma list of training seeds: every row is trained once per seed "
                        "(weights, training noise, batch order with --reshuffle); with more "
                        "than one the table adds mean ± std over seeds")
    p.add_argument("--late-rows", default="",
                   help="rows trained after all --rows of every seed (e.g. the ablations)")
    p.add_argument("--ablation-skip-sigma-data", type=float, default=None,
                   help="skip_sigma_data of the ablation rows (prior_normal, prior_com, "
                        "prior_last, no_equivariance, no_attention, no_shift_invariance; "
                        "default: the model's)")
    p.add_argument("--reshuffle", action="store_true",
                   help="a new (seed, epoch) batch order every epoch (without it every epoch "
                        "repeats the data module's epoch-0 order, as the earlier runs did)")
    p.add_argument("--spread-rows", default="",
                   help="rows whose final model is also scored by --spread-samplers")
    p.add_argument("--spread-samplers", default="ddim:2,ddim:10,ddim:10:eta=0.5,ancestral:10,"
                                                "ancestral:50,ddim:2:tau=2,ddim:10:tau=2",
                   help="sampler:nfe[:eta=..][:tau=..] (tau scales the prior draw)")
    p.add_argument("--spread-k", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                        "trajectories_fidelity.json"))
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge.split(","), Path(args.out))
    if not args.root:
        p.error("--root is required (unless --merge)")
    torch.set_num_threads(args.threads)
    names = args.rows.split(",")
    late = [n for n in args.late_rows.split(",") if n]
    seeds = [int(x) for x in args.seeds.split(",")]
    sd = args.skip_sigma_data
    ROWS["geotdm_skip_sd"] = (f"GeoTDM, skip for a residual of std {sd:g} (skip_sigma_data {sd:g})",
                              {**TUNED, "skip_sigma_data": sd})
    if args.ablation_skip_sigma_data is not None:
        asd = args.ablation_skip_sigma_data
        for key in ABLATIONS:
            label, settings = ROWS[key]
            ROWS[key] = (f"{label}, skip_sigma_data {asd:g}", {**settings, "skip_sigma_data": asd})
    for spec in filter(None, args.spread_samplers.split(",")):
        parse_spec(spec)  # refuse a bad spec before any training
    unknown = [n for n in names + late if n not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    data = NBody(args.system, root=args.root, num_train=args.num_train,
                 batch_size=args.batch_size)
    data.setup()
    n_eval = min(args.num_eval, len(data.test_set))
    eval_batches = _batches(DataLoader(Subset(data.test_set, range(n_eval)), batch_size=64))
    args.subset_batches = _batches(DataLoader(
        Subset(data.test_set, range(min(args.subset_n, len(data.test_set)))), batch_size=20))
    cv = [ade_fde(constant_velocity(b["cond"], b["x"].shape[2]), b["x"], b["mask"])
          for b in eval_batches]
    cv_ade = float(torch.cat([a for a, _ in cv]).mean())
    cv_fde = float(torch.cat([f for _, f in cv]).mean())
    out = Path(args.out)
    result = {"root": str(args.root), "system": args.system, "kept": data.kept,
              "num_eval": n_eval, "settings": {k: v for k, v in vars(args).items()
                           if k not in ("subset_batches", "on_curve")},
              "machine": platform.processor() or platform.machine(),
              "constant_velocity": {"ade": cv_ade, "fde": cv_fde}, "rows": []}
    result["title"] = (f"{args.system} 5-body, {data.kept['train'][0]} training trajectories, "
                       f"{n_eval} test, EGTN {args.hidden} x {args.layers}, {args.steps} steps "
                       f"per row, K = {args.k}, {args.sampler} {args.nfe} NFE"
                       + (f", seeds {args.seeds}" if len(seeds) > 1 else ""))
    rows = []

    def on_curve(name: str, partial: dict) -> None:  # incremental writes during a long row
        atomic_write_text(out, json.dumps({**result, "running": {"name": name, **partial}},
                                          indent=2))

    args.on_curve = on_curve
    spread_rows = set(filter(None, args.spread_rows.split(",")))
    order = [(seed, n) for seed in seeds for n in names] + [(seed, n) for seed in seeds
                                                             for n in late]
    for seed, name in order:
        print(f"row {name} seed {seed}: training {args.steps} steps", flush=True)
        r = train_row(name, ROWS[name][1], data, eval_batches, args, seed=seed)
        if name in spread_rows and ROWS[name][1] is not None:
            r["spread"] = spread_study(r["_model"], eval_batches,
                                       list(filter(None, args.spread_samplers.split(","))),
                                       args.spread_k)
        if seed != seeds[0] or name in late:  # keep one model per row for the sweeps
            r.pop("_model")
        rows.append(r)
        result["rows"].append({k: v for k, v in r.items() if k != "_model"})
        if len(seeds) > 1:
            result["summary"] = summarize(result["rows"])
        atomic_write_text(out, json.dumps(result, indent=2))
        write_curve_csv(result["rows"], out.with_suffix(".csv"))
    for r in rows:
        if r["name"] in args.ancestral_rows.split(",") and "_model" in r:
            t0 = time.perf_counter()
            m = score(r["_model"], eval_batches, args.k, "ancestral", 1000)
            result["rows"][rows.index(r)]["ancestral_1000"] = {
                **m, "seconds": time.perf_counter() - t0}
            print(f"  {r['name']} ancestral 1000: {json.dumps(m)}", flush=True)
            atomic_write_text(out, json.dumps(result, indent=2))
    reg = next((r["final"]["ade_avg"] for r in rows if r["name"] == "regression"), None)
    main_row = next((r for r in rows if r["name"] != "regression"), None)
    title = result["title"]
    plot_curves(rows, out.with_suffix(".png"), title, f"{args.sampler}:{args.nfe}")
    write_curve_csv(rows, out.with_suffix(".csv"))
    if main_row is not None and not args.no_sweeps:
        model = main_row["_model"]
        print("K sweep ...", flush=True)
        result["k_sweep"] = k_sweep(model, eval_batches, args.k_max, args.sampler, args.nfe)
        atomic_write_text(out, json.dumps(result, indent=2))
        result["nfe_sweep"] = []
        for spec in args.nfe_sweep.split(","):
            sampler, nfe = spec.split(":")
            t0 = time.perf_counter()
            m = score(model, eval_batches, args.k, sampler, int(nfe))
            result["nfe_sweep"].append({"sampler": sampler, "nfe": int(nfe), **m,
                                        "seconds": time.perf_counter() - t0})
            print(f"  NFE {spec}: {json.dumps(result['nfe_sweep'][-1])}", flush=True)
            atomic_write_text(out, json.dumps(result, indent=2))
        plot_k_nfe(result["k_sweep"], result["nfe_sweep"], reg,
                   out.with_name(out.stem + "_k_nfe.png"), f"{main_row['label']}: " + title)
    atomic_write_text(out, json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {out}, {out.with_suffix('.png')}")
    return 0 if all(math.isfinite(r["final"].get("ade_avg", math.nan)) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
