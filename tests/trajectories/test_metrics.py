"""ADE/FDE against hand-computed values, constant velocity, the ETH-UCY k-means protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domaindiff_trajectories.metrics import (
    DisplacementError,
    ade_fde,
    ade_fde_k,
    constant_velocity,
    kmeans_min_of,
)


def test_ade_fde_hand_computed():
    target = torch.zeros(1, 2, 3, 3)
    pred = torch.zeros(1, 2, 3, 3)
    pred[0, 0, :, 0] = torch.tensor([3.0, 0.0, 6.0])  # node 0 errors 3, 0, 6
    pred[0, 1, 2] = torch.tensor([0.0, 3.0, 4.0])  # node 1 errors 0, 0, 5
    ade, fde = ade_fde(pred, target)
    # ADE = mean(node0 = 3, node1 = 5/3) = 7/3; FDE = mean(6, 5) = 5.5
    torch.testing.assert_close(ade, torch.tensor([7 / 3]))
    torch.testing.assert_close(fde, torch.tensor([5.5]))
    # a padded node does not count
    ade_m, fde_m = ade_fde(pred, target, torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(ade_m, torch.tensor([3.0]))
    torch.testing.assert_close(fde_m, torch.tensor([6.0]))
    with pytest.raises(ValueError, match="does not end with target shape"):
        ade_fde(pred[..., :2], target)


def test_avg_and_min_over_k_and_streaming_metric():
    target = torch.zeros(2, 1, 2, 2)
    samples = torch.zeros(3, 2, 1, 2, 2)
    samples[0, :, :, :, 0] = 1.0  # error 1 everywhere
    samples[1, :, :, :, 0] = 3.0  # error 3
    samples[2, 0, :, 1, 0] = 2.0  # item 0: errors (0, 2): ADE 1, FDE 2; item 1: zero
    r = ade_fde_k(samples, target)
    torch.testing.assert_close(r["ade_avg"], torch.tensor([(1 + 3 + 1) / 3, (1 + 3 + 0) / 3]))
    torch.testing.assert_close(r["fde_avg"], torch.tensor([(1 + 3 + 2) / 3, (1 + 3 + 0) / 3]))
    torch.testing.assert_close(r["ade_min"], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(r["fde_min"], torch.tensor([1.0, 0.0]))
    m = DisplacementError("fde")
    m.update(samples[2], target)
    m.update(samples[0], target)
    torch.testing.assert_close(m.compute(), torch.tensor((2 + 0 + 1 + 1) / 4))


def test_matches_numpy_reference_formula():
    # the EqMotion/GeoTDM evaluation code: np.linalg.norm over xyz, mean over agents and time
    rng = np.random.default_rng(0)
    pred, gt = rng.standard_normal((5, 4, 7, 3)), rng.standard_normal((5, 4, 7, 3))
    err = np.linalg.norm(pred - gt, axis=-1)
    ade, fde = ade_fde(torch.from_numpy(pred), torch.from_numpy(gt))
    np.testing.assert_allclose(ade.numpy(), err.mean((1, 2)), rtol=1e-12)
    np.testing.assert_allclose(fde.numpy(), err[:, :, -1].mean(1), rtol=1e-12)


def test_constant_velocity_is_exact_on_straight_lines():
    t = torch.arange(15, dtype=torch.float64)
    v = torch.randn(2, 3, 1, 3, dtype=torch.float64)
    traj = 1.0 + v * t[None, None, :, None]
    pred = constant_velocity(traj[:, :, :5], 10)
    torch.testing.assert_close(pred, traj[:, :, 5:])


def test_kmeans_min_of_twenty():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 12, 2))
    far = target[None] + 10 + rng.standard_normal((59, 3, 12, 2))
    samples = np.concatenate([far, target[None]])  # one exact sample among 60
    ade, fde = kmeans_min_of(samples, target, k=20)
    # with 20 clusters the isolated exact sample forms its own cluster
    assert ade == pytest.approx(0.0, abs=1e-9) and fde == pytest.approx(0.0, abs=1e-9)
    ade1, _ = kmeans_min_of(samples, target, k=1)
    assert ade1 > 5.0


def test_unconditional_scores_identical_vs_garbage():
    """Hand case: a copy of the data scores (near) best, independent noise scores badly."""
    from domaindiff_trajectories.metrics import (
        bond_columns,
        bond_pairs,
        classification_score,
        coordinate_columns,
        marginal_score,
        prediction_score,
    )
    from domaindiff_trajectories.nbody import simulate

    sim = simulate("charged", 48, length=2100, sample_freq=100, seed=3)
    x = torch.tensor(sim["loc"]).float().permute(0, 3, 1, 2)  # (S, N, 20, 3)
    x = x - x.mean((1, 2), keepdim=True)
    h = torch.tensor(sim["charges"]).float()
    garbage = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 2 * x.std()
    # marginal: exactly 0 for the same values (in any order), clearly positive for noise
    assert marginal_score(coordinate_columns(x), coordinate_columns(x.flip(0))) == 0.0
    assert marginal_score(coordinate_columns(x), coordinate_columns(garbage)) > 0.05
    # classification: ln 2 when indistinguishable, ~0 when trivially separable
    hh = torch.cat([h, h])
    assert classification_score(x, x.clone(), hh, epochs=8) > 0.6
    assert classification_score(x, garbage, hh, epochs=8) < 0.2
    # prediction: training on noise forecasts the real data far worse than training on data
    good = prediction_score(x, x.clone(), hh, epochs=8)
    assert prediction_score(garbage, x, hh, epochs=8) > 2 * good
    # bonds: a square of side 1 has 4 bonds under a 1.2 cutoff (diagonals are 1.41)
    sq = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    pairs = bond_pairs(sq, 1.2)
    assert sorted(pairs) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    cols = bond_columns(sq[None, :, None].expand(2, -1, 3, -1), pairs)
    assert cols.shape == (6, 4) and torch.allclose(cols, torch.ones(6, 4))


def test_ade_avg_over_k_is_at_least_the_ade_of_the_mean_of_k():
    """Jensen: the distance is convex, so ADE/FDE averaged over K >= those of the samples' mean.

    Hand-made: target 0, two samples at +/- (2, 0, 0) on every frame. Each sample has error 2,
    their mean is the target (error 0). A third sample at (1, 0, 0) makes the mean (1/3, 0, 0).
    """
    target = torch.zeros(1, 1, 2, 3)
    samples = torch.zeros(3, 1, 1, 2, 3)
    samples[0, ..., 0], samples[1, ..., 0] = 2.0, -2.0
    r = ade_fde_k(samples[:2], target)
    mean_ade, mean_fde = ade_fde(samples[:2].mean(0), target)
    torch.testing.assert_close(r["ade_avg"], torch.tensor([2.0]))
    torch.testing.assert_close(mean_ade, torch.tensor([0.0]))
    samples[2, ..., 0] = 1.0
    r3 = ade_fde_k(samples, target)
    mean3 = ade_fde(samples.mean(0), target)
    torch.testing.assert_close(r3["ade_avg"], torch.tensor([5 / 3]))
    torch.testing.assert_close(mean3[0], torch.tensor([1 / 3]))
    torch.testing.assert_close(mean3[1], torch.tensor([1 / 3]))
    # random samples, padded nodes: never below the mean's error (equal only if they coincide)
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(5, 4, 3, 6, 3, generator=gen)
    tgt = torch.randn(4, 3, 6, 3, generator=gen)
    mask = torch.tensor([[1.0, 1.0, 0.0]] * 4)
    rk = ade_fde_k(s, tgt, mask)
    ma, mf = ade_fde(s.mean(0), tgt, mask)
    assert bool((rk["ade_avg"] > ma).all()) and bool((rk["fde_avg"] > mf).all())
    same = ade_fde_k(s[:1].expand(5, -1, -1, -1, -1), tgt, mask)
    torch.testing.assert_close(same["ade_avg"], ade_fde(s[0], tgt, mask)[0])
