"""`domaindiff distill` with two CPU processes (DDP, gloo), interrupted and resumed, and the
in-process CLI (``distill_cli(run=False)``) a caller adds callbacks to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domaindiff.checkpoint import load_checkpoint
from tests.catalogue import run_cli

CONF = Path(__file__).parents[1] / "conf"
DATA = ["--data", "GaussianMixtureData", "--data.num_train=256", "--data.num_val=16",
        "--data.batch_size=32", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.logger=false"]
DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]


def _args(teacher: Path, root: Path, *extra: str) -> list[str]:
    return ["distill", "--ckpt", str(teacher), "--method", "progressive", "--student-steps", "1",
            "--teacher-steps", "4", "--iterations", "3", *DATA,
            f"--trainer.default_root_dir={root}", "--out", str(root / "student.ckpt"), *extra]


def _ddp(teacher: Path, root: Path, *extra: str) -> None:
    """Two processes through the real entry point (Lightning's launcher restarts its argv)."""
    root.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "domaindiff.cli", *_args(teacher, root, *DDP,
                                                                          *extra)],
                         cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.ddp
@pytest.mark.slow
def test_two_process_distill_writes_the_same_kind_of_student_and_resumes(teacher, tmp_path):
    full, run, one = tmp_path / "full", tmp_path / "run", tmp_path / "one"
    _ddp(teacher, full)  # 2 rounds x 3 steps, each rank its half of every batch
    _ddp(teacher, run, "--trainer.max_steps=4")  # interrupted inside the second round
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    _ddp(teacher, run, "--ckpt_path", str(last))  # resumed to its 6 steps
    one.mkdir()
    res = run_cli(_args(teacher, one), cwd=one)  # one process, for comparison
    assert res.returncode == 0, res.stderr[-3000:]

    a, b, c = (torch.load(p / "student.ckpt", weights_only=True) for p in (full, run, one))
    assert a["global_step"] == b["global_step"] == c["global_step"] == 6
    # written once (rank 0), the same kind of file as a one-process student
    assert sorted(p.name for p in full.iterdir() if p.suffix == ".ckpt") == ["student.ckpt"]
    assert a["domaindiff"]["class_path"] == c["domaindiff"]["class_path"]
    assert a["hyper_parameters"] == c["hyper_parameters"]
    assert a["domaindiff"]["distilled"].keys() == c["domaindiff"]["distilled"].keys()
    assert a["state_dict"].keys() == c["state_dict"].keys()
    # the resumed two-process run repeats the uninterrupted one bitwise
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # two ranks see other batches than one process: the weights differ from the 1-process run
    assert not all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    student = load_checkpoint(full / "student.ckpt")
    assert student.default_sampler == "distilled" and student.sampling_steps == 1
    with torch.no_grad():
        x = student.sample(16)
    assert x["x"].shape == (16, 2) and torch.isfinite(x["x"]).all() and student.last_nfe == 1


def test_distill_cli_without_running_builds_the_fit(teacher, tmp_path):
    import lightning as L

    from domaindiff.distill.command import distill_cli

    seen: list[int] = []

    class Count(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append(trainer.global_step)

    cli = distill_cli(_args(teacher, tmp_path)[1:], run=False)
    cli.trainer.callbacks.append(Count())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(tmp_path / "student.ckpt").sampling_steps == 1
