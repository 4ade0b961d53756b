"""Metrics against hand-computed values and MONAI."""

import numpy as np
import pytest
import torch

from domaindiff_medical.metrics import (
    ensemble_metrics,
    expected_calibration_error,
    generalized_energy_distance,
    segmentation_metrics,
)


def _sq(r0, r1, c0, c1, size=10):
    m = torch.zeros(1, 1, size, size)
    m[0, 0, r0:r1, c0:c1] = 1
    return m


def test_dice_iou_hand():
    p, t = _sq(0, 2, 0, 2), _sq(0, 2, 0, 3)
    out = segmentation_metrics(p, t)
    assert out["dice"].item() == pytest.approx(8 / 10)
    assert out["iou"].item() == pytest.approx(4 / 6)
    same = segmentation_metrics(t, t)
    assert same["dice"].item() == 1 and same["hd95"].item() == 0 and same["assd"].item() == 0


@pytest.mark.parametrize("spacing", [1.0, 0.5])
def test_hd95_assd_hand(spacing):
    # 3x3 squares two columns apart: border distances {2,2,2,1,1,0,0,0} both ways
    p, t = _sq(2, 5, 2, 5), _sq(2, 5, 4, 7)
    out = segmentation_metrics(p, t, spacing=spacing)
    assert out["assd"].item() == pytest.approx(1.0 * spacing)
    assert out["hd95"].item() == pytest.approx(2.0 * spacing)


def test_anisotropic_spacing_and_shape_error():
    p, t = _sq(2, 5, 2, 5), _sq(2, 5, 4, 7)
    out = segmentation_metrics(p, t, spacing=(1.0, 0.25))  # columns are 0.25 apart
    assert out["hd95"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="B, 1, H, W"):
        segmentation_metrics(p[0], t[0])


def test_ece_hand():
    t = torch.tensor([1.0, 1, 1, 0]).view(1, 1, 2, 2)
    assert expected_calibration_error(torch.full_like(t, 0.75), t).item() == pytest.approx(0)
    t2 = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 2, 2)
    assert expected_calibration_error(torch.full_like(t2, 0.9), t2).item() == pytest.approx(0.65)
    # two bins: 0.1 (targets 0,0) and 0.8 (targets 1,0): (2/4)*0.1 + (2/4)*0.3
    p3 = torch.tensor([0.1, 0.1, 0.8, 0.8]).view(1, 1, 2, 2)
    t3 = torch.tensor([0.0, 0, 1, 0]).view(1, 1, 2, 2)
    assert expected_calibration_error(p3, t3).item() == pytest.approx(0.2)


def test_ged_hand():
    y = _sq(0, 2, 0, 2)
    half = _sq(0, 2, 0, 1)  # IoU 1/2 with y
    s = torch.stack([y, half])
    # 2 * mean(0, 1/2) - mean(d(y, half), d(half, y)) = 0.5 - 0.5 = 0
    assert generalized_energy_distance(s, y).item() == pytest.approx(0.0)
    s2 = torch.stack([half, half])
    assert generalized_energy_distance(s2, y).item() == pytest.approx(1.0)
    em = ensemble_metrics(torch.stack([y, 0 * y]), y)
    # per-pixel variance 0.25 on the 4 pixels of y out of 100
    assert em["variance"].item() == pytest.approx(0.25 * 4 / 100)
    assert np.isfinite(em["ece"].item())
