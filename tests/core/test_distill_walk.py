"""Progressive distillation with a walked binary component (``domaindiff.distill.walk``).

A toy Gaussian component ``x`` beside a binary walk ``y`` on the core's Bernoulli process: the
Gaussian half of :class:`WalkProgressive`'s loss is :class:`Progressive`'s exactly, the walked
states every network call sees are 0/1 at the sample's step, the walked loss vanishes when the
student's kernel is the teacher's and grows otherwise, and the methods without a walk are refused.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from domaindiff.distill.progressive import Progressive
from domaindiff.distill.reflow import make_method
from domaindiff.distill.walk import Walk, WalkProgressive, walk_loss, with_walk
from domaindiff.processes import Bernoulli, make_process

N = 10


def steps(t: torch.Tensor) -> torch.Tensor:
    i = torch.floor(t.double() * N + 0.5).long().clamp(1, N)
    return torch.where(t == 0, torch.zeros_like(i), i)


class BinaryWalk(Walk):
    """``y_i ~ q(y_i | m)`` with ``m = 1[x > 0]``, the exact skip-step reverse kernel."""

    keys = ("y",)

    def __init__(self, weight: float = 1.0) -> None:
        self.process, self.weight = Bernoulli(N), weight

    def forward(self, state, t, generator):
        m = (state["x"] > 0).to(state["x"].dtype)
        return {"y": self.process.q_sample(m, steps(t), generator=generator)}

    def transition(self, y, pred, t, s):
        i, j = steps(t), steps(s)
        moves = (j < i).view(-1, 1)
        prob = self.process.reverse_prob(y["y"], pred["y"], torch.where(j < i, i, 1),
                                         torch.where(j < i, j, 0))
        return {"y": torch.where(moves, prob, y["y"])}


class Net(nn.Module):
    """``eps_hat = W x (+ the walked state)``, ``P(y0 = 1) = sigmoid(a y + b)``."""

    parametrization = "eps"

    def __init__(self, uses_y: bool = True, walked: bool = True) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.head = nn.Linear(1, 1)
        self.uses_y, self.walked = uses_y, walked
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, state, t):
        self.seen.append({k: v.detach().clone() for k, v in state.items()})
        x = state["x"]
        eps = self.lin(x) * (1 + t[:, None])
        if "y" in state and self.uses_y:
            eps = eps + 0.1 * state["y"]
        out = {"x": eps}
        if self.walked:
            y = state.get("y", torch.zeros_like(x))
            out["y"] = torch.sigmoid(self.head(y.reshape(-1, 1)).reshape(y.shape))
        return out


def _procs():
    return {"x": make_process("vp")}


def _batch(n: int = 64) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(n, 2, generator=torch.Generator().manual_seed(3))}


def test_the_gaussian_half_is_progressive_distillation_exactly():
    torch.manual_seed(0)
    base = Progressive(_procs(), 1, 4, 2)
    walked = with_walk(Progressive(_procs(), 1, 4, 2), BinaryWalk(weight=0.0))
    assert isinstance(walked, WalkProgressive)
    assert walked.total_iterations == base.total_iterations == 4 and walked.round_at(3) == 1
    student, teacher = Net(uses_y=False), Net(uses_y=False)
    for step in (0, 3):
        a = base.loss(student, teacher, _batch(), torch.Generator().manual_seed(7), step)
        b = walked.loss(student, teacher, _batch(), torch.Generator().manual_seed(7), step)
        torch.testing.assert_close(a, b)
    assert walked.describe()["walked"] == ["y"] and walked.describe()["method"] == "progressive"


def test_every_call_sees_binary_walked_states_and_the_walk_is_trained():
    method = with_walk(Progressive(_procs(), 1, 4, 2), BinaryWalk())
    student, teacher = Net(), Net()
    loss = method.loss(student, teacher, _batch(), torch.Generator().manual_seed(1), 0)
    loss.backward()
    assert len(teacher.seen) == 2 and len(student.seen) == 1
    for s in teacher.seen + student.seen:
        assert set(s["y"].unique().tolist()) <= {0.0, 1.0}
    assert student.head.weight.grad is not None and float(student.head.weight.grad.abs()) > 0


def test_walk_loss_is_zero_at_the_target_kernel_and_positive_elsewhere():
    walk = BinaryWalk()
    gen = torch.Generator().manual_seed(0)
    y = {"y": (torch.rand(8, 2, generator=gen) < 0.5).float()}
    t, s = torch.full((8,), 0.8), torch.full((8,), 0.3)
    p = {"y": torch.rand(8, 2, generator=gen)}
    target = walk.transition(y, p, t, s)
    assert float(walk_loss(walk, y, p, target, t, s)) < 1e-12
    other = {"y": 1 - p["y"]}
    assert float(walk_loss(walk, y, other, target, t, s)) > 1e-3


def test_a_denoiser_without_the_walked_prediction_is_an_error():
    method = with_walk(Progressive(_procs(), 1, 4, 2), BinaryWalk())
    with pytest.raises(KeyError, match="no prediction for the walked component.*'y'"):
        method.loss(Net(), Net(walked=False), _batch(), torch.Generator().manual_seed(1), 0)


@pytest.mark.parametrize("name", ["consistency", "consistency-training", "reflow"])
def test_methods_without_a_walk_are_refused_by_name(name):
    method = make_method(name, _procs(), 1, 4, 2)
    with pytest.raises(ValueError, match=f"--method {name}: Toy walks \\['y'\\].*only --method "
                                         "progressive"):
        with_walk(method, BinaryWalk(), "Toy")


def test_a_walked_key_that_is_also_gaussian_is_refused():
    class Clash(BinaryWalk):
        keys = ("x",)

    with pytest.raises(ValueError, match="walked key\\(s\\) \\['x'\\] are also Gaussian"):
        with_walk(Progressive(_procs(), 1, 4, 2), Clash())
