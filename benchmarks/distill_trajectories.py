"""Few-step GeoTDM students on charged 5-body against their teacher, in one run.

The teacher is the trajectories demo (``domaindiff fit --config trajectories:demo``: 384
simulated training trajectories, 25 epochs, x0 prediction around the velocity-initialised
learnable prior). The students come from the real ``domaindiff distill`` command line
(``--method progressive``, DDIM on ``--teacher-steps`` steps halved round by round,
``--iterations`` optimizer steps per round, ``--config trajectories:demo`` for the data), one
chain snapshotted at every round's end and within each round
(:func:`distill_common.progressive_chain`). Every row forecasts the demo's 64 test trajectories,
``--k`` samples each, over ``--seeds`` sampling seeds: ADE / FDE averaged over the K samples
(GeoTDM's number) and min over K; constant velocity for scale.

    DOMAINDIFF_THREADS=1 python benchmarks/distill_trajectories.py --work /tmp/distill_traj \
        [--iterations 100] [--teacher-steps 8] [--k 5] [--seeds 3]

Results are written after every row (``--out``, default
``benchmarks/results/distill_trajectories_cpu.json``); a rerun keeps rows already measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "trajectories"), str(ROOT / "benchmarks")]

from distill_common import progressive_chain  # noqa: E402

from domaindiff.checkpoint import load_checkpoint  # noqa: E402
from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_trajectories.evaluate import forecast_metrics  # noqa: E402

CONF = ROOT / "plugins" / "trajectories" / "conf" / "demo.yaml"
KEYS = ("ade_avg", "fde_avg", "ade_min", "fde_min")
#: teacher rows: (sampler, NFE)
TEACHER = (("ddim", 1), ("ddim", 2), ("ddim", 4), ("ddim", 8), ("ddim", 10), ("ddim", 20))


def test_loader() -> DataLoader:
    """The demo's test split (its data section, simulated into the cache)."""
    import domaindiff_trajectories

    data = yaml.safe_load(CONF.read_text())["data"]
    cls = getattr(domaindiff_trajectories, data["class_path"].rsplit(".", 1)[-1])
    dm = cls(**data["init_args"])
    dm.prepare_data()
    dm.setup("test")
    return DataLoader(dm.test_set, batch_size=len(dm.test_set))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="teacher, students, logs")
    ap.add_argument("--epochs", type=int, default=25, help="teacher training epochs (demo: 25)")
    ap.add_argument("--iterations", type=int, default=100, help="optimizer steps per round")
    ap.add_argument("--teacher-steps", type=int, default=8)
    ap.add_argument("--snapshots", type=int, default=2, help="students written per round")
    ap.add_argument("--lr", type=float, default=2e-4, help="distillation Adam lr")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "distill_trajectories_cpu.json")
    args = ap.parse_args(argv)
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__,
              "data": "charged 5-body, the demo's simulated split (384 train, 64 test)",
              "k": args.k, "rows": []}
    if args.out.exists():
        old = json.loads(args.out.read_text())
        result.update({k: old[k] for k in ("rows", "teacher", "distill") if k in old})
    save = lambda: atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")  # noqa: E731
    if not result.get("teacher"):
        from domaindiff.demo_utils import fit_config

        t0 = time.thread_time()
        _, ckpt = fit_config(CONF, args.work / "teacher", [f"--trainer.max_epochs={args.epochs}"])
        result["teacher"] = {"ckpt": str(ckpt), "cpu_seconds": time.thread_time() - t0,
                             "epochs": args.epochs, "command": "domaindiff fit --config "
                             f"trajectories:demo --trainer.max_epochs={args.epochs}"}
        save()
    teacher_path = Path(result["teacher"]["ckpt"])
    loader = test_loader()
    done = {r["config"] for r in result["rows"]}

    def measure(model, label, sampler, nfe, extra) -> None:
        if label in done:
            return
        per_seed, t0 = [], time.thread_time()
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(seed)
            met, _ = forecast_metrics(model, loader, sampler, nfe, args.k, gen, progress=False)
            per_seed.append({k: float(v) for k, v in met.items()})
        row = {"config": label, "sampler": sampler, "nfe": nfe, "per_seed": per_seed,
               "cpu_seconds": time.thread_time() - t0, **extra}
        for k in (*KEYS, "cv_ade", "cv_fde"):
            v = np.array([p[k] for p in per_seed])
            row[k], row[k + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        print(f"{label}: " + " ".join(f"{k} {row[k]:.4f}" for k in KEYS), flush=True)
        result["rows"].append(row)
        save()

    teacher = load_checkpoint(teacher_path)
    for sampler, nfe in TEACHER:
        measure(teacher, f"teacher/{sampler}{nfe}", sampler, nfe, {"role": "teacher"})
    if not result.get("distill"):
        data = ["--config", "trajectories:demo"]
        result["distill"] = progressive_chain(data, teacher_path, args.work, args.teacher_steps,
                                              args.iterations, args.snapshots, args.lr)
        result["distill"]["iterations_per_round"] = args.iterations
        save()
    for label, (steps, path, step) in sorted(result["distill"]["students"].items(),
                                             key=lambda kv: (kv[1][0], kv[1][2])):
        measure(load_checkpoint(path), f"student/{label}", "distilled", steps,
                {"role": "student", "student_steps": steps, "optimizer_steps": step})
    print("| row | NFE | " + " | ".join(KEYS) + " | opt. steps |")
    print("|---|---:|" + "---:|" * (len(KEYS) + 1))
    for r in result["rows"]:
        cells = " | ".join(f"{r[k]:.3f}±{r[k + '_std']:.3f}" for k in KEYS)
        print(f"| {r['config']} | {r['nfe']} | {cells} | {r.get('optimizer_steps', '')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
