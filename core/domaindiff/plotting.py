"""Figures written by demos and evaluation apps: one headless backend, one atomic save.

    plt = pyplot()
    fig, ax = plt.subplots()
    ...
    save_figure(fig, out / "samples.png")

matplotlib is imported only when a figure is made (it is not a dependency of sampling or
training).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from domaindiff.data import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed).

    The backend is switched only if pyplot was not imported yet (a notebook keeps its own).
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically and close it.

    The image goes to a temporary file next to ``path`` that replaces ``path`` only once it is
    complete (:func:`domaindiff.data.atomic_write`): a failed or interrupted save leaves the
    previous file, or none, never half a picture. The figure is closed even when saving fails.

    Args:
        fig: the figure.
        path: the output file; its suffix picks the format (``.png``, ``.pdf``, ``.svg``, ...;
            PNG when it has none).
        dpi: resolution of raster formats.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_write(path) as fh:
            fig.savefig(fh, format=fmt, dpi=dpi)
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None:  # a figure made without pyplot is not registered there
            plt.close(fig)
    return path
