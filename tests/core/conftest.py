"""Fixtures shared by the core's test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.catalogue import run_cli

CONF = Path(__file__).parents[1] / "conf"


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    """A toy checkpoint trained one epoch through the real CLI (the distillation tests' teacher)."""
    root = tmp_path_factory.mktemp("teacher")
    res = run_cli(["fit", "--config", str(CONF / "toy_fit.yaml"), "--trainer.max_epochs=1",
                   f"--trainer.default_root_dir={root}"], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    return next(root.rglob("last.ckpt"))
