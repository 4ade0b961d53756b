import pytest
import torch

from domaindiff.likelihood import log_likelihood
from domaindiff.processes import VE, VP, Interpolant, SubVP
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture
from tests.catalogue import BadInput, assert_refused, raised

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


def _velocity_at(proc, x, t):
    """The exact probability-flow velocity of MIX at time t, with x requiring grad."""
    from domaindiff.samplers.base import Model

    xg = x.clone().requires_grad_(True)
    v, _ = Model(ExactDenoiser(MIX, proc), {"x": proc}).velocity({"x": xg}, t)
    return v, xg


def test_rademacher_probes_are_unbiased_with_lower_variance_than_gaussian():
    """Against the exact divergence of a 2-D mixture's velocity: both probe kinds are unbiased;
    Rademacher's variance is Gaussian's minus the diagonal terms (Hutchinson 1990), here far lower."""
    from domaindiff.likelihood import _divergence_exact, _divergence_hutchinson, probe_noise

    proc = VP()
    x = MIX.sample(8, torch.Generator().manual_seed(3), torch.float64)
    v, xg = _velocity_at(proc, x, 0.3)
    exact = _divergence_exact(v, {"x": xg}, {"x": proc}, {"x": xg})
    n = 400
    est = {}
    for probe in ("gaussian", "rademacher"):
        g = torch.Generator().manual_seed(7)
        est[probe] = torch.stack([_divergence_hutchinson(v, {"x": xg},
                                                         {"x": probe_noise(probe, xg, g)})
                                  for _ in range(n)])  # (n, B)
        se = est[probe].std(0) / n**0.5
        assert ((est[probe].mean(0) - exact).abs() <= 5 * se + 1e-9).all(), probe
    jac = torch.stack([torch.autograd.grad(v["x"][:, i].sum(), xg, retain_graph=True)[0]
                       for i in range(2)], 1)  # (B, out, in): the points do not interact
    sym = 0.5 * (jac + jac.transpose(1, 2))
    var_gauss = 2 * (sym**2).sum((1, 2))
    var_rad = var_gauss - 2 * (jac.diagonal(dim1=1, dim2=2) ** 2).sum(1)
    torch.testing.assert_close(est["gaussian"].var(0), var_gauss, rtol=0.35, atol=1e-6)
    torch.testing.assert_close(est["rademacher"].var(0), var_rad, rtol=0.35, atol=1e-6)
    assert est["rademacher"].var(0).mean() < 0.5 * est["gaussian"].var(0).mean()


def test_rademacher_likelihood_is_closer_to_the_exact_one_with_one_probe():
    proc = VP()
    den = ExactDenoiser(MIX, proc)
    x = MIX.sample(4, torch.Generator().manual_seed(1), torch.float64)
    exact = log_likelihood(den, proc, x, exact=True, rtol=1e-4, atol=1e-4)["logp"]
    err = {}
    for probe in ("gaussian", "rademacher"):
        runs = torch.stack([log_likelihood(den, proc, x, exact=False, probe=probe, rtol=1e-4,
                                           atol=1e-4,
                                           generator=torch.Generator().manual_seed(s))["logp"]
                            for s in range(5)])
        err[probe] = float(((runs - exact).abs() / exact.abs()).mean())
    assert err["rademacher"] < 0.6 * err["gaussian"], err


def test_hutchinson_default_probe_is_rademacher_and_gaussian_keeps_its_stream():
    from domaindiff.likelihood import probe_noise

    like = torch.zeros(3, 4, dtype=torch.float64)
    r = probe_noise("rademacher", like, torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) <= {-1.0, 1.0} and r.dtype == torch.float64
    g = probe_noise("gaussian", like, torch.Generator().manual_seed(0))
    torch.testing.assert_close(g, torch.randn(3, 4, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64))
    proc = VP()
    x = MIX.sample(2, torch.Generator().manual_seed(2), torch.float64)
    kw = {"exact": False, "rtol": 1e-3, "atol": 1e-3}
    default = log_likelihood(ExactDenoiser(MIX, proc), proc, x,
                             generator=torch.Generator().manual_seed(4), **kw)["logp"]
    rad = log_likelihood(ExactDenoiser(MIX, proc), proc, x, probe="rademacher",
                         generator=torch.Generator().manual_seed(4), **kw)["logp"]
    torch.testing.assert_close(default, rad)


def _bad_call(**kw):
    proc = VP()
    x = MIX.sample(2, torch.Generator().manual_seed(0), torch.float64)
    return raised(ValueError, lambda: log_likelihood(ExactDenoiser(MIX, proc), proc, x, **kw))


CATALOGUE = [
    BadInput("core-likelihood-probe", "log_likelihood(..., exact=False, probe='sobol')",
             r"probe: unknown Hutchinson probe 'sobol'; choose one of \('rademacher', "
             r"'gaussian'\)", lambda tmp: _bad_call(exact=False, probe="sobol")),
    BadInput("core-likelihood-hutchinson-samples",
             "log_likelihood(..., exact=False, hutchinson_samples=0)",
             r"hutchinson_samples must be >= 1, got 0",
             lambda tmp: _bad_call(exact=False, hutchinson_samples=0)),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_likelihood_arguments_are_refused(case, tmp_path):
    assert_refused(case, tmp_path)
