"""Quiet third-party output: hide the notices that are not the user's business, keep the rest.

The ``domaindiff`` command and every demo call :func:`quiet_third_party` first. It installs one
warning filter per known third-party notice, each matched by its message *and* the module that
issues it (never a blanket ignore), and drops Lightning's advertising tips from its loggers.
Everything else still shows: warnings about the user's data and settings (domaindiff's
``MissingValuesWarning`` or ``CacheWarning``, Lightning's notes on the user's Trainer options) and
Lightning's progress lines (``GPU available``, ``Trainer.fit stopped``).

Run with ``python -W default`` (or ``PYTHONWARNINGS=default``) to see every warning again: an
explicit warnings option on the command line wins and no filter is installed.

The module imports nothing heavy: calling it costs nothing at start-up.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from typing import NamedTuple

__all__ = ["NOISY_WARNINGS", "TIP_LOGGERS", "quiet_third_party"]


class Notice(NamedTuple):
    """One third-party warning that says nothing about the user's data or settings.

    Attributes:
        message: regular expression the start of the warning's text must match.
        category: the warning's class (subclasses match too).
        module: regular expression the start of the issuing module's name must match.
        why: why a user need not see it.
    """

    message: str
    category: type[Warning]
    module: str
    why: str


_LIGHTNING = r"(lightning\.pytorch|pytorch_lightning)\."

NOISY_WARNINGS: tuple[Notice, ...] = (
    Notice(r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
           _LIGHTNING + r"utilities\._pytree",
           "torch deprecates an API inside Lightning's own code; nothing the user can change"),
    Notice(r"Starting from v1\.9\.0, `tensorboardX` has been removed", UserWarning,
           _LIGHTNING + r"trainer\.connectors\.logger_connector",
           "the fallback to CSVLogger is the intended logger; our configs may set it explicitly"),
    Notice(r".*`always_return_as_numpy`", FutureWarning, r"monai\.",
           "MONAI's own metrics pass the deprecated argument to get_mask_edges"),
    Notice(r"Using `json`-module for json-handling", UserWarning, r"gluonts\.json",
           "speed hint at import; `pip install domaindiff-timeseries[fast]` installs orjson"),
    Notice(r"Using a non-tuple sequence for multidimensional indexing is deprecated", UserWarning,
           r"gluonts\.",
           "torch deprecates an indexing form inside GluonTS (DeepAR prints it on every batch)"),
)

TIP_LOGGERS: tuple[str, ...] = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing litlogger / litmodels" records, nothing else."""

    TIP = re.compile(r"\W*Tip: .*\[(litlogger|litmodels)\]\(https://pypi\.org/")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.TIP.match(record.getMessage())


def _install_log_filters() -> None:
    for name in TIP_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in log.filters):
            log.addFilter(_DropTips())


def quiet_third_party(force: bool = False) -> bool:
    """Install the targeted warning filters and the tip filters (idempotent).

    Call it first in a command's ``main``: a warning raised while a module is imported (GluonTS's
    JSON hint) is only caught if the filter is there before the import.

    Args:
        force: install the warning filters even when a ``-W`` option or ``PYTHONWARNINGS`` is
            set (tests use it inside ``warnings.catch_warnings``).

    Returns:
        True if the warning filters were installed, False if an explicit warnings option on the
        command line took precedence (the tip filters are installed either way).
    """
    _install_log_filters()
    if sys.warnoptions and not force:
        return False
    for notice in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=notice.message, category=notice.category,
                                module=notice.module)
    return True
