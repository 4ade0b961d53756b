"""``domaindiff eval timeseries`` through the CLI: the core's EvalApp with the forecasting hooks.

An untrained small TSDiff checkpoint is written directly (no fit) and evaluated on a series file
the test writes; what is checked is the app's plumbing: the files, their contents, errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from domaindiff_timeseries.data import write_jsonl
from domaindiff_timeseries.model import TSDiff
from tests.catalogue import cli_message, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


def _setup(tmp_path):
    t = np.arange(300)
    path = tmp_path / "series.jsonl"
    write_jsonl([10 + np.sin(2 * math.pi * t / 8)], path)
    torch.manual_seed(0)
    model = TSDiff(dim=1, context_length=24, prediction_length=8, lags=[8], hidden=8,
                   num_blocks=1, emb_dim=16, d_state=4)
    raw = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(raw)
    torch.save(raw, tmp_path / "ts.ckpt")
    return [f"ckpt={tmp_path / 'ts.ckpt'}", "dataset=file", f"path={path}", "freq=h",
            "num_test_windows=2", "sampler=ddim", "steps=2", "num_samples=3"]


def test_cli_writes_forecast_samples_fan_chart_and_json_last(tmp_path):
    args, out = _setup(tmp_path), tmp_path / "ev"
    res = run_cli(["eval", "timeseries", *args, "methods=[tsdiff_q,seasonal_naive]",
                   "plot_windows=2", f"out_dir={out}"])
    assert res.returncode == 0, res.stderr[-2000:]
    written = json.loads((out / "metrics_ddim_2.json").read_text())
    assert written["files"] == ["samples_ddim_2.pt", "fan_ddim_2.png"]
    assert written["config"]["num_samples"] == 3 and written["plugin"] == "timeseries"
    forecasts = torch.load(out / "samples_ddim_2.pt", weights_only=True)
    assert forecasts["tsdiff_q"].shape == (2, 3, 8, 1)  # windows, samples, horizon, dim
    assert forecasts["seasonal_naive"].shape[0] == 2 and torch.isfinite(forecasts["tsdiff_q"]).all()
    assert (out / "fan_ddim_2.png").read_bytes()[:8] == PNG
    # without a forecaster (e.g. anomaly detection only): the JSON alone
    res = run_cli(["eval", "timeseries", *args, "methods=[]", f"out_dir={tmp_path / 'none'}"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "none").glob("*.*")) == ["metrics_ddim_2.json"]


def test_bad_settings_are_one_line(tmp_path):
    args = _setup(tmp_path)
    for arg, expect in {"methods=[prophet]": "methods: unknown ['prophet']",
                        "num_test_windows=0": "num_test_windows=0: expected a positive integer",
                        "threads=0": "threads=0: expected a positive integer or null"}.items():
        err = cli_message(["eval", "timeseries", *args, f"out_dir={tmp_path}", arg])
        assert len(err.strip().splitlines()) == 1 and expect in err, (arg, err)
    assert not list(tmp_path.glob("*.json"))
