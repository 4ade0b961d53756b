r"""``domaindiff distill``: distil a checkpoint into a few-step student (LightningCLI ``fit``).

    domaindiff distill --ckpt teacher.ckpt --method progressive --student-steps 2 \
        --data GaussianMixtureData [--teacher-steps 32] [--iterations 500] [--out student.ckpt] \
        [--trainer.* ...] [--config FILE | PLUGIN:NAME] [--ckpt_path last.ckpt]

The short flags are the :class:`~domaindiff.distill.lightning.Distillation` model's arguments
(``--ckpt`` is ``--model.teacher_ckpt``, ``--method`` ``--model.method``, ``--student-steps``
``--model.student_steps``, ``--teacher-steps``, ``--iterations``, ``--lr``, ``--teacher-sampler``,
``--teacher-options`` (a mapping), ``--teacher-guidance`` (a mapping: reflow-stochastic on the
teacher's guided sampler), ``--student-class`` (a conditional student of a guided coupling),
``--coupling-pool`` (reflow-stochastic: round 1's couplings drawn once and reused),
``--straighten-iterations`` (reflow-stochastic: round 2's length),
``--schedule``, ``--student-parametrization``, ``--out`` ``--model.student_out``, ``--seed``,
``--trust-checkpoint``); every other argument is LightningCLI's, as for ``domaindiff fit``: the
data (``--data``, e.g. the teacher's training config via ``--config``: its ``model:`` section is
ignored), the trainer, and ``--ckpt_path`` to resume an interrupted distillation from its
``last.ckpt`` (a :class:`~domaindiff.module.LastCheckpoint` is added to every run; a resume keeps
the arguments the run was started with: a flag given with another value than the checkpoint's is
refused, naming it). When the fit
ends, the student is written to ``--out`` (default ``<log dir>/student.ckpt``); sample it with
``domaindiff sample --ckpt student.ckpt`` (its sampler and steps are recorded in it).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

#: short flag -> Distillation init argument
FLAGS = {"--ckpt": "teacher_ckpt", "--method": "method", "--student-steps": "student_steps",
         "--teacher-steps": "teacher_steps", "--iterations": "iterations", "--lr": "lr",
         "--teacher-sampler": "teacher_sampler", "--schedule": "schedule",
         "--student-parametrization": "student_parametrization", "--out": "student_out",
         "--seed": "seed", "--teacher-options": "teacher_options",
         "--teacher-guidance": "teacher_guidance", "--student-class": "student_class",
         "--coupling-pool": "coupling_pool", "--straighten-iterations": "straighten_iterations"}
SWITCHES = {"--trust-checkpoint": "trust_checkpoint"}


def translate(argv: Sequence[str]) -> list[str]:
    """The LightningCLI ``fit`` arguments of a ``domaindiff distill`` command line.

    Raises:
        ValueError: a short flag without its value, or an unknown ``--method``.
    """
    from domaindiff.distill import METHODS

    out: list[str] = ["fit"]
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        key, sep, value = arg.partition("=")
        if key in FLAGS:
            if not sep:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise ValueError(f"distill {key}: expected a value")
                value, i = args[i + 1], i + 1
            if key == "--method" and value not in METHODS:
                raise ValueError(f"distill --method: unknown {value!r}; choose one of "
                                 f"{', '.join(METHODS)}")
            out.append(f"--model.{FLAGS[key]}={value}")
        elif arg in SWITCHES:
            out.append(f"--model.{SWITCHES[arg]}=true")
        else:
            out.append(arg)
        i += 1
    return out


def _strip_model_sections(args: list[str]) -> list[str]:
    """Configs written for ``fit`` name a DiffusionModule under ``model:``: drop that section.

    A temporary copy without ``model:`` replaces each such ``--config`` file.
    """
    import tempfile

    import yaml

    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
            try:
                with open(path, encoding="utf-8") as fh:
                    tree = yaml.safe_load(fh)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                tree = None  # LightningCLI reports it
            if isinstance(tree, dict) and "model" in tree:
                tree = {k: v for k, v in tree.items() if k != "model"}
                fd, tmp = tempfile.mkstemp(prefix="distill-", suffix=".yaml")
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    yaml.safe_dump(tree, fh)
                path = tmp
            out += [arg, path]
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def distill_cli(argv: Sequence[str], run: bool = True):
    """Build (and by default run) the LightningCLI of a distillation."""
    from domaindiff.cli import _import_plugins_for, checked_cli_class, resolve_config_args

    args = _strip_model_sections(translate(resolve_config_args(list(argv))))
    if not run:  # no subcommand then: LightningCLI parses fit's arguments alone
        args = args[1:]
    names = {arg: flag for flag, arg in FLAGS.items()}
    names.update({arg: flag for flag, arg in SWITCHES.items()})
    cli_class = checked_cli_class(names)  # a changed flag on resume is refused by its name
    from domaindiff.data import DomainDataModule
    from domaindiff.distill.lightning import Distillation

    _import_plugins_for(args)
    with warnings.catch_warnings():
        # the real command line stays in sys.argv (Lightning's DDP launcher restarts it)
        warnings.filterwarnings("ignore", message=".*args.*parameter.*")
        return cli_class(
            Distillation, DomainDataModule, subclass_mode_model=False, subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
            save_config_kwargs={"overwrite": True}, seed_everything_default=0, args=args,
            run=run)


def cmd_distill(argv: Sequence[str]) -> int:
    """``domaindiff distill ...`` (see the module docstring); returns the exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
        if argv:
            print("\nLightningCLI arguments: `domaindiff distill --print-help`")
            return 0
        return 2
    if argv[0] == "--print-help":
        distill_cli(["--help"])
        return 0
    distill_cli(argv)
    return 0
