"""benchmarks/timeseries_m3_tourism.py: its --context parsing and --reuse of earlier rows."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_m3_tourism", ROOT / "benchmarks" / "timeseries_m3_tourism.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_context_option(bench):
    assert bench._contexts("m3_monthly=72,tourism_monthly=96") == {
        "m3_monthly": 72, "tourism_monthly": 96}
    assert bench._contexts("") == {}
    for bad in ("m3_monthly", "m3_monthly=0", "m3_monthly=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--context: <dataset>="):
            bench._contexts(bad)


def _dataset(bench, n: int = 4, h: int = 18):
    ds = object.__new__(bench.Dataset)
    ds.name, ds.wins, ds.h, ds.rows = "m3_monthly", [None] * n, h, []
    ds.save = lambda: None
    return ds


def _result(tmp: Path, series: int = 4, horizon: int = 18) -> Path:
    rows = [{"method": "AutoETS (statsforecast)", "MASE": 0.9, "sMAPE": 14.0, "CRPS": 0.09},
            {"method": "AutoARIMA (statsforecast)", "MASE": 0.8, "sMAPE": 13.0, "CRPS": 0.08,
             "series_scored": 2},
            {"method": "seasonal naive", "MASE": 1.1, "sMAPE": 17.0, "CRPS": 0.15},
            {"method": "ETS (Monash, published, all series)", "MASE": 0.865, "sMAPE": 14.1,
             "CRPS": None}]
    p = tmp / "old.json"
    p.write_text(json.dumps({"datasets": {"m3_monthly": {"series": series, "horizon": horizon,
                                                          "rows": rows}}}))
    return p


def test_reuse_copies_the_named_rows_and_marks_a_cut_one(bench, tmp_path):
    ds = _dataset(bench)
    p = _result(tmp_path)
    ds.reuse(str(p), ["AutoETS", "AutoARIMA", "ETS"])
    assert [r["method"] for r in ds.rows] == ["AutoETS (statsforecast)",
                                              "AutoARIMA (statsforecast) (2 of 4 series)"]
    assert all(r["reused_from"] == str(p) for r in ds.rows)
    ds.reuse(str(p), ["AutoETS"])  # a method already in the table is not copied twice
    assert len(ds.rows) == 2


def test_reuse_refuses_other_series_or_an_unreadable_file(bench, tmp_path):
    with pytest.raises(SystemExit, match=r"m3_monthly has 5 series at horizon 18, this run 4"):
        _dataset(bench).reuse(str(_result(tmp_path, series=5)), ["AutoETS"])
    with pytest.raises(SystemExit, match=r"--reuse: cannot read .*nope\.json"):
        _dataset(bench).reuse(str(tmp_path / "nope.json"), ["AutoETS"])
