"""The ``domaindiff`` command.

- ``domaindiff fit|validate|test|predict ...``: LightningCLI (jsonargparse, omegaconf mode) over
  DiffusionModule and DomainDataModule subclasses; short class names resolve after plugin
  discovery (``--model ToyDiffusion --data GaussianMixtureData``).
- ``domaindiff sample --ckpt C --sampler S --steps N --n K --out F``: load a checkpoint, write samples.
- ``domaindiff eval <plugin> key=value ...``: the plugin's evaluation script (a Hydra app).
- ``domaindiff plugins``: installed plugins, versions, DataModules, models, import errors.

``DOMAINDIFF_THREADS=n`` sets torch's intra-op thread count for every command (on a shared
machine one thread per job is often several times faster than torch's default of all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def set_threads_from_env() -> int | None:
    """Apply ``DOMAINDIFF_THREADS`` (a positive integer) to torch; return it, or None if unset.

    Raises:
        ValueError: naming the variable if its value is not a positive integer.
    """
    value = os.environ.get("DOMAINDIFF_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"DOMAINDIFF_THREADS must be a positive integer, got {value!r}")
    import torch

    torch.set_num_threads(int(value))
    return int(value)


def _cmd_plugins(argv: Sequence[str]) -> int:
    from domaindiff.plugins import discover

    parser = argparse.ArgumentParser(prog="domaindiff plugins",
                                     description="List installed domaindiff plugins.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    infos = discover()
    if args.json:
        print(json.dumps({n: {"target": i.target, "version": i.version, "ok": i.ok,
                              "datamodules": i.datamodules, "models": i.models,
                              "error": i.error} for n, i in infos.items()}, indent=2))
        return 0
    for name, info in infos.items():
        if info.ok:
            print(f"{name:14s} {info.version:8s} ok     models: {', '.join(info.models) or '-'}; "
                  f"data: {', '.join(info.datamodules) or '-'}")
        else:
            print(f"{name:14s} {info.version:8s} FAILED {info.error}")
    return 0


def _cmd_sample(argv: Sequence[str]) -> int:
    import torch

    from domaindiff.module import CheckpointError, load_checkpoint

    parser = argparse.ArgumentParser(prog="domaindiff sample",
                                     description="Load a checkpoint and write samples.")
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt)")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="network evaluations")
    parser.add_argument("--n", type=int, default=64, help="number of samples")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per batch")
    parser.add_argument("--out", default="samples.pt", help="output file (.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. --option eta=1.0 (repeatable)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling of a checkpoint you trust")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    options = {}
    for item in args.option:
        if "=" not in item:
            parser.error(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            options[k] = json.loads(v)
        except json.JSONDecodeError:
            options[k] = v
    try:
        model = load_checkpoint(args.ckpt, trust=args.trust_checkpoint)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gen = torch.Generator().manual_seed(args.seed)
    bs = args.batch_size or args.n
    chunks = []
    done = 0
    while done < args.n:
        k = min(bs, args.n - done)
        try:
            chunks.append(model.sample(k, sampler=args.sampler, steps=args.steps, generator=gen,
                                       progress=not args.no_progress, **options))
        except (ValueError, TypeError) as err:
            print(f"error: sampling failed: {err}", file=sys.stderr)
            return 2
        done += k
    samples = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    model.save_samples(samples, args.out)
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def _quote_override(arg: str) -> str:
    """Quote a Hydra override's value when it holds characters of the override grammar.

    Lightning names checkpoints ``epoch=4-step=160.ckpt``; unquoted, Hydra rejects the ``=``.
    """
    if arg.startswith("-") or "=" not in arg:
        return arg
    key, value = arg.split("=", 1)
    if value[:1] in ("'", '"', "[", "{") or "," in value:
        return arg
    if any(c in value for c in "=:()"):
        return f"{key}='{value}'"
    return arg


def _cmd_eval(argv: Sequence[str]) -> int:
    from domaindiff.plugins import discover, get_plugin

    if not argv or argv[0].startswith("-"):
        names = ", ".join(sorted(discover()))
        print(f"usage: domaindiff eval <plugin> [key=value ...] [--multirun]\nplugins: {names}",
              file=sys.stderr)
        return 2
    name, rest = argv[0], [_quote_override(a) for a in argv[1:]]
    # Hydra's parser takes the overrides as one positional list: put flags first
    rest = [a for a in rest if a.startswith("-")] + [a for a in rest if not a.startswith("-")]
    try:
        plugin = get_plugin(name)
    except (KeyError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        evaluate = __import__(f"{plugin.__name__}.evaluate", fromlist=["main"])
    except ImportError as err:
        print(f"error: plugin {name!r} has no evaluation script: {err}", file=sys.stderr)
        return 2
    old = sys.argv
    sys.argv = [f"domaindiff eval {name}", *rest]
    try:
        evaluate.main()
    except SystemExit as ex:
        return int(ex.code or 0)
    finally:
        sys.argv = old
    return 0


def lightning_cli(argv: Sequence[str] | None = None, run: bool = True):
    """Run (or build, with ``run=False``) the LightningCLI over every installed plugin."""
    from lightning.pytorch.cli import LightningCLI

    from domaindiff.data import DomainDataModule
    from domaindiff.module import DiffusionModule
    from domaindiff.plugins import discover

    for info in discover().values():
        if not info.ok:
            print(f"warning: plugin {info.name!r} failed to import: {info.error}",
                  file=sys.stderr)
    return LightningCLI(
        DiffusionModule,
        DomainDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=list(argv) if argv is not None else None,
        run=run,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``domaindiff`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: domaindiff {fit,validate,test,predict,sample,eval,plugins} ...")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        set_threads_from_env()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if cmd == "plugins":
        return _cmd_plugins(rest)
    if cmd == "sample":
        return _cmd_sample(rest)
    if cmd == "eval":
        return _cmd_eval(rest)
    if cmd in LIGHTNING_COMMANDS:
        lightning_cli([cmd, *rest])
        return 0
    print(f"error: unknown command {cmd!r}; use fit, validate, test, predict, sample, eval or "
          "plugins", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
