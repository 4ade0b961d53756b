"""Echo-DND's two diffusions against exact answers: kernels, posteriors, losses and samplers."""

import math

import pytest
import torch

from domaindiff.samplers.bernoulli import bernoulli_time_points
from domaindiff_medical import EchoDND
from domaindiff_medical.model import (
    bernoulli_ddim_prob,
    bernoulli_kl,
    binary_decoder_nll,
    gaussian_step,
    learned_logvar,
)
from domaindiff_medical.networks import DualOutput

N = 50


def _model(**kw):
    args = dict(base_channels=4, levels=2, temb_dim=8, num_steps=N, ema_decay=0.0)
    args.update(kw)
    return EchoDND(**args)


def _chain_matrices(betas):
    """One-step 2x2 kernels ``K[a, b] = q(x_i = b | x_{i-1} = a)`` of the Bernoulli chain."""
    return [torch.tensor([[1 - b / 2, b / 2], [b / 2, 1 - b / 2]], dtype=torch.float64)
            for b in betas.tolist()]


def _kernel(mats, j, i):
    """``q(x_i | x_j)`` as a 2x2 matrix, by multiplying one-step kernels j+1..i."""
    k = torch.eye(2, dtype=torch.float64)
    for m in mats[j:i]:
        k = k @ m
    return k


def test_bernoulli_marginal_is_the_product_of_one_step_kernels():
    bern = _model().bern
    mats = _chain_matrices(bern.betas)
    for i in (1, 7, 25, 50):
        k = _kernel(mats, 0, i)
        for x0 in (0, 1):
            got = bern.marginal_prob(torch.tensor([float(x0)], dtype=torch.float64),
                                     torch.tensor([i]))
            assert got.item() == pytest.approx(k[x0, 1].item(), abs=1e-12)
            # the paper's formula x_t ~ Bern(abar_t x0 + (1 - abar_t) / 2)
            abar = float(torch.prod(1 - bern.betas[:i]))
            assert got.item() == pytest.approx(abar * x0 + (1 - abar) / 2, abs=1e-12)


@pytest.mark.parametrize(("i", "j"), [(1, 0), (2, 1), (30, 29), (30, 10), (50, 0)])
def test_bernoulli_posterior_is_bayes_rule_on_the_chain(i, j):
    bern = _model().bern
    mats = _chain_matrices(bern.betas)
    prior, lik = _kernel(mats, 0, j), _kernel(mats, j, i)
    for x0 in (0, 1):
        for xi in (0, 1):
            joint = prior[x0] * lik[:, xi]  # over x_j in {0, 1}
            want = (joint[1] / joint.sum()).item()
            got = bern.posterior_prob(torch.tensor([float(xi)], dtype=torch.float64),
                                      torch.tensor([float(x0)], dtype=torch.float64),
                                      torch.tensor([i]), torch.tensor([j]))
            assert got.item() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("kind", ["posterior", "ddim"])
def test_bernoulli_reverse_chain_with_exact_denoiser_reproduces_forward_marginals(kind):
    """Skip-step p(x_j | x_i) (posterior or DDIM analogue) with the true P(x0 = 1 | x_i) gives
    exactly q(x_j) at every step."""
    bern = _model().bern
    pi = 0.3  # P(x0 = 1)
    one = torch.ones(1, dtype=torch.float64)

    def marginal(i):
        return pi * bern.marginal_prob(one, torch.tensor([i])) + (1 - pi) * bern.marginal_prob(
            0 * one, torch.tensor([i]))

    def x0_posterior(xi, i):  # P(x0 = 1 | x_i) by Bayes
        p1 = bern.marginal_prob(one, torch.tensor([i]))
        p0 = bern.marginal_prob(0 * one, torch.tensor([i]))
        l1, l0 = (p1, p0) if xi == 1 else (1 - p1, 1 - p0)
        return pi * l1 / (pi * l1 + (1 - pi) * l0)

    for steps in (N, 7, 3):
        pts = bernoulli_time_points(N, steps)  # the core's grid: N ... 1, then 0
        p_x = marginal(pts[0])  # P(x_i = 1) of the reverse chain
        for i, j in zip(pts[:-1], pts[1:], strict=True):
            ii, jj = torch.tensor([i]), torch.tensor([j])
            xs = [torch.tensor([float(x)], dtype=torch.float64) for x in (0, 1)]
            if kind == "posterior":
                to1 = [bern.reverse_prob(xs[x], x0_posterior(x, i), ii, jj) for x in (0, 1)]
            else:
                a_i, a_j = bern.abar[i], bern.abar[j]
                to1 = [bernoulli_ddim_prob(xs[x], x0_posterior(x, i), a_i, a_j) for x in (0, 1)]
                assert all(0 <= p.item() <= 1 for p in to1)
            p_x = (1 - p_x) * to1[0] + p_x * to1[1]
            assert p_x.item() == pytest.approx(marginal(j).item(), abs=1e-12)
        assert p_x.item() == pytest.approx(pi, abs=1e-12)  # j = 0: the data distribution


