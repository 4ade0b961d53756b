"""Why GeoTDM's one-shot estimate plateaus below the EGTN regression (issue 13): diagnostics.

Trains GeoTDM (the tuned x0 / alpha-skip model, ``skip_sigma_data`` 0.25), optionally GeoTDM
with more training weight at high noise (``time_power``), and the EGTN regression, with the
budget, data, optimiser and schedule of ``benchmarks/trajectories_fidelity.py`` (Adam, clip
1.0, the learning rate decayed linearly to 10 %, a new batch order every epoch), one row after
another, seeds in turn. At each ``--points`` step count it measures, with the raw and with
the EMA weights (decay ``--ema`` with warm-up, the same copy for the regression as for GeoTDM):

* sampled forecasts: GeoTDM DDIM 1 (the clean estimate at ``t = T``, returned as the
  sample), DDIM 2 and DDIM 10 (K = 5; ADE/FDE avg and min over K);
  regression: its one forecast;
* the one-shot denoiser error by noise level: the test (and training) residuals noised to
  ``t`` and the network's clean estimate scored with ADE/FDE, averaged over ``--noise-draws``
  noise draws, at ``--times`` and at the times the DDIM-2 sampler evaluates;
* train against test: the same on the first ``--num-train-eval`` training trajectories.

    python benchmarks/trajectories_plateau.py --root DATA --steps 2400 --points 1200,2400 \\
        --seeds 0,1,2 --rows geotdm,geotdm_tp2,regression \\
        --out benchmarks/results/trajectories_plateau.json

Writes the JSON after every row (incremental) and ``<out>.csv`` (one line per row, seed,
point, weights and measurement); ``--report`` reads such a JSON and prints the mean ± std
tables over seeds and writes ``<out>.png`` (one-shot ADE against the noise level).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "trajectories"),
                str(ROOT / "benchmarks")]

from trajectories_fidelity import row_model, train_step  # noqa: E402

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff.module import ema_with_warmup  # noqa: E402
from domaindiff.plotting import pyplot, save_figure  # noqa: E402
from domaindiff.resume import make_train_loader  # noqa: E402
from domaindiff_trajectories.data import NBody  # noqa: E402
from domaindiff_trajectories.metrics import ade_fde, ade_fde_k, constant_velocity  # noqa: E402
from domaindiff_trajectories.model import GeoTDM  # noqa: E402
from domaindiff_trajectories.networks import EGTNRegressor  # noqa: E402

TUNED = {"parametrization": "x0", "x0_skip": "alpha", "scale": 0.5, "prior": "learnable",
         "prior_init": "velocity", "spatial": "egnn", "skip_sigma_data": 0.25}
ROWS: dict[str, tuple[str, dict | None]] = {
    "geotdm": ("GeoTDM (skip_sigma_data 0.25, t uniform)", TUNED),
    "geotdm_tp2": ("GeoTDM, time_power 2 (density of t proportional to t)",
                   {**TUNED, "time_power": 2.0}),
    "geotdm_tp4": ("GeoTDM, time_power 4 (density proportional to t^3)",
                   {**TUNED, "time_power": 4.0}),
    "regression": ("EGTN regression", None),
}


def _batches(ds, n: int, bs: int = 64) -> list[dict[str, torch.Tensor]]:
    return [dict(b) for b in DataLoader(Subset(ds, range(min(n, len(ds)))), batch_size=bs)]


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.cat(values).mean())


@torch.no_grad()
def ddim_times(model: GeoTDM, batch: dict, steps: int) -> list[float]:
    """The times (in ``[0, T]``) at which the ``ddim`` sampler with ``steps`` NFE calls the net."""
    seen: list[float] = []
    orig = model.denoise

    def spy(net, state, t):
        seen.append(float(t.flatten()[0]))
        return orig(net, state, t)

    model.denoise = spy  # instance attribute: the denoiser wrapper calls module.denoise
    try:
        model.sample(template=model.sample_template(1, {k: v[:1] for k, v in batch.items()}),
                     sampler="ddim", steps=steps, generator=torch.Generator().manual_seed(0))
    finally:
        del model.denoise
    return seen


@torch.no_grad()
def one_shot(model: GeoTDM, batches, times: list[float], use_ema: bool, draws: int,
             seed: int = 0) -> list[dict]:
    """ADE/FDE of the network's clean estimate from the truth noised to each ``t`` (no sampler).

    ``t`` is in the process's units (``[t_min, T]``); every trajectory gets ``draws`` noise
    draws; the rows hold the mean over trajectories and draws.
    """
    den = model.denoiser(use_ema)
    proc = model.processes["x"]
    gen = torch.Generator().manual_seed(seed)
    model._sampling = True  # the sampler's x0 clip, as in sampling
    try:
        out = []
        for t in times:
            ades, fdes = [], []
            for b in batches:
                state = model.batch_to_state(b)
                ref = den.net.reference(state)
                res = (state["x"] - ref) / model.scale
                tt = torch.full((res.shape[0],), float(t))
                a = proc.alpha(tt).view(-1, 1, 1, 1).to(res)
                s = proc.sigma(tt).view(-1, 1, 1, 1).to(res)
                for _ in range(draws):
                    noise = proc.space.noise(res, state, gen)
                    x0 = den({**state, "x": a * res + s * noise}, tt)["x"]
                    ade, fde = ade_fde(x0 * model.scale + ref, state["x"], state["mask"])
                    ades.append(ade)
                    fdes.append(fde)
            out.append({"t": float(t), "alpha": float(a.flatten()[0]), "ade": _mean(ades),
                        "fde": _mean(fdes)})
    finally:
        model._sampling = False
    return out


@torch.no_grad()
def sampled(model: GeoTDM, batches, sampler: str, nfe: int, k: int, use_ema: bool,
            seed: int = 0) -> dict[str, float]:
    """ADE/FDE avg and min over ``k`` forecasts, and ADE/FDE of their mean."""
    gen = torch.Generator().manual_seed(seed)
    acc: dict[str, list[torch.Tensor]] = {}
    for b in batches:
        s = model.forecast(b, k=k, sampler=sampler, steps=nfe, generator=gen, use_ema=use_ema)
        res = ade_fde_k(s, b["x"], b["mask"])
        res["ade_meank"], res["fde_meank"] = ade_fde(s.mean(0), b["x"], b["mask"])
        for key, v in res.items():
            acc.setdefault(key, []).append(v)
    return {key: _mean(v) for key, v in acc.items()}


@torch.no_grad()
def regression_score(net: torch.nn.Module, batches) -> dict[str, float]:
    """ADE/FDE of the regression's forecast."""
    ades, fdes = [], []
    for b in batches:
        a, f = ade_fde(net(b), b["x"], b["mask"])
        ades.append(a)
        fdes.append(f)
    return {"ade": _mean(ades), "fde": _mean(fdes)}


