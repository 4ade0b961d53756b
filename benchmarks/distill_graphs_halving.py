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

``--jump`` makes it one round from the flow straight onto the ``--final-steps`` student,
``--grid-index`` gives that student its own grid (indices into the flow's, e.g.
``distill_graphs_grid.py``'s pick; the student is then sampled with ``timesteps=`` and the
flow on the same grid is a row), ``--pool N`` draws each round's couplings once, and
``--trajectory`` replaces straightening by :class:`TrajectoryDistill` (each student step
matches the teacher steps it spans on the teacher's own trajectory).
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
from domaindiff.distill.base import batch_of, clean, combine, x0_loss  # noqa: E402
from domaindiff.distill.progressive import two_step_target  # noqa: E402
from domaindiff.distill.sampling import distilled_times  # noqa: E402
from domaindiff.distill.stochastic import StochasticReflow  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_options  # noqa: E402


class TrajectoryDistill(StochasticReflow):
    """Each student step matches the teacher's steps it spans, on the teacher's own trajectory.

    The teacher's ``teacher_steps``-step ``distilled`` ODE from ``start = prior_std z`` (the
    flow's start) visits ``z_0 = start, z_1, ...`` at its grid's times; the student's grid is a
    subset of them (``index``, starting at 0), and student step ``j`` regresses, at
    ``(z_{index[j]}, t_{index[j]})``, the clean prediction whose one DDIM step lands on the
    teacher's ``z_{index[j + 1]}`` (the teacher's output at the last step): progressive
    distillation's two-step target (:func:`~domaindiff.distill.progressive.two_step_target`),
    spanning ``index[j + 1] - index[j]`` teacher steps, at states of the teacher's trajectory
    instead of noised data (the flow's marginals are not the forward process's). Unlike
    straightening (a straight line from ``start`` to the ODE's end, regressed by one clean
    prediction per state) no step has to reach past its own interval. ``pool``: the
    trajectories of that many starts drawn once (their states at the student's times and the
    batch's masks kept) and reused; not part of a resumable state (this run is not resumed).

    Args:
        procs: the processes.
        index: the student's grid as indices into the teacher's grid (increasing, from 0).
        teacher_steps: the teacher's steps.
        iterations: optimizer steps.
        pool: trajectories kept (None: a fresh teacher ODE every step).

    Raises:
        ValueError: a bad ``index`` or ``pool``.
    """

    def __init__(self, procs, index: list[int], teacher_steps: int, iterations: int,
                 pool: int | None = None) -> None:
        index = [int(i) for i in index]
        if (not index or index[0] != 0 or any(b <= a for a, b in zip(index, index[1:]))
                or index[-1] >= teacher_steps):
            raise ValueError(f"index must be increasing indices from 0 below teacher_steps="
                             f"{teacher_steps}, got {index}")
        if pool is not None and (not isinstance(pool, int) or pool < 1):
            raise ValueError(f"pool must be a positive integer, got {pool!r}")
        super().__init__(procs, len(index), teacher_steps, iterations,
                         teacher_sampler="distilled", straighten=False)
        self.fine = distilled_times(self.procs, teacher_steps)
        self.index = [*index, teacher_steps]
        self.times = [float(self.fine[i]) for i in self.index]
        self.flow_grid = list(self.times)
        self.trajectory_pool = pool
        self.kept: dict[str, torch.Tensor] | None = None
        self.pool = None

    def student_times(self) -> list[float]:
        return list(self.times)

    def trajectory(self, teacher, x: dict, generator) -> list[dict]:
        """The teacher's states at the student's times from a fresh start (the last: its output)."""
        model = self.model(teacher)
        ref = next(iter(x[k] for k in self.procs))
        z = self.start(x, generator)
        out = [z]
        for i in range(self.teacher_steps):
            t = torch.full((ref.shape[0],), self.fine[i], dtype=ref.dtype, device=ref.device)
            s = torch.full_like(t, self.fine[i + 1])
            x0, eps = model.raw_predict(z, t)
            z = combine(z, x0, eps, s, self.procs)
            if i + 1 in self.index:
                out.append(z)
        return out

    def loss(self, student, teacher, state, generator, step: int) -> torch.Tensor:
        x = clean(state, self.procs)
        ref = next(iter(x[k] for k in self.procs))
        b = batch_of(x, self.procs)
        comps = list(self.procs)
        with torch.no_grad():
            if self.kept is not None and len(next(iter(self.kept.values()))) >= \
                    self.trajectory_pool:
                idx = self.batch_index(b, self.trajectory_pool, ref, generator).to(ref.device)
                take = {k: v.index_select(0, idx.to(v.device)).to(ref.device)
                        for k, v in self.kept.items()}
                x = {**x, **{k: v for k, v in take.items() if "#" not in k}}
                zs = [{**x, **{k: take[f"{k}#{j}"] for k in comps}}
                      for j in range(len(self.index))]
            else:
                zs = self.trajectory(teacher, x, generator)
                if self.trajectory_pool is not None:
                    n = self.trajectory_pool - (0 if self.kept is None else
                                                len(next(iter(self.kept.values()))))
                    n = min(n, b)
                    new = {k: v[:n].detach() for k, v in x.items()
                           if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == b
                           and k not in comps}
                    for j, z in enumerate(zs):
                        new.update({f"{k}#{j}": z[k][:n].detach() for k in comps})
                    self.kept = new if self.kept is None else {
                        k: torch.cat([self.kept[k], v]) for k, v in new.items()}
                    x = {k: v[:n] if k in new or k in comps else v for k, v in x.items()}
                    zs = [{**x, **{k: z[k][:n] for k in comps}} for z in zs]
            bb = batch_of(x, self.procs)
            j = self.batch_index(bb, len(self.index) - 1, ref, generator).to(ref.device)
            grid = torch.tensor(self.times, dtype=ref.dtype, device=ref.device)
            t, s = grid[j], grid[j + 1]
            z_t, z_s = {**x}, {}
            for k in comps:
                stack = torch.stack([z[k] for z in zs])  # (states, B, ...)
                sel = torch.arange(bb, device=ref.device)
                z_t[k] = stack[j, sel]
                z_s[k] = stack[j + 1, sel]
            target = two_step_target(z_t, z_s, t, s, self.procs)
        pred, _ = self.model(student).raw_predict(z_t, t)
        return x0_loss(pred, target, z_t, t, self.procs, snr_weight=True)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "method_variant": "trajectory",
                "grid_index": self.index[:-1], "pool": self.trajectory_pool}


