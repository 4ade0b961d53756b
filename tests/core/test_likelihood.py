import pytest
import torch

from domaindiff.likelihood import log_likelihood
from domaindiff.processes import VE, VP, Interpolant, SubVP
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

MIX = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), torch.tensor([0.3, 0.5]))


@pytest.fixture(autouse=True)
def _double():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("proc", [VP(), SubVP(), VE(sigma_min=0.01, sigma_max=50.0), Interpolant()],
                         ids=repr)
def test_exact_likelihood_within_one_percent(proc):
    x = MIX.sample(6, torch.Generator().manual_seed(0), torch.float64)
    res = log_likelihood(ExactDenoiser(MIX, proc), proc, x, exact=True)
    analytic = MIX.marginal_log_prob(x, torch.tensor(proc.t_min), proc)
    rel = ((res["logp"] - analytic).abs() / analytic.abs()).max()
    assert rel < 0.01, (res["logp"], analytic)
    assert res["nfe"] > 10
    torch.testing.assert_close(res["bpd"], -res["logp"] / (2 * torch.log(torch.tensor(2.0))))


def test_hutchinson_is_unbiased():
    proc = VP()
    x = MIX.sample(4, torch.Generator().manual_seed(1), torch.float64)
    exact = log_likelihood(ExactDenoiser(MIX, proc), proc, x, exact=True)["logp"]
    runs = torch.stack([log_likelihood(ExactDenoiser(MIX, proc), proc, x, exact=False,
                                       hutchinson_samples=8, rtol=1e-4, atol=1e-4,
                                       generator=torch.Generator().manual_seed(s))["logp"]
                        for s in range(6)])
    assert (runs.mean(0) - exact).abs().max() < 0.35
    assert runs.std(0).max() > 1e-4  # it is an estimator, not the exact trace
