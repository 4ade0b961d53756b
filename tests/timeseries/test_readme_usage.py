"""The plugin README's walk-through (DataFrame -> forecast, metrics table, fan chart, GluonTS
Predictor) runs exactly as written, so it cannot rot.

The code blocks of the README section "Your own data: from a DataFrame to a forecast" are
extracted and executed in order, in a temporary directory; the only change is Lightning's
``PL_TRAINER_MAX_STEPS=2`` environment variable (a default of every ``Trainer``), so the fit stops
after two optimizer steps.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[2] / "plugins" / "timeseries" / "README.md"
SECTION = "## Your own data: from a DataFrame to a forecast"


def readme_blocks(text: str, section: str = SECTION) -> list[str]:
    """The ```python blocks of one ``## `` section of a markdown text, in order."""
    if section not in text:
        raise AssertionError(f"README has no section {section!r}")
    body = text.split(section, 1)[1]
    body = re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]
    return re.findall(r"^```python\n(.*?)^```", body, flags=re.M | re.S)


def test_readme_blocks_are_found_and_end_at_the_section():
    md = "## A\n```python\nx = 1\n```\ntext\n```bash\nls\n```\n```python\ny = 2\n```\n## B\n" \
         "```python\nz = 3\n```\n"
    assert readme_blocks(md, "## A") == ["x = 1\n", "y = 2\n"]
    with pytest.raises(AssertionError, match="no section"):
        readme_blocks(md, "## C")


def test_the_readme_walk_through_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("statsmodels")
    import domaindiff_timeseries.plots as plots

    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 2, "the walk-through and the GluonTS Predictor block"
    figures = []
    real = plots.fan_chart
    monkeypatch.setattr(plots, "fan_chart",
                        lambda *a, **kw: figures.append(real(*a, **kw)) or figures[-1])
    monkeypatch.setenv("PL_TRAINER_MAX_STEPS", "2")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for code in blocks:
            exec(compile(code, str(README), "exec"), ns)  # noqa: S102
    out = capsys.readouterr().out
    # the data's own frequency path, and a fit of exactly two steps
    dm, model = ns["dm"], ns["model"]
    assert (dm.freq, dm.season, dm.context_length, dm.prediction_length) == ("W-SAT", 52, 104, 52)
    assert model.trainer.global_step == 2
    # the metrics table: one row per method, the four metrics, finite
    for name in ("TSDiff-Q (DDIM 10)", "seasonal naive"):
        assert name in out
    assert all(m in out for m in ("CRPS", "ND", "NRMSE", "MASE"))
    table = ns["metrics_table"](ns["forecasts"], ns["windows"], dm.context_length, dm.season)
    assert list(table.index) == ["TSDiff-Q (DDIM 10)", "seasonal naive"]
    assert np.isfinite(table.to_numpy(dtype=float)).all()
    # the fan chart: written, axes labelled, the methods of a row on one y-range
    png = tmp_path / "co2_fan.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    axes = np.array(fig.axes).reshape(-1, 2)
    assert axes[0, 0].get_ylabel() == "CO2 (ppm)"
    assert axes[-1, 0].get_xlabel() == "time step (0 = forecast start)"
    for row in axes:
        assert row[0].get_ylim() == row[1].get_ylim()
    # the GluonTS block: SampleForecasts of the last year, scored by GluonTS's Evaluator
    assert ns["predictor"].sampler == "sde_dpm_solver_pp_2m" and len(ns["per_item"]) == 1
    assert np.isfinite(ns["agg"]["mean_wQuantileLoss"])
    assert "CRPS of the last year:" in out