def measure(name: str, model, ema_reg, test, train, args, times: list[float]) -> dict:
    """Every measurement of one model at one point, raw and EMA weights."""
    out: dict = {}
    for weights in ("raw", "ema"):
        if isinstance(model, EGTNRegressor):
            net = model if weights == "raw" else ema_reg.module
            out[weights] = {"test": regression_score(net, test),
                            "train": regression_score(net, train)}
            continue
        use = weights == "ema"
        out[weights] = {
            "ddim:1": sampled(model, test, "ddim", 1, args.k, use),
            "ddim:2": sampled(model, test, "ddim", 2, args.k, use),
            "ddim:10": sampled(model, test, "ddim", 10, args.k, use),
            "ddim:2_train": sampled(model, train, "ddim", 2, 1, use),
            "one_shot_test": one_shot(model, test, times, use, args.noise_draws),
            "one_shot_train": one_shot(model, train, times, use, args.noise_draws),
        }
    print(f"  {name}: {json.dumps(out)}", flush=True)
    return out


def train_row(name: str, settings: dict | None, data: NBody, test, train, args, seed: int,
              times_arg: list[float]) -> dict:
    """Train one row ``args.steps`` steps (seeded as the fidelity benchmark), measure at points."""
    torch.manual_seed(seed)
    ema_reg = None
    model, opt = row_model(settings, data, args)
    if settings is None:
        ema_reg = AveragedModel(model, multi_avg_fn=ema_with_warmup(args.ema), use_buffers=True)
        ema_reg.requires_grad_(False)
    budget = int(args.steps)
    points = sorted(int(p) for p in args.points.split(","))
    steps, epoch, cpu = 0, 0, 0.0
    result = {"name": name, "label": ROWS[name][0], "settings": settings, "seed": seed,
              "points": []}
    times: list[float] = []
    while steps < budget:
        loader = make_train_loader(data.train_set, batch_size=data.batch_size, seed=seed,
                                   position={"epoch": epoch, "batches": 0}, drop_last=True)
        for batch in loader:
            c0 = time.process_time()
            loss = train_step(model, batch, opt, diffusion=settings is not None, lr=args.lr,
                              step=steps, budget=budget, seed=seed)
            if settings is None:
                ema_reg.update_parameters(model)
            steps += 1
            cpu += time.process_time() - c0
            if points and steps >= points[0]:
                points.pop(0)
                model.eval()
                if settings is not None and not times:
                    times = sorted(set(times_arg) | set(ddim_times(model, test[0], 2)),
                                   reverse=True)
                    result["ddim2_times"] = ddim_times(model, test[0], 2)
                m0 = time.process_time()
                p = {"steps": steps, "epoch": epoch, "train_cpu_seconds": cpu,
                     "loss": float(loss.detach()),
                     **measure(f"{name} seed {seed} step {steps}", model, ema_reg, test, train,
                               args, times)}
                p["measure_cpu_seconds"] = time.process_time() - m0
                result["points"].append(p)
            if steps >= budget:
                break
        epoch += 1
    result["train_cpu_seconds"] = cpu
    return result


