"""The arithmetic of the fast-guidance and Tourism-AutoARIMA benchmarks, against exact answers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FG = _bench("timeseries_fast_guidance")
AR = _bench("timeseries_tourism_arima_rest")


def test_ratio_noise_is_the_standard_error_of_a_ratio_of_independent_means():
    r, se = FG.ratio_noise([2.0, 4.0], [1.0, 3.0])
    assert r == pytest.approx(1.5)
    # se of each mean: std (ddof 1) sqrt(2) / sqrt(2) = 1
    assert se == pytest.approx(1.5 * math.sqrt((1 / 3) ** 2 + (1 / 2) ** 2))


def test_summary_ratios_to_the_reference_and_to_the_same_energy():
    runs = [{"variant": v, "seed": s, "CRPS": c, "ND": 0.0, "MASE": 0.0, "nfe": n,
             "seconds_per_window": 1.0}
            for v, n, cs in (("tsdiff_q/ddpm-100", 199, (1.0, 1.2)),
                             ("tsdiff_ms/ddpm-100", 199, (2.0, 2.2)),
                             ("tsdiff_ms/ddim-10+eta1", 10, (1.05, 1.15)))
            for s, c in enumerate(cs)]
    rows = {r["variant"]: r for r in FG.summarise(runs, "tsdiff_q/ddpm-100", 0.03)}
    assert "ratio_to_reference" not in rows["tsdiff_q/ddpm-100"]
    fast = rows["tsdiff_ms/ddim-10+eta1"]
    assert fast["ratio_to_reference"] == pytest.approx(1.0)
    assert fast["within_target"] and not fast["noise_below_target"]  # se 0.09 > 3%
    assert fast["ratio_to_same_energy"] == pytest.approx(1.1 / 2.1)
    assert fast["CRPS_std"] == pytest.approx(np.std([1.05, 1.15], ddof=1))


def test_merge_of_two_parts_equals_the_scores_on_all_series():
    rng = np.random.default_rng(0)
    from domaindiff_timeseries.competition_metrics import competition_scores

    samples = rng.gamma(2.0, 5.0, (9, 11, 6, 1))
    target = rng.gamma(2.0, 5.0, (9, 6, 1))
    hist = [rng.gamma(2.0, 5.0, (30, 1)) for _ in range(9)]
    a, b = np.arange(0, 9, 3), np.setdiff1d(np.arange(9), np.arange(0, 9, 3))
    sa = competition_scores(samples[a], target[a], [hist[i] for i in a], 4)
    sb = competition_scores(samples[b], target[b], [hist[i] for i in b], 4)
    every = competition_scores(samples, target, hist, 4)
    merged = AR.merge(sa, len(a), np.abs(target[a]).sum(), sb, len(b), np.abs(target[b]).sum())
    for k in ("MASE", "sMAPE", "CRPS", "ND"):
        assert merged[k] == pytest.approx(every[k], rel=1e-12)
