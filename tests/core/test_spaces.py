"""Spaces keep their invariants through noise, training and every sampler."""

import math

import pytest
import torch

from domaindiff.likelihood import log_likelihood
from domaindiff.losses import denoising_loss
from domaindiff.processes import VE, VP
from domaindiff.samplers import get_sampler
from domaindiff.spaces import NodeMasked, Plain, SymmetricAdjacency, ZeroCoM
from domaindiff.toy.mixtures import SubspaceGaussian


def _mask(b=64, n=6):
    m = torch.ones(b, n)
    m[::2, 4:] = 0  # every other graph has only 4 nodes
    return m


def test_symmetric_adjacency_noise_and_projection():
    s = SymmetricAdjacency()
    state = {"mask": _mask(8, 5)}
    z = s.noise(torch.zeros(8, 5, 5), state, torch.Generator().manual_seed(0))
    assert torch.equal(z, z.transpose(1, 2))
    assert torch.all(torch.diagonal(z, dim1=1, dim2=2) == 0)
    assert torch.all(z[::2, 4:, :] == 0) and torch.all(z[::2, :, 4:] == 0)
    torch.testing.assert_close(s.project(z, state), z)
    # free coordinates: the upper triangle of the real nodes
    assert s.dim(z, state).tolist() == [6.0, 10.0] * 4
    torch.testing.assert_close(s.sq_norm(z, state), (torch.triu(z, 1) ** 2).sum((1, 2)))


def test_zero_com_projection_is_orthogonal_and_counts_dims():
    s = ZeroCoM(com_dims=(1, 2))
    state = {"mask": _mask(4, 6)}
    x = torch.randn(4, 6, 3, 3)
    p = s.project(x, state)
    m = state["mask"][:, :, None, None]
    assert torch.allclose((p * m).sum((1, 2)), torch.zeros(4, 3), atol=1e-5)
    torch.testing.assert_close(s.project(p, state), p)  # idempotent
    assert s.dim(x, state).tolist() == [(4 * 3 - 1) * 3, (6 * 3 - 1) * 3] * 2
    # orthogonal: <x - Px, Py> = 0
    y = torch.randn(4, 6, 3, 3)
    assert abs(float(((x * m - p) * s.project(y, state)).sum())) < 1e-4


def test_node_masked_zeroes_padding():
    s = NodeMasked()
    state = {"mask": _mask(4, 6)}
    z = s.noise(torch.zeros(4, 6, 2), state)
    assert torch.all(z[::2, 4:] == 0)
    assert s.dim(z, state).tolist() == [8.0, 12.0, 8.0, 12.0]


SPACES = [
    ("adj", SymmetricAdjacency(), (6, 6)),
    ("pos", ZeroCoM(), (6, 3)),
    ("h", NodeMasked(), (6, 4)),
]


@pytest.mark.parametrize("key,space,shape", SPACES, ids=lambda v: repr(v))
@pytest.mark.parametrize("sampler,steps", [("euler_maruyama", 100), ("pc", 100), ("ancestral", 500),
                                           ("ddim", 100), ("heun", 21), ("dpm_solver", 24),
                                           ("dpm_solver_pp_2m", 24), ("deis", 24), ("ode", None)])
def test_samplers_keep_invariants_and_reach_the_target(key, space, shape, sampler, steps):
    """Exact denoiser of an isotropic Gaussian inside the space: samples must stay in the space and
    have the target mean and per-free-coordinate variance."""
    b = 512
    proc = VP(space=space)
    state = {key: torch.zeros(b, *shape), "mask": _mask(b, 6)}
    mean = space.project(torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
                         .expand(b, *shape), state)[1:2]
    target = SubspaceGaussian(space, mean, 0.5, proc, key)
    out = get_sampler(sampler)(target, {key: proc}, state, steps,
                               generator=torch.Generator().manual_seed(0))
    x = out[key]
    torch.testing.assert_close(space.project(x, out), x, atol=1e-5, rtol=1e-5)
    assert torch.equal(out["mask"], state["mask"])
    dev = x - space.project(mean.expand_as(x), state)
    var = float(space.sq_norm(dev, state).sum() / space.dim(dev, state).sum())
    assert abs(var - 0.25) < 0.03, var
    assert float((dev.mean(0)).abs().max()) < 0.15


def test_loss_respects_spaces():
    """With the exact denoiser the loss of a masked symmetric component ignores padded entries."""
    space = SymmetricAdjacency()
    proc = VE(sigma_min=0.1, sigma_max=2.0, space=space)
    state = {"adj": torch.zeros(16, 5, 5), "mask": _mask(16, 5)}
    seen = {}

    def net(s, t):
        seen.update(s)
        return {"adj": torch.full_like(s["adj"], 100.0)}  # garbage everywhere

    loss = denoising_loss(net, {"adj": proc}, state, reduction="sum")
    a = seen["adj"]
    assert torch.equal(a, a.transpose(1, 2)) and torch.all(a[::2, 4:] == 0)
    # the error is only counted on the free coordinates: sum over (i<j) real pairs of (100-eps)^2
    assert 0.5 * 1e4 * 6 < float(loss) < 1.5 * 1e4 * 10


@pytest.mark.parametrize("key,space,shape", SPACES, ids=lambda v: repr(v))
def test_likelihood_in_a_space_matches_the_analytic_density(key, space, shape):
    torch.set_default_dtype(torch.float64)
    try:
        proc = VP(t_min=1e-3, space=space)
        b = 4
        state = {key: torch.zeros(b, *shape), "mask": _mask(b, 6)}
        mean = space.project(torch.randn(b, *shape, generator=torch.Generator().manual_seed(2)),
                             state)[:1]
        target = SubspaceGaussian(space, mean, 0.7, proc, key)
        x = target.sample(state, torch.Generator().manual_seed(3))
        res = log_likelihood(target, {key: proc}, {**state, key: x}, exact=True)
        t = torch.tensor(proc.t_min)
        a, s = proc.alpha(t), proc.sigma(t)
        var = a**2 * 0.49 + s**2
        dev = x - a * space.project(mean.expand_as(x), state)
        d = space.dim(x, state)
        analytic = -0.5 * space.sq_norm(dev, state) / var - 0.5 * d * math.log(2 * math.pi * var)
        torch.testing.assert_close(res["logp"], analytic, rtol=0.01, atol=0.05)
    finally:
        torch.set_default_dtype(torch.float32)


def test_plain_space_counts_everything():
    x = torch.randn(3, 4, 5)
    assert Plain().dim(x).tolist() == [20.0] * 3