def csv_lines(rows: list[dict]) -> list[str]:
    """One line per (row, seed, point, weights, measurement, t)."""
    lines = ["row,seed,steps,weights,measure,t,ade_avg,fde_avg,ade_min,fde_min"]
    for r in rows:
        for p in r["points"]:
            for w in ("raw", "ema"):
                for key, v in p[w].items():
                    base = f"{r['name']},{r['seed']},{p['steps']},{w},{key}"
                    if isinstance(v, list):
                        lines += [f"{base},{e['t']:.6g},{e['ade']:.6g},{e['fde']:.6g},,"
                                  for e in v]
                    elif "ade" in v:
                        lines.append(f"{base},,{v['ade']:.6g},{v['fde']:.6g},,")
                    else:
                        lines.append(f"{base},,{v['ade_avg']:.6g},{v['fde_avg']:.6g},"
                                     f"{v['ade_min']:.6g},{v['fde_min']:.6g}")
    return lines


def _ms(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std()) if len(values) > 1 else 0.0
    return f"{float(t.mean()):.3f} ± {std:.3f}"


def _pts(result: dict, name: str, steps: int) -> list[dict]:
    return [p for r in result["rows"] if r["name"] == name for p in r["points"]
            if p["steps"] == steps]


def report(result: dict, out: Path) -> str:
    """Markdown tables (mean ± sample std over seeds) and the one-shot plot."""
    names = list(dict.fromkeys(r["name"] for r in result["rows"]))
    steps = sorted({p["steps"] for r in result["rows"] for p in r["points"]})
    lines = ["| row | steps | seeds | weights | DDIM 1 ADE / FDE (avg K) | DDIM 2 ADE / FDE "
             "(avg K) | DDIM 10 ADE / FDE (avg K) | DDIM 10 min K ADE | one-shot t=T test ADE |"
             " DDIM 2 train ADE |"
             " regression test ADE / FDE | regression train ADE |",
             "| --- | ---: | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        for st in steps:
            pts = _pts(result, name, st)
            if not pts:
                continue
            for w in ("raw", "ema"):
                q = [p[w] for p in pts]
                if name == "regression":
                    cells = ["", "", "", "", "", "",
                             f"{_ms([x['test']['ade'] for x in q])} / "
                             f"{_ms([x['test']['fde'] for x in q])}",
                             _ms([x["train"]["ade"] for x in q])]
                else:
                    top = [max(x["one_shot_test"], key=lambda e: e["t"]) for x in q]
                    d1 = [x.get("ddim:1") for x in q]
                    cells = [f"{_ms([x['ade_avg'] for x in d1])} / "
                             f"{_ms([x['fde_avg'] for x in d1])}" if all(d1) else "",
                             f"{_ms([x['ddim:2']['ade_avg'] for x in q])} / "
                             f"{_ms([x['ddim:2']['fde_avg'] for x in q])}",
                             f"{_ms([x['ddim:10']['ade_avg'] for x in q])} / "
                             f"{_ms([x['ddim:10']['fde_avg'] for x in q])}",
                             _ms([x["ddim:10"]["ade_min"] for x in q]),
                             _ms([e["ade"] for e in top]),
                             _ms([x["ddim:2_train"]["ade_avg"] for x in q]), "", ""]
                lines.append(f"| {name} | {st} | {len(pts)} | {w} | " + " | ".join(cells) + " |")
    lines += ["", "One-shot ADE by noise level (EMA weights; test / train; mean ± std over seeds):",
              ""]
    for st in steps:
        head = None
        for name in names:
            pts = _pts(result, name, st)
            if not pts or name == "regression":
                continue
            ts = [e["t"] for e in pts[0]["ema"]["one_shot_test"]]
            if head is None:
                head = ts
                lines += [f"| row ({st} steps) | " + " | ".join(f"t/T = {t:.3g}" for t in ts)
                          + " |", "| --- |" + " --- |" * len(ts)]
            cells = []
            for i in range(len(ts)):
                te = [p["ema"]["one_shot_test"][i]["ade"] for p in pts]
                tr = [p["ema"]["one_shot_train"][i]["ade"] for p in pts]
                cells.append(f"{_ms(te)} / {_ms(tr)}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(steps), figsize=(6 * len(steps), 4.2), squeeze=False)
    for ax, st in zip(axes[0], steps, strict=True):
        for i, name in enumerate(names):
            pts = _pts(result, name, st)
            if not pts:
                continue
            if name == "regression":
                for split, ls in (("test", "-"), ("train", ":")):
                    v = float(torch.tensor([p["ema"][split]["ade"] for p in pts]).mean())
                    ax.axhline(v, color="k", ls=ls, lw=1, label=f"regression ({split}, EMA)")
                continue
            ts = [e["t"] for e in pts[0]["ema"]["one_shot_test"]]
            for split, ls in (("test", "o-"), ("train", "s:")):
                v = [float(torch.tensor([p["ema"][f"one_shot_{split}"][j]["ade"]
                                         for p in pts]).mean()) for j in range(len(ts))]
                ax.plot(ts, v, ls, color=f"C{i}", label=f"{name} one-shot ({split}, EMA)", ms=4)
        ax.set_xlabel("noise level t / T of the one-shot estimate")
        ax.set_ylabel("ADE of the clean estimate")
        ax.set_title(f"{st} steps (mean over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out.with_suffix(".png"))
    return "\n".join(lines)


def main() -> int:
    """Train the rows, measure, write the JSON and CSV."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="folder of the generator's N-body files")
    p.add_argument("--report", action="store_true",
                   help="read --out, print the tables, write <out>.png (no training)")
    p.add_argument("--system", default="charged")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--points", default="1200,2400")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", default="geotdm,geotdm_tp2,regression")
    p.add_argument("--num-eval", type=int, default=60)
    p.add_argument("--num-train-eval", type=int, default=60)
    p.add_argument("--times", default="1.0,0.8,0.5,0.3,0.1,0.02",
                   help="noise levels t / T of the one-shot error (plus DDIM 2's times)")
    p.add_argument("--noise-draws", type=int, default=4)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--time-dim", type=int, default=16)
    p.add_argument("--prior-layers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--row-major", action="store_true",
                   help="every seed of a row before the next row (default: rows within a seed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                        "trajectories_plateau.json"))
    args = p.parse_args()
    out = Path(args.out)
    if args.report:
        print(report(json.loads(out.read_text()), out))
        return 0
    if not args.root:
        p.error("--root is required (unless --report)")
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    torch.set_num_threads(args.threads)
    data = NBody(args.system, root=args.root, batch_size=args.batch_size)
    data.setup()
    test = _batches(data.test_set, args.num_eval)
    train = _batches(data.train_set, args.num_train_eval)
    cv = [ade_fde(constant_velocity(b["cond"], b["x"].shape[2]), b["x"], b["mask"])
          for b in test]
    proc_T = 1.0  # the plugin's DiscreteDDPM runs on [0, 1]
    times = [float(t) * proc_T for t in args.times.split(",")]
    result = {"root": str(args.root), "system": args.system, "kept": data.kept,
              "settings": vars(args), "machine": platform.processor() or platform.machine(),
              "constant_velocity": {"ade": _mean([a for a, _ in cv]),
                                    "fde": _mean([f for _, f in cv])}, "rows": []}
    print(f"constant velocity: {result['constant_velocity']}", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    order = ([(seed, n) for n in names for seed in seeds] if args.row_major
             else [(seed, n) for seed in seeds for n in names])
    for seed, name in order:
        print(f"row {name} seed {seed}: training {args.steps} steps", flush=True)
        result["rows"].append(train_row(name, ROWS[name][1], data, test, train, args, seed,
                                        times))
        atomic_write_text(out, json.dumps(result, indent=2))
        atomic_write_text(out.with_suffix(".csv"), "\n".join(csv_lines(result["rows"])) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