def test_bernoulli_ddim_keeps_agreeing_pixels_and_flips_towards_x0():
    a_i, a_j = torch.tensor(0.2), torch.tensor(0.6)
    x_i, x0 = torch.tensor([0.0, 1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])
    flip = ((a_j - a_i) / (1 - a_i)).item()
    want = torch.tensor([0.0, 1.0, flip, 1 - flip])
    assert torch.allclose(bernoulli_ddim_prob(x_i, x0, a_i, a_j), want)


def test_bernoulli_kl_at_the_first_step_is_the_mask_nll():
    bern = _model().bern
    m = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    x1 = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    p = torch.tensor([0.2, 0.7, 0.9, 0.4], dtype=torch.float64)
    one = torch.ones(4, dtype=torch.long)
    q = bern.posterior_prob(x1, m, one, 0 * one)
    assert torch.equal(q, m)
    kl = bernoulli_kl(q, bern.reverse_prob(x1, p, one, 0 * one))
    nll = -(m * p.log() + (1 - m) * (1 - p).log())
    assert torch.allclose(kl, nll, atol=1e-4)  # KL clamps probabilities at 1e-6


def test_gaussian_posterior_coefficients_complete_the_square():
    abar = _model().bern.abar
    for i, j in ((2, 1), (30, 29), (30, 10), (50, 3)):
        a_i, a_j = abar[i], abar[j]
        c0, ci, beta, beta_t = gaussian_step(a_i, a_j)
        # q(x_j | x0) = N(sqrt(a_j) x0, 1 - a_j); q(x_i | x_j) = N(sqrt(a_i/a_j) x_j, 1 - a_i/a_j)
        r = a_i / a_j
        prec = 1 / (1 - a_j) + r / (1 - r)
        assert beta_t.item() == pytest.approx(1 / prec.item(), rel=1e-10)
        assert c0.item() == pytest.approx((a_j.sqrt() / (1 - a_j) / prec).item(), rel=1e-10)
        assert ci.item() == pytest.approx((r.sqrt() / (1 - r) / prec).item(), rel=1e-10)
        if j == i - 1:  # DDPM's own coefficients
            b = 1 - r
            assert c0.item() == pytest.approx((a_j.sqrt() * b / (1 - a_i)).item(), rel=1e-10)
        # the ancestral step keeps the marginal: E and Var of x_j given x0 (x_i ~ q(x_i | x0))
        x0 = 0.7
        mean = c0 * x0 + ci * a_i.sqrt() * x0
        var = ci ** 2 * (1 - a_i) + beta_t
        assert mean.item() == pytest.approx((a_j.sqrt() * x0).item(), rel=1e-10)
        assert var.item() == pytest.approx((1 - a_j).item(), rel=1e-10)
    v = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64)
    lv = learned_logvar(v, torch.tensor(0.02, dtype=torch.float64),
                        torch.tensor(0.01, dtype=torch.float64))
    assert torch.allclose(lv, torch.tensor([math.log(0.01), math.log(0.02),
                                            0.5 * math.log(2e-4)], dtype=torch.float64))


def test_binary_decoder_nll_is_the_gaussian_mass_on_the_right_side():
    mean, logvar = torch.tensor([0.3, 0.3, -1.0]), torch.tensor([0.0, 0.0, math.log(4.0)])
    x0 = torch.tensor([1.0, -1.0, -1.0])
    phi = torch.distributions.Normal(0.0, 1.0).cdf
    want = -torch.log(torch.stack([phi(torch.tensor(0.3)), 1 - phi(torch.tensor(0.3)),
                                   phi(torch.tensor(0.5))]))
    assert torch.allclose(binary_decoder_nll(x0, mean, logvar), want, atol=1e-6)


