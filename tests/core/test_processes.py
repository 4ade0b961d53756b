import math

import pytest
import torch

from domaindiff.processes import (
    EDM,
    VE,
    VP,
    Bernoulli,
    DiscreteDDPM,
    GaussianProcess,
    Interpolant,
    SubVP,
    cosine_betas,
    make_process,
)

PROCESSES = [
    VP(), VP(beta_min=0.1, beta_max=1.0), SubVP(), VE(), VE(sigma_min=0.2, sigma_max=1.0),
    DiscreteDDPM(num_steps=100, beta_start=1e-4, beta_end=0.1), DiscreteDDPM(schedule="cosine"),
    EDM(), Interpolant("linear"), Interpolant("trig"), Interpolant("linear", latent_gamma=0.5),
]


def _times(p, n=7):
    return torch.linspace(p.t_min + 1e-3 * (p.T - p.t_min), p.T, n, dtype=torch.float64)


@pytest.mark.parametrize("p", PROCESSES, ids=repr)
def test_closed_form_derivatives_match_autograd(p):
    t = _times(p)
    if isinstance(p, DiscreteDDPM):  # piecewise linear in log abar: avoid the kinks
        t = (torch.arange(1, 8, dtype=torch.float64) + 0.37) / p.num_steps * (p.num_steps // 8)
    auto_a = GaussianProcess._derivative(p, p.alpha, t)
    auto_s = GaussianProcess._derivative(p, p.sigma, t)
    torch.testing.assert_close(p.d_alpha(t), auto_a, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(p.d_sigma(t), auto_s, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("p", PROCESSES, ids=repr)
def test_sde_coefficients_generate_the_marginals(p):
    """Mean and variance of the linear SDE obey d alpha = f alpha, d s^2 = 2 f s^2 + g^2."""
    t = _times(p)
    if isinstance(p, DiscreteDDPM):
        t = (torch.arange(1, 8, dtype=torch.float64) + 0.37) / p.num_steps * (p.num_steps // 8)
    a, s = p.alpha(t), p.sigma(t)
    torch.testing.assert_close(p.d_alpha(t), p.f(t) * a, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(2 * s * p.d_sigma(t), 2 * p.f(t) * s**2 + p.g2(t), rtol=1e-5,
                               atol=1e-8)


@pytest.mark.parametrize("p", PROCESSES, ids=repr)
def test_t_from_lambda_inverts_lambda(p):
    t = _times(p)
    back = p.t_from_lambda(p.lambda_(t))
    torch.testing.assert_close(back, t, rtol=1e-6, atol=1e-7)


def test_vp_marginal_matches_song_et_al():
    p = VP(0.1, 20.0)
    t = torch.tensor([0.5], dtype=torch.float64)
    log_mean = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    x0 = torch.ones(1, 3, dtype=torch.float64)
    mean, std = p.marginal(x0, t)
    torch.testing.assert_close(mean, torch.exp(log_mean)[:, None] * x0)
    torch.testing.assert_close(std.squeeze(), torch.sqrt(1 - torch.exp(2 * log_mean)).squeeze())


def test_discrete_ddpm_hits_alphas_cumprod_on_the_grid():
    p = DiscreteDDPM(num_steps=50, beta_start=1e-4, beta_end=0.1)
    i = torch.arange(1, 51)
    t = i.to(torch.float64) / 50
    torch.testing.assert_close(p.alpha(t) ** 2, p.alphas_cumprod, rtol=1e-10, atol=1e-12)
    assert torch.equal(p.t_to_index(t), i)
    betas = cosine_betas(10)
    q = DiscreteDDPM(betas=betas.tolist())
    torch.testing.assert_close(q.alphas_cumprod, torch.cumprod(1 - betas, 0))


def test_prior_logp_is_the_gaussian_density():
    p = VE(sigma_min=0.01, sigma_max=3.0)
    x = torch.randn(5, 4, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 3.0).log_prob(x).sum(1)
    torch.testing.assert_close(p.prior_logp(x), expected)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="schedule"):
        DiscreteDDPM(schedule="quadratic")
    with pytest.raises(ValueError, match="t_min"):
        VP(t_min=2.0)
    with pytest.raises(ValueError, match="unknown process"):
        make_process("ornstein")
    with pytest.raises(ValueError, match="bad settings"):
        make_process("vp", sigma_max=3)
    with pytest.raises(ValueError, match="kind"):
        Interpolant("cubic")
    with pytest.raises(ValueError, match="time grid|schedule"):
        VP().time_grid(5, "quadratic")


def test_bernoulli_marginal_matches_stepwise_forward_chain():
    proc = Bernoulli(num_steps=20, beta_start=0.02, beta_end=0.3)
    x0 = torch.tensor([1.0, 0.0])
    # exact distribution of the chain by propagating P(x=1)
    p1 = x0.clone().double()
    for i in range(1, 21):
        b = proc.betas[i - 1]
        p1 = (1 - b) * p1 + b / 2
        torch.testing.assert_close(proc.marginal_prob(x0.double(), torch.tensor(i)), p1)


def test_bernoulli_posterior_is_bayes_rule():
    proc = Bernoulli(num_steps=10, beta_start=0.05, beta_end=0.4)
    for x0 in (0.0, 1.0, 0.3):
        for xi in (0.0, 1.0):
            i, j = 7, 3
            a_i, a_j = proc.abar[i], proc.abar[j]
            a_ij = a_i / a_j
            prior1 = a_j * x0 + (1 - a_j) / 2

            def lik(xj, a_ij=a_ij, xi=xi):
                p = a_ij * xj + (1 - a_ij) / 2
                return p if xi == 1.0 else 1 - p

            post = prior1 * lik(1.0) / (prior1 * lik(1.0) + (1 - prior1) * lik(0.0))
            got = proc.posterior_prob(torch.tensor([xi], dtype=torch.float64),
                                      torch.tensor([x0], dtype=torch.float64),
                                      torch.tensor([i]), torch.tensor([j]))
            assert math.isclose(float(got), float(post), rel_tol=1e-12)


def test_rescaled_linear_schedule_is_clipped_to_a_valid_diffusion():
    """GeoTDM rescales beta_end by 1000 / N; for N <= 20 that reaches 1 and is clipped."""
    p = DiscreteDDPM(num_steps=10, beta_start=1e-4 * 100, beta_end=0.02 * 100)
    assert float(p.betas.max()) == pytest.approx(0.999)
    assert torch.isfinite(p.alpha(torch.tensor([1.0]))).all()
    assert float(p.alphas_cumprod[-1]) < 1e-3
    with pytest.raises(ValueError, match="betas"):
        DiscreteDDPM(betas=[0.1, 1.2])
    with pytest.raises(ValueError, match="beta_start"):
        DiscreteDDPM(beta_start=0.0)


def test_with_t_min_copies_the_process():
    p = VP()
    q = p.with_t_min(1e-2)
    assert q.t_min == 1e-2 and p.t_min == 1e-5
    assert float(q.time_grid(4)[-1]) == pytest.approx(1e-2)
    torch.testing.assert_close(q.alpha(torch.tensor([0.3])), p.alpha(torch.tensor([0.3])))
    with pytest.raises(ValueError, match="t_min"):
        p.with_t_min(1.5)


def test_gaussian_process_is_an_abstract_base_and_bernoulli_is_outside_it():
    with pytest.raises(TypeError, match="abstract"):
        GaussianProcess()  # was instantiable: alpha/sigma raised only when first called

    class NoSigma(GaussianProcess):
        def alpha(self, t):
            return torch.ones_like(t)

    with pytest.raises(TypeError, match="sigma"):
        NoSigma()

    class Const(NoSigma):
        def sigma(self, t):
            return torch.full_like(t, 0.5)

    assert float(Const().prior_std) == 0.5  # the two methods are all a subclass must give
    assert all(isinstance(p, GaussianProcess) for p in PROCESSES)
    assert not isinstance(Bernoulli(num_steps=4), GaussianProcess)
    assert not issubclass(Bernoulli, GaussianProcess)


def test_gaussian_samplers_refuse_the_bernoulli_process():
    from domaindiff.samplers import get_sampler, sample_bernoulli

    with pytest.raises(TypeError, match=r"process\['x'\]: expected a GaussianProcess, got "
                                        r"Bernoulli; use sample_bernoulli"):
        get_sampler("ddim")(lambda s, t: s["x"], Bernoulli(num_steps=4), (2, 2), 3)
    with pytest.raises(TypeError, match="needs a Bernoulli process, got VP"):
        sample_bernoulli(lambda s, t: s["x"], VP(), (2, 2), 3)


COEFFICIENTS = ("alpha", "sigma", "lambda_", "f", "g2", "d_alpha", "d_sigma")


@pytest.mark.parametrize("p", PROCESSES, ids=repr)
def test_one_time_fast_paths_equal_the_per_sample_path(p):
    """coefficient(name, t) and an expanded (stride-0) batch of one time, as samplers pass it,
    give the per-sample tensor values (float64 and float32), off and on DDPM grid points."""
    times = torch.cat([_times(p), torch.tensor([p.T, p.t_min, 0.5 * (p.T + p.t_min)],
                                               dtype=torch.float64)])
    if isinstance(p, DiscreteDDPM):
        times = torch.cat([times, torch.tensor([0.0, 0.5, 3 / p.num_steps],
                                               dtype=torch.float64)])
    for name in COEFFICIENTS:
        fn = getattr(p, name)
        per_sample = fn(times.clone())  # a contiguous batch: the tensor path
        for i, v in enumerate(times.tolist()):
            got = p.coefficient(name, v)
            assert isinstance(got, float)
            assert math.isclose(got, float(per_sample[i]), rel_tol=1e-12, abs_tol=1e-14), name
            for dtype in (torch.float64, torch.float32):
                one = torch.tensor(v, dtype=dtype).expand(5)
                out = fn(one)
                assert out.shape == (5,) and out.dtype == dtype, (name, v, out.stride())
                assert out.stride(0) != 0 or isinstance(p, EDM), (name, v)
                # float64 arithmetic rounded once: at least as exact as the float32 tensor path
                v_in = float(torch.tensor(v, dtype=dtype))  # the time as the dtype holds it
                exact = fn(torch.full((5,), v_in, dtype=torch.float64)).to(dtype)
                f32 = dtype == torch.float32
                if type(p) in (DiscreteDDPM, VP):  # the processes with a one-time tensor path
                    torch.testing.assert_close(out, exact, rtol=1e-6 if f32 else 1e-12,
                                               atol=1e-12)
                torch.testing.assert_close(out, fn(torch.full((5,), v, dtype=dtype)),
                                           rtol=2e-5 if f32 else 1e-12, atol=1e-12)


def test_fast_paths_follow_a_subclass_that_redefines_a_coefficient():
    class Shifted(DiscreteDDPM):
        def alpha(self, t):
            return 0.5 * super().alpha(t)

    class Sub(VP):  # a VP subclass with its own sigma (as SubVP)
        def sigma(self, t):
            return 2 * super().sigma(t)

    p, q = Shifted(num_steps=10), Sub()
    t = torch.tensor(0.45, dtype=torch.float64)
    assert p.coefficient("alpha", 0.45) == pytest.approx(float(p.alpha(t)))
    assert p.coefficient("lambda_", 0.45) == pytest.approx(float(torch.log(p.alpha(t))
                                                                 - torch.log(p.sigma(t))))
    assert q.coefficient("sigma", 0.45) == pytest.approx(2 * VP().coefficient("sigma", 0.45))
    assert q.coefficient("lambda_", 0.45) == pytest.approx(float(q.lambda_(t)))
    s = SubVP()
    assert s.coefficient("sigma", 0.3) == pytest.approx(float(s.sigma(torch.tensor(0.3))))
