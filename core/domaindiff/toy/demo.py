"""The toy demo: train on a 2-D ring of Gaussians through the real CLI, then evaluate.

python -m domaindiff.toy.demo --out demo_out/toy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from domaindiff.cli import main as cli_main
from domaindiff.demo_utils import fit_config
from domaindiff.quiet import quiet_third_party

CONF = Path(__file__).parent / "conf"


def main(argv: list[str] | None = None) -> int:
    """Train briefly, then sample with two samplers and print the metrics."""
    quiet_third_party()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out/toy")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    out = Path(args.out)
    _, ckpt = fit_config(CONF / "demo.yaml", out, [f"--trainer.max_epochs={args.epochs}"])
    print(f"checkpoint: {ckpt}")
    code = 0
    for sampler, steps in (("dpm_solver_pp_2m", 20), ("ancestral", 200)):
        code |= cli_main(["eval", "toy", f"ckpt={ckpt}", f"sampler={sampler}", f"steps={steps}",
                          f"out_dir={out}", "num_samples=2000"])
    return code


if __name__ == "__main__":
    sys.exit(main())
