"""Few-step Echo-DND students against their teacher, in one run (Dice / HD95).

The teacher is the medical demo config on the offline default generator (``domaindiff fit
--config medical:demo --data.init_args.generator=camus_like``: 192 synthetic 32x32 echoes,
``--train-steps`` optimizer steps instead of the demo's 45 s; ``--teacher-parametrization v``
trains its Gaussian branch as a v prediction, ``EchoDND(parametrization="v")``). The students
come from the real ``domaindiff distill --method progressive`` command line (``--teacher-steps``
DDIM steps of the dual walk halved round by round down to 1, ``--iterations`` optimizer steps per round; the
Bernoulli branch distilled as a walked state, :mod:`domaindiff.distill.walk`), one chain
snapshotted within and at the end of every round (:func:`distill_common.progressive_chain`).
Every row is ``domaindiff eval medical`` (the eval app, in process) on the first ``--images``
camus_like test images, ``--members`` ensemble members, over ``--seeds`` sampling seeds: Dice and
HD95 (mm, 160 mm field) means over the images, then mean and std over the seeds.

    DOMAINDIFF_THREADS=1 python benchmarks/distill_medical.py --work /tmp/distill_medical \
        [--train-steps 150] [--teacher-parametrization eps] [--teacher-steps 16] \
        [--iterations 80] [--seeds 2]

Results are written after every row (``--out``, default
``benchmarks/results/distill_medical_cpu.json``); a rerun with the same teacher settings
(``--train-steps``, ``--teacher-parametrization``) keeps the rows already measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "medical"), str(ROOT / "benchmarks")]

from distill_common import progressive_chain  # noqa: E402

from domaindiff.data import atomic_write_text  # noqa: E402

#: the distillation's data and trainer: the demo config's, without its 45 s / 400-step limits
DATA = ["--config", "medical:demo", "--data.init_args.generator=camus_like",
        "--trainer.max_time=null", "--trainer.max_steps=-1"]
#: teacher rows: (sampler, NFE); "distilled" is the student's grid, undistilled
TEACHER = (("ddim", 1), ("ddim", 2), ("ddim", 4), ("ddim", 8), ("ddim", 16), ("ddim", 25),
           ("ddim", 50), ("distilled", 1), ("distilled", 4))


def evaluate(ckpt: str, sampler: str, steps: int, args: argparse.Namespace, seed: int,
             out_dir: Path) -> dict:
    """``domaindiff eval medical ckpt=... generator=camus_like steps=... seed=...`` in process."""
    from omegaconf import OmegaConf

    from domaindiff_medical import evaluate as app

    cfg = OmegaConf.load(Path(app.__file__).parent / "conf" / "eval.yaml")
    cfg.update(dict(ckpt=ckpt, generator="camus_like", sampler=sampler, steps=steps,
                    num_samples=args.members, max_images=args.images, num_overlays=0,
                    seed=seed, out_dir=str(out_dir)))
    return app.run(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="teacher, students, logs")
    ap.add_argument("--train-steps", type=int, default=150, help="teacher optimizer steps")
    ap.add_argument("--teacher-parametrization", default="eps", choices=("eps", "v", "x0"),
                    help="what the teacher's Gaussian branch predicts (trained so)")
    ap.add_argument("--iterations", type=int, default=80, help="distillation steps per round")
    ap.add_argument("--teacher-steps", type=int, default=16)
    ap.add_argument("--snapshots", type=int, default=2, help="students written per round")
    ap.add_argument("--lr", type=float, default=2e-4, help="distillation Adam lr")
    ap.add_argument("--student-parametrization", default=None,
                    help="x0 or v: the students' Gaussian branch (default: the teacher's eps)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "distill_medical_cpu.json")
    args = ap.parse_args(argv)
    args.work, args.out = args.work.resolve(), args.out.resolve()
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    args.work.mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)  # the demo config's checkpoint folder is relative
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__,
              "data": "camus_like synthetic echoes, 32x32 (the demo config), "
                      f"first {args.images} test images, {args.members} members",
              "settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": []}
    if args.out.exists():
        old = json.loads(args.out.read_text())
        same = {k: old.get("settings", {}).get(k, "eps" if k == "teacher_parametrization"
                                                else None)
                for k in ("train_steps", "teacher_parametrization")}
        if same == {"train_steps": args.train_steps,
                    "teacher_parametrization": args.teacher_parametrization}:
            result.update({k: old[k] for k in ("rows", "teacher", "distill") if k in old})
    save = lambda: atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")  # noqa: E731
    if not result.get("teacher"):
        from domaindiff.demo_utils import fit_config

        t0 = time.thread_time()
        over = ["--data.init_args.generator=camus_like", "--trainer.max_time=null",
                f"--trainer.max_steps={args.train_steps}"]
        if args.teacher_parametrization != "eps":
            over.append(f"--model.init_args.parametrization={args.teacher_parametrization}")
        _, ckpt = fit_config("medical:demo", args.work / "teacher", over)
        kept = args.work / "teacher.ckpt"  # the distillation's last.ckpt goes to the same folder
        shutil.copyfile(ckpt, kept)
        result["teacher"] = {"ckpt": str(kept),
                             "cpu_seconds": time.thread_time() - t0,
                             "command": "domaindiff fit --config medical:demo " + " ".join(over)}
        save()
    teacher = result["teacher"]["ckpt"]
    done = {r["config"] for r in result["rows"]}

    def measure(ckpt: str, label: str, sampler: str, nfe: int, extra: dict) -> None:
        if label in done:
            return
        per_seed, t0 = [], time.thread_time()
        for seed in range(args.seeds):
            s = evaluate(ckpt, sampler, nfe, args, seed, args.work / "eval" / label.replace("/", "_"))
            per_seed.append({k: float(s[k]) for k in ("dice", "hd95", "assd", "iou")})
        row = {"config": label, "sampler": sampler, "nfe": nfe, "per_seed": per_seed,
               "cpu_seconds": time.thread_time() - t0, **extra}
        for k in ("dice", "hd95", "assd", "iou"):
            v = np.array([p[k] for p in per_seed])
            row[k], row[k + "_std"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        print(f"{label}: Dice {row['dice']:.4f}±{row['dice_std']:.4f} HD95 "
              f"{row['hd95']:.3f}±{row['hd95_std']:.3f}", flush=True)
        result["rows"].append(row)
        save()

    for sampler, nfe in TEACHER:
        measure(teacher, f"teacher/{sampler}{nfe}", sampler, nfe, {"role": "teacher"})
    if not result.get("distill"):
        para = args.student_parametrization
        data = DATA + (["--student-parametrization", para] if para else [])
        result["distill"] = progressive_chain(data, Path(teacher), args.work, args.teacher_steps,
                                              args.iterations, args.snapshots, args.lr)
        result["distill"]["iterations_per_round"] = args.iterations
        save()
    for label, (steps, path, step) in sorted(result["distill"]["students"].items(),
                                             key=lambda kv: (kv[1][0], kv[1][2])):
        measure(str(Path(path).resolve()), f"student/{label}", "distilled", steps,
                {"role": "student", "student_steps": steps, "optimizer_steps": step})
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    print("| row | NFE | Dice | HD95 (mm) | opt. steps |")
    print("|---|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['config']} | {r['nfe']} | {r['dice']:.3f}±{r['dice_std']:.3f} | "
              f"{r['hd95']:.2f}±{r['hd95_std']:.2f} | {r.get('optimizer_steps', '')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
