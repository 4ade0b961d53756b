"""`domaindiff distill` on the toy plugin: the real CLI, an interrupted and resumed run, and the
student sampled and evaluated like any checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from domaindiff.checkpoint import load_checkpoint
from tests.catalogue import BadInput, assert_refused, cli_message, run_cli

CONF = Path(__file__).parents[1] / "conf"
DATA = ["--data", "GaussianMixtureData", "--data.num_train=256", "--data.num_val=16",
        "--data.batch_size=64", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def _distill_args(teacher: Path, root: Path, *extra: str) -> list[str]:
    return ["distill", "--ckpt", str(teacher), "--method", "progressive",
            "--student-steps", "1", "--teacher-steps", "4", "--iterations", "3",
            "--student-parametrization", "v", *DATA,
            f"--trainer.default_root_dir={root}", "--out", str(root / "student.ckpt"), *extra]


def _distill(teacher: Path, root: Path, *extra: str) -> None:
    root.mkdir(exist_ok=True)
    res = run_cli(_distill_args(teacher, root, *extra), cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]


def test_distill_resumes_exactly_and_the_student_samples_and_evaluates(teacher, tmp_path):
    full, run = tmp_path / "full", tmp_path / "run"
    _distill(teacher, full)  # two rounds (4 -> 2 -> 1 steps) of 3 optimizer steps
    _distill(teacher, run, "--trainer.max_steps=4")  # interrupted inside the second round
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    # a resume given other model arguments than the checkpoint's is refused, naming each flag
    # (LightningCLI would silently take the checkpoint's), before anything is written
    saved = last.read_bytes()
    other = tmp_path / "other.ckpt"
    msg = cli_message(_distill_args(teacher, run, "--iterations", "5", "--out", str(other),
                                    "--ckpt_path", str(last)), cwd=run)
    assert f"--iterations=5: the checkpoint {last} was started with 3" in msg, msg
    assert f"--out={str(other)!r}: the checkpoint {last} was started with " \
        f"{str(run / 'student.ckpt')!r}" in msg, msg
    assert len(msg.strip().splitlines()) == 1, msg
    assert last.read_bytes() == saved and not other.exists()
    _distill(teacher, run, "--ckpt_path", str(last))  # resumed: runs to its 6 steps
    a = torch.load(full / "student.ckpt", weights_only=True)
    b = torch.load(run / "student.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])

    student = load_checkpoint(full / "student.ckpt")  # the allow-listed, weights-only loader
    meta = a["domaindiff"]["distilled"]
    assert meta["method"] == "progressive" and meta["student_steps"] == 1
    assert meta["times"][0] == pytest.approx(1.0) and meta["times"][-1] == 0.0
    assert student.default_sampler == "distilled" and student.sampling_steps == 1
    assert student.parametrization == "v"
    assert not torch.equal(a["state_dict"]["network.inp.weight"],
                           load_checkpoint(teacher).state_dict()["network.inp.weight"])

    out = tmp_path / "s.pt"
    res = run_cli(["sample", "--ckpt", str(full / "student.ckpt"), "--n", "40", "--out",
                   str(out), "--no-progress"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert torch.load(out, weights_only=True)["x"].shape == (40, 2)
    with torch.no_grad():
        student.sample(8)
    assert student.last_nfe == 1

    res = run_cli(["eval", "toy", f"ckpt={full / 'student.ckpt'}", "sampler=distilled",
                   "steps=1", "num_samples=100", "nll_samples=0", f"out_dir={tmp_path}"],
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "metrics_distilled_1.json").read_text())
    assert result["nfe"] == 1 and result["energy_distance"] > 0


def _refused(args: list[str]):
    def check(tmp_path: Path) -> str:
        return cli_message(args, cwd=tmp_path)

    return check


CATALOGUE = [
    BadInput("distill-unknown-method", "domaindiff distill --ckpt t.ckpt --method distil",
             r"--method: unknown 'distil'; choose one of progressive, consistency",
             _refused(["distill", "--ckpt", "t.ckpt", "--method", "distil"])),
    BadInput("distill-missing-teacher", "domaindiff distill --ckpt nowhere.ckpt --data ...",
             r"nowhere\.ckpt: no such file",
             _refused(["distill", "--ckpt", "nowhere.ckpt", "--method", "reflow", *DATA])),
    BadInput("distill-flag-without-value", "domaindiff distill --ckpt",
             r"distill --ckpt: expected a value", _refused(["distill", "--ckpt"])),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_distill_inputs_are_refused_in_one_line(case, tmp_path):
    assert_refused(case, tmp_path)


def test_bad_student_steps_for_the_teacher_grid_is_one_line(teacher, tmp_path):
    msg = cli_message(["distill", "--ckpt", str(teacher), "--method", "progressive",
                       "--student-steps", "3", "--teacher-steps", "8", *DATA], cwd=tmp_path)
    assert "teacher_steps=8" in msg and "power of two" in msg and len(msg.splitlines()) <= 2
