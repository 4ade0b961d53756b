"""Reflow on a stochastic coupling (``reflow-stochastic``): the student reaches the stochastic
sampler's distribution where the ODE-map student copies the ODE's.

The teacher is the exact denoiser of a 2-D Gaussian under a VP process cut at ``T = 0.3``
(``alpha_T = 0.63``): the prior ``N(0, I)`` does not match the marginal at ``T``, so the exact
probability-flow ODE from the prior lands on the wrong Gaussian (mean error 0.62, covariance error
2.06 Frobenius, the target's covariance norm being 3.9), and every deterministic-coupling student
copies that. The stochastic sampler here is exact (it returns samples of the target, drawn from
the batch's generator), so the coupling's marginal is the target; the student is affine per grid
time (:class:`AffineTable`), which represents both rounds' optima exactly: what is left is the
64-step flow ODE's discretisation error (measured 0.044 mean / 0.31 covariance error for the 1- and
2-step students, against 0.003 / 0.011 for exact samples).
"""

from __future__ import annotations

import re

import pytest
import torch

from domaindiff.distill.base import train_plain
from domaindiff.distill.reflow import make_method
from domaindiff.distill.sampling import distilled_times, sample_distilled
from domaindiff.distill.stochastic import StochasticReflow, straight_state
from domaindiff.processes import make_process
from domaindiff.toy import ExactDenoiser, make_mixture
from tests.catalogue import raised
from tests.core.test_distill_exact import AffineTable, _errors

N_EVAL = 20000


def _setup():
    mix = make_mixture("gaussian", 2, 0)
    proc = make_process("vp", T=0.3)
    return mix, proc, ExactDenoiser(mix, proc)


def _exact_sampler(mix):
    def exact(denoiser, process, start, steps, *, prior=None, generator=None, **options):
        return {**start, "x": mix.sample(start["x"].shape[0], generator).to(start["x"])}

    return exact


