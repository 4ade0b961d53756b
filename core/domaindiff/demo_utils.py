"""What every demo does the same way: fit a shipped config through the real CLI.

A demo trains with ``domaindiff fit`` (LightningCLI, so the demo exercises what a user runs),
logs to a CSV file under its output directory (no TensorBoard fallback notice, no hosted-logger
tips) and evaluates the checkpoint :func:`domaindiff.module.fitted_checkpoint` picks.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI

__all__ = ["demo_args", "fit_args", "fit_config"]

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"


def demo_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
              ) -> tuple[argparse.Namespace, list[str]]:
    """Parse a demo's command line: the demo's own options, the rest LightningCLI overrides.

    Adds ``--threads`` (torch CPU threads, default 1) to ``parser``, parses the options it knows
    and sets torch's thread count; the arguments it does not know are returned for
    :func:`fit_config` (e.g. ``--model.init_args.noise=gaussian``).

    Args:
        parser: the demo's parser with its own options.
        argv: the command line (default ``sys.argv[1:]``).

    Returns:
        ``(args, overrides)``.
    """
    import torch

    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 avoids oversubscription on a shared machine)")
    args, overrides = parser.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    return args, overrides


def fit_args(config: str | Path, out: str | Path, overrides: Sequence[str] = ()) -> list[str]:
    """The ``domaindiff fit`` command line :func:`fit_config` runs.

    The demo's settings (run directory and a CSV logger, both in ``out``) come before
    ``overrides``, so an override given on the demo's command line wins.

    Args:
        config: a config path or a ``plugin:name`` shipped config.
        out: the run's directory (checkpoints and ``lightning_logs/.../metrics.csv``).
        overrides: further LightningCLI arguments, e.g. ``--trainer.max_epochs=5``.
    """
    return ["fit", "--config", str(config),
            f"--trainer.default_root_dir={out}",
            f"--trainer.logger={CSV_LOGGER}",
            f"--trainer.logger.save_dir={out}",
            *overrides]


def fit_config(config: str | Path, out: str | Path,
               overrides: Sequence[str] = ()) -> tuple[LightningCLI, str]:
    """Fit ``config`` through the real CLI, quietly, logging to CSV in ``out``.

    Args:
        config: a config path or a ``plugin:name`` shipped config.
        out: the run's directory.
        overrides: further LightningCLI arguments (they win over the demo's settings).

    Returns:
        The finished CLI (its ``trainer``, ``model`` and ``datamodule``) and the checkpoint to
        evaluate (:func:`domaindiff.module.fitted_checkpoint`: the best, else ``last.ckpt``).

    Raises:
        FileNotFoundError: the fit wrote no checkpoint.
    """
    from domaindiff.cli import lightning_cli
    from domaindiff.module import fitted_checkpoint
    from domaindiff.quiet import quiet_third_party

    quiet_third_party()
    cli = lightning_cli(fit_args(config, out, overrides))
    return cli, fitted_checkpoint(cli.trainer)
