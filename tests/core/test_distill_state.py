"""Distillation trains on the state the processes diffuse: a module's ``distill_state(batch)``
when it has one (GeoTDM: the forecast residual around its prior; Echo-DND: ``2 m - 1``), else
``batch_to_state``."""

from __future__ import annotations

import pytest
import torch

from domaindiff.distill.lightning import Distillation, write_student
from domaindiff.distill.reflow import make_method
from domaindiff.toy import ToyDiffusion


@pytest.fixture()
def distillation(tmp_path) -> Distillation:
    toy = ToyDiffusion(hidden=8, depth=1)
    path = write_student(toy, make_method("progressive", toy.processes, 1, 2, 1),
                         tmp_path / "teacher.ckpt")
    return Distillation(str(path), method="progressive", student_steps=1, teacher_steps=2,
                        iterations=1)


def _loss(d: Distillation, batch: torch.Tensor) -> float:
    d.on_train_batch_start(batch, 0)
    d._batches = 0  # the same noise for every call
    with torch.no_grad():
        return float(d.training_step(batch, 0))


def test_the_modules_distill_state_is_what_is_distilled(distillation):
    batch = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    plain = _loss(distillation, batch)
    seen: list[torch.Tensor] = []

    def distill_state(b):
        seen.append(b)
        return {"x": b + 3.0}

    distillation.student.distill_state = distill_state
    shifted = _loss(distillation, batch)
    assert len(seen) == 1 and seen[0] is batch
    # the same as handing the shifted batch to a module without the hook
    del distillation.student.distill_state
    assert shifted == pytest.approx(_loss(distillation, batch + 3.0), rel=1e-6)
    assert shifted != pytest.approx(plain, rel=1e-3)


def test_geotdm_distills_the_forecast_residual():
    traj = pytest.importorskip("domaindiff_trajectories")
    model = traj.GeoTDM(task="forecast", node_features=1, hidden=8, layers=1, time_dim=8,
                        prior="velocity", pred_frames=3, num_steps=10, scale=0.5)
    gen = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(2, 4, 3, 3, generator=gen),
             "cond": torch.randn(2, 4, 2, 3, generator=gen), "h": torch.ones(2, 4, 1),
             "mask": torch.ones(2, 4)}
    state = model.distill_state(batch)
    cond = batch["cond"]
    vel = cond[:, :, -1:] - cond[:, :, -2:-1]
    ref = cond[:, :, -1:] + torch.arange(1, 4.0)[None, None, :, None] * vel
    torch.testing.assert_close(state["x"], (batch["x"] - ref) / 0.5)
    assert torch.equal(state["cond"], cond) and torch.equal(state["mask"], batch["mask"])


def test_echo_dnd_distills_2m_minus_1_with_its_bernoulli_branch_walked():
    """Echo-DND's Gaussian branch diffuses ``2 m - 1``; its Bernoulli branch is a walked state
    (``distill_walk``, tested in tests/medical/test_distill.py)."""
    med = pytest.importorskip("domaindiff_medical")
    model = med.EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=10)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1
    batch = {"image": torch.rand(1, 1, 8, 8), "mask": mask}
    state = model.distill_state(batch)
    torch.testing.assert_close(state["mask"], 2 * mask - 1)
    assert state["image"] is batch["image"]
    assert model.distill_walk().keys == ("bern",)
