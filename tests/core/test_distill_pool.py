"""reflow-stochastic's coupling pool (:mod:`domaindiff.distill.pool`): round 1's couplings drawn
once and reused; the teacher's sampler runs ``ceil(N / B)`` times, the pool's pairs (with their
batches' pass-through entries) are the only targets, the exact-teacher student still reaches the
target, and a run resumed from ``last.ckpt`` equals the uninterrupted one bitwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import domaindiff.distill.stochastic as stochastic
from domaindiff.distill.base import train_plain
from domaindiff.distill.pool import CouplingPool
from domaindiff.distill.stochastic import StochasticReflow
from domaindiff.processes import make_process
from tests.catalogue import raised
from tests.core.test_distill_exact import AffineTable, _errors
from tests.core.test_distill_stochastic import _exact_sampler, _sample, _setup


def _tag_sampler(calls: list[int]):
    """A stochastic sampler whose sample is the batch's ``tag`` (plus noise): ties x0 to its pair."""

    def sampler(denoiser, process, start, steps, *, prior=None, generator=None, **options):
        calls.append(start["x"].shape[0])
        jitter = 0.01 * torch.randn(start["x"].shape, generator=generator)
        return {**start, "x": start["tag"][:, None].expand(-1, 2).to(start["x"]) + jitter}

    return sampler


def test_the_pool_is_drawn_once_and_its_pairs_are_the_only_targets(monkeypatch):
    proc = make_process("vp", T=0.3)
    calls: list[int] = []
    method = StochasticReflow({"x": proc}, 1, 1, 30, teacher_sampler=_tag_sampler(calls),
                              pool=40, straighten_iterations=2)
    assert method.total_iterations == 32 and method.round_at(29) == 0 and method.round_at(30) == 1
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = stochastic.x0_loss

    def spy(pred, target, state, t, procs, snr_weight):
        seen.append((target["x"].clone(), state["tag"].clone()))
        return real(pred, target, state, t, procs, snr_weight)

    monkeypatch.setattr(stochastic, "x0_loss", spy)

    def data(step: int, gen: torch.Generator) -> dict:
        if step < 3 or step >= 30:  # the filling steps' batches and round 2's
            return {"x": torch.randn(16, 2, generator=gen),
                    "tag": torch.arange(16 * step, 16 * step + 16, dtype=torch.float32)}
        # once the pool is full, round 1 reads nothing of its batch but the batch size
        return {"x": torch.full((16, 2), float("nan")), "tag": torch.full((16,), -1.0)}

    losses = train_plain(method, AffineTable(method.flow_grid[:-1], 2), None, data, lr=0.01,
                         seed=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert calls == [16, 16, 16]  # 3 fills; round 2 runs the promoted flow's ODE
    assert len(method.pool) == 40 and method.pool.full
    pool_x0, pool_tag = method.pool.pairs["x0"]["x"], method.pool.pairs["state"]["tag"]
    assert torch.equal(pool_tag, torch.arange(40, dtype=torch.float32))
    assert seen[2][0].shape[0] == 8  # the filling step trains on the part it keeps only
    for target, tag in seen[:30]:
        assert ((tag >= 0) & (tag < 40)).all()
        assert torch.equal(target, pool_x0[tag.long()])  # each target is its pair's x0
    assert method.describe()["pool"] == 40 and method.describe()["straighten_iterations"] == 2


def test_a_pooled_flow_of_the_exact_stochastic_teacher_still_reaches_the_target():
    """The exactness case of test_distill_stochastic with 16,384 couplings drawn once (64 sampler
    runs instead of 400) over 400 flow steps: the same bounds as fresh couplings every step
    (measured 0.004 mean / 0.32 covariance error, fresh 0.044 / 0.31). A pool of 2,048 wobbles
    with the optimizer's noise here: 0.045 / 0.15 / 0.069 mean error after 100 / 400 / 1,600
    steps."""
    mix, proc, teacher = _setup()
    calls: list[int] = []
    exact = _exact_sampler(mix)

    def counted(*args, **kwargs):
        calls.append(1)
        return exact(*args, **kwargs)

    method = StochasticReflow({"x": proc}, 1, 1, 400, teacher_sampler=counted, flow_steps=64,
                              pool=16384)
    student = AffineTable(method.flow_grid[:-1], 2)
    data = lambda step, gen: {"x": mix.sample(256, gen)}  # noqa: E731
    train_plain(method, student, teacher, data, lr=0.05, seed=1)
    assert len(calls) == 64
    mean_err, cov_err = _errors(_sample(student, proc, 1), mix)
    assert mean_err < 0.1 and cov_err < 0.45, (mean_err, cov_err)


def test_the_pool_state_round_trips_and_bad_states_are_refused():
    proc = make_process("vp")
    method = StochasticReflow({"x": proc}, 1, 1, 4, teacher_sampler=_tag_sampler([]), pool=5)
    assert method.state_dict() == {"pool": {}}
    x = {"x": torch.randn(4, 2), "tag": torch.arange(4.0)}
    method.loss(AffineTable(method.flow_grid[:-1], 2), None, x, torch.Generator(), 0)
    state = method.state_dict()
    other = StochasticReflow({"x": proc}, 1, 1, 4, pool=5)
    other.load_state_dict(state)
    assert all(torch.equal(other.pool.pairs[p][k], method.pool.pairs[p][k])
               for p in method.pool.pairs for k in method.pool.pairs[p])
    msg = raised(ValueError, lambda: StochasticReflow({"x": proc}, 1, 1, 4).load_state_dict(state))
    assert "holds a coupling pool but this run has pool=None" in msg
    msg = raised(ValueError, lambda: StochasticReflow({"x": proc}, 1, 1, 4, pool=3)
                 .load_state_dict(state))
    assert "holds 4 pairs, more than this run's pool=3" in msg
    bad = {"x": torch.randn(1, 3), "tag": torch.zeros(1)}
    msg = raised(ValueError, lambda: method.pool.keep(bad, bad, bad))
    assert re.search(r"entry 'x' has shape \(3,\) per sample, the pool's \(2,\)", msg), msg
    one = {"x": torch.randn(1, 2)}
    msg = raised(ValueError, lambda: method.pool.keep(one, one, one))
    assert "state has the batched entries ['x'], the pool's ['tag', 'x']" in msg


@pytest.mark.parametrize("kw, expected", [
    ({"pool": 0}, r"pool must be a positive integer, got 0"),
    ({"pool": 2.5}, r"pool must be a positive integer, got 2.5"),
    ({"straighten_iterations": 0}, r"straighten_iterations must be a positive integer, got 0"),
])
def test_bad_pool_settings_are_refused_in_one_line(kw, expected):
    msg = raised(ValueError, lambda: StochasticReflow({"x": make_process("vp")}, 1, **kw))
    assert re.search(expected, msg), msg
    if "pool" in kw:
        assert raised(ValueError, lambda: CouplingPool(kw["pool"], ["x"])) == msg


def _fit(teacher: Path, root: Path, max_steps: int, ckpt_path: str | None = None) -> Path:
    """An in-process distillation with a pooled reflow-stochastic method (toy teacher)."""
    import lightning as L

    from domaindiff.distill.lightning import Distillation

    d = Distillation(str(teacher), method="reflow-stochastic", student_steps=2, teacher_steps=4,
                     iterations=5, lr=1e-3, teacher_sampler="ancestral",
                     student_out=str(root / "student.ckpt"))
    d.method = StochasticReflow(d.teacher.processes, 2, 4, 5, teacher_sampler="ancestral",
                                pool=40, straighten_iterations=3)
    data = torch.utils.data.DataLoader(torch.randn(64, 2, generator=torch.Generator()
                                                   .manual_seed(0)), batch_size=16)
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(root),
                        accelerator="cpu", devices=1)
    trainer.fit(d, train_dataloaders=data, ckpt_path=ckpt_path)
    return root


