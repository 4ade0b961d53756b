"""benchmarks/timeseries_distill_grid.py: the grid search reads training windows only, and bad
arguments are refused by name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from domaindiff_timeseries.data import TimeSeriesData

ROOT = Path(__file__).resolve().parents[2]


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "timeseries_distill_grid", ROOT / "benchmarks" / "timeseries_distill_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_search_windows_are_cut_from_the_training_series_only():
    dm = TimeSeriesData(context_length=48, prediction_length=24, lags=[])
    wins = _script().search_windows(dm, 8)
    assert len(wins) == 8
    train = np.asarray(dm.train_series[0])
    for w in wins:  # each window's context is a stretch of the training series
        hist = w["history"]
        assert len(hist) + 24 <= len(train)
        np.testing.assert_array_equal(w["target"][:48], train[len(hist) - 48: len(hist)])


def test_missing_files_and_bad_steps_are_refused_by_name(tmp_path):
    bench = _script()
    some = tmp_path / "t.ckpt"
    some.write_bytes(b"")
    with pytest.raises(SystemExit, match="--flow .*nope.ckpt: no such file"):
        bench.main(["--teacher", str(some), "--flow", str(tmp_path / "nope.ckpt"),
                    "--out", str(tmp_path / "o.json")])
    with pytest.raises(SystemExit, match=r"--steps must be in \[1, --flow-steps 16\]"):
        bench.main(["--teacher", str(some), "--flow", str(some), "--steps", "17",
                    "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()
