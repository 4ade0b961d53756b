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


class _NoVmapTanh(torch.autograd.Function):
    """tanh whose backward has no batching rule, so batched gradients must fall back."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if g.abs().sum().item() == 0:  # data-dependent Python: fails under vmap
            return torch.zeros_like(g)
        return g * (1 - y * y)


@pytest.mark.parametrize("fn", [torch.tanh, _NoVmapTanh.apply], ids=["batched", "fallback"])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_exact_divergence_is_the_jacobian_trace(fn, chunk):
    from domaindiff.likelihood import _divergence_exact
    from domaindiff.spaces import Plain

    torch.manual_seed(0)
    w = torch.randn(5, 5)
    x = torch.randn(3, 5, requires_grad=True)
    v = fn(x @ w)
    div = _divergence_exact({"x": v}, {"x": x}, {"x": VP(space=Plain())}, {"x": x}, chunk=chunk)
    jac = torch.func.vmap(torch.func.jacrev(lambda z: torch.tanh(z @ w)))(x.detach())
    torch.testing.assert_close(div, jac.diagonal(dim1=1, dim2=2).sum(-1))


def test_options_reach_odeint_and_bad_chunk_is_named():
    proc = VP()
    x = MIX.sample(3, torch.Generator().manual_seed(2), torch.float64)
    fixed = log_likelihood(ExactDenoiser(MIX, proc), proc, x, method="rk4",
                           options={"step_size": 0.05})
    assert fixed["nfe"] == 4 * 20  # rk4: 4 evaluations per step, (1 - 1e-5) / 0.05 -> 20 steps
    with pytest.raises(ValueError, match="chunk"):
        log_likelihood(ExactDenoiser(MIX, proc), proc, x, chunk=0)
