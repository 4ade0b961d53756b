"""Few-step students of GDSS's released community-small model, against the teacher, in one run.

The teacher is GDSS's released ``gdss_community_small.pth``, imported with
``domaindiff graphs import-gdss IN OUT --graphs community_small.pkl`` (node counts and the
moment-matched start's moments from GDSS's training split). The students come from the real
``domaindiff distill`` command line (``--method progressive``: DDIM on ``--teacher-steps`` steps
halved round by round, ``--iterations`` optimizer steps per round) on GDSS's training split
(``--data domaindiff_graphs.GraphFile --data.path community_small.pkl``); one chain
``teacher_steps -> ... -> 1`` is snapshotted at every round's end, so the 4-, 2- and 1-step
students are those of the uninterrupted ``--student-steps 4`` / ``2`` / ``1`` runs' chains
(the same rounds) and, within the last rounds, also at ``--snapshots`` intermediate steps (the
student metric against distillation steps).

Every row is sampled here, on GDSS's exact test split (first 20% of the file, 20 graphs) over
``--seeds`` seeds, MMDs degree / clustering / orbit (``graph_metrics``):

- teacher, fast S4 at 100 NFE from N(0, I) (within the stored 2000-NFE sampler's spread,
  plugins/graphs/README.md) -- the teacher's best many-step metric measured here;
- teacher, DDIM from the moment-matched start at the students' NFE and at ``teacher_steps``
  (what the students are distilled from; raw and EMA weights);
- each student with the ``distilled`` sampler from the moment-matched start.

    DOMAINDIFF_THREADS=1 python benchmarks/distill_graphs.py --gdss-dir /work/shared/data/gdss \
        --work /tmp/distill_graphs [--iterations 200] [--lr 2e-4] [--snapshots 2] [--seeds 3]

``--method reflow-stochastic`` distils the teacher's best sampler instead (fast S4 at
``--teacher-nfe`` NFE from N(0, I), its options those of the teacher row): the flow round on
S4's coupling (``--iterations`` steps, batches of ``--batch-size`` training graphs), then the
straightening round onto a ``--final-steps`` student (default 4; ``--flow-steps`` the flow's
grid); its rows, all from N(0, I) (the start it was distilled from): the flow at
``--flow-steps`` NFE, the student at ``--final-steps`` NFE and the same student at 1 NFE (its
first grid time is ``T``, where it was trained to land on the coupling's ``x0``). Results go to
``benchmarks/results/distill_graphs_stochastic_cpu.json`` unless ``--out`` says otherwise.
``--pool N`` trains the flow round on ``N`` S4 couplings drawn once and reused
(:mod:`domaindiff.distill.pool`: S4 runs ``N / batch`` times however long the round is);
``--straighten-iterations`` sets the straightening round's length apart from ``--iterations``;
``--resume LAST_CKPT`` continues such a run (e.g. a longer straightening round: resumed runs
repeat uninterrupted ones, so this is the longer run's student).

Results are written after every row (``--out``, default
``benchmarks/results/distill_graphs_cpu.json``); a rerun keeps rows already measured.
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

from distill_common import progressive_chain, stochastic_reflow  # noqa: E402
from graphs_deterministic_samplers import run  # noqa: E402
from graphs_gdss_released import METRICS  # noqa: E402

from domaindiff.checkpoint import load_checkpoint  # noqa: E402
from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs.gdss_import import import_gdss, read_gdss_checkpoint  # noqa: E402
from domaindiff_graphs.graphs import read_graph_pickle  # noqa: E402
from domaindiff_graphs.solvers import fast_s4_options  # noqa: E402

#: the stored 2000-NFE sampler on the same weights and split, 5 seeds (plugins/graphs/README.md)
STORED_2000 = {"degree_mmd": 0.050, "clustering_mmd": 0.087, "orbit_mmd": 0.0088}


def distill(teacher: Path, pkl: Path, work: Path, teacher_steps: int, iterations: int,
            snapshots: int, lr: float, final_steps: int = 1) -> dict:
    """The progressive chain on GDSS's training split (:func:`distill_common.progressive_chain`)."""
    data = ["--config", "graphs:community_small", "--data", "domaindiff_graphs.GraphFile",
            "--data.path", str(pkl)]
    return progressive_chain(data, teacher, work, teacher_steps, iterations, snapshots, lr,
                             final_steps)


