"""Pictures of forecasts: fan charts beside the observed history and the true future.

Written through :func:`domaindiff.plotting.save_figure` (atomic, closes the figure).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from domaindiff.plotting import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BANDS = ((5, 95, 0.2, "90% interval"), (25, 75, 0.4, "50% interval"))


def _fan(ax: Axes, xs: np.ndarray, y: np.ndarray, samples: np.ndarray, c: int, lo: int) -> None:
    """One panel: history (black), true future (dashed), bands and median of ``samples``."""
    from matplotlib.ticker import EngFormatter

    ax.plot(xs[lo:c], y[lo:c], color="k", lw=0.9, label="observed history")
    ax.plot(xs[c - 1:], y[c - 1:], color="k", lw=1.0, ls="--", label="true future", zorder=3)
    hx = xs[c:]
    for a, b, alpha, label in BANDS:
        ax.fill_between(hx, np.percentile(samples, a, 0), np.percentile(samples, b, 0),
                        color="C0", alpha=alpha, lw=0, label=label)
    ax.plot(hx, np.median(samples, 0), color="C0", lw=1.2, label="forecast median")
    ax.axvline(0, color="0.6", lw=0.6)
    ax.yaxis.set_major_formatter(EngFormatter(sep=" "))  # 250 k, 1 M: the same in every row
    ax.grid(alpha=0.3, lw=0.4)


def _date(stamp) -> str:
    """A forecast start as a short date (with the time when it has one)."""
    import pandas as pd

    ts = pd.Timestamp(stamp)
    return str(ts.date()) if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")


def fan_chart(windows: list[dict], forecasts: dict[str, np.ndarray], context_length: int,
              path: Path | None, n: int = 3, show_context: int = 96, run: str = "",
              ylabel: str = "value") -> Figure:
    """Forecast fan charts of the first ``n`` test windows, one column per method; a PNG.

    Every panel shows the observed history, the true future (dashed), the 50% and 90% bands and
    the median of the method's samples. Panels of one window (a row) share the y-range, so the
    methods compare at a glance.

    Args:
        windows: test windows; ``target`` is (context + horizon, dim), the first dim is drawn.
        forecasts: method name -> samples (windows, samples, horizon, dim).
        context_length: length of the history part of ``target``.
        path: the PNG to write (None: return the figure unsaved, open).
        n: windows drawn (rows).
        show_context: history steps drawn before the forecast start.
        run: which run the picture is of (checkpoint name, sampler, steps), for the title.
        ylabel: the y-axis label (what the series measures, with its unit).

    Returns:
        the figure (saved and closed when ``path`` is given).
    """
    plt = pyplot()
    n = max(1, min(n, len(windows)))
    names = list(forecasts)
    fig, axes = plt.subplots(n, len(names), figsize=(4.2 * len(names), 2.6 * n + 0.9),
                             squeeze=False, sharey="row", sharex=True)
    c = context_length
    lo = max(0, c - show_context)
    for i in range(n):
        y = np.asarray(windows[i]["target"])[:, 0]
        xs = np.arange(len(y)) - c
        for j, name in enumerate(names):
            ax = axes[i][j]
            _fan(ax, xs, y, np.asarray(forecasts[name])[i, :, :, 0], c, lo)
            when = windows[i].get("forecast_start")
            ax.set_title(f"{name}, test window {i}" + (f" (from {_date(when)})"
                                                         if when is not None else ""), fontsize=9)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == n - 1:
                ax.set_xlabel("time step (0 = forecast start)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = len(labels) if len(names) > 1 else 2  # one narrow column: the legend wraps
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    heading = f"Forecast fan charts: {run}" if run else "Forecast fan charts"
    fig.suptitle(textwrap.fill(heading, max(30, int(fig.get_figwidth() * 11))), fontsize=10)
    legend_rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.1) / fig.get_figheight(), 1, 1))
    if path is not None:
        save_figure(fig, path, dpi=90)
    return fig
