"""The adaptive ODE solvers never evaluate the network outside the process's ``[t_min, T]``.

torchdiffeq's adaptive solvers step past the end point and interpolate back; before the fix,
``sample_ode`` on VP asked for ``t < 0`` and ``log_likelihood`` for ``t = 1.14`` at tolerance 1e-7
(and past an ``Interpolant``'s ``T``, where ``alpha = 1 - t`` turns negative).
"""

import pytest
import torch

from domaindiff.likelihood import log_likelihood
from domaindiff.processes import VE, VP, Interpolant
from domaindiff.samplers import sample_ode
from domaindiff.samplers.ode import odeint_in_range
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

MIX = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.3, 0.5]))
MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
GAUSS = GaussianMixture(MEAN[None], COV[None])
PROCS = [VP(), VE(sigma_min=0.01, sigma_max=50.0), Interpolant()]


class StrictDenoiser:
    """The exact denoiser, undefined (raises) outside ``[t_min, T]``; records every time asked."""

    parametrization = "eps"

    def __init__(self, mixture: GaussianMixture, process) -> None:
        self.exact = ExactDenoiser(mixture, process)
        self.lo, self.hi = process.t_min, process.T
        self.seen: list[float] = []

    def __call__(self, x, t):
        self.seen.extend(t.tolist())
        # the range as t's dtype holds it (float32 states: float32(1e-5) < 1e-5)
        lo, hi = (torch.tensor(v, dtype=t.dtype) for v in (self.lo, self.hi))
        if bool((t < lo).any() or (t > hi).any()):
            raise ValueError(f"denoiser called at t={t.tolist()} outside [{self.lo}, {self.hi}]")
        return self.exact(x, t)


