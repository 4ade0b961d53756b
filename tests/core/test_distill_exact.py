"""Distilling exact teachers: the few-step students reach the target distribution.

The teacher is the closed-form denoiser of the data (``domaindiff.toy.ExactDenoiser``). For a
Gaussian, every deterministic sampler is an affine map of the noise, so a student that is affine
in ``x_t`` at each grid time (:class:`AffineTable`) can represent the distillation target exactly:
what is left is the teacher's own discretisation error, which the tolerances state. For the 2-D
mixture the student is the toy MLP and the distance is the energy distance against exact samples,
compared with the two-sample noise floor.
"""

from __future__ import annotations

import torch
from torch import nn

from domaindiff.distill.base import train_plain
from domaindiff.distill.reflow import make_method
from domaindiff.distill.sampling import distilled_times, sample_consistency, sample_distilled
from domaindiff.processes import make_process
from domaindiff.samplers import get_sampler
from domaindiff.toy import ExactDenoiser, make_mixture
from domaindiff.toy.metrics import energy_distance
from domaindiff.toy.networks import MLPDenoiser

N_EVAL = 20000


class AffineTable(nn.Module):
    """``x0_hat = A_k x + b_k`` for the grid time ``t_k`` nearest to ``t`` (an x0 predictor)."""

    parametrization = "x0"

    def __init__(self, times: list[float], dim: int) -> None:
        super().__init__()
        self.register_buffer("times", torch.tensor(times, dtype=torch.float64))
        self.A = nn.Parameter(torch.zeros(len(times), dim, dim))
        self.b = nn.Parameter(torch.zeros(len(times), dim))

    def forward(self, state: dict, t: torch.Tensor) -> dict:
        k = (t.double()[:, None] - self.times[None]).abs().argmin(1)
        return {"x": torch.einsum("bij,bj->bi", self.A[k], state["x"]) + self.b[k]}


def _gaussian():
    mix = make_mixture("gaussian", 2, 0)
    proc = make_process("vp")
    return mix, proc, ExactDenoiser(mix, proc)


def _errors(x: torch.Tensor, mix) -> tuple[float, float]:
    """(|mean - mu|, ||cov - Sigma||_F) of samples against the exact Gaussian."""
    x = x.double()
    return (float((x.mean(0) - mix.means[0]).norm()),
            float((torch.cov(x.T) - mix.covs[0]).norm()))


def _distil_gaussian(name: str, student_steps: int, teacher_steps: int, iterations: int,
                     **kw):
    mix, proc, teacher = _gaussian()
    method = make_method(name, {"x": proc}, student_steps, teacher_steps, iterations, **kw)
    grid = distilled_times({"x": proc}, teacher_steps if name != "reflow" else student_steps)
    student = AffineTable(grid[:-1], 2)
    train_plain(method, student, teacher, lambda step, gen: {"x": mix.sample(256, gen)},
                lr=0.05, seed=1)
    fn = sample_consistency if method.sampler == "consistency" else sample_distilled
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = fn(student, proc, (N_EVAL, 2), student_steps, generator=gen)
    return mix, proc, teacher, x


def test_exact_gaussian_sampling_noise_and_the_one_step_teacher():
    """The yardsticks: exact samples' errors (sampling noise) and the teacher's own 1-step DDIM."""
    mix, proc, teacher = _gaussian()
    gen = torch.Generator().manual_seed(0)
    mean_err, cov_err = _errors(mix.sample(N_EVAL, gen), mix)
    assert mean_err < 0.03 and cov_err < 0.05
    _, cov_err = _errors(sample_distilled(teacher, proc, (N_EVAL, 2), 1, generator=gen), mix)
    assert cov_err > 3.0  # one deterministic step from noise collapses onto the mean