def test_gaussian_vlb_vanishes_for_the_true_noise_and_posterior_variance():
    model = _model()
    g = torch.Generator().manual_seed(0)
    x0 = torch.where(torch.rand(3, 1, 8, 8, generator=g) < 0.5, -1.0, 1.0)
    eps = torch.randn(3, 1, 8, 8, generator=g)
    i = torch.tensor([2, 17, 50])
    a = model._abar(i, x0)
    x_i = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = torch.full_like(x0, -1.0, requires_grad=True)  # log var = log beta_tilde
    eps_hat = eps.clone().requires_grad_(True)
    vlb = model.gaussian_vlb(x_i, x0, eps_hat, v, i)
    assert torch.allclose(vlb, torch.zeros(3), atol=1e-5)
    # a wrong variance costs, and only the variance gets gradients (the mean is stop-gradiented)
    vlb = model.gaussian_vlb(x_i, x0, eps_hat, v + 0.5, i).sum()
    assert vlb > 1e-3
    vlb.backward()
    assert eps_hat.grad is None and v.grad.abs().sum() > 0
    # i = 1: the decoder's negative log-likelihood of the binary mask
    one = torch.ones(3, dtype=torch.long)
    a1 = model._abar(one, x0)
    x1 = a1.sqrt() * x0 + (1 - a1).sqrt() * eps
    got = model.gaussian_vlb(x1, x0, eps, torch.zeros_like(x0), one)
    bt2 = (1 - a1) / (1 - model._abar(2 * one, x0)) * model.bern.betas[1].float()
    lv = 0.5 * (model.bern.betas[0].float().log() + bt2.log())
    want = binary_decoder_nll(x0, x0, lv.expand_as(x0)).flatten(1).mean(1)
    assert torch.allclose(got, want, rtol=1e-4)


class _Oracle(torch.nn.Module):
    """A perfect denoiser for the image = mask task: exact noise and x0 probability."""

    def __init__(self, abar, learn_sigma):
        super().__init__()
        self.abar, self.learn_sigma, self.calls = abar, learn_sigma, 0

    def forward(self, image, xg, xb, t):
        self.calls += 1
        i = torch.round(t * N).long()
        a = self.abar.float()[i].view(-1, 1, 1, 1)
        eps = (xg - a.sqrt() * (2 * image - 1)) / (1 - a).sqrt()
        prob = image.clamp(1e-4, 1 - 1e-4)
        var = torch.zeros_like(image) if self.learn_sigma else None
        return DualOutput(eps, prob, torch.zeros_like(image), var, torch.logit(prob))


@pytest.mark.parametrize(("sampler", "steps", "nfe"), [("ddpm", N, N), ("ddpm", 5, 5),
                                                        ("ddim", 3, 3), ("ddim", 1, 1),
                                                        ("dpm_solver", 4, 4), ("heun", 5, 5)])
@pytest.mark.parametrize(("learn_sigma", "bernoulli"), [(True, "posterior"), (False, "ddim")])
def test_dual_samplers_recover_the_mask_with_an_exact_denoiser(sampler, steps, nfe,
                                                               learn_sigma, bernoulli):
    model = _model(learn_sigma=learn_sigma, bernoulli_sampler=bernoulli)
    model.network = _Oracle(model.bern.abar, learn_sigma)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 3:7] = 1
    out = model.dual_sample(mask, steps, sampler, generator=torch.Generator().manual_seed(0))
    assert model.network.calls == nfe  # one network call serves both branches
    assert model.last_nfe == nfe  # the count the eval app reports
    exact = sampler in ("ddpm", "ddim")  # the oracle is exact on the integer steps only
    assert torch.allclose(out["gauss"], mask, atol=1e-4 if exact else 0.1)
    assert torch.allclose(out["bern"], mask, atol=1e-3)
    assert torch.equal((out["prob"] > 0.5).float(), mask)
    visited = model.last_walk.visited  # the Bernoulli branch walked N -> ... -> 1
    assert visited[0] == N and visited == sorted(visited, reverse=True)
    if exact:  # the steps of the core's sample_bernoulli: N ... 1 (up to rounding a half)
        core = bernoulli_time_points(N, nfe)[:-1]
        assert len(visited) == len(core) and visited[-1] == core[-1]
        assert all(abs(a - b) <= 1 for a, b in zip(visited, core, strict=True))
