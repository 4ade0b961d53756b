"""Community-small: a trained reflow-stochastic flow halved onto its few-step students, in one run.

``distill_graphs.py --method reflow-stochastic`` straightens the round-1 flow's 16-step ODE onto a
4-step student in one jump. This benchmark halves it instead (progressive-style, 16 -> 8 -> 4):
each round is ``domaindiff distill --method reflow-stochastic`` with ``straighten=False`` and the
previous model as the teacher, its coupling the teacher's deterministic ``distilled`` ODE
(``--teacher-sampler distilled --teacher-steps M``) from the same start the flow was trained from
(``prior_std z``), regressed by an ``M / 2``-step student on the straight line from that start
to the ODE's end (:func:`domaindiff.distill.stochastic.straight_state`: the colleague's round 2,
only with half the steps). Each student starts from its teacher's EMA weights (the distill
command's rule) and is written at the end of its round (``--snapshots`` times per round).

Rows, all on GDSS's test split over ``--seeds`` seeds, from N(0, I) as the flow was trained:
the teacher (fast S4 at 100 NFE), the flow at its own steps, each student at its own steps and
the last one also at 1 NFE.

    DOMAINDIFF_THREADS=1 python benchmarks/distill_graphs_halving.py \
        --gdss-dir /work/shared/data/gdss --flow /tmp/work/flow_16_3000.ckpt \
        --work /tmp/halving --iterations 600 --out benchmarks/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs"), str(ROOT / "benchmarks")]

from distill_graphs import community_small_teacher, print_table  # noqa: E402
from graphs_deterministic_samplers import run  # noqa: E402

from domaindiff.checkpoint import load_checkpoint  # noqa: E402
from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_options  # noqa: E402


def halve(data_args: list[str], teacher: Path, work: Path, teacher_steps: int, iterations: int,
          lr: float, snapshots: int) -> dict:
    """One halving round: ``teacher``'s ``teacher_steps``-step ODE onto a half-step student.

    Args:
        data_args: the data (and config) arguments of the command line.
        teacher: the teacher checkpoint (a distilled flow or student, sampled with ``distilled``).
        work: where the logs and the students go.
        teacher_steps: the teacher's steps (even).
        iterations: optimizer steps of the round.
        lr: Adam learning rate.
        snapshots: students written in the round (the last at its end).

    Returns:
        ``{"students": {label: (steps, path, optimizer steps)}, "cpu_seconds", "argv",
        "method"}``.

    Raises:
        ValueError: an odd ``teacher_steps``.
    """
    import lightning as L

    from domaindiff.distill.command import distill_cli
    from domaindiff.distill.lightning import write_student
    from domaindiff.distill.stochastic import StochasticReflow

    if teacher_steps < 2 or teacher_steps % 2:
        raise ValueError(f"teacher_steps must be even and >= 2 to halve, got {teacher_steps}")
    steps = teacher_steps // 2
    argv = [*data_args, "--ckpt", str(teacher), "--method", "reflow-stochastic",
            "--student-steps", str(steps), "--teacher-steps", str(teacher_steps),
            "--teacher-sampler", "distilled", "--iterations", str(iterations), "--lr", str(lr),
            "--trainer.default_root_dir", str(work / f"halve_{teacher_steps}"),
            "--trainer.enable_progress_bar=false", "--out", str(work / f"student_{steps}.ckpt")]
    written: dict[str, tuple[int, str, int]] = {}
    every = max(iterations // max(snapshots, 1), 1)

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            step = trainer.global_step
            if step % 100 == 0:
                print(f"halve {teacher_steps}->{steps} step {step}: "
                      f"{time.thread_time() - t0:.0f} CPU s, loss "
                      f"{float(trainer.callback_metrics.get('distill/loss', float('nan'))):.4g}",
                      flush=True)
            if step % every == 0:
                path = work / f"student_{steps}_{step}.ckpt"
                write_student(module.student, module.method, path, str(teacher), step)
                written[f"halved{steps}@{step}"] = (steps, str(path), step)

    t0 = time.thread_time()
    cli = distill_cli(argv, run=False)
    cli.model.method = StochasticReflow(cli.model.teacher.processes, steps, teacher_steps,
                                        iterations, teacher_sampler="distilled",
                                        straighten=False)
    cli.trainer.callbacks.append(Snapshot())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {"students": written, "cpu_seconds": time.thread_time() - t0, "argv": argv,
            "method": cli.model.method.describe()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, required=True)
    ap.add_argument("--flow", type=Path, required=True,
                    help="the round-1 flow checkpoint (distill_graphs.py's flow_16_STEP.ckpt)")
    ap.add_argument("--flow-steps", type=int, default=16, help="the flow's grid")
    ap.add_argument("--final-steps", type=int, default=4, help="halve down to this many steps")
    ap.add_argument("--work", type=Path, required=True, help="teacher, students, logs")
    ap.add_argument("--iterations", type=int, default=600, help="optimizer steps per round")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--snapshots", type=int, default=1, help="students written per round")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    steps = args.flow_steps
    while steps > args.final_steps:
        if steps % 2:
            ap.error(f"--flow-steps {args.flow_steps} does not halve to --final-steps "
                     f"{args.final_steps}")
        steps //= 2
    if steps != args.final_steps:
        ap.error(f"--flow-steps {args.flow_steps} does not halve to --final-steps "
                 f"{args.final_steps}")
    if not args.flow.is_file():
        ap.error(f"--flow {args.flow}: no such checkpoint")
    threads, raw, test, train, teacher_path, teacher = community_small_teacher(args.gdss_dir,
                                                                               args.work)
    pkl = args.gdss_dir / "data" / "community_small.pkl"
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__, "command": " ".join(sys.argv),
              "load_average_start": os.getloadavg(), "flow": str(args.flow),
              "dataset": "community_small (GDSS file, GDSS split, 20 test graphs)", "rows": [],
              "rounds": []}
    seeds = range(args.seeds)

    def measure(model, label, start, sampler, nfe, opts, extra) -> None:
        t0 = time.thread_time()
        row = run(model, test, train, label, start, sampler, nfe, opts, seeds, len(test))
        row["cpu_seconds"] = time.thread_time() - t0
        row.update(extra)
        result["rows"].append(row)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")

    snr = float(teacher.hparams["sampler_options"]["snr"])
    measure(teacher, "teacher/s4_100", "prior", "s4", 100,
            {**fast_s4_options(100, snr, 1000), "eps": 1e-4}, {"role": "teacher"})
    measure(load_checkpoint(args.flow), f"flow{args.flow_steps}", "prior", "distilled",
            args.flow_steps, {}, {"role": "flow"})
    data = ["--config", "graphs:community_small", "--data", "domaindiff_graphs.GraphFile",
            "--data.path", str(pkl), f"--data.batch_size={args.batch_size}"]
    current, steps = args.flow, args.flow_steps
    while steps > args.final_steps:
        out = halve(data, current, args.work, steps, args.iterations, args.lr, args.snapshots)
        result["rounds"].append(out)
        steps //= 2
        for label, (n, path, step) in sorted(out["students"].items(), key=lambda kv: kv[1][2]):
            nfes = sorted({n, 1}) if n == args.final_steps else [n]
            for nfe in nfes:
                measure(load_checkpoint(path), f"student/{label}/nfe{nfe}", "prior", "distilled",
                        nfe, {}, {"role": "student", "student_steps": n, "optimizer_steps": step,
                                  "halving_round_from": steps * 2})
            current = Path(path)
    result["load_average_end"] = os.getloadavg()
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