def _sample(student, proc, steps):
    with torch.no_grad():
        return sample_distilled(student, proc, (N_EVAL, 2), steps,
                                generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("steps", [1, 2])
def test_the_stochastic_coupling_student_reaches_the_target_the_ode_student_does_not(steps):
    mix, proc, teacher = _setup()
    data = lambda step, gen: {"x": mix.sample(256, gen)}  # noqa: E731
    ode = make_method("reflow", {"x": proc}, steps, 20, 150)
    ode_student = AffineTable(distilled_times({"x": proc}, steps)[:-1], 2)
    train_plain(ode, ode_student, teacher, data, lr=0.05, seed=1)
    ode_mean, ode_cov = _errors(_sample(ode_student, proc, steps), mix)
    assert ode_mean > 0.5 and ode_cov > 1.5, (ode_mean, ode_cov)  # the ODE's wrong Gaussian

    method = StochasticReflow({"x": proc}, steps, 1, 400, teacher_sampler=_exact_sampler(mix),
                              flow_steps=64)
    student = AffineTable(method.flow_grid[:-1], 2)  # contains the student's grid
    losses = train_plain(method, student, teacher, data, lr=0.05, seed=1)
    assert len(losses) == 800 and method.round_at(399) == 0 and method.round_at(400) == 1
    mean_err, cov_err = _errors(_sample(student, proc, steps), mix)
    assert mean_err < 0.1 and cov_err < 0.45, (mean_err, cov_err)


def test_the_straight_line_starts_at_the_start_and_ends_at_x0():
    _, proc, _ = _setup()
    procs = {"x": proc}
    gen = torch.Generator().manual_seed(0)
    start, x0 = {"x": torch.randn(5, 2, generator=gen)}, {"x": torch.randn(5, 2, generator=gen)}
    grid = distilled_times(procs, 8)
    at = lambda t: straight_state({"x": x0["x"]}, start, x0, torch.full((5,), t), grid[0],  # noqa: E731
                                  procs)["x"]
    assert torch.allclose(at(grid[0]), start["x"], atol=1e-6)
    assert torch.equal(at(0.0), x0["x"])
    # x_t / alpha_t is affine in sigma_t / alpha_t: one DDIM step of the exact x0 stays on it
    ratio = [float(proc.sigma(torch.tensor(t)) / proc.alpha(torch.tensor(t))) for t in grid[:3]]
    xs = [at(t) / float(proc.alpha(torch.tensor(t))) for t in grid[:3]]
    u = (ratio[1] - ratio[2]) / (ratio[0] - ratio[2])
    assert torch.allclose(xs[1], u * xs[0] + (1 - u) * xs[2], atol=1e-5)


def test_the_coupling_is_the_batch_seeds_and_the_sampler_is_stochastic():
    """A resumed run draws the same coupling at the same step (same generator seed); the
    stochastic sampler's sample changes with the seed for the same start's shape."""
    mix, proc, teacher = _setup()
    method = StochasticReflow({"x": proc}, 1, 10, 2, teacher_sampler="ancestral")
    x = {"x": mix.sample(64, torch.Generator().manual_seed(0))}
    draw = lambda seed, r: method.coupling(teacher, x, torch.Generator().manual_seed(seed), r)  # noqa: E731
    (s1, a), (s2, b), (_, c) = draw(3, 0), draw(3, 0), draw(4, 0)
    assert torch.equal(s1["x"], s2["x"]) and torch.equal(a["x"], b["x"])
    assert not torch.allclose(a["x"], c["x"])
    losses = [train_plain(method, AffineTable(method.flow_grid[:-1], 2), teacher,
                          lambda step, gen: {"x": mix.sample(32, gen)}, seed=5)
              for _ in range(2)]
    assert losses[0] == losses[1]
    assert method.describe()["teacher_sampler"] == "ancestral"
    assert method.describe()["rounds"] == 2


def test_without_straightening_the_flow_is_sampled_on_the_students_grid():
    _, proc, _ = _setup()
    method = StochasticReflow({"x": proc}, 4, 10, 3, straighten=False)
    assert method.rounds == 1 and method.total_iterations == 3
    assert method.flow_grid == method.student_times()


@pytest.mark.parametrize("call, expected", [
    (lambda p: make_method("reflow", p, 1, teacher_sampler="ancestral"),
     r"'ancestral' is stochastic.*method 'reflow-stochastic'"),
    (lambda p: make_method("progressive", p, 1, teacher_options={"snr": 0.1}),
     r"teacher_options apply to reflow-stochastic only, not to method 'progressive'"),
    (lambda p: make_method("reflow", p, 1, teacher_options={"snr": 0.1}),
     r"teacher_options apply to reflow-stochastic only"),
    (lambda p: StochasticReflow(p, 1, flow_steps=0), r"flow_steps must be a positive integer"),
    (lambda p: StochasticReflow(p, 1, teacher_steps=0),
     r"teacher_steps must be a positive integer"),
    (lambda p: StochasticReflow(p, 1, teacher_options=[("snr", 1)]),
     r"teacher_options must be a mapping"),
    (lambda p: StochasticReflow(p, 1, teacher_sampler="nope"), r"nope"),
])
def test_bad_stochastic_reflow_settings_are_refused_in_one_line(call, expected):
    msg = raised(ValueError, lambda: call({"x": make_process("vp")}))
    assert re.search(expected, msg), msg


def test_the_cli_run_resumes_exactly_across_the_rounds(teacher, tmp_path):
    """`domaindiff distill --method reflow-stochastic --teacher-sampler ancestral
    --teacher-options {schedule: uniform}`: a run stopped
    inside the straightening round and resumed equals the uninterrupted one bitwise (the
    couplings are the batches' seeds' and the promoted flow is in the checkpoint)."""
    from pathlib import Path

    from tests.catalogue import run_cli
    from tests.core.test_distill_cli import DATA

    def distill(root: Path, *extra: str) -> None:
        root.mkdir(exist_ok=True)
        res = run_cli(["distill", "--ckpt", str(teacher), "--method", "reflow-stochastic",
                       "--teacher-sampler", "ancestral", "--teacher-options={schedule: uniform}",
                       "--student-steps", "2",
                       "--teacher-steps", "4", "--iterations", "3", "--lr", "1e-3", *DATA,
                       f"--trainer.default_root_dir={root}", "--out",
                       str(root / "student.ckpt"), *extra], cwd=root)
        assert res.returncode == 0, res.stderr[-3000:]

    full, run = tmp_path / "full", tmp_path / "run"
    distill(full)
    distill(run, "--trainer.max_steps=4")
    distill(run, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    a = torch.load(full / "student.ckpt", weights_only=True)
    b = torch.load(run / "student.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    meta = a["domaindiff"]["distilled"]
    assert meta["method"] == "reflow-stochastic" and meta["teacher_sampler"] == "ancestral"
    assert meta["teacher_options"] == {"schedule": "uniform"}
    assert meta["rounds"] == 2 and meta["student_steps"] == 2


def test_a_promoted_student_is_read_with_the_students_parametrization(tmp_path):
    """After round 1 the teacher holds the student's weights: with ``--student-parametrization v``
    on an ``eps`` teacher, the round-2 teacher must be read as a ``v`` predictor (read as ``eps``
    its ODE's samples blew up: distillation loss 0.02 -> 59 on TSDiff-Cond)."""
    from domaindiff.distill.lightning import Distillation, write_student
    from domaindiff.toy import ToyDiffusion

    toy = ToyDiffusion(hidden=8, depth=1)
    path = write_student(toy, make_method("progressive", toy.processes, 1, 2, 1),
                         tmp_path / "teacher.ckpt")
    d = Distillation(str(path), method="reflow-stochastic", student_steps=1, teacher_steps=2,
                     iterations=1, student_parametrization="v")
    assert d.teacher.parametrization != "v"
    seen: list[str] = []
    loss = d.method.loss

    def spy(student, teacher, state, generator, step):
        seen.append(teacher.parametrization)
        return loss(student, teacher, state, generator, step)

    d.method.loss = spy
    batch = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    for round_ in (0, 1):
        d._round = round_
        d._gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            d.training_step(batch, 0)
    assert seen == [d.teacher.parametrization, "v"]


def test_a_guided_coupling_runs_the_teacher_sampler_with_the_factorys_guidance():
    """``teacher_guidance``: round 1's sampler receives the guidance the factory builds from the
    teacher, the clean batch and the batch's generator; round 2 (straighten) draws none."""
    from domaindiff.guidance import Guidance

    mix, proc, teacher = _setup()
    seen: list = []

    class Mark(Guidance):
        pass

    def factory(den, state, generator):
        seen.append((den, state["x"].shape, generator))
        return Mark()

    def sampler(denoiser, process, start, steps, *, prior=None, generator=None, guidance=None,
                **options):
        seen.append(guidance)
        return {**start, "x": mix.sample(start["x"].shape[0], generator).to(start["x"])}

    method = StochasticReflow({"x": proc}, 2, 1, 2, teacher_sampler=sampler,
                              teacher_guidance=factory)
    x = {"x": mix.sample(8, torch.Generator().manual_seed(0))}
    gen = torch.Generator().manual_seed(1)
    method.coupling(teacher, x, gen, 0)
    assert seen[0] == (teacher, (8, 2), gen) and isinstance(seen[1], Mark)
    seen.clear()
    method.coupling(AffineTable(method.flow_grid[:-1], 2), x, gen, 1)
    assert seen == []  # the straightening round samples the flow, unguided
    assert method.describe()["guided_coupling"] is True


@pytest.mark.parametrize("kwargs, expected", [
    ({"teacher_guidance": "quantile"}, r"teacher_guidance must be a callable"),
    ({"teacher_options": {"guidance": None}, "teacher_guidance": lambda *a: None},
     r"'guidance' is not a sampler option here"),
])
def test_bad_guided_coupling_arguments_are_refused(kwargs, expected):
    msg = raised(ValueError, lambda: StochasticReflow({"x": make_process("vp")}, 1, **kwargs))
    assert re.search(expected, msg), msg


def test_distillation_refuses_guidance_and_student_classes_it_cannot_build(tmp_path):
    from domaindiff.distill.lightning import Distillation, write_student
    from domaindiff.toy import ToyDiffusion

    toy = ToyDiffusion(hidden=8, depth=1)
    path = str(write_student(toy, make_method("progressive", toy.processes, 1, 2, 1),
                             tmp_path / "teacher.ckpt"))
    for kwargs, expected in (
            ({"method": "reflow-stochastic", "teacher_guidance": {"scale": 1.0}},
             r"teacher_guidance: ToyDiffusion has no distill_guidance hook"),
            ({"method": "reflow", "teacher_guidance": {"scale": 1.0}},
             r"teacher_guidance \(a guided coupling\) applies to reflow-stochastic only, not to "
             r"method 'reflow'"),
            ({"method": "reflow-stochastic", "student_class": "NoSuchModel"},
             r"student_class='NoSuchModel' names no exported DiffusionModule .*ToyDiffusion"),
            ({"method": "reflow-stochastic", "student_class": "os.system"},
             r"refusing class 'os.system'")):
        msg = raised(ValueError, lambda k=kwargs: Distillation(path, student_steps=1,
                                                                 iterations=1, **k))
        assert re.search(expected, msg), msg
    d = Distillation(path, method="reflow-stochastic", student_steps=1, iterations=1,
                     student_class="ToyDiffusion")  # the teacher's own class by name
    assert type(d.student) is ToyDiffusion
