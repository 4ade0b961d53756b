"""Few-step students against their teacher, in one run, on the toy 8-mode ring (2-D).

The teacher is the exact denoiser of the mixture under the VP process (``domaindiff.toy.
ExactDenoiser``): its rows are the samplers' own error at 10 / 50 / 100 NFE. Each student is the
toy MLP (``MLPDenoiser(2, 64, 2)``, x0-prediction) distilled from it by every method of
:mod:`domaindiff.distill` for 1, 2 and 4 steps, with the plain loop
:func:`domaindiff.distill.base.train_plain` (the same losses ``domaindiff distill`` trains):

- progressive: DDIM on 16 steps halved down to the student's (``--iterations`` / 4 optimizer
  steps per round, at least 150);
- consistency: Heun teacher steps on a 16-step grid; consistency-training: the same grid, no
  teacher; reflow: couplings from DPM-Solver++(2M) at 20 NFE (``--iterations`` steps each).

Metric: energy distance to exact samples (``--n`` against ``--n``; the two-sample noise floor is
printed), and CPU seconds of the sampling thread to draw ``--n`` samples (distillation seconds
too). Prints a markdown table, writes JSON and a PNG (energy distance against NFE).

    python benchmarks/distill.py [--iterations 500] [--n 2000] [--threads 1]
        [--out benchmarks/results/distill.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from domaindiff.data import atomic_write_text
from domaindiff.distill import METHODS
from domaindiff.distill.base import train_plain
from domaindiff.distill.reflow import make_method
from domaindiff.plotting import pyplot, save_figure
from domaindiff.processes import make_process
from domaindiff.samplers import get_sampler
from domaindiff.toy import ExactDenoiser, make_mixture
from domaindiff.toy.metrics import energy_distance
from domaindiff.toy.networks import MLPDenoiser

CLOCK = time.thread_time
TEACHER_ROWS = (("dpm_solver_pp_2m", 10), ("dpm_solver_pp_2m", 50), ("dpm_solver_pp_2m", 100),
                ("ddim", 10), ("ddim", 50), ("ddim", 100))
STUDENT_STEPS = (1, 2, 4)


def settings(method: str, steps: int, iterations: int) -> dict:
    """Each method's grid and length for a ``steps``-step student."""
    if method == "progressive":
        return {"teacher_steps": 16, "iterations": max(150, iterations // 4)}
    if method == "reflow":
        return {"teacher_steps": 20, "iterations": iterations}
    return {"teacher_steps": 16, "iterations": iterations}


def timed_sample(fn, *args, **kw):
    t0 = CLOCK()
    with torch.no_grad():
        x = fn(*args, **kw)
    return x, CLOCK() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/results/distill.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mix, proc = make_mixture("ring8"), make_process("vp")
    teacher = ExactDenoiser(mix, proc)
    gen = torch.Generator().manual_seed(0)
    ref = mix.sample(args.n, gen)
    floor = float(energy_distance(mix.sample(args.n, gen), ref))
    rows = []
    for name, nfe in TEACHER_ROWS:
        x, sec = timed_sample(get_sampler(name), teacher, proc, (args.n, 2), nfe, generator=gen)
        rows.append({"model": "teacher (exact)", "method": name, "nfe": nfe,
                     "energy_distance": float(energy_distance(x, ref)), "sample_s": sec,
                     "distill_s": 0.0})
        print(rows[-1], flush=True)
    for method in args.methods.split(","):
        for steps in STUDENT_STEPS:
            torch.manual_seed(0)
            cfg = settings(method, steps, args.iterations)
            m = make_method(method, {"x": proc}, steps, cfg["teacher_steps"], cfg["iterations"])
            student = MLPDenoiser(2, 64, 2)
            student.parametrization = "x0"
            t0 = CLOCK()
            train_plain(m, student, teacher, lambda step, g: {"x": mix.sample(256, g)}, lr=1e-2,
                        seed=1)
            dsec = CLOCK() - t0
            student.eval()
            x, sec = timed_sample(get_sampler(m.sampler), student, proc, (args.n, 2), steps,
                                  generator=gen)
            rows.append({"model": "student", "method": method, "nfe": steps,
                         "energy_distance": float(energy_distance(x, ref)), "sample_s": sec,
                         "distill_s": dsec, "optimizer_steps": m.total_iterations,
                         "teacher_steps": cfg["teacher_steps"]})
            print(rows[-1], flush=True)
    lines = [f"Toy ring8 (VP), energy distance to {args.n} exact samples (two-sample floor "
             f"{floor:.4f}); CPU s of one thread",
             "", "| model | method | NFE | energy distance | sample s | distill s |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['method']} | {r['nfe']} | {r['energy_distance']:.4f} | "
              f"{r['sample_s']:.3f} | {r['distill_s']:.1f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    result = {"benchmark": "distill", "mixture": "ring8", "process": "vp", "n": args.n,
              "noise_floor": floor, "iterations": args.iterations, "threads": args.threads,
              "machine": platform.platform(), "torch": torch.__version__, "rows": rows,
              "table": table}
    atomic_write_text(out, json.dumps(result, indent=2))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for name in sorted({r["method"] for r in rows}):
        pts = sorted((r["nfe"], r["energy_distance"]) for r in rows if r["method"] == name)
        kind = "teacher" if name in dict(TEACHER_ROWS) else "student"
        ax.plot(*zip(*pts, strict=True), marker="o", ls="--" if kind == "teacher" else "-",
                label=f"{kind}: {name}")
    ax.axhline(floor, color="grey", lw=0.8, label="two-sample noise floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("energy distance")
    ax.set_title("ring8 (VP): distilled students vs the exact teacher's samplers", fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
