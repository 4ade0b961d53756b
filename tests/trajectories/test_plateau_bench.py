"""The bookkeeping of ``benchmarks/trajectories_plateau.py``: CSV lines and mean ± std tables."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "trajectories_plateau", ROOT / "benchmarks" / "trajectories_plateau.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PB = _bench()


def _geo(v: float) -> dict:
    s = {"ade_avg": v, "fde_avg": 2 * v, "ade_min": v - 0.01, "fde_min": 2 * v - 0.01}
    shot = [{"t": 1.0, "alpha": 0.0, "ade": v, "fde": 2 * v},
            {"t": 0.5, "alpha": 0.3, "ade": v / 2, "fde": v}]
    return {"ddim:1": s, "ddim:2": s, "ddim:10": s, "ddim:2_train": s,
            "one_shot_test": shot, "one_shot_train": shot}


def _result() -> dict:
    rows = [{"name": "geotdm", "seed": s, "points": [{"steps": 8, "raw": _geo(v), "ema": _geo(v)}]}
            for s, v in ((0, 0.2), (1, 0.4))]
    rows.append({"name": "regression", "seed": 0, "points": [
        {"steps": 8, "raw": {"test": {"ade": 0.3, "fde": 0.6}, "train": {"ade": 0.1, "fde": 0.2}},
         "ema": {"test": {"ade": 0.25, "fde": 0.5}, "train": {"ade": 0.1, "fde": 0.2}}}]})
    return {"rows": rows}


def test_csv_has_one_line_per_measurement_and_t():
    lines = PB.csv_lines(_result()["rows"])
    # geotdm: 2 seeds x 2 weights x (4 sampled + 2 x 2 one-shot) = 32; regression: 2 x 2 = 4
    assert len(lines) == 1 + 32 + 4
    assert "geotdm,1,8,ema,one_shot_test,0.5,0.2,0.4,," in lines
    assert "regression,0,8,ema,test,,0.25,0.5,," in lines


def test_report_gives_mean_and_sample_std_over_seeds(tmp_path):
    text = PB.report(_result(), tmp_path / "r.json")
    # mean of 0.2 and 0.4 is 0.3, sample std 0.1414
    assert "| geotdm | 8 | 2 | raw | 0.300 ± 0.141 / 0.600 ± 0.283 |" in text
    assert "0.150 ± 0.071 / 0.150 ± 0.071" in text  # one-shot at t = 0.5, test / train
    assert "| regression | 8 | 1 | ema |" in text and "0.250 ± 0.000 / 0.500 ± 0.000" in text
    assert (tmp_path / "r.png").exists()
