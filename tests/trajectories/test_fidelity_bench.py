"""The arithmetic of ``benchmarks/trajectories_fidelity.py`` (seeds, spread over K), exact answers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from domaindiff_trajectories.model import GeoTDM

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "trajectories_fidelity", ROOT / "benchmarks" / "trajectories_fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FB = _bench()


def test_parse_spec_reads_options_and_refuses_bad_specs():
    assert FB.parse_spec("ddim:10") == ("ddim", 10, {})
    assert FB.parse_spec("ddim:10:eta=0.5:tau=2") == ("ddim", 10, {"eta": 0.5, "tau": 2.0})
    with pytest.raises(ValueError, match="sampler:nfe"):
        FB.parse_spec("ddim")
    with pytest.raises(ValueError, match="key=value"):
        FB.parse_spec("ddim:10:eta")


def test_summarize_gives_mean_and_sample_std_over_seeds():
    rows = [{"name": "a", "label": "A", "seed": s, "steps": 8,
             "final": {"ade_avg": v, "ddim:2": {"ade_avg": 2 * v}}} for s, v in ((0, 0.2),
                                                                                 (1, 0.4))]
    out = FB.summarize(rows)["a"]
    assert out["seeds"] == [0, 1]
    assert out["ade_avg"]["mean"] == pytest.approx(0.3)
    assert out["ade_avg"]["std"] == pytest.approx(math.sqrt(0.02))  # ddof 1
    assert out["ddim:2"]["ade_avg"]["mean"] == pytest.approx(0.6)


class _Fixed:
    """A stand-in model whose k-th forecast is the target shifted by k along x."""

    def forecast(self, batch, k, **_):
        shift = torch.zeros(k, 1, 1, 1, 3)
        shift[:, 0, 0, 0, 0] = torch.arange(k, dtype=torch.float32)
        return batch["x"][None] + shift


def test_spread_study_on_known_samples():
    batch = {"x": torch.zeros(1, 2, 3, 3), "mask": torch.ones(1, 2)}
    (row,) = FB.spread_study(_Fixed(), [batch], ["ddim:1"], k_max=4)
    # distances 0, 1, 2, 3 at every node and frame; mean 1.5; |k - 1.5| averages 1
    assert row["k4"] == pytest.approx({"ade_avg": 1.5, "fde_avg": 1.5, "ade_min": 0.0,
                                       "fde_min": 0.0})
    assert row["spread"] == pytest.approx(1.0)
    assert row["ade_meank"] == pytest.approx(1.5)


def test_draw_with_tau_one_is_the_plain_forecast_and_tau_zero_is_deterministic():
    torch.manual_seed(0)
    m = GeoTDM(hidden=8, layers=1, time_dim=8, prior_layers=1, pred_frames=3, num_steps=20,
               parametrization="x0", ema_decay=0.0).eval()
    gen = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(2, 3, 3, 3, generator=gen),
             "cond": torch.randn(2, 3, 4, 3, generator=gen),
             "h": torch.ones(2, 3, 1), "mask": torch.ones(2, 3)}
    plain = m.forecast(batch, k=2, sampler="ancestral", steps=4,
                       generator=torch.Generator().manual_seed(1))
    tau1 = FB.draw(m, batch, 2, "ancestral", 4, {"tau": 1.0}, torch.Generator().manual_seed(1))
    torch.testing.assert_close(tau1, plain, rtol=0, atol=0)
    tau0 = FB.draw(m, batch, 3, "ddim", 4, {"tau": 0.0}, torch.Generator().manual_seed(1))
    torch.testing.assert_close(tau0[0], tau0[2], rtol=0, atol=0)  # x_T = 0, no noise added
    assert not torch.equal(plain[0], plain[1])


def test_curve_series_average_seeds_per_sampler_and_plot(tmp_path):
    def point(step, v):
        return {"steps": step, "train_seconds": step / 10, "ade_avg": v, "fde_avg": 2 * v,
                "ade_min": v / 2, "fde_min": v, "ddim:2": {"ade_avg": v / 4, "fde_avg": v / 2,
                                                          "ade_min": v / 8, "fde_min": v / 4}}

    rows = [{"name": "g", "label": "G", "seed": s, "curve": [point(10, a), point(20, b)]}
            for s, (a, b) in enumerate(((0.4, 0.2), (0.6, 0.4)))]
    rows.append({"name": "regression", "label": "R", "seed": 0,
                 "curve": [{"steps": 10, "train_seconds": 1.0, "ade_avg": 0.3, "fde_avg": 0.6,
                            "ade_min": 0.3, "fde_min": 0.6}]})
    series = FB.curve_series(rows, main="ddim:10")
    assert [(se["name"], se["sampler"], se["label"]) for se in series] == [
        ("g", "", "G, ddim:10"), ("g", "ddim:2", "G, ddim:2"), ("regression", "", "R")]
    main, two, reg = series
    assert main["steps"]["mean"] == [10, 20] and main["seeds"] == [0, 1]
    assert main["ade_avg"]["mean"] == pytest.approx([0.5, 0.3])
    assert main["ade_avg"]["std"] == pytest.approx([math.sqrt(0.02)] * 2)  # ddof 1
    assert two["fde_avg"]["mean"] == pytest.approx([0.25, 0.15])
    assert reg["ade_avg"] == {"mean": [pytest.approx(0.3)], "std": [0.0]}
    FB.plot_curves(rows, tmp_path / "c.png", "t", "ddim:10")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_ablation_rows_set_the_model_options():
    rows = FB.ROWS
    assert rows["prior_last"][1]["prior"] == "last"
    assert rows["no_attention"][1]["temporal"] == "fixed"
    assert rows["no_shift_invariance"][1]["temporal"] == "absolute"
    assert set(FB.ABLATIONS) <= set(rows)
    for key in FB.ABLATIONS:  # every ablation row builds a model
        GeoTDM(hidden=8, layers=1, time_dim=8, prior_layers=1, pred_frames=3, num_steps=10,
               **rows[key][1])