def test_progressive_distillation_of_the_exact_gaussian_teacher_in_one_step():
    """64 DDIM steps halved six times: the 1-step student has the 64-step teacher's distribution
    (cov error 0.19 on this grid) up to 0.1."""
    mix, proc, teacher, x = _distil_gaussian("progressive", 1, 64, 100)
    gen = torch.Generator().manual_seed(0)
    _, teacher_cov = _errors(sample_distilled(teacher, proc, (N_EVAL, 2), 64, generator=gen), mix)
    mean_err, cov_err = _errors(x, mix)
    assert mean_err < 0.05
    assert cov_err < teacher_cov + 0.1, (cov_err, teacher_cov)


def test_consistency_distillation_of_the_exact_gaussian_teacher_in_one_step():
    """Heun teacher steps on a 16-step grid: the 1-step consistency student's mean is within 0.05
    and its covariance within 0.15 (Frobenius) of the exact Gaussian (cov norm 3.9)."""
    mix, _, _, x = _distil_gaussian("consistency", 1, 16, 600)
    mean_err, cov_err = _errors(x, mix)
    assert mean_err < 0.05 and cov_err < 0.15, (mean_err, cov_err)


def test_reflow_of_the_exact_gaussian_teacher_in_one_step():
    """Coupling from DPM-Solver++(2M) at 20 NFE: the 1-step student's mean within 0.05 of the
    exact Gaussian's and its covariance within 0.05 of the coupling's own (whose error is the
    teacher sampler's; 0.03-0.16 as that sampler's defaults changed)."""
    mix, proc, teacher, x = _distil_gaussian("reflow", 1, 20, 120)
    gen = torch.Generator().manual_seed(0)
    coupled = get_sampler("dpm_solver_pp_2m")(teacher, proc, (N_EVAL, 2), 20, generator=gen)
    _, teacher_cov = _errors(coupled, mix)
    mean_err, cov_err = _errors(x, mix)
    assert mean_err < 0.05 and cov_err < teacher_cov + 0.05, (mean_err, cov_err, teacher_cov)


def test_consistency_distillation_of_a_mixture_in_one_step():
    """8-mode ring, toy MLP student (500 steps), 1 step: energy distance below 0.065 (50x the
    two-sample noise floor of 2000 vs 2000 samples, 0.0013) and below 5% of the teacher's own
    1-step figure (~1.4). Measured 0.03-0.045; the teacher's DPM-Solver++(2M) at 4 NFE: 0.033."""
    torch.manual_seed(0)
    mix = make_mixture("ring8")
    proc = make_process("vp")
    teacher = ExactDenoiser(mix, proc)
    method = make_method("consistency", {"x": proc}, 1, 16, 500)
    student = MLPDenoiser(2, 64, 2)
    student.parametrization = "x0"
    train_plain(method, student, teacher, lambda step, gen: {"x": mix.sample(256, gen)},
                lr=1e-2, seed=1)
    gen = torch.Generator().manual_seed(0)
    n = 2000
    ref = mix.sample(n, gen)
    floor = float(energy_distance(mix.sample(n, gen), ref))
    with torch.no_grad():
        x = sample_consistency(student, proc, (n, 2), 1, generator=gen)
        t1 = sample_distilled(teacher, proc, (n, 2), 1, generator=gen)
    ed, ed_teacher = float(energy_distance(x, ref)), float(energy_distance(t1, ref))
    assert ed < 0.05 * ed_teacher, (ed, ed_teacher)
    assert ed < 50 * floor, (ed, floor)


def test_subset_grids_are_the_fine_grids_own_times_from_t():
    """The few-step grids searched for a trained flow are sub-grids of its own grid: each starts
    at ``T``, keeps the fine grid's times in order and ends at 0; the full index set is the fine
    grid itself."""
    import math

    from domaindiff.distill.sampling import grid_times, subset_grids

    fine = distilled_times({"x": make_process("vp")}, 16)
    grids = subset_grids(16, 4)
    assert len(grids) == math.comb(15, 3) == len(set(grids))
    assert grid_times(fine, range(16)) == fine
    for g in grids:
        ts = grid_times(fine, g)
        assert ts[0] == fine[0] and ts[-1] == 0.0 and len(ts) == 5
        assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
        assert set(ts[:-1]) <= set(fine)
    assert subset_grids(16, 1) == [(0,)]
