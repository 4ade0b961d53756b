"""Anomaly detection by imputation: masks, point-adjusted F1 by hand, detection of a spike."""

import numpy as np
import pytest
import torch

from domaindiff_timeseries.anomaly import (
    best_point_adjusted_f1,
    complementary_masks,
    evaluate_anomalies,
    inject_anomalies,
    point_adjust,
    point_adjusted_f1,
    series_scores,
)
from domaindiff_timeseries.model import TSDiff


def test_complementary_masks():
    g = complementary_masks(10, "grating", 2)
    assert g[0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0, 1, 1]
    np.testing.assert_array_equal(g[0] + g[1], np.ones(10))
    r = complementary_masks(1000, "random", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(r.sum(0), np.ones(1000))
    assert 400 < r[0].sum() < 600
    with pytest.raises(ValueError, match="grating"):
        complementary_masks(10, "stripes")


def test_point_adjusted_f1_by_hand():
    label = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0])
    score = np.array([0.1, 0.2, 0.9, 0.1, 0.8, 0.1, 0.3, 0.2, 0.1, 0.1])
    # threshold 0.5 flags steps 2 and 4: segment 1..3 is hit (all 3 count), segment 6..7 missed
    adj = point_adjust(score > 0.5, label)
    assert adj.astype(int).tolist() == [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    # tp 3, fp 1 (step 4), fn 2: precision 3/4, recall 3/5, F1 = 2 * .75 * .6 / 1.35 = 2/3
    r = point_adjusted_f1(score, label, 0.5)
    assert r["precision"] == pytest.approx(0.75)
    assert r["recall"] == pytest.approx(0.6)
    assert r["f1"] == pytest.approx(2 / 3)
    # threshold 0.25 flags 2, 4, 6: both segments hit, tp 5, fp 1 -> P 5/6, R 1, F1 10/11
    assert point_adjusted_f1(score, label, 0.25)["f1"] == pytest.approx(10 / 11)
    best = best_point_adjusted_f1(score, label)
    assert best["f1"] == pytest.approx(10 / 11) and best["threshold"] == pytest.approx(0.3)


def test_injected_labels_match_changes():
    y = np.tile(np.sin(np.linspace(0, 20, 400))[:, None] + 5, 1).astype(np.float32)
    z, lab = inject_anomalies(y, 200, num=5, seed=1)
    assert lab[:200].sum() == 0 and 5 <= lab.sum() <= 30
    changed = np.abs(z - y)[:, 0] > 1e-6
    assert not changed[lab == 0].any()  # nothing changes outside the labels


class _GaussianEps(torch.nn.Module):
    def __init__(self, proc):
        super().__init__()
        self.proc = proc

    def forward(self, state, t):
        return {"x": self.proc.sigma(t)[:, None, None] * state["x"]}


def test_imputation_scores_flag_a_spike():
    model = TSDiff(dim=1, context_length=24, prediction_length=8, lags=[], hidden=8,
                   num_blocks=1, emb_dim=8, d_state=4)
    model.network = _GaussianEps(model.processes["x"])
    model.ema_network = None
    rng = np.random.default_rng(0)
    y = (rng.normal(size=(96, 1)) * 0.3 + 1.0).astype(np.float32)
    y[80] += 4.0
    s = series_scores(model, y, 64, stride=8, steps=10, num_samples=2, record_last=3)
    assert s.shape == (32,) and int(np.argmax(s)) == 16
    res = evaluate_anomalies(model, y, 32, num_anomalies=2, steps=5, num_samples=1,
                             record_last=2, stride=16)
    assert 0 <= res["imputation"]["f1"] <= 1 and len(res["per_repeat_f1"]) == 1
