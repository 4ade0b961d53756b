"""Shared by the per-plugin distillation benchmarks: one progressive chain through the real CLI.

:func:`progressive_chain` runs ``domaindiff distill --method progressive --student-steps 1
--teacher-steps M --iterations R`` (``M -> M/2 -> ... -> 1``, ``R`` optimizer steps per round)
and writes the student at the end of every round and ``snapshots - 1`` times within each round,
so one run gives the ``M/2``-, ..., 2- and 1-step students of the uninterrupted chain and each
student's metric against its distillation steps.
"""

from __future__ import annotations

import time
from pathlib import Path


def progressive_chain(data_args: list[str], teacher: Path, work: Path, teacher_steps: int,
                      iterations: int, snapshots: int, lr: float, final_steps: int = 1) -> dict:
    """Distil ``teacher`` down to ``final_steps`` steps, snapshotting every round's student.

    Args:
        data_args: the data (and config) arguments of the command line.
        teacher: the teacher checkpoint.
        work: where the logs and the students go.
        teacher_steps: the teacher's DDIM steps (a power of two).
        iterations: optimizer steps per round.
        snapshots: students written per round (the last at its end).
        lr: Adam learning rate.
        final_steps: the last round's student steps (``--student-steps``).

    Returns:
        ``{"students": {label: (steps, path, optimizer steps)}, "cpu_seconds", "argv",
        "optimizer_steps"}``.
    """
    import lightning as L

    from domaindiff.distill.command import distill_cli
    from domaindiff.distill.lightning import write_student
    from domaindiff.distill.reflow import make_method

    argv = [*data_args, "--ckpt", str(teacher), "--method", "progressive",
            "--student-steps", str(final_steps), "--teacher-steps", str(teacher_steps),
            "--iterations", str(iterations), "--lr", str(lr),
            "--trainer.default_root_dir", str(work / "distill"),
            "--trainer.enable_progress_bar=false", "--out", str(work / f"student_{final_steps}.ckpt")]
    written: dict[str, tuple[int, str, int]] = {}
    every = max(iterations // max(snapshots, 1), 1)

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            step = trainer.global_step
            r, within = divmod(step, iterations)
            if within and within % every:
                return
            r = r - 1 if within == 0 else r  # at a round's end: the round just finished
            steps = teacher_steps >> (r + 1)
            if steps < final_steps:
                return
            method = make_method("progressive", module.teacher.processes, steps,
                                 teacher_steps, iterations)
            path = work / f"student_{steps}_{step}.ckpt"
            write_student(module.student, method, path, str(teacher), step)
            written[f"progressive{steps}@{step}"] = (steps, str(path), step)

    t0 = time.thread_time()
    cli = distill_cli(argv, run=False)
    cli.trainer.callbacks.append(Snapshot())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {"students": written, "cpu_seconds": time.thread_time() - t0, "argv": argv,
            "optimizer_steps": int(cli.trainer.global_step)}


def stochastic_reflow(data_args: list[str], teacher: Path, work: Path, student_steps: int,
                      iterations: int, lr: float, teacher_sampler: str, teacher_steps: int,
                      teacher_options: dict | None = None, flow_steps: int = 16,
                      snapshots: int = 1, extra_args: list[str] | None = None,
                      pool: int | None = None, straighten_iterations: int | None = None,
                      flow_at: list[int] | None = None, progress_every: int = 0,
                      ckpt_path: str | None = None) -> dict:
    """``domaindiff distill --method reflow-stochastic``: the flow round, then the straightening.

    The command line builds the run; the method is rebuilt with ``teacher_options`` (the
    teacher sampler's keyword options, e.g. S4's; ``pool``: round 1's coupling pool, see
    :mod:`domaindiff.distill.pool`; ``straighten_iterations``: round 2's length, default
    ``iterations``) before the fit. Students are written at the end of the flow round
    (``flow@STEP``: the 1-rectified flow, sampled with ``flow_steps`` steps) and ``snapshots``
    times within the straightening round (``reflow-stochastic@STEP``, the last at its end);
    ``flow_at`` adds flow snapshots at those round-1 steps. ``progress_every``: print the step
    and the CPU seconds so far every that many steps (0: never). ``ckpt_path``: resume the fit
    from that ``last.ckpt``.

    Returns:
        ``{"students": {label: (steps, path, optimizer steps)}, "cpu_seconds", "argv",
        "optimizer_steps", "method"}``.
    """
    import lightning as L

    from domaindiff.distill.command import distill_cli
    from domaindiff.distill.lightning import write_student
    from domaindiff.distill.stochastic import StochasticReflow

    argv = [*data_args, "--ckpt", str(teacher), "--method", "reflow-stochastic",
            "--student-steps", str(student_steps), "--teacher-steps", str(teacher_steps),
            "--teacher-sampler", teacher_sampler, "--iterations", str(iterations),
            "--lr", str(lr), "--trainer.default_root_dir", str(work / "distill_stochastic"),
            "--trainer.enable_progress_bar=false",
            "--out", str(work / f"student_stochastic_{student_steps}.ckpt"), *(extra_args or [])]
    written: dict[str, tuple[int, str, int]] = {}
    round2 = iterations if straighten_iterations is None else straighten_iterations
    every = max(round2 // max(snapshots, 1), 1)
    flows = {s for s in (flow_at or []) if 0 < s < iterations} | {iterations}

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            step = trainer.global_step
            if progress_every and step % progress_every == 0:
                print(f"distill step {step}: {time.thread_time() - t0:.0f} CPU s, loss "
                      f"{float(trainer.callback_metrics.get('distill/loss', float('nan'))):.4g}",
                      flush=True)
            if step in flows:
                flow = StochasticReflow(module.teacher.processes, flow_steps, teacher_steps,
                                        iterations, teacher_sampler=teacher_sampler,
                                        teacher_options=teacher_options, straighten=False)
                path = work / f"flow_{flow_steps}_{step}.ckpt"
                write_student(module.student, flow, path, str(teacher), step)
                written[f"flow{flow_steps}@{step}"] = (flow_steps, str(path), step)
            elif step > iterations and (step - iterations) % every == 0:
                path = work / f"student_stochastic_{student_steps}_{step}.ckpt"
                write_student(module.student, module.method, path, str(teacher), step)
                written[f"reflow-stochastic{student_steps}@{step}"] = (student_steps, str(path),
                                                                      step)

    t0 = time.thread_time()
    cli = distill_cli(argv, run=False)
    cli.model.method = StochasticReflow(cli.model.teacher.processes, student_steps,
                                        teacher_steps, iterations, teacher_sampler=teacher_sampler,
                                        teacher_options=teacher_options, flow_steps=flow_steps,
                                        pool=pool, straighten_iterations=straighten_iterations)
    cli.trainer.callbacks.append(Snapshot())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return {"students": written, "cpu_seconds": time.thread_time() - t0, "argv": argv,
            "optimizer_steps": int(cli.trainer.global_step),
            "method": cli.model.method.describe()}
