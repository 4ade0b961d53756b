"""Which branch carries an Echo-DND teacher or student: each branch's Dice alone, and the fused one.

For the checkpoints of a ``benchmarks/distill_medical.py`` run (the teacher, and each round's
last student as that run's results file ``--results`` lists them): one walk per image (no ensemble,
no post-processing), the Gaussian branch's clean estimate ``(clip(x0) + 1) / 2``, the Bernoulli
branch's ``P(m = 1)`` and their mean (Echo-DND's fusion), each thresholded at 0.5, Dice over all
pixels of the first ``--images`` camus_like 32x32 test images, seed 0.

    DOMAINDIFF_THREADS=1 python benchmarks/distill_medical_branches.py --work /tmp/distill_medical \
        [--results benchmarks/results/distill_medical_cpu.json] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "medical")]

from domaindiff.checkpoint import load_checkpoint  # noqa: E402
from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_medical.evaluate import load_split  # noqa: E402

#: the teacher's walks
TEACHER = (("teacher.ckpt", "ddim", 25), ("teacher.ckpt", "distilled", 4),
           ("teacher.ckpt", "distilled", 1))


def student_rows(results: Path) -> list[tuple[str, str, int]]:
    """Each round's last student of a ``distill_medical.py`` results file, most steps first.

    Raises:
        ValueError: the file lists no students (its distillation has not run).
    """
    students = json.loads(results.read_text()).get("distill", {}).get("students", {})
    if not students:
        raise ValueError(f"--results {results}: no 'distill.students' (run distill_medical.py "
                         "to the end first)")
    last: dict[int, tuple[int, str]] = {}
    for steps, path, step in students.values():
        if step > last.get(steps, (-1, ""))[0]:
            last[steps] = (step, Path(path).name)
    return [(last[n][1], "distilled", n) for n in sorted(last, reverse=True)]


def dice(p: torch.Tensor, m: torch.Tensor) -> float:
    b = (p > 0.5).float()
    return float(2 * (b * m).sum() / (b.sum() + m.sum()).clamp_min(1e-6))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="the distill_medical.py work dir")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results"
                    / "distill_medical_cpu.json", help="the distill_medical.py results file")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                    / "distill_medical_branches_cpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    images, masks, _, _ = load_split("synthetic", "test", None, 32, args.images, 0,
                                     generator="camus_like")
    rows = []
    for name, sampler, steps in (*TEACHER, *student_rows(args.results)):
        model = load_checkpoint(args.work / name)
        out = model.dual_sample(images, steps=steps, sampler=sampler,
                                generator=torch.Generator().manual_seed(0))
        row = {"ckpt": name, "sampler": sampler, "nfe": steps,
               "gaussian": dice(out["gauss"], masks), "bernoulli": dice(out["bern"], masks),
               "fused": dice(out["prob"], masks)}
        print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in row.items()), flush=True)
        rows.append(row)
    atomic_write_text(args.out, json.dumps({"images": args.images, "results": str(args.results),
                                            "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