def community_small_teacher(gdss_dir: Path, work: Path) -> tuple:
    """Threads, GDSS's raw checkpoint, its exact test / train split and the imported teacher.

    Sets torch's threads from ``DOMAINDIFF_THREADS`` (default 1), imports GDSS's released
    community-small weights into ``work/teacher.ckpt`` once and loads it.

    Returns:
        ``(threads, raw, test, train, teacher_path, teacher)``.
    """
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    src = gdss_dir / "checkpoints" / "community_small" / "gdss_community_small.pth"
    raw = read_gdss_checkpoint(src)
    graphs = read_graph_pickle(gdss_dir / "data" / "community_small.pkl")
    n_test = int(float(raw["model_config"]["data"]["test_split"]) * len(graphs))
    test, train = graphs[:n_test], graphs[n_test:]
    teacher_path = work / "teacher.ckpt"
    if not teacher_path.exists():
        import_gdss(src, teacher_path, train_graphs=train)
    return threads, raw, test, train, teacher_path, load_checkpoint(teacher_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="teacher, students, logs")
    ap.add_argument("--iterations", type=int, default=200, help="optimizer steps per round")
    ap.add_argument("--teacher-steps", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4, help="distillation Adam lr (the default, "
                    "the teacher's 0.01, throws the student off at the first step)")
    ap.add_argument("--snapshots", type=int, default=2, help="students written per round")
    ap.add_argument("--final-steps", type=int, default=None,
                    help="the chain's last student (default 1; reflow-stochastic: 4)")
    ap.add_argument("--method", choices=["progressive", "reflow-stochastic"],
                    default="progressive")
    ap.add_argument("--teacher-nfe", type=int, default=100,
                    help="reflow-stochastic: the S4 coupling's NFE")
    ap.add_argument("--flow-steps", type=int, default=16, help="reflow-stochastic: flow grid")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training graphs per batch (default the config's: all 80)")
    ap.add_argument("--pool", type=int, default=None,
                    help="reflow-stochastic: S4 couplings drawn once and reused in the flow round "
                    "(default: fresh ones every step)")
    ap.add_argument("--straighten-iterations", type=int, default=None,
                    help="reflow-stochastic: the straightening round's steps (default "
                    "--iterations)")
    ap.add_argument("--flow-at", type=int, nargs="*", default=None,
                    help="reflow-stochastic: also snapshot the flow at these round-1 steps")
    ap.add_argument("--resume", type=Path, default=None,
                    help="reflow-stochastic: continue the distillation from this last.ckpt (the "
                    "same settings, e.g. a longer --straighten-iterations)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", choices=["teacher", "students", "all"], default="all")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    stochastic = args.method == "reflow-stochastic"
    if args.final_steps is None:
        args.final_steps = 4 if stochastic else 1
    if args.out is None:
        name = "distill_graphs_stochastic_cpu.json" if stochastic else "distill_graphs_cpu.json"
        args.out = ROOT / "benchmarks" / "results" / name
    threads, raw, test, train, teacher_path, teacher = community_small_teacher(args.gdss_dir,
                                                                               args.work)
    pkl = args.gdss_dir / "data" / "community_small.pkl"
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__,
              "dataset": "community_small (GDSS file, GDSS split, 20 test graphs)",
              "stored_2000_nfe_5_seeds_readme": STORED_2000, "rows": []}
    if args.out.exists():
        old = json.loads(args.out.read_text())
        result["rows"] = old.get("rows", [])
        result["distill"] = old.get("distill")
    done = {r["config"] for r in result["rows"]}
    seeds = range(args.seeds)

    def measure(model, label, start, sampler, nfe, opts, extra) -> None:
        if label in done:
            return
        t0 = time.thread_time()
        row = run(model, test, train, label, start, sampler, nfe, opts, seeds, len(test))
        row["cpu_seconds"] = time.thread_time() - t0
        row.update(extra)
        result["rows"].append(row)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")

    snr = float(teacher.hparams["sampler_options"]["snr"])
    s4 = {**fast_s4_options(args.teacher_nfe, snr, 1000), "eps": 1e-4}
    if args.only in ("teacher", "all"):
        measure(teacher, "teacher/s4_100", "prior", "s4", 100,
                {**fast_s4_options(100, snr, 1000), "eps": 1e-4}, {"role": "teacher"})
        for nfe in sorted({1, 4, args.teacher_steps}):
            for ema in (False, True):
                measure(teacher, f"teacher/ddim{nfe}{'/ema' if ema else ''}", "moment", "ddim",
                        nfe, {"use_ema": ema}, {"role": "teacher"})
        if stochastic:  # the start the stochastic students are distilled from
            for nfe in (1, 4):
                measure(teacher, f"teacher/ddim{nfe}/prior", "prior", "ddim", nfe, {},
                        {"role": "teacher"})
    if args.only in ("students", "all") and stochastic:
        if not result.get("distill"):
            data = ["--config", "graphs:community_small", "--data", "domaindiff_graphs.GraphFile",
                    "--data.path", str(pkl)]
            if args.batch_size:
                data.append(f"--data.batch_size={args.batch_size}")
            result["distill"] = stochastic_reflow(
                data, teacher_path, args.work, args.final_steps, args.iterations, args.lr, "s4",
                args.teacher_nfe, s4, args.flow_steps, args.snapshots, pool=args.pool,
                straighten_iterations=args.straighten_iterations, flow_at=args.flow_at,
                progress_every=100,
                ckpt_path=str(args.resume) if args.resume else None)
            result["distill"]["resumed_from"] = str(args.resume) if args.resume else None
            result["distill"]["iterations_per_round"] = args.iterations
            result["distill"]["pool"] = args.pool
            result["distill"]["straighten_iterations"] = args.straighten_iterations
            atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        for label, (steps, path, step) in sorted(result["distill"]["students"].items(),
                                                 key=lambda kv: kv[1][2]):
            student = load_checkpoint(path)
            for nfe in sorted({steps, 1} if label.startswith("reflow") else {steps}):
                measure(student, f"student/{label}/nfe{nfe}", "prior", "distilled", nfe, {},
                        {"role": "student", "student_steps": steps, "optimizer_steps": step})
    elif args.only in ("students", "all"):
        if not result.get("distill"):
            result["distill"] = distill(teacher_path, pkl, args.work, args.teacher_steps,
                                        args.iterations, args.snapshots, args.lr,
                                        args.final_steps)
            result["distill"]["iterations_per_round"] = args.iterations
            atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        for label, (steps, path, step) in sorted(result["distill"]["students"].items(),
                                                 key=lambda kv: (kv[1][0], kv[1][2])):
            if steps not in (1, 2, 4):
                continue
            student = load_checkpoint(path)
            measure(student, f"student/{label}", "moment", "distilled", steps, {},
                    {"role": "student", "student_steps": steps, "optimizer_steps": step})
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    print("| row | NFE | " + " | ".join(k[:-4] for k in METRICS) + " | opt. steps |")
    print("|---|---:|" + "---:|" * (len(METRICS) + 1))
    for r in result["rows"]:
        cells = " | ".join(f"{r[k]:.4f}±{r[k + '_std']:.4f}" for k in METRICS)
        print(f"| {r['config']} | {r['nfe']} | {cells} | {r.get('optimizer_steps', '')} |")


if __name__ == "__main__":
    raise SystemExit(main())
