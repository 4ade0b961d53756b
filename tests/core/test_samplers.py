"""Samplers against exact answers: Gaussian-mixture targets, convergence orders, conventions."""

import math

import pytest
import torch

from domaindiff.processes import EDM, VE, VP, DiscreteDDPM, Interpolant, SubVP
from domaindiff.samplers import SAMPLERS, get_sampler, sample_ancestral, sample_ode
from domaindiff.toy.metrics import energy_distance
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

MIX = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.3, 0.5]))
N = 2000

# (sampler, options, NFE, energy-distance threshold). The sampling noise floor of two exact sets of
# 2000 points is about 0.001-0.002; every sampler must get close to it at its NFE.
CASES = [
    ("euler_maruyama", {}, 200, 0.008),
    ("pc", {"snr": 0.16}, 200, 0.008),
    ("ancestral", {}, 100, 0.008),
    ("ddim", {}, 50, 0.008),
    ("ddim", {"eta": 1.0}, 100, 0.008),
    ("euler", {}, 100, 0.008),
    ("heun", {}, 25, 0.008),
    ("heun", {"churn": 10.0}, 201, 0.008),
    ("dpm_solver", {"order": 1}, 50, 0.008),
    ("dpm_solver", {"order": 2}, 30, 0.008),
    ("dpm_solver", {"order": 3}, 15, 0.008),
    ("dpm_solver_pp_2m", {}, 15, 0.008),
    ("deis", {"order": 3}, 15, 0.008),
    ("ode", {}, None, 0.008),
]


@pytest.fixture(scope="module")
def reference():
    return MIX.sample(N, torch.Generator().manual_seed(123))


@pytest.mark.parametrize("name,opts,steps,tol", CASES, ids=lambda v: str(v))
def test_sampler_reaches_mixture_target(name, opts, steps, tol, reference):
    proc = VP()
    x = get_sampler(name)(ExactDenoiser(MIX, proc), proc, (N, 2), steps,
                          generator=torch.Generator().manual_seed(0), **opts)
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    assert float(energy_distance(x, reference)) < tol


@pytest.mark.parametrize("proc", [SubVP(), VE(sigma_max=50.0), DiscreteDDPM(), EDM(), Interpolant()],
                         ids=repr)
@pytest.mark.parametrize("name,steps", [("dpm_solver_pp_2m", 20), ("heun", 41), ("ancestral", 200),
                                        ("deis", 20)])
def test_fast_samplers_on_every_process(proc, name, steps, reference):
    x = get_sampler(name)(ExactDenoiser(MIX, proc), proc, (N, 2), steps,
                          generator=torch.Generator().manual_seed(0))
    assert float(energy_distance(x, reference)) < 0.01


ORDERS = [("euler", {}, 1), ("heun", {}, 2), ("dpm_solver", {"order": 1}, 1),
          ("dpm_solver", {"order": 2}, 2), ("dpm_solver", {"order": 3}, 3),
          ("dpm_solver_pp_2m", {}, 2), ("deis", {"order": 1, "final": "step"}, 1),
          ("deis", {"order": 2, "final": "step"}, 2), ("deis", {"order": 3, "final": "step"}, 3),
          ("deis", {"order": 3, "basis": "time", "schedule": "quadratic"}, 3)]


@pytest.fixture(scope="module")
def ode_problem():
    gauss = GaussianMixture(torch.tensor([[1.0, -0.5]]), torch.tensor([[[1.0, 0.6], [0.6, 0.8]]]))
    proc = VP(t_min=1e-3)
    den = ExactDenoiser(gauss, proc)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = sample_ode(den, proc, x_T.clone(), None, rtol=1e-11, atol=1e-11)
    return den, proc, x_T, ref


@pytest.mark.parametrize("name,opts,order", ORDERS, ids=lambda v: str(v))
def test_ode_samplers_converge_at_their_order(name, opts, order, ode_problem):
    den, proc, x_T, ref = ode_problem
    errs = []
    for n in (48, 96):
        x = get_sampler(name)(den, proc, x_T.clone(), n, **opts)
        errs.append(float((x - ref).norm(dim=1).max()))
    observed = math.log2(errs[0] / errs[1])
    assert abs(observed - order) < 0.4, (errs, observed)


def test_steps_count_network_evaluations():
    proc = VP()
    for name, opts, steps, _ in CASES:
        if steps is None:
            continue
        calls = []

        def den(x, t, calls=calls):
            calls.append(float(t[0]))
            return torch.zeros_like(x["x"])

        get_sampler(name)(den, proc, (4, 2), steps, **opts)
        assert len(calls) <= steps, name
        if name not in ("heun",):
            assert len(calls) == steps - (steps % 2 if name == "pc" else 0), name


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_reports_its_nfe_the_same_way(name):
    """``info["nfe"]`` is the number of network calls; each callback carries the running count."""
    calls = []

    def den(x, t):
        calls.append(1)
        return torch.zeros_like(x["x"])

    info = {}
    seen = []
    get_sampler(name)(den, VP(), (3, 2), 7, info=info, callback=lambda d: seen.append(d["nfe"]),
                      generator=torch.Generator().manual_seed(0))
    assert info["nfe"] == len(calls) > 0, name
    assert seen and seen[-1] == len(calls) and seen == sorted(seen), name
    if name != "ode":  # adaptive: ignores steps
        assert len(calls) <= 7, name


