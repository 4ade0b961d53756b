"""Metrics: kernels against pyemd, hand-computed MMDs, NSPDK and molecule rates."""

import math

import networkx as nx
import numpy as np
import pyemd
import pytest
import torch
from rdkit import Chem

from domaindiff_graphs import metrics as Mt
from domaindiff_graphs.data import mol_to_nx


def test_emd_matches_pyemd():
    rng = np.random.default_rng(0)
    for n, scale in ((5, 1.0), (20, 1.0), (100, 100.0)):
        x, y = rng.random(n), rng.random(n - 2)
        x, y = x / x.sum(), y / y.sum()
        xp, yp = Mt._pad(x, y)
        dist = np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(float) / scale
        assert Mt.emd_1d(x, y, scale) == pytest.approx(pyemd.emd(xp, yp, dist), rel=1e-6)


def test_degree_mmd_hand_computed():
    # P3 degree pmf [0, 2/3, 1/3]; K3 pmf [0, 0, 1]: EMD = 2/3
    k = math.exp(-(2 / 3) ** 2 / 2)
    assert Mt.degree_mmd([nx.path_graph(3)], [nx.complete_graph(3)]) == pytest.approx(2 - 2 * k)
    assert Mt.degree_mmd([nx.path_graph(3)] * 3, [nx.path_graph(3)] * 2) == pytest.approx(0.0)


def test_clustering_and_orbit_mmd_hand_computed():
    # clustering: K3 all 1.0 (bin 99), P3 all 0.0 (bin 0): EMD = 99/100, sigma 0.1
    k = math.exp(-(0.99**2) / (2 * 0.01))
    assert Mt.clustering_mmd([nx.complete_graph(3)], [nx.path_graph(3)]) == pytest.approx(2 - 2 * k)
    # orbit: K3 mean counts [2,0,0,1,0...], P3 [4/3, 2/3, 1/3, 0, ...]
    a, b = np.array([2, 0, 0, 1.0]), np.array([4 / 3, 2 / 3, 1 / 3, 0])
    k = math.exp(-((a - b) ** 2).sum() / (2 * 900))
    assert Mt.orbit_mmd([nx.complete_graph(3)], [nx.path_graph(3)]) == pytest.approx(2 - 2 * k)


def test_mmd_includes_self_pairs_like_reference():
    xs = [np.array([1.0, 0]), np.array([0, 1.0])]
    ys = [np.array([1.0, 0])]
    k = math.exp(-1 / 2)
    # disc(X,X) = (1 + k + k + 1)/4, disc(Y,Y) = 1, disc(X,Y) = (1 + k)/2
    expect = (2 + 2 * k) / 4 + 1 - (1 + k)
    assert Mt.compute_mmd(xs, ys, Mt.gaussian_emd) == pytest.approx(expect)


def test_nspdk_zero_for_identical_and_positive_otherwise():
    ref = [mol_to_nx(Chem.MolFromSmiles(s)) for s in ("CCO", "CC=O", "C1CC1")]
    assert Mt.nspdk_mmd(ref, ref) == pytest.approx(0.0, abs=1e-12)
    other = [mol_to_nx(Chem.MolFromSmiles(s)) for s in ("C#N", "FC(F)F")]
    assert Mt.nspdk_mmd(ref, other) > 0.1


def test_molecule_rates_divide_by_the_right_counts():
    mols = [Chem.MolFromSmiles(s) for s in ("CCO", "CCO", "CN")] + [None]
    valid_wo = [True, False, True, False]
    out = Mt.molecule_metrics(mols, valid_wo, train_smiles=["CCO"])
    assert out["validity_wo_correction"] == pytest.approx(2 / 4)  # over all generated
    assert out["validity"] == pytest.approx(3 / 4)
    assert out["uniqueness"] == pytest.approx(2 / 3)
    assert out["novelty"] == pytest.approx(1 / 3)


def test_torchmetrics_degree_mmd_equals_function():
    gen = [nx.path_graph(5), nx.star_graph(4)]
    ref = [nx.cycle_graph(5), nx.complete_graph(4), nx.path_graph(3)]
    m = Mt.DegreeMMD()
    m.update(gen[:1], ref[:2])
    m.update(gen[1:], ref[2:])
    assert float(m.compute()) == pytest.approx(Mt.degree_mmd(ref, gen))
    c = Mt.ClusteringMMD()
    c.update(gen, ref)
    assert float(c.compute()) == pytest.approx(Mt.clustering_mmd(ref, gen))
    assert isinstance(m.compute(), torch.Tensor)


def test_fcd_zero_for_identical_sets_and_positive_for_different_ones():
    pytest.importorskip("fcd_torch")
    a = ["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "CNC", "OCCO", "CC#N"]
    b = ["FC(F)(F)F", "C1CC1", "O=C=O", "N#N", "CC(C)(C)C", "c1ccncc1", "ClCCl", "OC(=O)C(=O)O"]
    assert Mt.fcd(a, a) == pytest.approx(0.0, abs=1e-3)
    assert Mt.fcd(a, b) > 1.0
    assert math.isnan(Mt.fcd(a, a[:1]))
    out = Mt.molecule_metrics([Chem.MolFromSmiles(s) for s in a], [True] * len(a), [], None, a)
    assert out["fcd"] == pytest.approx(0.0, abs=1e-3)


def test_frechet_distance_matches_fcd_torch_sqrtm():
    utils = pytest.importorskip("fcd_torch.utils")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 12)), rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
    m1, s1, m2, s2 = a.mean(0), np.cov(a.T), b.mean(0) + 0.3, np.cov(b.T)
    ref = utils.calculate_frechet_distance(m1, s1, m2, s2)
    assert Mt.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6)
    assert Mt.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-8)
