"""Few-step TSDiff students (``domaindiff distill``) against their teachers, CRPS on Taylor.

In one run, with one seed:

1. trains the teachers through the real CLI on the offline default (the demo's config,
   ``timeseries:demo``: pmdarima's Taylor hourly demand): TSDiff (unconditional, forecasts by
   self-guidance) and, unless ``--no-cond``, TSDiff-Cond (the same config, conditional class);
2. distils each teacher into a ``--student-steps`` (default 4 and 1) student with
   ``domaindiff distill --method reflow`` (the teacher's deterministic DPM-Solver++(2M)-20
   coupling; ``--method`` takes any core method);
3. scores, on the same 7 rolling test days and the same samples per window: seasonal naive, the
   teacher's many-step samplers (TSDiff-Q DDPM-100 with the paper's rule, 199 NFE; the fast
   guided SDE-DPM-Solver++(2M)-10 with 4 x0 guidance steps; the coupling sampler itself) and
   the students under the ``distilled`` sampler. TSDiff's students are guided exactly as the
   teacher is (TSDiff-Q: quantile self-guidance on the prediction at each of the student's
   network evaluations, overshoot-safe); TSDiff-Cond's students read the context through the
   condition, which ``distill`` passes to teacher and student unchanged.

Prints and writes (JSON) per row: NFE (the core's count per sampled sequence), CRPS (GluonTS
mean weighted quantile loss), ND, MASE, seconds per window, and the CRPS ratio to the teacher's
best many-step row.

    python benchmarks/timeseries_distill.py --epochs 6 --iterations 500 --samples 16 --seed 0
    python benchmarks/timeseries_distill.py --teacher run.ckpt --no-cond     # reuse a teacher
    python benchmarks/timeseries_distill.py --reuse     # score what a previous run left in --work

``--method reflow-stochastic --teacher-sampler ancestral --teacher-steps 100`` distils the
teacher's DDPM-100 instead of its ODE (:mod:`domaindiff.distill.stochastic`: a flow on the
stochastic coupling, then straightened; ``--iterations`` per round); ``--score-steps 1`` also
scores each student at 1 NFE (a straightened student's first grid time is ``T``).
``--pool N`` trains round 1 on ``N`` couplings drawn once and reused (``distill --coupling-pool``:
the teacher's sampler runs ``N / batch`` times however long round 1 is) and
``--straighten-iterations`` sets round 2's length apart from ``--iterations`` (round 1's).

``--guided-coupling`` (TSDiff only) distils TSDiff-Q's *guided* sampler instead: the coupling pairs
each prior draw with the teacher's quantile-self-guided forecast of the training window's own
context (``--teacher-guidance {kind: quantile, scale: --scale, levels: --samples}``, the teacher's
``distill_guidance``), and the student is a TSDiff-Cond (``--student-class TSDiffCond``, initialised
from the teacher's weights, the condition's input columns at zero) that reads the context and is
sampled without guidance. Teacher rows: TSDiff-Q DDPM-100 and the fast guided 10-NFE sampler.

    python benchmarks/timeseries_distill.py --guided-coupling --method reflow-stochastic \
        --teacher-sampler ancestral --teacher-steps 100 --student-steps 4 --score-steps 1 \
        --iterations 60 --batch-size 16 --samples 16 --seed 0 --reuse --work RUN \
        --out benchmarks/results/timeseries_distill_guided.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "plugins" / "timeseries" / "domaindiff_timeseries" / "conf"

#: teacher rows of the unconditional model: name -> forecast() options
TEACHER_Q = {
    "tsdiff_q/ddpm-100": {"guidance": "quantile", "sampler": "ancestral", "steps": 100},
    "tsdiff_q/sde_dpm_solver_pp_2m-10+s32+x0steps4": {
        "guidance": "quantile", "sampler": "sde_dpm_solver_pp_2m", "steps": 10, "scale": 32.0,
        "x0_steps": 4},
    "tsdiff_q/dpm_solver_pp_2m-20": {"guidance": "quantile", "sampler": "dpm_solver_pp_2m",
                                     "steps": 20},
    # the coupling the students learn (no guidance): how well a student copies its teacher
    "tsdiff/dpm_solver_pp_2m-20 unguided": {"guidance": "none", "sampler": "dpm_solver_pp_2m",
                                            "steps": 20},
    "tsdiff/ddpm-100 unguided": {"guidance": "none", "sampler": "ancestral", "steps": 100},
}
#: teacher rows of TSDiff-Cond
TEACHER_COND = {
    "tsdiff_cond/ddpm-100": {"guidance": "none", "sampler": "ancestral", "steps": 100},
    "tsdiff_cond/dpm_solver_pp_2m-20": {"guidance": "none", "sampler": "dpm_solver_pp_2m",
                                        "steps": 20},
    # the probability-flow ODE better solved: is the 20-NFE coupling or the ODE the limit?
    "tsdiff_cond/dpm_solver_pp_2m-50": {"guidance": "none", "sampler": "dpm_solver_pp_2m",
                                        "steps": 50},
}


def _write(path: Path, res: dict) -> None:
    from domaindiff.data import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    res["load_average_now"] = os.getloadavg()
    atomic_write_text(path, json.dumps(res, indent=2))


def train_teacher(kind: str, epochs: int, seed: int, out: Path) -> str:
    """Fit the demo config (``kind``: ``tsdiff`` or ``cond``) through the CLI; the checkpoint."""
    from domaindiff.demo_utils import fit_config

    over = [f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
            f"--seed_everything={seed}", f"--model.init_args.seed={seed}"]
    if kind == "cond":
        over.append("--model.class_path=domaindiff_timeseries.TSDiffCond")
    _, ckpt = fit_config(CONF / "demo.yaml", out, over)
    return str(ckpt)


def distill(teacher: str, method: str, steps: int, iterations: int, seed: int, out: Path,
            parametrization: str | None, extra: list[str] | None = None,
            name: str = "student.ckpt") -> tuple[str, float]:
    """``domaindiff distill`` (the real CLI); the student file and the seconds it took."""
    from domaindiff.cli import main as cli_main

    student = out / name
    argv = ["distill", "--ckpt", teacher, "--method", method, "--student-steps", str(steps),
            "--iterations", str(iterations), "--seed", str(seed), "--config", "timeseries:demo",
            f"--seed_everything={seed}", f"--trainer.default_root_dir={out}",
            "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0",
            "--out", str(student)]
    if parametrization:
        argv += ["--student-parametrization", parametrization]
    argv += extra or []
    t0 = time.perf_counter()
    code = cli_main(argv)
    if code or not student.is_file():
        raise RuntimeError(f"distill {method} {steps} steps failed (exit {code})")
    return str(student), time.perf_counter() - t0


def distill_flags(args: argparse.Namespace) -> list[str]:
    """The ``domaindiff distill`` flags the benchmark's options pass through (guidance aside)."""
    extra = []
    if args.teacher_sampler:
        extra += ["--teacher-sampler", args.teacher_sampler]
    if args.teacher_steps:
        extra += ["--teacher-steps", str(args.teacher_steps)]
    if args.batch_size:
        extra.append(f"--data.init_args.batch_size={args.batch_size}")
    if args.pool:
        extra += ["--coupling-pool", str(args.pool)]
    if args.straighten_iterations:
        extra += ["--straighten-iterations", str(args.straighten_iterations)]
    return extra


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default=None, help="reuse this TSDiff checkpoint (no training)")
    ap.add_argument("--epochs", type=int, default=6, help="teacher epochs (the demo's 6)")
    ap.add_argument("--method", default="reflow")
    ap.add_argument("--student-steps", default="4,1")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--parametrization", default="v",
                    help="the students' prediction (empty: the teacher's eps)")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--scale", type=float, default=4.0, help="guidance scale (TSDiff-Q)")
    ap.add_argument("--student-scales", default="4,32",
                    help="guidance scales of the guided students")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-sampler", default=None, help="reflow / reflow-stochastic")
    ap.add_argument("--teacher-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="distillation batch size")
    ap.add_argument("--pool", type=int, default=None,
                    help="reflow-stochastic: train round 1 on this many couplings drawn once "
                         "and reused (distill --coupling-pool)")
    ap.add_argument("--straighten-iterations", type=int, default=None,
                    help="reflow-stochastic: the straightening round's steps (default "
                         "--iterations, which is then round 1's length)")
    ap.add_argument("--score-steps", default="",
                    help="also score every student at these NFE (e.g. 1)")
    ap.add_argument("--no-cond", action="store_true", help="skip TSDiff-Cond")
    ap.add_argument("--cond-only", action="store_true", help="skip TSDiff (unconditional)")
    ap.add_argument("--guided-coupling", action="store_true",
                    help="TSDiff only: distil the guided (TSDiff-Q) sampler into a TSDiff-Cond "
                         "student (reflow-stochastic)")
    ap.add_argument("--coupling-guidance", default=None, metavar="JSON",
                    help="--guided-coupling: the coupling's guidance options (the teacher's "
                         "distill_guidance keywords) instead of the DDPM rule at --scale, e.g. "
                         "the fast guided teacher row's "
                         "'{\"rule\": \"prediction\", \"scale\": 32, \"x0_steps\": 4}' with "
                         "--teacher-sampler sde_dpm_solver_pp_2m --teacher-steps 10")
    ap.add_argument("--flow-row", action="store_true",
                    help="reflow-stochastic: stop after round 1 (--trainer.max_steps), keep that "
                         "flow (flow.ckpt) and score it at its 16 steps, then resume the same "
                         "run to the end (a resumed run is the uninterrupted one)")
    ap.add_argument("--reuse", action="store_true",
                    help="take the teachers and students a previous run left in --work")
    ap.add_argument("--work", default="/tmp/domaindiff_bench_ts_distill")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"
                                         / "timeseries_distill.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from domaindiff.module import load_checkpoint
    from domaindiff.quiet import quiet_third_party
    from domaindiff_timeseries.baselines import gluonts_seasonal_naive
    from domaindiff_timeseries.data import TimeSeriesData
    from domaindiff_timeseries.forecast import forecast
    from domaindiff_timeseries.metrics import forecast_metrics

    quiet_third_party()
    work, out = Path(args.work), Path(args.out)
    steps_list = [int(s) for s in args.student_steps.split(",") if s]
    also = [int(s) for s in args.score_steps.split(",") if s]
    extra = distill_flags(args)
    label = args.method
    if args.guided_coupling:
        if args.method != "reflow-stochastic" or args.cond_only:
            raise SystemExit("--guided-coupling: use --method reflow-stochastic, without "
                             "--cond-only")
        args.no_cond = True
        label = f"{args.method}-guided"
        guidance = {"kind": "quantile", "scale": args.scale, "levels": args.samples}
        if args.coupling_guidance:
            try:
                given = json.loads(args.coupling_guidance)
            except json.JSONDecodeError as err:
                raise SystemExit(f"--coupling-guidance: not JSON ({err})") from None
            if not isinstance(given, dict):
                raise SystemExit("--coupling-guidance: give a JSON object of distill_guidance "
                                 f"options, got {type(given).__name__}")
            guidance.update(given)
        extra += ["--student-class", "TSDiffCond", "--teacher-guidance", json.dumps(guidance)]
    elif args.coupling_guidance:
        raise SystemExit("--coupling-guidance needs --guided-coupling")
    scales = [float(s) for s in args.student_scales.split(",") if s]
    res: dict = {"settings": vars(args), "torch": torch.__version__, "teachers": {},
                 "students": {}, "rows": [], "load_average_start": os.getloadavg()}
    kinds = ([] if args.cond_only else ["tsdiff"]) + ([] if args.no_cond else ["cond"])
    if not kinds:
        raise SystemExit("--no-cond with --cond-only leaves no model to distil")
    rows = res["rows"]
    wins: list = []
    target = hist = dm = None

    def score(name: str, kind: str, ckpt: str, opts: dict) -> None:
        model = load_checkpoint(ckpt)
        opts = dict(opts)
        scale = opts.pop("scale", args.scale)
        stats: dict = {}
        t0 = time.perf_counter()
        s = forecast(model, wins, args.samples, scale=scale, progress=False, stats=stats,
                     seed=args.seed, **opts)
        sec = (time.perf_counter() - t0) / len(wins)
        rows.append({"method": name, "model": kind, "ckpt": ckpt, "options": opts,
                     "scale": scale, "nfe": stats["nfe"],
                     **forecast_metrics(s, target, hist, dm.season), "seconds_per_window": sec})
        print(f"{name:52s} NFE {stats['nfe']:5.0f} CRPS {rows[-1]['CRPS']:.4f} "
              f"{sec:.2f} s/window", flush=True)
        _write(out, res)

    # each model in turn: teacher, its students, their scores (partial results are kept)
    for kind in kinds:
        done = sorted((work / f"teacher_{kind}").glob("lightning_logs/version_*/checkpoints/"
                                                       f"epoch={args.epochs - 1}-*.ckpt"))
        if kind == "tsdiff" and args.teacher:
            teacher = args.teacher
        elif args.reuse and done:
            teacher = str(done[-1])
            res["teachers"][kind] = {"ckpt": teacher, "reused": True}
        else:
            t0 = time.perf_counter()
            teacher = train_teacher(kind, args.epochs, args.seed, work / f"teacher_{kind}")
            res["teachers"][kind] = {"ckpt": teacher, "seconds": time.perf_counter() - t0}
            print(f"teacher {kind}: {teacher}", flush=True)
        if dm is None:
            ref = load_checkpoint(teacher)
            dm = TimeSeriesData(context_length=ref.context_length,
                                prediction_length=ref.prediction_length, lags=ref.lags)
            wins = dm.test_windows()
            c = ref.context_length
            target = np.stack([w["target"][c:] for w in wins])
            hist = [w["history"] for w in wins]
            rows.append({"method": "seasonal_naive", "model": "-", "nfe": 0, **forecast_metrics(
                gluonts_seasonal_naive(wins, ref.prediction_length, dm.freq, dm.season),
                target, hist, dm.season), "seconds_per_window": 0.0})
        students: dict[int, str] = {}
        flows: dict[int, str] = {}
        for n in steps_list:
            folder = work / f"student_{kind}_{label}_{n}"
            there = folder / "student.ckpt"
            if args.reuse and there.is_file():
                students[n] = str(there)
                if (folder / "flow.ckpt").is_file():
                    flows[n] = str(folder / "flow.ckpt")
                res["students"][f"{kind}/{n}"] = {"ckpt": str(there), "reused": True}
                continue
            more: list[str] = []
            if args.flow_row:  # round 1 alone, then the same run resumed from its last.ckpt
                # (the same --out: a resumed LightningCLI run takes the checkpoint's own);
                # max_epochs=-1: the demo config's max_epochs (6 x 32 batches) would otherwise
                # end round 1 at step 192 whatever max_steps says
                flow, sec1 = distill(teacher, args.method, n, args.iterations, args.seed,
                                     folder, args.parametrization or None,
                                     extra + [f"--trainer.max_steps={args.iterations}",
                                              "--trainer.max_epochs=-1"])
                flow = str(Path(flow).replace(folder / "flow.ckpt"))
                flows[n] = flow
                res["students"][f"{kind}/{n}/flow"] = {"ckpt": flow, "seconds": sec1}
                last = sorted(folder.glob("**/last.ckpt"), key=lambda q: q.stat().st_mtime)
                more = ["--ckpt_path", str(last[-1])]
            path, sec = distill(teacher, args.method, n, args.iterations, args.seed, folder,
                                args.parametrization or None, extra + more)
            students[n] = path
            res["students"][f"{kind}/{n}"] = {"ckpt": path, "seconds": sec}
            print(f"student {kind} {n} steps: {path} ({sec:.0f} s)", flush=True)
            _write(out, res)
        table = TEACHER_Q if kind == "tsdiff" else TEACHER_COND
        if args.guided_coupling:  # the guided teacher rows: its many-step and fast samplers
            table = {k: v for k, v in TEACHER_Q.items() if k.startswith("tsdiff_q/")
                     and "dpm_solver_pp_2m-20" not in k}
        for name, opts in table.items():
            score(f"teacher {name}", kind, teacher, opts)
        for n in steps_list:
            base = {"sampler": "distilled", "steps": n}
            if n in flows:  # round 1's flow on its own 16-step grid and on the student's
                guided = kind == "tsdiff" and not args.guided_coupling  # TSDiff-Q's own flow
                for m in (16, n):
                    score(f"flow {label}-{n} round 1, distilled-{m}", kind, flows[n],
                          {"sampler": "distilled", "steps": m,
                           **({"guidance": "quantile", "scale": scales[0]} if guided
                              else {"guidance": "none"})})
            if args.guided_coupling:  # a TSDiff-Cond student: it reads the context, no guidance
                for m in [n] + [m for m in also if m != n]:
                    score(f"student {label}-{n} tsdiff_cond/distilled-{m}", kind, students[n],
                          {"sampler": "distilled", "steps": m, "guidance": "none"})
                continue
            if kind == "tsdiff":
                for s in scales:
                    score(f"student {args.method}-{n} tsdiff_q/distilled-{n}+s{s:g}", kind,
                          students[n], {**base, "guidance": "quantile", "scale": s})
                score(f"student {args.method}-{n} tsdiff_q/distilled-{n}+s{scales[-1]:g}"
                      f"+x0steps4", kind, students[n],
                      {**base, "guidance": "quantile", "scale": scales[-1], "x0_steps": 4})
                score(f"student {args.method}-{n} tsdiff/distilled-{n} unguided", kind,
                      students[n], {**base, "guidance": "none"})
                if n < 4:  # guidance steps on x_T through the student: 4 NFE in all
                    k = 4 // n
                    score(f"student {args.method}-{n} tsdiff_q/distilled-{n}+s{scales[0]:g}"
                          f"+{k}inner", kind, students[n],
                          {**base, "guidance": "quantile", "scale": scales[0],
                           "inner_steps": k})
            else:
                score(f"student {args.method}-{n} tsdiff_cond/distilled-{n}", kind,
                      students[n], {**base, "guidance": "none"})
            for m in also:  # the same student at m NFE
                if m == n:
                    continue
                at = {"sampler": "distilled", "steps": m}
                if kind == "tsdiff":
                    score(f"student {args.method}-{n} tsdiff_q/distilled-{m}+s{scales[0]:g}",
                          kind, students[n], {**at, "guidance": "quantile", "scale": scales[0]})
                    score(f"student {args.method}-{n} tsdiff/distilled-{m} unguided", kind,
                          students[n], {**at, "guidance": "none"})
                else:
                    score(f"student {args.method}-{n} tsdiff_cond/distilled-{m}", kind,
                          students[n], {**at, "guidance": "none"})
    for kind in kinds:
        mine = [r for r in rows if r["model"] == kind and r["method"].startswith("teacher")]
        best = min(mine, key=lambda r: r["CRPS"])
        ddpm = [r for r in mine if "ddpm-100" in r["method"] and "unguided" not in r["method"]]
        for r in rows:
            if r["model"] == kind:
                r["crps_ratio_to_best_teacher"] = r["CRPS"] / best["CRPS"]
                r["best_teacher"] = best["method"]
                if ddpm:
                    r["crps_ratio_to_ddpm100"] = r["CRPS"] / ddpm[0]["CRPS"]
    print(f"\n{'method':60s} {'NFE':>5s} {'CRPS':>7s} {'ND':>7s} {'MASE':>6s} {'s/win':>6s} "
          f"{'ratio':>6s} {'/ddpm':>6s}")
    for r in rows:
        ratio = f"{r['crps_ratio_to_best_teacher']:6.3f}" if "crps_ratio_to_best_teacher" in r \
            else ""
        if "crps_ratio_to_ddpm100" in r:
            ratio += f" {r['crps_ratio_to_ddpm100']:6.3f}"
        print(f"{r['method']:60s} {r['nfe']:5.0f} {r['CRPS']:7.4f} {r['ND']:7.4f} "
              f"{r['MASE']:6.3f} {r['seconds_per_window']:6.2f} {ratio}")
    _write(out, res)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