def test_nfe_counts_guidance_evaluations_and_the_bernoulli_sampler():
    from domaindiff.guidance import EnergyGuidance
    from domaindiff.processes import Bernoulli
    from domaindiff.samplers import sample_bernoulli

    info = {}
    guid = EnergyGuidance(lambda s, t: s["x"].sum(1))  # one (differentiated) call per step
    get_sampler("ddim")(lambda x, t: 0.1 * x["x"], VP(), (2, 2), 5, guidance=guid, info=info)
    assert info["nfe"] == 5
    info.clear()
    seen = []
    sample_bernoulli(lambda s, t: torch.full_like(s["x"], 0.5), Bernoulli(num_steps=10), (2, 3), 4,
                     info=info, callback=lambda d: seen.append(d["nfe"]))
    assert info["nfe"] == 4 and seen == [1, 2, 3, 4]


def test_time_points_convention():
    """n NFE: n+1 points from T; integrators end at t_min, posterior samplers at t = 0."""
    proc = VP()
    seen = []
    get_sampler("euler")(lambda x, t: torch.zeros_like(x["x"]), proc, (2, 2), 5,
                         callback=lambda info: seen.append(info["t"]))
    assert len(seen) == 5 and math.isclose(seen[-1], proc.t_min)
    evals = []

    def den(x, t):
        evals.append(float(t[0]))
        return torch.zeros_like(x["x"])

    seen.clear()
    get_sampler("ddim")(den, proc, (2, 2), 5, callback=lambda info: seen.append(info["t"]))
    assert evals[0] == pytest.approx(proc.T) and evals[-1] == pytest.approx(proc.t_min)
    assert seen[-1] == 0.0 and len(evals) == 5


def test_ancestral_with_n_steps_is_exactly_ddpm():
    proc = DiscreteDDPM(num_steps=20, beta_start=1e-3, beta_end=0.2)
    den = ExactDenoiser(MIX, proc)
    ours = sample_ancestral(den, proc, (16, 2), 20, generator=torch.Generator().manual_seed(5))
    # textbook DDPM (Ho et al. 2020, Algorithm 2 with sigma_t^2 = beta_tilde)
    g = torch.Generator().manual_seed(5)
    betas, abar = proc.betas, proc.alphas_cumprod
    x = torch.randn(16, 2, generator=g)
    for i in range(20, 0, -1):
        t = torch.full((16,), i / 20)
        eps = den(x, t).double()
        b, ab = betas[i - 1], abar[i - 1]
        ab_prev = abar[i - 2] if i > 1 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x.double() - (1 - ab).sqrt() * eps) / ab.sqrt()
        if i == 1:
            x = x0.float()
            break
        mean = (ab_prev.sqrt() * b / (1 - ab)) * x0 + ((1 - b).sqrt() * (1 - ab_prev) / (1 - ab)) * x
        var = b * (1 - ab_prev) / (1 - ab)
        x = (mean + var.sqrt() * torch.randn(16, 2, generator=g)).float()
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_registry_and_errors():
    assert {"euler_maruyama", "pc", "ancestral", "ddim", "heun", "dpm_solver", "dpm_solver_pp_2m",
            "deis", "ode"} <= set(SAMPLERS)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("rk45")
    with pytest.raises(ValueError, match="order"):
        get_sampler("dpm_solver")(lambda x, t: x["x"], VP(), (2, 2), 10, order=4)
    with pytest.raises(ValueError, match="steps"):
        get_sampler("euler")(lambda x, t: x["x"], VP(), (2, 2), 0)
    with pytest.raises(ValueError, match="no entry"):
        get_sampler("ddim")(lambda x, t: x, {"a": VP()}, {"b": torch.zeros(2, 2)}, 3)
    with pytest.raises(KeyError, match="no prediction"):
        get_sampler("ddim")(lambda x, t: {"b": x["a"]}, {"a": VP()}, {"a": torch.zeros(2, 2)}, 3)


def test_parametrizations_give_the_same_samples():
    """A velocity- or x0-predicting denoiser gives the same ODE samples as the eps one."""
    from domaindiff.parametrization import convert

    proc = Interpolant()
    den = ExactDenoiser(MIX, proc)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    base = get_sampler("heun")(den, proc, x_T.clone(), 21)
    for kind in ("x0", "velocity", "v", "score"):
        class Wrapped:
            parametrization = kind

            def __call__(self, x, t, kind=kind):
                return convert(den(x, t)["x"] if isinstance(x, dict) else den(x, t), "eps", kind,
                               x["x"], t, proc)

        out = get_sampler("heun")(Wrapped(), proc, x_T.clone(), 21)
        torch.testing.assert_close(out, base, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["ancestral", "ddim", "euler", "heun", "euler_maruyama", "pc",
                                  "dpm_solver", "dpm_solver_pp_2m", "deis"])
def test_dict_state_can_start_from_a_given_x_T(name):
    """prior=False keeps the caller's x_T; the default redraws it; t_min override is honoured."""
    proc = {"x": VP()}
    x_T = {"x": torch.full((3, 2), 0.5), "cond": torch.ones(3)}
    first = []

    def den(x, t):
        if not first:
            first.append(x["x"].clone())
        return torch.zeros_like(x["x"])

    get_sampler(name)(den, proc, x_T, 6, prior=False)
    torch.testing.assert_close(first[0], x_T["x"])
    first.clear()
    get_sampler(name)(den, proc, x_T, 6)
    assert not torch.allclose(first[0], x_T["x"])
    ts = []
    get_sampler(name)(lambda x, t: (ts.append(float(t[0])), torch.zeros_like(x["x"]))[1],
                      {"x": VP().with_t_min(0.05)}, x_T, 6)
    assert min(ts) >= 0.05 - 1e-9
