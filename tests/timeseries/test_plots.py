"""Fan charts: readable (labels, legend, run in the title), truth beside forecasts, atomic PNG."""

import numpy as np
import pytest

import domaindiff_timeseries.plots as plots

PNG = b"\x89PNG\r\n\x1a\n"


def _inputs(windows=2, context=12, horizon=6, samples=8):
    rng = np.random.default_rng(0)
    wins = [{"target": (10.0 * (i + 1) + rng.normal(size=(context + horizon, 1)))}
            for i in range(windows)]
    fc = {"tsdiff_q": rng.normal(size=(windows, samples, horizon, 1)) * 50,  # wide fan
          "seasonal_naive": np.zeros((windows, 1, horizon, 1))}
    return wins, fc, context


def test_fan_chart_writes_one_png_through_save_figure(tmp_path, monkeypatch):
    saved = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: saved.append(path)
                        or real(fig, path, **kw))
    wins, fc, c = _inputs()
    plots.fan_chart(wins, fc, c, tmp_path / "fan.png", n=2, run="x.ckpt, ddim, 10 steps")
    assert saved == [tmp_path / "fan.png"]
    assert (tmp_path / "fan.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["fan.png"]  # no temporary left


def test_fan_chart_says_what_and_which_run_with_history_truth_and_bands(tmp_path):
    wins, fc, c = _inputs()
    fig = plots.fan_chart(wins, fc, c, tmp_path / "fan.png", n=2, run="x.ckpt, ddim, 10 steps")
    assert "x.ckpt, ddim, 10 steps" in fig.get_suptitle()
    axes = np.array(fig.axes).reshape(2, 2)
    assert [a.get_title() for a in axes[0]] == ["tsdiff_q, test window 0",
                                                "seasonal_naive, test window 0"]
    assert all(a.get_xlabel() for a in axes[-1]) and all(a.get_ylabel() for a in axes[:, 0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["observed history", "true future", "90% interval", "50% interval",
                      "forecast median"]


@pytest.mark.parametrize("row", [0, 1])
def test_panels_of_one_series_share_the_y_range(tmp_path, row):
    wins, fc, c = _inputs()
    fig = plots.fan_chart(wins, fc, c, tmp_path / "fan.png", n=2)
    axes = np.array(fig.axes).reshape(2, 2)
    # the wide fan of tsdiff_q sets the range, and the naive panel of the same window shows it
    assert axes[row, 0].get_ylim() == axes[row, 1].get_ylim()
    lo, hi = axes[row, 1].get_ylim()
    assert hi - lo > 50


def test_panel_titles_name_the_forecast_start_date(tmp_path):
    import pandas as pd

    wins, fc, c = _inputs()
    wins[0]["forecast_start"] = pd.Timestamp("1995-03-04")
    wins[1]["forecast_start"] = pd.Timestamp("2021-01-01 05:00")
    fig = plots.fan_chart(wins, fc, c, tmp_path / "fan.png", n=2)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert "tsdiff_q, test window 0 (from 1995-03-04)" in titles
    assert "seasonal_naive, test window 1 (from 2021-01-01 05:00)" in titles
