"""Pictures of trajectories (x-y projection): ground truth beside the sampled ones.

Written through :func:`domaindiff.plotting.save_figure` (atomic, closes the figure). Axes have
equal aspect, and panels compared with each other share their limits.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from domaindiff.plotting import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _points(parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    pts = torch.cat([p.reshape(-1, p.shape[-1])[:, :2].float() for p in parts])
    return pts[torch.isfinite(pts).all(1)]


def _limits(reference: tuple[torch.Tensor, ...], others: tuple[torch.Tensor, ...] = (),
            pad: float = 0.08, cap: float = 3.0) -> tuple[tuple[float, float], ...]:
    """Square x and y limits covering ``reference`` and ``others`` (last dim: coordinates).

    ``others`` (samples) widen the view to at most ``cap`` times the reference's extent, so a
    diverged sample runs off the panel instead of shrinking the ground truth to a dot.
    """
    ref = _points(reference)
    if not len(ref):
        return (-1.0, 1.0), (-1.0, 1.0)
    mid = (ref.min(0).values + ref.max(0).values) / 2
    half = max(float((ref - mid).abs().max()), 1e-6)
    extra = _points(others) if others else ref
    if len(extra):
        half = max(half, min(float((extra - mid).abs().max()), cap * half))
    half *= 1 + pad
    return tuple((float(m) - half, float(m) + half) for m in mid)  # type: ignore[return-value]


def _suptitle(fig: Figure, title: str) -> None:
    """The figure's title, wrapped to the figure's width (a long run name is not clipped)."""
    width = max(30, int(fig.get_figwidth() * 12))
    fig.suptitle(textwrap.fill(title, width), fontsize=9)


def _frame(ax: Axes, lims: tuple[tuple[float, float], ...], title: str, left: bool,
           bottom: bool) -> None:
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    if left:
        ax.set_ylabel("y")
    if bottom:
        ax.set_xlabel("x")
    else:  # the panel below has the same limits and labels them
        ax.tick_params(labelbottom=False)


def _style_legend(fig: Figure, styles: list[tuple[str, dict]]) -> float:
    """A figure legend of line styles in grey (colour = particle is said in its title).

    Returns:
        the fraction of the figure's height it takes at the bottom (for ``tight_layout``).
    """
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", **kw) for _, kw in styles]
    ncol = min(len(styles), max(1, int(fig.get_figwidth() // 2.2)))
    fig.legend(handles, [label for label, _ in styles], loc="lower center", ncol=ncol,
               fontsize=8, frameon=False, title="colour = particle", title_fontsize=8)
    return (0.22 * (-(-len(styles) // ncol) + 1) + 0.1) / fig.get_figheight()


def _agents(first: dict[str, torch.Tensor], i: int) -> range | list[int]:
    mask = first.get("mask")
    n = first["x"].shape[1]
    return range(n) if mask is None else [j for j in range(n) if bool(mask[i, j])]


def plot_forecasts(first: dict[str, torch.Tensor], path: Path | None, n: int = 4,
                   title: str = "", fit: str = "samples") -> Figure:
    """``n`` forecasts: ground truth (top row) beside the sampled futures (bottom row); a PNG.

    Both rows of an item share its limits and show the observed frames (solid, a circle at the
    first frame); the top row adds the true future (dashed, a star at its end), the bottom row
    every sample (thin, a cross at its end). Padded agents (``mask`` 0) are not drawn and do not
    count for the limits. With ``fit="samples"`` samples widen the limits to at most three times
    the extent of the observed and true frames; with ``fit="truth"`` (ETH-UCY: a few metres of
    walking among 20 spread samples) the limits are those of the observed and true tracks alone.

    Args:
        first: ``cond`` (B, N, Tc, D), ``x`` (B, N, T, D), ``samples`` (K, B, N, T, D) and
            optionally ``mask`` (B, N).
        path: the PNG to write (None: return the figure unsaved, open).
        n: items drawn (columns).
        title: what and which run (checkpoint, sampler, steps, metrics).
        fit: ``samples`` or ``truth`` (see above).

    Returns:
        the (saved, closed) figure.
    """
    if fit not in ("samples", "truth"):
        raise ValueError(f"fit: unknown {fit!r}; choose samples or truth")
    plt = pyplot()
    n = max(1, min(n, len(first["x"])))
    k = first["samples"].shape[0]
    fig, axes = plt.subplots(2, n, figsize=(3.0 * n, 7.2), squeeze=False)
    for i in range(n):
        cond, x, s = first["cond"][i], first["x"][i], first["samples"][:, i]
        keep = list(_agents(first, i))
        lims = _limits((cond[keep], x[keep]), (s[:, keep],) if fit == "samples" else ())
        for j in keep:
            c = f"C{j % 10}"
            for ax in axes[:, i]:
                ax.plot(cond[j, :, 0], cond[j, :, 1], color=c, lw=1.6)
                ax.plot(cond[j, 0, 0], cond[j, 0, 1], "o", color=c, ms=4, mfc="white")
            axes[0, i].plot(x[j, :, 0], x[j, :, 1], color=c, lw=1.4, ls="--")
            axes[0, i].plot(x[j, -1, 0], x[j, -1, 1], "*", color=c, ms=7)
            for smp in s:
                axes[1, i].plot(smp[j, :, 0], smp[j, :, 1], color=c, lw=0.6, alpha=0.5)
                axes[1, i].plot(smp[j, -1, 0], smp[j, -1, 1], "x", color=c, ms=3, alpha=0.7)
        _frame(axes[0, i], lims, f"item {i}: ground truth", i == 0, False)
        _frame(axes[1, i], lims, f"item {i}: {k} sampled", i == 0, True)
    bottom = _style_legend(fig, [("observed", {"lw": 1.6}),
                                 ("start", {"marker": "o", "ls": "", "ms": 4, "mfc": "white"}),
                                 ("ground-truth future", {"lw": 1.4, "ls": "--"}),
                                 ("true end", {"marker": "*", "ls": "", "ms": 7}),
                                 ("sampled future", {"lw": 0.6, "alpha": 0.6}),
                                 ("sampled end", {"marker": "x", "ls": "", "ms": 3})])
    _suptitle(fig, title or "trajectory forecasts")
    fig.tight_layout(rect=(0, bottom, 1, 1), h_pad=1.8)
    return _done(fig, path)


def plot_unconditional(sets: dict[str, torch.Tensor], path: Path | None, n: int = 4,
                       title: str = "") -> Figure:
    """``n`` test trajectories (top row) beside ``n`` generated ones (bottom row); a PNG.

    All panels share one set of limits, so sizes and spreads compare directly (generated ones
    widen them to at most three times the test data's extent).

    Args:
        sets: ``real`` and ``fake``, each (items, N, T, D).
        path: the PNG to write (None: return the figure unsaved, open).
        n: trajectories per row.
        title: what and which run (checkpoint, sampler, steps, scores).

    Returns:
        the (saved, closed) figure.
    """
    plt = pyplot()
    n = max(1, min(n, len(sets["real"]), len(sets["fake"])))
    lims = _limits((sets["real"][:n],), (sets["fake"][:n],))
    fig, axes = plt.subplots(2, n, figsize=(3.0 * n, 7.2), squeeze=False)
    for row, (key, name) in enumerate((("real", "test data"), ("fake", "generated"))):
        for i, ax in enumerate(axes[row]):
            traj = sets[key][i]
            for j in range(traj.shape[0]):
                ax.plot(traj[j, :, 0], traj[j, :, 1], color=f"C{j % 10}", lw=1.2)
                ax.plot(traj[j, 0, 0], traj[j, 0, 1], "o", color=f"C{j % 10}", ms=4,
                        mfc="white")
                ax.plot(traj[j, -1, 0], traj[j, -1, 1], "*", color=f"C{j % 10}", ms=6)
            _frame(ax, lims, f"{name} {i}", i == 0, row == 1)
    bottom = _style_legend(fig, [("path", {"lw": 1.2}),
                                 ("first frame", {"marker": "o", "ls": "", "ms": 4, "mfc": "white"}),
                                 ("last frame", {"marker": "*", "ls": "", "ms": 6})])
    _suptitle(fig, title or "unconditional trajectories")
    fig.tight_layout(rect=(0, bottom, 1, 1), h_pad=1.8)
    return _done(fig, path)


def plot_ade_vs_k(ade: torch.Tensor, fde: torch.Tensor, title: str = "",
                  cv: tuple[float, float] | None = None, path: Path | None = None) -> Figure:
    """ADE and FDE against the number of samples K, from one run's ``K`` samples per item.

    For each ``j <= K`` the first ``j`` samples give the average over them (what GeoTDM
    reports; flat in expectation) and the minimum over them (best of ``j``, falls with ``j``).

    Args:
        ade: ``(K, items)`` per-sample ADE.
        fde: ``(K, items)`` per-sample FDE.
        title: what and which run.
        cv: constant velocity's (ADE, FDE), drawn as horizontal lines.
        path: the PNG to write (None: return the figure unsaved, open).
    """
    plt = pyplot()
    k = ade.shape[0]
    js = list(range(1, k + 1))
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharex=True)
    for ax, err, name, ref in zip(axes, (ade, fde), ("ADE", "FDE"),
                                  (None, None) if cv is None else cv, strict=True):
        ax.plot(js, [float(err[:j].mean()) for j in js], "o-", label=f"{name} avg over K")
        ax.plot(js, [float(err[:j].min(0).values.mean()) for j in js], "s--",
                label=f"{name} min over K")
        if ref is not None:
            ax.axhline(ref, color="0.4", lw=1, ls=":", label="constant velocity")
        ax.set_xlabel("K (samples per trajectory)")
        ax.set_ylabel(f"{name} (data units)")
        ax.set_xticks(js if k <= 12 else js[::max(1, k // 10)])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _suptitle(fig, title or "ADE / FDE against K")
    fig.tight_layout()
    return _done(fig, path)


def plot_ade_vs_nfe(rows: list[dict], title: str = "", path: Path | None = None) -> Figure:
    """ADE and FDE (avg and min over K) against network evaluations, one line per sampler.

    Args:
        rows: metrics JSONs of the eval app (``sampler``, ``nfe``, ``ade_avg``, ``ade_min``,
            ``fde_avg``, ``fde_min``; optional ``cv_ade``, ``cv_fde``).
        title: what and which runs.
        path: the PNG to write (None: return the figure unsaved, open).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharex=True)
    samplers = sorted({r["sampler"] for r in rows})
    for ax, name in zip(axes, ("ade", "fde"), strict=True):
        for c, sampler in enumerate(samplers):
            pts = sorted((r["nfe"], r[f"{name}_avg"], r[f"{name}_min"]) for r in rows
                         if r["sampler"] == sampler)
            nfe = [p[0] for p in pts]
            ax.plot(nfe, [p[1] for p in pts], "o-", color=f"C{c}", label=f"{sampler}: avg over K")
            ax.plot(nfe, [p[2] for p in pts], "s--", color=f"C{c}", alpha=0.7,
                    label=f"{sampler}: min over K")
        cv = [r[f"cv_{name}"] for r in rows if f"cv_{name}" in r]
        if cv:
            ax.axhline(cv[0], color="0.4", lw=1, ls=":", label="constant velocity")
        ax.set_xscale("log")
        ticks = sorted({r["nfe"] for r in rows})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("network evaluations per trajectory (NFE)")
        ax.set_ylabel(f"{name.upper()} (data units)")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7)
    _suptitle(fig, title or "ADE / FDE against NFE")
    fig.tight_layout()
    return _done(fig, path)


def _done(fig: Figure, path: Path | None) -> Figure:
    """Save ``fig`` to ``path`` (atomically, closed) unless ``path`` is None."""
    if path is not None:
        save_figure(fig, path, dpi=90)
    return fig
