"""The graphs demo: GDSS on community-small and on offline QM9-like molecules, briefly, on CPU.

    python -m domaindiff_graphs.demo --out demo_out/graphs

Trains each through the real CLI (``domaindiff fit --config conf/demo.yaml`` and
``conf/qm9_demo.yaml``), then runs ``domaindiff eval graphs`` on the checkpoints: degree /
clustering / orbit MMD for community-small, validity w/o correction, uniqueness, novelty and
NSPDK for the molecules. Writes metrics JSON and PNGs of the samples under ``--out``. A short run
is far from the paper's numbers (5000 epochs); see benchmarks/graphs.py for longer ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from domaindiff.cli import main as cli_main
from domaindiff.demo_utils import fit_config
from domaindiff.quiet import quiet_third_party

CONF = Path(__file__).parent / "conf"


def _fit(config: str, out: Path, epochs: int) -> str:
    # no sampling during validation: the eval app samples and scores the checkpoint afterwards
    return fit_config(CONF / config, out, [f"--trainer.max_epochs={epochs}",
                                           f"--trainer.check_val_every_n_epoch={epochs}",
                                           "--model.init_args.num_val_samples=0"])[1]


def main(argv: list[str] | None = None) -> int:
    """Train briefly on the two offline datasets, evaluate, print metrics."""
    quiet_third_party()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out/graphs")
    parser.add_argument("--epochs", type=int, default=30, help="community-small epochs")
    parser.add_argument("--mol-epochs", type=int, default=20, help="QM9-like epochs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: small graphs gain nothing from more, and a "
                             "loaded machine makes threads wait on each other)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    code = 0
    t0 = time.perf_counter()
    ckpt = _fit("demo.yaml", out / "community_small", args.epochs)
    print(f"community-small checkpoint: {ckpt}")
    # the fast S4 setting of benchmarks/graphs.py: 100 network evaluations, Langevin snr scaled
    # by sqrt(10) for the 10x fewer steps, unit corrector noise
    code |= cli_main(["eval", "graphs", f"ckpt={ckpt}", "dataset=community_small",
                      "sampler=s4", "steps=100", "+sampler_options.snr=0.158",
                      "+sampler_options.scale_eps=1.0", "+sampler_options.eps=1.0e-4",
                      f"out_dir={out}"])
    ckpt = _fit("qm9_demo.yaml", out / "qm9_nci", args.mol_epochs)
    print(f"QM9-like checkpoint: {ckpt}")
    code |= cli_main(["eval", "graphs", f"ckpt={ckpt}", "dataset=qm9", "+data_args.source=nci",
                      "sampler=dpm_solver", "steps=50", "num_samples=64", f"out_dir={out}"])
    print("\nsummary:")
    for path in sorted(out.glob("metrics_*.json")):
        res = json.loads(path.read_text())
        keep = {k: round(v, 4) for k, v in res.items() if isinstance(v, float)}
        print(f"  {path.name}: {keep}")
    print(f"PNGs: {sorted(str(p) for p in out.glob('samples_*.png'))}")
    print(f"demo took {time.perf_counter() - t0:.0f} s")
    return code

if __name__ == "__main__":
    sys.exit(main())
