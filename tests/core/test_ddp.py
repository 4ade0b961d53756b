"""Two-process DDP on CPU (gloo): training runs and validation metrics are synced across ranks."""

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from domaindiff.module import share_of
from domaindiff.toy import ToyDiffusion

CONF = Path(__file__).parents[1] / "conf"
NUM_VAL_SAMPLES = 48  # of toy_fit.yaml's 64 validation points


def _counts(root: Path) -> list[float]:
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    return [float(r["val/n_samples"]) for r in rows if r.get("val/n_samples")]


def test_two_process_ddp_syncs_metrics(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "domaindiff.cli", "fit", "--config", str(CONF / "toy_fit.yaml"),
         "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
         "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
         f"--trainer.logger.init_args.save_dir={tmp_path}",
         f"--model.init_args.num_val_samples={NUM_VAL_SAMPLES}"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # num_val_samples is the total over ranks: each of the 2 ranks draws 24 of its 32 points
    # (before: 32 per rank, 64 in all, where 1 process drew 48)
    counts = _counts(tmp_path)
    assert counts and counts[-1] == NUM_VAL_SAMPLES, counts
    names = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert names == ["epoch=0-step=2.ckpt", "last.ckpt"], names  # written once, by rank 0


def test_one_process_draws_num_val_samples(tmp_path):
    from domaindiff.cli import lightning_cli

    lightning_cli(["fit", "--config", str(CONF / "toy_fit.yaml"), "--trainer.max_epochs=1",
                   f"--trainer.default_root_dir={tmp_path}",
                   f"--trainer.logger.init_args.save_dir={tmp_path}",
                   f"--model.init_args.num_val_samples={NUM_VAL_SAMPLES}"])
    assert _counts(tmp_path)[-1] == NUM_VAL_SAMPLES


def test_validation_shares_sum_to_num_val_samples():
    for total in (0, 1, 7, 48, 513):
        for world in (1, 2, 3, 8):
            shares = [share_of(total, world, r) for r in range(world)]
            assert sum(shares) == total and max(shares) - min(shares) <= 1


def test_ranks_draw_different_noise():
    model = ToyDiffusion(hidden=8, depth=1)
    draws = []
    for rank in (0, 1):
        model._gen = None
        model._trainer = SimpleNamespace(global_rank=rank)
        draws.append(torch.randn(4, generator=model.generator))
    model._trainer = None
    assert not torch.equal(draws[0], draws[1])