@pytest.fixture(autouse=True)
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _sqrtm(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return v @ torch.diag(w.sqrt()) @ v.T


def gaussian_flow(x_T: torch.Tensor, process) -> torch.Tensor:
    """Closed-form probability-flow map ``T -> t_min`` of a Gaussian ``N(m, C)``.

    ``x_t = alpha_t m + S_t S_T^{-1} (x_T - alpha_T m)`` with ``S_t = (alpha_t^2 C + sigma_t^2 I)^{1/2}``.
    """
    def parts(t):
        tt = torch.tensor(t, dtype=torch.float64)
        a, s = float(process.alpha(tt)), float(process.sigma(tt))
        return a, _sqrtm(a * a * COV + s * s * torch.eye(2))

    a_T, s_T = parts(process.T)
    a_0, s_0 = parts(process.t_min)
    return a_0 * MEAN + (x_T - a_T * MEAN) @ torch.linalg.solve(s_T, s_0).T


@pytest.mark.parametrize("proc", PROCS, ids=repr)
def test_sample_ode_stays_in_range_and_matches_closed_form(proc):
    den = StrictDenoiser(GAUSS, proc)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * proc.prior_std
    x = sample_ode(den, proc, x_T.clone(), None, rtol=1e-7, atol=1e-7)
    assert min(den.seen) >= proc.t_min and max(den.seen) <= proc.T
    assert min(den.seen) == pytest.approx(proc.t_min) and max(den.seen) == pytest.approx(proc.T)
    exact = gaussian_flow(x_T, proc)
    err = float((x - exact).norm(dim=1).max() / exact.norm(dim=1).max())
    assert err < 1e-4, err


@pytest.mark.parametrize("proc", PROCS, ids=repr)
def test_log_likelihood_stays_in_range_and_matches_closed_form(proc):
    den = StrictDenoiser(MIX, proc)
    x = MIX.sample(6, torch.Generator().manual_seed(0), torch.float64)
    res = log_likelihood(den, proc, x, rtol=1e-7, atol=1e-7)
    assert min(den.seen) >= proc.t_min and max(den.seen) <= proc.T
    analytic = MIX.marginal_log_prob(x, torch.tensor(proc.t_min), proc)
    rel = float(((res["logp"] - analytic).abs() / analytic.abs()).max())
    assert rel < 0.01, (res["logp"], analytic)  # the threshold of test_likelihood.py


@pytest.mark.parametrize("method", ["bosh3", "dopri8", "adaptive_heun"])
def test_other_adaptive_solvers_stay_in_range(method):
    proc = Interpolant()
    den = StrictDenoiser(GAUSS, proc)
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    x = sample_ode(den, proc, x_T.clone(), None, rtol=1e-5, atol=1e-5, method=method)
    assert float((x - gaussian_flow(x_T, proc)).abs().max()) < 1e-2
    log_likelihood(den, proc, GAUSS.sample(3, torch.Generator().manual_seed(2), torch.float64),
                   rtol=1e-5, atol=1e-5, method=method)
    assert min(den.seen) >= proc.t_min and max(den.seen) <= proc.T


@pytest.mark.parametrize("proc", PROCS, ids=repr)
def test_float32_state_stays_in_range(proc):
    """float32 states: the span is rounded (0.999 -> 0.99900001); still never past T."""
    den = StrictDenoiser(GAUSS, proc)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    x = sample_ode(den, proc, x_T * proc.prior_std, None, rtol=1e-6, atol=1e-6)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    x0 = GAUSS.sample(4, torch.Generator().manual_seed(4), torch.float32)
    log_likelihood(den, proc, x0, rtol=1e-6, atol=1e-6)
    lo, hi = (float(torch.tensor(v, dtype=torch.float32)) for v in (proc.t_min, proc.T))
    assert min(den.seen) >= lo and max(den.seen) <= hi


def test_sample_ode_takes_solver_options():
    proc = VP()
    calls = []

    def den(x, t):
        calls.append(float(t[0]))
        return torch.zeros_like(x["x"])

    info: dict = {}
    sample_ode(den, proc, (2, 2), None, method="rk4", options={"step_size": 0.05}, info=info)
    assert len(calls) == 4 * 20 and info["nfe"] == 80  # rk4: 4 per step, 20 steps
    assert min(calls) >= proc.t_min and max(calls) <= proc.T
    # a step_t/jump_t of the user's (lists, even the end point itself) is honoured, not duplicated
    calls.clear()
    sample_ode(den, proc, (2, 2), None, options={"step_t": [0.5, proc.t_min], "jump_t": [0.25]})
    assert min(calls) >= proc.t_min and max(calls) <= proc.T
    for point in (0.5, 0.25):  # steps end there (evaluated one ulp inside, torchdiffeq's perturb)
        assert min(abs(c - point) for c in calls) < 1e-12


def test_solver_asking_outside_the_range_is_refused_with_a_clear_error():
    def grid(func, y0, t):  # a user grid that overshoots the end point, then comes back
        return torch.tensor([0.0, 0.5, 1.2, 1.0], dtype=t.dtype)

    seen = []

    def func(t, y):
        seen.append(t)
        return -y

    with pytest.raises(ValueError, match=r"t=1\.2 outside the process's time range \[0\.0, 1\.0\]"):
        odeint_in_range(func, torch.ones(2), 0.0, 1.0, rtol=1e-5, atol=1e-5, method="euler",
                        options={"grid_constructor": grid})
    assert max(seen) <= 1.0


@pytest.mark.parametrize("kwargs,match", [({"method": "dopri"}, "method: unknown ODE solver 'dopri'"),
                                          ({"rtol": 0.0}, "rtol: expected a positive number"),
                                          ({"atol": -1.0}, "atol: expected a positive number"),
                                          ({"options": 3}, "options: expected a mapping")])
def test_bad_solver_arguments_are_named(kwargs, match):
    proc = VP()
    with pytest.raises(ValueError, match=match):
        sample_ode(ExactDenoiser(GAUSS, proc), proc, (2, 2), None, **kwargs)
