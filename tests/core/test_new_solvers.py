"""UniPC, DPM-Solver++(3M) and SDE-DPM-Solver++(2M) against exact answers and the references."""

import math

import pytest
import torch

from domaindiff.processes import VP
from domaindiff.samplers import get_sampler, sample_ode
from domaindiff.toy.metrics import energy_distance
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

GAUSS = GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([[[1.0, 0.6], [0.6, 0.8]]]))


@pytest.fixture(scope="module")
def ode_problem():
    proc = VP(t_min=1e-3)
    den = ExactDenoiser(GAUSS, proc)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = sample_ode(den, proc, x_T.clone(), None, rtol=1e-12, atol=1e-12)
    return den, proc, x_T, ref


# (sampler, options, order the log-error slope must show, tolerance); Karras grid (a non-uniform
# lambda grid: the uniform one cancels some leading error terms on a Gaussian)
ORDERS = [
    ("dpm_solver_pp_3m", {}, 3, 0.3),
    ("dpm_solver_pp_3m", {"reference_d2": True}, 2, 0.5),  # the reference codes' weight
    ("unipc", {"order": 1, "corrector": False}, 1, 0.3),
    ("unipc", {"order": 2, "corrector": False}, 2, 0.3),
    ("unipc", {"order": 3, "corrector": False}, 3, 0.3),
    ("unipc", {"order": 2, "corrector": False, "variant": "bh1"}, 2, 0.3),
    ("unipc", {"order": 1}, 2, 0.3),  # UniC raises the order by one
    ("unipc", {"order": 2}, 3, 0.3),
    ("unipc", {"order": 2, "variant": "bh1"}, 3, 0.3),
]


@pytest.mark.parametrize("name,opts,order,tol", ORDERS, ids=lambda v: str(v))
def test_converges_at_the_stated_order(name, opts, order, tol, ode_problem):
    den, proc, x_T, ref = ode_problem
    ns = (48, 96)
    errs = [float((get_sampler(name)(den, proc, x_T.clone(), n, schedule="karras", **opts)
                   - ref).norm(dim=1).mean()) for n in ns]
    slope = math.log2(errs[0] / errs[1])
    assert abs(slope - order) < tol, (errs, slope)


def test_unipc3_with_corrector_beats_third_order(ode_problem):
    """UniP-3 + UniC: above third order (the corrector's extra order), and below UniP-3's error."""
    den, proc, x_T, ref = ode_problem
    err = {c: [float((get_sampler("unipc")(den, proc, x_T.clone(), n, schedule="karras",
                                             order=3, corrector=c) - ref).norm(dim=1).mean())
                for n in (48, 96)] for c in (True, False)}
    assert math.log2(err[True][0] / err[True][1]) > 3.3, err
    assert err[True][1] < 0.5 * err[False][1], err


@pytest.mark.parametrize("name,opts", [("unipc", {}), ("unipc", {"variant": "bh1"}),
                                       ("dpm_solver_pp_3m", {}), ("sde_dpm_solver_pp_2m", {})],
                         ids=str)
def test_samples_match_the_exact_mixture(name, opts):
    mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.3, 0.5]))
    proc = VP(t_min=1e-3)
    steps = 60 if name.startswith("sde") else 15
    x = get_sampler(name)(ExactDenoiser(mix, proc), proc, (2000, 2), steps,
                          generator=torch.Generator().manual_seed(0), **opts)
    ref = mix.sample(2000, torch.Generator().manual_seed(123))
    assert float(energy_distance(x, ref)) < 0.008


def test_sde_solver_reaches_the_exact_gaussian_moments():
    """SDE-DPM-Solver++(2M): mean and covariance of a correlated Gaussian within sampling error."""
    proc = VP(t_min=1e-3)
    n = 20000
    x = get_sampler("sde_dpm_solver_pp_2m")(ExactDenoiser(GAUSS, proc), proc, (n, 2), 40,
                                             generator=torch.Generator().manual_seed(1)).double()
    mean, cov = GAUSS.means[0], GAUSS.covs[0]
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 4 * se).all(), x.mean(0)
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.04)


# --- the same grid through diffusers' schedulers (a test-only tool, never a core dependency) ---

def _diffusers_run(scheduler, den, proc, ts, x_T, noises=None):
    """Drive a diffusers multistep scheduler on our grid ``ts`` (its sigmas replaced by ours)."""
    n = len(ts) - 1
    scheduler.set_timesteps(n)
    tt = torch.tensor(ts, dtype=torch.float64)
    scheduler.sigmas = (proc.sigma(tt) / proc.alpha(tt)).to(torch.float64)
    x = x_T.clone()
    for i, step_t in enumerate(scheduler.timesteps):
        eps = den(x, torch.full((x.shape[0],), ts[i], dtype=x.dtype))
        kw = {} if noises is None else {"variance_noise": noises[i]}
        x = scheduler.step(eps, step_t, x, **kw).prev_sample
    return x


@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("kind", ["unipc_bh1", "unipc_bh2", "unipc_bh2_order2", "dpmpp_3m",
                                  "dpmpp_2m", "sde_dpmpp_2m"])
def test_agrees_with_diffusers_on_the_same_grid(kind, steps):
    diffusers = pytest.importorskip("diffusers")
    mix = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.3, 0.5]))
    proc = VP(t_min=1e-3)
    den = ExactDenoiser(mix, proc)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    ts = proc.time_grid(steps, "karras").tolist()
    common = {"num_train_timesteps": 1000, "lower_order_final": True,
              "final_sigmas_type": "sigma_min"}
    noises = None
    if kind.startswith("unipc"):
        order = 2 if kind.endswith("order2") else 3
        variant = kind.split("_")[1]
        sch = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=variant,
                                                predict_x0=True, **common)
        ours = get_sampler("unipc")(den, proc, x_T.clone(), None, timesteps=ts, order=order,
                                    variant=variant)
    elif kind == "sde_dpmpp_2m":
        sch = diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++",
                                                    solver_order=2, **common)
        g = torch.Generator().manual_seed(7)
        ours = get_sampler("sde_dpm_solver_pp_2m")(den, proc, x_T.clone(), None, timesteps=ts,
                                                   generator=g)
        g = torch.Generator().manual_seed(7)
        noises = [torch.randn(x_T.shape, generator=g) for _ in range(steps)]
    else:
        order = 3 if kind == "dpmpp_3m" else 2
        sch = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
                                                    solver_order=order, **common)
        name = f"dpm_solver_pp_{order}m"
        opts = {"reference_d2": True} if order == 3 else {}
        ours = get_sampler(name)(den, proc, x_T.clone(), None, timesteps=ts, **opts)
    theirs = _diffusers_run(sch, den, proc, ts, x_T, noises)
    torch.testing.assert_close(ours, theirs.float(), rtol=2e-4, atol=2e-4)