def test_a_pooled_run_resumed_inside_round_one_equals_the_uninterrupted_one(teacher, tmp_path):
    """Stopped after 4 steps (pool of 40 full after 3 batches of 16, 8 pairs of the third kept),
    resumed from last.ckpt: the student after 5 + 3 steps equals the uninterrupted run's."""
    full = _fit(teacher, tmp_path / "full", -1)
    run = _fit(teacher, tmp_path / "run", 4)
    last = next(run.rglob("last.ckpt"))
    saved = torch.load(last, weights_only=True)["distillation"]["method_state"]["pool"]
    assert saved["x0"]["x"].shape == (40, 2)
    _fit(teacher, run, -1, str(last))
    a = torch.load(full / "student.ckpt", weights_only=True)
    b = torch.load(run / "student.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["domaindiff"]["distilled"]["pool"] == 40


def test_the_cli_pooled_run_resumes_exactly_inside_round_one(teacher, tmp_path):
    """`domaindiff distill --method reflow-stochastic --coupling-pool 96
    --straighten-iterations 2`: batches of 64 fill the pool in two steps (64 + 32 kept); a run
    stopped at step 3 (round 1, drawing from the pool) and resumed equals the uninterrupted one
    bitwise, and the student records the pool."""
    from tests.catalogue import run_cli
    from tests.core.test_distill_cli import DATA

    def distill(root: Path, *extra: str) -> None:
        root.mkdir(exist_ok=True)
        res = run_cli(["distill", "--ckpt", str(teacher), "--method", "reflow-stochastic",
                       "--teacher-sampler", "ancestral", "--student-steps", "2",
                       "--teacher-steps", "4", "--iterations", "4", "--coupling-pool", "96",
                       "--straighten-iterations", "2", "--lr", "1e-3", *DATA,
                       f"--trainer.default_root_dir={root}", "--out",
                       str(root / "student.ckpt"), *extra], cwd=root)
        assert res.returncode == 0, res.stderr[-3000:]

    full, run = tmp_path / "full", tmp_path / "run"
    distill(full)
    distill(run, "--trainer.max_steps=3")
    last = run / "checkpoints" / "last.ckpt"
    pool = torch.load(last, weights_only=True)["distillation"]["method_state"]["pool"]
    assert pool["x0"]["x"].shape[0] == 96
    distill(run, "--ckpt_path", str(last))
    a = torch.load(full / "student.ckpt", weights_only=True)
    b = torch.load(run / "student.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    meta = a["domaindiff"]["distilled"]
    assert meta["pool"] == 96 and meta["flow_iterations"] == 4
    assert meta["straighten_iterations"] == 2


@pytest.mark.parametrize("arg", ["coupling_pool", "straighten_iterations"])
def test_the_pool_options_apply_to_reflow_stochastic_only(arg):
    from domaindiff.distill.reflow import make_method

    msg = raised(ValueError, lambda: make_method("progressive", {"x": make_process("vp")}, 1,
                                                 **{arg: 8}))
    assert msg == f"{arg} applies to reflow-stochastic only, not to method 'progressive'", msg
