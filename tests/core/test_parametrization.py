import itertools

import pytest
import torch

from domaindiff.parametrization import (
    PARAMETRIZATIONS,
    convert,
    edm_preconditioning,
    eps_error_factor,
    from_x0_eps,
    to_x0_eps,
)
from domaindiff.processes import EDM, VE, VP, Interpolant, SubVP

PROCS = [VP(), SubVP(), VE(), EDM(), Interpolant(), Interpolant("trig", latent_gamma=0.3)]


@pytest.mark.parametrize("p", PROCS, ids=repr)
@pytest.mark.parametrize("a,b", list(itertools.permutations(PARAMETRIZATIONS, 2)))
def test_conversions_round_trip(p, a, b):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    t = torch.linspace(p.t_min + 0.05 * (p.T - p.t_min), p.T * 0.9, 6, dtype=torch.float64)
    xt = p.q_sample(x0, t, eps)
    pa = from_x0_eps(x0, eps, a, t, p)
    pb = convert(pa, a, b, xt, t, p)
    torch.testing.assert_close(pb, from_x0_eps(x0, eps, b, t, p), rtol=1e-8, atol=1e-8)
    back = convert(pb, b, a, xt, t, p)
    torch.testing.assert_close(back, pa, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", PARAMETRIZATIONS)
def test_eps_error_factor(kind):
    p = VP()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(
        4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
    xt = p.q_sample(x0, t, eps)
    target = from_x0_eps(x0, eps, kind, t, p)
    wrong = target + 0.1 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    _, eps_wrong = to_x0_eps(wrong, kind, xt, t, p)
    lhs = ((eps_wrong - eps) ** 2).sum(1)
    rhs = eps_error_factor(kind, t, p) * ((wrong - target) ** 2).sum(1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-8, atol=1e-10)


def test_edm_preconditioning_values():
    c = edm_preconditioning(torch.tensor([0.5]), 0.5)
    torch.testing.assert_close(c["c_skip"], torch.tensor([0.5]))
    torch.testing.assert_close(c["c_out"], torch.tensor([0.25 / 0.5**0.5]))


def test_unknown_parametrization():
    with pytest.raises(ValueError, match="parametrization"):
        to_x0_eps(torch.zeros(1, 1), "noise", torch.zeros(1, 1), torch.ones(1) * 0.5, VP())