def grid_index(procs, teacher_steps: int, steps: int, grid: list[float] | None) -> list[int]:
    """The indices into the teacher's grid of a ``steps``-step grid (its times before 0).

    Raises:
        ValueError: ``grid`` has a time that is not on the teacher's grid, or the default grid
            is not a subset (``teacher_steps`` not a multiple of ``steps``).
    """
    fine = distilled_times(procs, teacher_steps)
    if grid is None:
        if teacher_steps % steps:
            raise ValueError(f"the default {steps}-step grid is not a subset of the teacher's "
                             f"{teacher_steps}-step grid; give the grid")
        return list(range(0, teacher_steps, teacher_steps // steps))
    out = []
    for t in grid[:-1]:
        hits = [i for i, f in enumerate(fine[:-1]) if abs(f - t) < 1e-9]
        if not hits:
            raise ValueError(f"grid time {t} is not on the teacher's {teacher_steps}-step grid")
        out.append(hits[0])
    return out


def grid_reflow(procs, student_steps: int, teacher_steps: int, iterations: int,
                pool: int | None = None, grid: list[float] | None = None):
    """The round's method: ``StochasticReflow`` on the teacher's ``distilled`` ODE, one round.

    ``grid`` (``student_steps + 1`` decreasing times ending at 0, e.g. a subset of the flow's
    grid from ``distill_graphs_grid.py``) replaces the student's default grid: the student is
    trained at those times (and records them as its ``times``), so it is sampled with
    ``timesteps=grid``. ``pool``: the coupling pool of the round (the teacher's ODE runs
    ``pool / batch`` times however long the round is).

    Raises:
        ValueError: a ``grid`` of another length than ``student_steps + 1``, not decreasing, not
            starting at the processes' ``T`` or not ending at 0.
    """
    from domaindiff.distill.sampling import explicit_times
    from domaindiff.distill.stochastic import StochasticReflow

    times = None
    if grid is not None:
        times = explicit_times(procs, student_steps, grid)
        top = max(float(p.T) for p in procs.values())
        if times[-1] != 0.0 or abs(times[0] - top) > 1e-9:
            raise ValueError(f"grid must run from T={top} to 0 (the coupling starts at T), "
                             f"got {times}")

    class GridReflow(StochasticReflow):
        def student_times(self) -> list[float]:
            return list(times) if times is not None else super().student_times()

    method = GridReflow(procs, student_steps, teacher_steps, iterations,
                        teacher_sampler="distilled", straighten=False, pool=pool)
    if times is not None:
        method.flow_grid = list(times)
    return method


def halve(data_args: list[str], teacher: Path, work: Path, teacher_steps: int, iterations: int,
          lr: float, snapshots: int, student_steps: int | None = None, pool: int | None = None,
          grid: list[float] | None = None, trajectory: bool = False) -> dict:
    """One round: ``teacher``'s ``teacher_steps``-step ODE onto a half-step (or fewer) student.

    Args:
        data_args: the data (and config) arguments of the command line.
        teacher: the teacher checkpoint (a distilled flow or student, sampled with ``distilled``).
        work: where the logs and the students go.
        teacher_steps: the teacher's steps (even unless ``student_steps`` is given).
        iterations: optimizer steps of the round.
        lr: Adam learning rate.
        snapshots: students written in the round (the last at its end).
        student_steps: the student's steps (default ``teacher_steps // 2``; fewer: one jump).
        pool: the round's coupling pool (None: a fresh teacher ODE every step).
        grid: the student's own grid (see :func:`grid_reflow`).
        trajectory: distil with :class:`TrajectoryDistill` instead (``grid`` then a subset of
            the teacher's grid; default every ``teacher_steps / student_steps``-th time).

    Returns:
        ``{"students": {label: (steps, path, optimizer steps)}, "cpu_seconds", "argv",
        "method"}``.

    Raises:
        ValueError: an odd ``teacher_steps`` without ``student_steps``, a ``student_steps`` not
            below ``teacher_steps``, a bad ``grid``.
    """
    import lightning as L

    from domaindiff.distill.command import distill_cli
    from domaindiff.distill.lightning import write_student

    if student_steps is None:
        if teacher_steps < 2 or teacher_steps % 2:
            raise ValueError(f"teacher_steps must be even and >= 2 to halve, got {teacher_steps}")
        student_steps = teacher_steps // 2
    if not 1 <= student_steps < teacher_steps:
        raise ValueError(f"student_steps must be in [1, teacher_steps={teacher_steps}), got "
                         f"{student_steps}")
    steps = student_steps
    kind = "halved" if 2 * steps == teacher_steps else "jump"
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
                written[f"{kind}{steps}@{step}"] = (steps, str(path), step)

    t0 = time.thread_time()
    cli = distill_cli(argv, run=False)
    procs = cli.model.teacher.processes
    if trajectory:
        cli.model.method = TrajectoryDistill(procs, grid_index(procs, teacher_steps, steps, grid),
                                             teacher_steps, iterations, pool=pool)
    else:
        cli.model.method = grid_reflow(procs, steps, teacher_steps, iterations, pool=pool,
                                       grid=grid)
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
    ap.add_argument("--jump", action="store_true",
                    help="one round from the flow's --flow-steps ODE straight onto the "
                    "--final-steps student (no halving)")
    ap.add_argument("--pool", type=int, default=None,
                    help="each round's coupling pool: the teacher's ODE drawn for this many "
                    "pairs once and reused (default: a fresh ODE every step)")
    ap.add_argument("--grid-index", type=int, nargs="+", default=None,
                    help="--jump: the student's grid, indices into the flow's grid starting at 0 "
                    "(then 0; e.g. distill_graphs_grid.py's pick); default every "
                    "flow-steps / final-steps-th time")
    ap.add_argument("--trajectory", action="store_true",
                    help="distil each round with TrajectoryDistill (each student step matches "
                    "the teacher steps it spans, on the teacher's trajectory) instead of "
                    "straightening")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    steps = args.flow_steps
    if args.jump:
        if not 1 <= args.final_steps < args.flow_steps:
            ap.error(f"--jump: --final-steps {args.final_steps} must be below --flow-steps "
                     f"{args.flow_steps}")
        steps = args.final_steps
    elif args.grid_index is not None:
        ap.error("--grid-index needs --jump")
    while steps > args.final_steps:
        if steps % 2:
            ap.error(f"--flow-steps {args.flow_steps} does not halve to --final-steps "
                     f"{args.final_steps}")
        steps //= 2
    if steps != args.final_steps:
        ap.error(f"--flow-steps {args.flow_steps} does not halve to --final-steps "
                 f"{args.final_steps}")
    g = args.grid_index
    if g is not None and (len(g) != args.final_steps or g[0] != 0
                          or any(b <= a for a, b in zip(g, g[1:], strict=False))
                          or g[-1] >= args.flow_steps):
        ap.error(f"--grid-index {' '.join(map(str, g))}: need {args.final_steps} increasing "
                 f"indices from 0 below --flow-steps {args.flow_steps}")
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
        if row["nfe"] is None:  # a caller's grid: the evaluations it made
            row["nfe"] = row["per_seed"][0]["nfe"]
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
    grid = None
    if g is not None:
        fine = distilled_times(teacher.processes, args.flow_steps)
        grid = [float(fine[i]) for i in g] + [0.0]
        result["grid"] = {"index": list(g), "times": grid}
        measure(load_checkpoint(args.flow), f"flow/grid{'-'.join(map(str, g))}", "prior",
                "distilled", None, {"timesteps": grid}, {"role": "flow", "grid_index": list(g)})
    current, steps = args.flow, args.flow_steps
    while steps > args.final_steps:
        nxt = args.final_steps if args.jump else steps // 2
        out = halve(data, current, args.work, steps, args.iterations, args.lr, args.snapshots,
                    student_steps=nxt, pool=args.pool, grid=grid, trajectory=args.trajectory)
        result["rounds"].append(out)
        frm, steps = steps, nxt
        for label, (n, path, step) in sorted(out["students"].items(), key=lambda kv: kv[1][2]):
            nfes = sorted({n, 1}) if n == args.final_steps else [n]
            for nfe in nfes:
                opts = {"timesteps": grid} if grid is not None and nfe == n else {}
                measure(load_checkpoint(path), f"student/{label}/nfe{nfe}", "prior", "distilled",
                        None if opts else nfe, opts,
                        {"role": "student", "student_steps": n, "optimizer_steps": step,
                         "halving_round_from": frm, "pool": args.pool})
            current = Path(path)
    result["load_average_end"] = os.getloadavg()
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
