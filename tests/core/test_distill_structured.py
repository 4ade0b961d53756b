"""Structured states through distillation: spaces' invariants hold in every student sample, and
the batch's pass-through entries (node mask, a condition) reach teacher and student unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from domaindiff.distill import METHODS
from domaindiff.distill.base import train_plain
from domaindiff.distill.reflow import make_method
from domaindiff.processes import Bernoulli, make_process
from domaindiff.samplers import get_sampler
from domaindiff.spaces import SymmetricAdjacency, ZeroCoM
from domaindiff.toy.mixtures import SubspaceGaussian
from tests.catalogue import raised

B, N = 6, 5


def _batch(gen: torch.Generator) -> dict:
    mask = torch.ones(B, N)
    mask[::2, -2:] = 0.0  # variable-size graphs
    cond = torch.randn(B, 2, generator=gen)
    return {"pos": torch.randn(B, N, 3, generator=gen), "adj": torch.randn(B, N, N, generator=gen),
            "mask": mask, "cond": cond}


def _procs() -> dict:
    return {"pos": make_process("vp", space=ZeroCoM()),
            "adj": make_process("vp", space=SymmetricAdjacency())}


class ExactTeacher:
    """The exact eps of an isotropic Gaussian in each space; records the pass-through entries."""

    parametrization = "eps"

    def __init__(self, procs: dict) -> None:
        self.parts = {k: SubspaceGaussian(p.space, torch.zeros(1), 0.5, p, k)
                      for k, p in procs.items()}
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, state: dict, t: torch.Tensor) -> dict:
        self.seen.append((state["mask"], state["cond"]))
        return {k: part(state, t)[k] for k, part in self.parts.items()}


class RawStudent(nn.Module):
    """A network with no symmetry at all (so only the spaces' projections keep invariants)."""

    parametrization = "eps"

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Linear(N * 3 + 3, N * 3)
        self.adj = nn.Linear(N * N + 3, N * N)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, state: dict, t: torch.Tensor) -> dict:
        self.seen.append((state["mask"], state["cond"]))
        extra = torch.cat([t[:, None], state["cond"]], 1)
        pos = self.pos(torch.cat([state["pos"].flatten(1), extra], 1)).view(-1, N, 3)
        adj = self.adj(torch.cat([state["adj"].flatten(1), extra], 1)).view(-1, N, N)
        return {"pos": pos + 0.3, "adj": adj + 0.3}  # offsets that break every invariant


def _assert_invariants(x: dict, mask: torch.Tensor) -> None:
    m = mask[..., None]
    pos, adj = x["pos"], x["adj"]
    com = (pos * m).sum(1) / m.sum(1)
    # zero up to float32 round-off of the coordinates' own size (an untrained student's
    # positions reach ~1e2, where one ulp is ~1e-5)
    tol = 1e-5 * max(1.0, float(pos.abs().max()))
    assert com.abs().max() < tol, "centre of mass is not zero"
    assert (pos * (1 - m)).abs().max() == 0, "padding nodes moved"
    assert torch.allclose(adj, adj.transpose(1, 2)), "adjacency is not symmetric"
    assert adj.diagonal(dim1=1, dim2=2).abs().max() == 0, "self-loops"
    pair = mask[:, :, None] * mask[:, None, :]
    assert (adj * (1 - pair)).abs().max() == 0, "edges to padding nodes"


@pytest.mark.parametrize("name", METHODS)
def test_student_samples_keep_the_spaces_and_see_the_conditions(name):
    torch.manual_seed(0)  # the student's initial weights (the run is otherwise seeded)
    procs = _procs()
    teacher = ExactTeacher(procs)
    student = RawStudent()
    gen = torch.Generator().manual_seed(0)
    fixed = _batch(gen)
    kw = {"teacher_sampler": "ddim"} if name == "reflow" else {}
    method = make_method(name, procs, 2, 4, 3, **kw)
    losses = train_plain(method, student, teacher, lambda step, g: fixed, lr=1e-3)
    assert len(losses) == method.total_iterations and all(torch.isfinite(torch.tensor(losses)))
    for seen in (student.seen, teacher.seen if method.uses_teacher else []):
        for mask, cond in seen:  # pass-through entries unchanged (same tensors' values)
            assert torch.equal(mask, fixed["mask"]) and torch.equal(cond, fixed["cond"])
    if not method.uses_teacher:
        assert not teacher.seen
    template = {k: torch.zeros_like(v) if k in procs else v for k, v in fixed.items()}
    with torch.no_grad():
        x = get_sampler(method.sampler)(student, procs, template, 2,
                                        generator=torch.Generator().manual_seed(1))
    _assert_invariants(x, fixed["mask"])
    assert torch.equal(x["cond"], fixed["cond"])


def test_bernoulli_components_are_refused_by_name():
    msg = raised(ValueError, lambda: make_method("progressive", {"m": Bernoulli()}, 1))
    assert "'m'" in msg and "Bernoulli" in msg


@pytest.mark.parametrize("args, expected", [
    (("progressive", 2, 6), r"teacher_steps=6.*power of two"),
    (("consistency", 3, 16), r"teacher_steps=16.*multiple of student_steps=3"),
    (("distil", 1, None), r"method: unknown 'distil'; choose one of progressive"),
    (("progressive", 0, None), r"student_steps must be a positive integer, got 0"),
])
def test_bad_settings_are_refused_in_one_line(args, expected):
    import re

    msg = raised(ValueError, lambda: make_method(args[0], _procs(), args[1], args[2]))
    assert re.search(expected, msg), msg
