"""The ``domaindiff`` command.

- ``domaindiff fit|validate|test|predict ...``: LightningCLI (jsonargparse, omegaconf mode) over
  DiffusionModule and DomainDataModule subclasses; short class names resolve after plugin
  discovery (``--model ToyDiffusion --data GaussianMixtureData``).
- ``domaindiff sample --ckpt C --sampler S --steps N --n K --out F``: load a checkpoint, write samples.
- ``domaindiff eval <plugin> key=value ...``: the plugin's evaluation script (a Hydra app).
- ``domaindiff distill --ckpt C --method M --student-steps N ...``: distil a checkpoint into a
  few-step student of the same class (LightningCLI ``fit``; see :mod:`domaindiff.distill.command`).
- ``domaindiff plugins [NAME ...]``: installed plugins, versions, DataModules, models, import
  errors (each plugin is imported to find out; name some to import only those).
- ``domaindiff configs [PLUGIN | PLUGIN:NAME]``: the configs the plugins ship inside their
  packages, each usable from any directory as ``--config PLUGIN:NAME`` (``fit``, ``validate``,
  ``test``, ``predict`` and ``eval``), e.g. ``domaindiff fit --config graphs:community_small``;
  ``domaindiff configs graphs:community_small`` prints the YAML (copy it to edit).
- ``domaindiff <plugin> ...``: a plugin's own subcommands (``<package>.commands.main(argv)``),
  e.g. ``domaindiff graphs import-gdss IN OUT``; the core's command names take precedence.

Plugins are found from their entry-point metadata and imported only when used: ``--help`` and
``configs`` import none; ``fit`` imports the plugins whose classes its command line and configs
name (a dotted ``class_path`` by its package; a short name such as ``--model GraphDiffusion`` by
the plugin whose ``__init__.py`` lists it, else by importing plugins one by one until one has
it); a command that names no class imports them all.

``DOMAINDIFF_THREADS=n`` sets torch's intra-op thread count for every command (on a shared
machine one thread per job is often several times faster than torch's default of all cores).

A bad input (a typo in a class, process, sampler or option name, an out-of-range setting, a
missing or refused checkpoint) ends the command with one line ``error: ...`` on stderr and exit
code 2. ``DOMAINDIFF_DEBUG=1`` shows the full traceback instead (for the Hydra eval apps
``HYDRA_FULL_ERROR=1`` does too).

Checkpoints are read with ``torch.load(weights_only=True)`` and may only name a DiffusionModule
subclass exported by domaindiff or an installed plugin (see :mod:`domaindiff.checkpoint`);
``--trust-checkpoint`` (eval apps: ``trust_checkpoint=true``) allows full unpickling of a file you
trust, never building any other class.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
DEFAULT_BATCH_SIZE = 256

#: where an exception raised inside these packages is a wrapper of the user's real error
_WRAPPERS = tuple(f"{os.sep}{name}{os.sep}" for name in
                  ("jsonargparse", "lightning", "lightning_utilities", "omegaconf", "hydra",
                   "pytorch_lightning")) + (f"{os.sep}argparse.py",)


def debug_enabled() -> bool:
    """Whether ``DOMAINDIFF_DEBUG`` asks for full tracebacks instead of one-line errors."""
    return os.environ.get("DOMAINDIFF_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _hydra_full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "").strip() not in ("", "0")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a bad input (as opposed to a bug) when they reach the CLI.

    The project's own error classes count only once their module is imported (an error of a
    module never imported cannot have been raised), so a light command's error stays light.
    """
    types: list[type[BaseException]] = [ValueError, KeyError, TypeError, OSError,
                                        argparse.ArgumentError]
    for module, name in (("domaindiff.checkpoint", "CheckpointError"),
                         ("domaindiff.data", "DatasetUnavailableError"),
                         ("omegaconf.errors", "OmegaConfBaseException")):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            types.append(kind)
    return tuple(types)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` reports a bad input, or is a library's wrapper of an error that does.

    Only explicit causes (``raise ... from``) count: an exception that merely happened while
    another was being handled is not thereby about the input.
    """
    kinds = _user_error_types()
    chain = _chain(err)
    return isinstance(err, kinds) or (_raised_in_wrapper(err) and
                                      any(isinstance(e, kinds) for e in chain[1:]))


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was explicitly raised from, outermost first."""
    out: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and all(cur is not e for e in out):
        out.append(cur)
        cur = cur.__cause__
    return out


def _raised_in_wrapper(err: BaseException) -> bool:
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return any(part in tb.tb_frame.f_code.co_filename for part in _WRAPPERS)


def _text(err: BaseException, name_type: bool = True) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err)
    if name_type and not isinstance(err, (ValueError, argparse.ArgumentError)) and \
            type(err).__name__ not in ("CheckpointError", "DatasetUnavailableError") and \
            "Error" in type(err).__name__ and not text.startswith(type(err).__name__):
        text = f"{type(err).__name__}: {text}"
    return text


def _is_omegaconf(err: BaseException) -> bool:
    return type(err).__module__.startswith("omegaconf")


def _one_line(err: BaseException, name_type: bool = True) -> str:
    text = _text(err, name_type).strip()
    if _is_omegaconf(err):  # omegaconf appends "full_key: ... object_type=..." lines
        return text.splitlines()[0] if text else ""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def error_message(err: BaseException) -> str:
    """The one line that tells the user what was wrong with their input.

    LightningCLI (jsonargparse) and Hydra wrap the error a class raised while it was built in
    several layers of "does not validate against any of the Union subtypes"; the useful message
    is the first one raised outside those libraries (e.g. ``unknown sampler 'ddimm'; available:
    ...``), prefixed with the class it came from. Failing that, the innermost message, prefixed
    with the config key jsonargparse reported.
    """
    chain = _chain(err)
    kinds = _user_error_types()
    joined = "\n".join(str(e) for e in chain)
    class_path = re.search(r"class_path[=:]? ?'([\w.]+)'", joined)
    own = next((e for e in chain if isinstance(e, kinds) and not _raised_in_wrapper(e)), None)
    if own is not None:
        text = _one_line(own)
        if class_path and own is not chain[0] and class_path.group(1) not in text:
            text = f"{class_path.group(1)}: {text}"
        return text
    text = _one_line(chain[-1], name_type=False)
    key = re.search(r'Parser key "([^"]+)"', joined)
    where = f"--{key.group(1)}" if key else ""
    if class_path:
        where = f"{where} ({class_path.group(1)})" if where else class_path.group(1)
    return f"{where}: {text}" if where and where not in text else text


def report_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an evaluation app's task function: a bad input ends it with one line and exit 2.

    Put it under ``@hydra.main``. With ``DOMAINDIFF_DEBUG=1`` or ``HYDRA_FULL_ERROR=1`` the
    exception propagates to Hydra unchanged (full traceback); errors that are not about the input
    (bugs) always do.
    """

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as err:
            if _hydra_full_error() or debug_enabled() or not is_user_error(err):
                raise
            print(f"error: {error_message(err)}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


def check_counts(cfg: Any, positive: Iterable[str] = (), nonnegative: Iterable[str] = (),
                 optional: Iterable[str] = ()) -> None:
    """Refuse config values that must be counts (``steps=0`` is not "the default").

    Args:
        cfg: a mapping (Hydra's DictConfig).
        positive: keys that must be integers >= 1.
        nonnegative: keys that must be integers >= 0.
        optional: keys (of either list) that may also be null.

    Keys the config does not hold are skipped.

    Raises:
        ValueError: naming the key, its value and what was expected.
    """
    optional = set(optional)
    for keys, low, what in ((positive, 1, "a positive integer"),
                            (nonnegative, 0, "an integer >= 0")):
        for key in keys:
            if key not in cfg:  # a setting this config does not have
                continue
            value = cfg.get(key)
            if value is None and key in optional:
                continue
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
            if not ok:
                null = " or null" if key in optional else ""
                raise ValueError(f"{key}={value!r}: expected {what}{null}")


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
    from domaindiff.plugins import discover, load_plugin, registered

    parser = argparse.ArgumentParser(prog="domaindiff plugins",
                                     description="List installed domaindiff plugins.")
    parser.add_argument("names", nargs="*", metavar="PLUGIN",
                        help="import and list only these plugins (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in registered()]
    if unknown:
        raise ValueError(f"plugins {unknown[0]}: no plugin named {unknown[0]!r}; installed: "
                         f"{', '.join(registered()) or 'none'}")
    infos = {n: load_plugin(n) for n in args.names} if args.names else discover()
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


#: keyword arguments of ``DiffusionModule.sample`` and of every sampler that are not options
_NOT_OPTIONS = frozenset({"guidance", "callback", "generator", "progress", "prior", "template",
                          "info", "sampler", "steps", "use_ema", "batch", "n"})
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _option_kind(param: inspect.Parameter) -> str | None:
    """``"bool"``, ``"int"``, ``"float"``, ``"str"`` or None (anything) for a sampler option."""
    ann = param.annotation
    if isinstance(ann, str) and ann in ("bool", "int", "float", "str"):
        return ann
    if isinstance(ann, type) and ann in (bool, int, float, str):
        return ann.__name__
    default = param.default
    for kind in (bool, int, float, str):
        if type(default) is kind:
            return kind.__name__
    return None


def _convert_option(sampler: str, key: str, value: str, kind: str | None) -> Any:
    """Convert ``--option key=value`` to the type the sampler's default has."""
    expected = {"bool": "true or false", "int": "an integer", "float": "a number",
                "str": "a string"}
    try:
        if kind == "bool":
            if value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
            raise ValueError(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str":
            return value
    except ValueError:
        raise ValueError(f"--option {key}={value}: sampler {sampler!r} expects "
                         f"{expected[kind or 'str']} for {key!r}") from None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def sampler_options(sampler: str, items: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items against the keyword options of sampler ``sampler``.

    Raises:
        ValueError: unknown sampler, malformed item, an option the sampler does not take (the
            message lists those it takes) or a value of the wrong type.
    """
    from domaindiff.samplers import get_sampler

    params = inspect.signature(get_sampler(sampler)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {n: p for n, p in params.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in _NOT_OPTIONS}
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        if key not in accepted and (key in _NOT_OPTIONS or not takes_any):
            names = ", ".join(sorted(accepted)) or "none"
            raise ValueError(f"--option {key}: sampler {sampler!r} has no option {key!r}; "
                             f"accepted: {names}")
        param = accepted.get(key)
        options[key] = _convert_option(sampler, key, value,
                                       _option_kind(param) if param is not None else None)
    return options


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; give a file name, e.g. "
                         f"{out / 'samples.pt'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"--out {out}: {parent} is a file, not a directory")


def _cmd_sample(argv: Sequence[str]) -> int:
    import torch

    from domaindiff.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(prog="domaindiff sample",
                                     description="Load a checkpoint and write samples.")
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt)")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="network evaluations")
    parser.add_argument("--n", type=int, default=64, help="number of samples")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"samples drawn at once (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--out", default="samples.pt", help="output file (.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option, e.g. --option eta=1.0 (repeatable; checked against "
                             "the sampler's keyword arguments)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling of a checkpoint you trust (it can run code); "
                             "the class it names must still be an exported DiffusionModule")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    for flag, value in (("--n", args.n), ("--steps", args.steps),
                        ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    out = Path(args.out)
    _check_out(out)
    if args.sampler is not None:
        options = sampler_options(args.sampler, args.option)
    model = load_checkpoint(args.ckpt, trust=args.trust_checkpoint)
    sampler = args.sampler or model.default_sampler
    if args.sampler is None:
        options = sampler_options(sampler, args.option)
    gen = torch.Generator().manual_seed(args.seed)
    chunks = []
    done = 0
    while done < args.n:
        k = min(args.batch_size, args.n - done)
        chunks.append({key: v.cpu() for key, v in model.sample(
            k, sampler=sampler, steps=args.steps, generator=gen,
            progress=not args.no_progress, **options).items()})
        done += k
    samples = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_samples(samples, out)
    print(f"wrote {args.n} samples to {out}")
    return 0


def _cmd_configs(argv: Sequence[str]) -> int:
    """``domaindiff configs [plugin | plugin:name]``: list the shipped configs, or print one."""
    from domaindiff.plugins import all_configs, config_description, plugin_configs, registered, resolve_config

    parser = argparse.ArgumentParser(
        prog="domaindiff configs",
        description="The configs the installed plugins ship, usable anywhere as "
                    "`--config <plugin>:<name>` (no checkout needed).")
    parser.add_argument("which", nargs="?", default=None, metavar="PLUGIN[:NAME]",
                        help="a plugin (list its configs) or plugin:name (print that YAML)")
    args = parser.parse_args(argv)
    which = args.which
    if which is not None and ":" in which:
        try:
            text = resolve_config(which).read_text(encoding="utf-8")
        except ValueError as err:
            raise ValueError(f"configs {err}") from None
        print(text, end="")
        return 0
    if which is None:
        configs = all_configs()
    elif which in registered():
        configs = {which: plugin_configs(which)}
    else:
        raise ValueError(f"configs {which}: no plugin named {which!r}; installed: "
                         f"{', '.join(registered()) or 'none'}")
    rows = [(f"{plugin}:{name}", str(path), config_description(path))
            for plugin, named in configs.items() for name, path in named.items()]
    width = max((len(r[0]) for r in rows), default=0)
    for name, path, description in rows:
        print(f"{name:{width}s}  {description}\n{'':{width}s}  {path}")
    if not rows:
        print("no configs shipped" + (f" by plugin {which!r}" if which else ""))
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


def _hydra_config_args(argv: Sequence[str]) -> list[str]:
    """``--config plugin:name`` or ``--config FILE`` as Hydra's ``--config-path/--config-name``."""

    def hydra(flag: str, value: str, joined: bool) -> list[str]:
        path = Path(_config_file(value)).resolve()
        if not path.is_file():
            raise ValueError(f"--config {value}: no such file; give <plugin>:<name> (see "
                             "`domaindiff configs`) or the path of a YAML file")
        return [f"--config-path={path.parent}", f"--config-name={path.stem}"]

    # Hydra's own -c is --cfg, so only the long spelling is ours
    return _replace_config_args(argv, ("--config",), hydra)


def _cmd_eval(argv: Sequence[str]) -> int:
    from domaindiff.plugins import get_plugin

    if not argv or argv[0].startswith("-"):
        from importlib.metadata import entry_points

        from domaindiff.plugins import GROUP

        names = ", ".join(sorted(ep.name for ep in entry_points(group=GROUP)))
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print("usage: domaindiff eval <plugin> [key=value ...] [--multirun]\n"
              f"plugins: {names}\n"
              "`domaindiff eval <plugin> --help` shows the plugin's settings (a Hydra app).",
              file=sys.stdout if asked else sys.stderr)
        if argv and not asked:
            print(f"error: unknown option {argv[0]!r}; give a plugin name first",
                  file=sys.stderr)
        return 0 if asked else 2
    name, rest = argv[0], [_quote_override(a) for a in _hydra_config_args(argv[1:])]
    # Hydra's parser takes the overrides as one positional list: put flags first
    rest = [a for a in rest if a.startswith("-")] + [a for a in rest if not a.startswith("-")]
    try:
        plugin = get_plugin(name)
    except (KeyError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = f"{plugin.__name__}.evaluate"
    try:
        run = __import__(target, fromlist=["main"]).main
    except ModuleNotFoundError as err:
        if err.name != target:  # the script exists but needs something missing
            print(f"error: plugin {name!r}: its evaluation script needs {err.name}: {err}",
                  file=sys.stderr)
            return 2
        from domaindiff.evaluation import default_main  # no script: the generic app

        run = default_main(name)
    except ImportError as err:
        print(f"error: plugin {name!r}: its evaluation script failed to import: {err}",
              file=sys.stderr)
        return 2
    old = sys.argv
    sys.argv = [f"domaindiff eval {name}", *rest]
    try:
        run()
    except SystemExit as ex:
        return int(ex.code or 0)
    finally:
        sys.argv = old
    return 0


def _config_file(value: str) -> str:
    """``plugin:name`` as the path of that plugin's shipped config; any other value unchanged."""
    from domaindiff.plugins import is_config_name, resolve_config

    if is_config_name(value):
        try:
            return str(resolve_config(value))
        except ValueError as err:
            raise ValueError(f"--config {err}") from None
    return value


def _replace_config_args(argv: Sequence[str], flags: tuple[str, ...],
                         replace: Callable[[str, str, bool], list[str]]) -> list[str]:
    """``argv`` with every config argument replaced by ``replace(flag, value, joined)``.

    A config argument is one of ``flags`` followed by its value, or ``--config=VALUE``
    (``joined``); a flag with no value after it is kept as it is.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in flags and i + 1 < len(args):
            out += replace(arg, args[i + 1], False)
            i += 2
        elif arg.startswith("--config="):
            out += replace("--config", arg[len("--config="):], True)
            i += 1
        else:
            out.append(arg)
            i += 1
    return out


def resolve_config_args(argv: Sequence[str]) -> list[str]:
    """Replace every ``--config plugin:name`` (``-c``, ``--config=``) by the shipped file's path."""

    def resolve(flag: str, value: str, joined: bool) -> list[str]:
        return [f"{flag}={_config_file(value)}"] if joined else [flag, _config_file(value)]

    return _replace_config_args(argv, ("--config", "-c"), resolve)


def _model_items(cfg: Any) -> dict[str, Any]:
    """The model section of a parsed (sub)config as flat ``{dotted key: value}`` ({} if none)."""
    model = cfg.get("model") if cfg is not None else None
    if model is None:
        return {}
    if not hasattr(model, "items"):  # a bare class name
        return {"class_path": model}
    return dict(model.items())


def _given_name(key: str, argv: Sequence[str],
                short_flags: Mapping[str, str]) -> tuple[str, str]:
    """How the user gave model argument ``key`` (``init_args.lr``): ``(name, where)``."""
    arg = key.removeprefix("init_args.")
    flags = [f"--model.{key}", f"--model.{arg}"] if key != "class_path" else ["--model"]
    typed = [a.partition("=")[0] for a in argv if a.partition("=")[0] in flags]
    if typed:
        return short_flags.get(arg, typed[-1]), ""
    if any(a.partition("=")[0] in ("--model", "--model.init_args") for a in argv):
        return f"model.{key}", " (from --model)"
    return f"model.{key}", " (from --config)"


def _last_line(err: BaseException) -> str:
    """The last line of an exception's message (its repr when it has none)."""
    text = str(err).strip()
    return text.splitlines()[-1] if text else repr(err)


def _same_model_class(a: Any, b: Any) -> bool:
    """Whether two class paths name one exported model; False when either names none.

    ``domaindiff.toy.ToyDiffusion`` (a config's spelling) and ``domaindiff.toy.model.ToyDiffusion``
    (the class recorded in a checkpoint) name the same class.
    """
    from domaindiff.checkpoint import CheckpointError, resolve_class

    try:
        return resolve_class(a) is resolve_class(b)
    except CheckpointError:
        return False


def changed_resume_arguments(given: Any, before: Any, after: Any, ckpt_path: str,
                             argv: Sequence[str],
                             short_flags: Mapping[str, str] | None = None) -> str | None:
    """Why a resume would silently drop model arguments the user gave, or None if it would not.

    LightningCLI replaces the model's config by the checkpoint's ``hyper_parameters`` when
    ``--ckpt_path`` is a file. An argument the user gave (on the command line or in a
    ``--config``: it is in ``given``) whose value differs from the checkpoint's is refused;
    defaults, and given values equal to the checkpoint's, resume as before.

    Args:
        given: the subcommand's config parsed without defaults.
        before: the subcommand's config as parsed (defaults included).
        after: the same once the checkpoint's hyper-parameters replaced the model's.
        ckpt_path: the checkpoint, for the message.
        argv: the LightningCLI arguments, to name each flag as given.
        short_flags: model argument -> the flag to name it by (``domaindiff distill``'s).

    Returns:
        One line naming each changed argument, its value and the checkpoint's.
    """
    given_keys = _model_items(given)
    old, new = _model_items(before), _model_items(after)
    changed = []
    for key in given_keys:
        if key in new and old.get(key) != new[key] and not (
                key == "class_path" and _same_model_class(old.get(key), new[key])):
            name, where = _given_name(key, argv, short_flags or {})
            changed.append(f"{name}={old.get(key)!r}{where}: the checkpoint {ckpt_path} was started "
                           f"with {new[key]!r}")
    if not changed:
        return None
    return ("; ".join(changed) + "; a run from --ckpt_path keeps the model arguments the "
            "checkpoint was started with (drop the argument, give the checkpoint's value, or "
            "start a new run without --ckpt_path)")


def checked_cli_class(short_flags: Mapping[str, str] | None = None) -> type[LightningCLI]:
    """LightningCLI that vets ``--ckpt_path`` before Lightning reads its hyper-parameters.

    Both ``domaindiff fit|validate|test|predict`` and ``domaindiff distill`` build theirs from it.
    A resume whose explicitly given model arguments differ from the checkpoint's is refused
    (:func:`changed_resume_arguments`) before anything is built or written.

    Args:
        short_flags: model argument -> the flag the error names it by (``domaindiff distill``).
    """
    from lightning.pytorch.cli import LightningCLI

    from domaindiff.checkpoint import check_resume_checkpoint

    class DomainDiffCLI(LightningCLI):
        """LightningCLI that vets ``--ckpt_path`` before Lightning reads its hyper-parameters."""

        def parse_arguments(self, parser: Any, args: Any) -> None:
            self._domaindiff_args = args
            super().parse_arguments(parser, args)

        def _parse_ckpt_path(self) -> None:
            sub = self.config.get("subcommand")
            ckpt_path = self.config[sub].get("ckpt_path") if sub else None
            if not ckpt_path:
                super()._parse_ckpt_path()
                return
            check_resume_checkpoint(ckpt_path)
            before = self.config.clone()
            if Path(ckpt_path).is_file():
                self._apply_checkpoint_hparams(sub, str(ckpt_path))
            else:  # "last", "best", "registry:...": Lightning resolves them later
                super()._parse_ckpt_path()
            args = getattr(self, "_domaindiff_args", None)
            if isinstance(args, Mapping):  # a config object, not a command line
                argv: list[str] = []
                given = self.parser.parse_object(args, defaults=False)
            else:
                argv = list(sys.argv[1:] if args is None else args)
                given = self.parser.parse_args(argv, defaults=False)
            why = changed_resume_arguments(given.get(sub), before[sub], self.config[sub],
                                           str(ckpt_path), argv, short_flags)
            if why:
                raise ValueError(why)

        def _apply_checkpoint_hparams(self, sub: str, ckpt_path: str) -> None:
            """Lightning's ``_parse_ckpt_path``, for checkpoints written outside LightningCLI too.

            LightningCLI names the model class in ``hyper_parameters["_class_path"]``; checkpoints
            written by a plain ``Trainer`` (``domaindiff distill --out``, ``import-gdss``, a
            user's script) do not, and Lightning then parses their hyper-parameters as options
            of the base class (``Option 'dim' is not accepted``). The class recorded by every
            DiffusionModule (``checkpoint["domaindiff"]["class_path"]``, vetted by
            :func:`check_resume_checkpoint`) names it instead.
            """
            import torch

            ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
            hparams = dict(ckpt.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            if not hparams:
                return
            meta = ckpt.get("domaindiff")
            class_path = meta.get("class_path") if isinstance(meta, Mapping) else None
            if "_class_path" in hparams or class_path is None:
                # LightningCLI's own checkpoints, and fixed-class models (the distiller)
                try:
                    super()._parse_ckpt_path()
                except (SystemExit, Exception) as err:
                    raise ValueError(f"checkpoint {ckpt_path}: its hyper_parameters do not fit "
                                     f"the configured model and name no model class (no "
                                     f"'_class_path', no 'domaindiff.class_path'): "
                                     f"{_last_line(err)}") from err
                return
            tree = {sub: {"model": {"class_path": class_path, "dict_kwargs": hparams}}}
            self.config = self.parser.parse_object(tree, self.config)

    return DomainDiffCLI


#: LightningCLI arguments whose value names the model or data class
_CLASS_ARGS = ("--model", "--data", "--model.class_path", "--data.class_path", "--model.help",
               "--data.help")


def _class_values(tree: Any, key: str | None = None) -> Iterable[str]:
    """Class names in a parsed config: ``class_path`` values and ``model:``/``data:`` strings."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _class_values(v, str(k))
    elif isinstance(tree, list):
        for v in tree:
            yield from _class_values(v, key)
    elif isinstance(tree, str) and key in ("class_path", "model", "data"):
        yield tree


def _config_classes(path: str) -> list[str]:
    """Class names a config file mentions ([] if it does not parse: LightningCLI reports that)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            tree = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return list(_class_values(tree))


def classes_named(argv: Sequence[str]) -> list[str]:
    """The class names a LightningCLI command line names (its configs included), in order."""
    args = list(argv)
    names: list[str] = []
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if not sep:
            value = args[i + 1] if i + 1 < len(args) else ""
        if key in ("--config", "-c") and value:
            names += _config_classes(value)
        elif key in _CLASS_ARGS and value and not value.startswith("-"):
            if value.lstrip().startswith("{"):
                import yaml

                try:
                    names += list(_class_values(yaml.safe_load(value), key.lstrip("-")))
                except yaml.YAMLError:
                    pass
            else:
                names.append(value)
    return names


def plugins_needed(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """Which plugins a LightningCLI command line needs, found without importing any.

    Returns:
        ``(plugins, short names no plugin's __init__ mentions)``, or None when the command names
        no model or data class at all (then every plugin is imported, as ``--help`` needs).
    """
    from domaindiff.plugins import plugins_providing, registered

    names = classes_named(argv)
    targets = {ep.value: name for name, ep in registered().items()}
    found: list[str] = []
    unknown: list[str] = []
    for name in names:
        hits = plugins_providing(name)
        if hits is None:
            unknown.append(name)
        found += [h for h in hits or [] if h not in found]
    for arg in argv:  # any other dotted path into a plugin, e.g. a callback's class_path
        for target, plugin in targets.items():
            if plugin not in found and re.search(rf"(?<![\w.]){re.escape(target)}\.", arg):
                found.append(plugin)
    if not names and not found:
        return None
    return found, unknown


def _import_plugins_for(argv: Sequence[str]) -> None:
    """Import the plugins a LightningCLI command needs (all of them if it cannot be told)."""
    from domaindiff.plugins import discover, find_short_name, load_plugin, loaded

    needed = plugins_needed(argv)
    if needed is None:
        discover()
    else:
        plugins, unknown = needed
        for name in plugins:
            load_plugin(name)
        for short in unknown:  # a short name no plugin's __init__ lists: search one by one
            find_short_name(short)
    for info in loaded().values():
        if not info.ok:
            print(f"warning: plugin {info.name!r} failed to import: {info.error}",
                  file=sys.stderr)


def lightning_cli(argv: Sequence[str] | None = None, run: bool = True):
    """Run (or build, with ``run=False``) the LightningCLI over the plugins the command needs.

    ``--config plugin:name`` anywhere in ``argv`` is the config that plugin ships. Only the
    plugins that provide the classes the command line (and its configs) name are imported: a
    dotted ``class_path`` selects the plugin whose package prefixes it, a short name the plugin
    whose ``__init__.py`` lists it; a short name none lists makes the plugins import one by one
    until one provides it; a command naming no class at all imports every plugin.
    """
    # names resolve before the heavy imports: a typo is reported at once
    resolved = resolve_config_args(sys.argv[1:] if argv is None else argv)
    cli_class = checked_cli_class()

    from domaindiff.data import DomainDataModule
    from domaindiff.module import DiffusionModule

    old_argv = sys.argv
    # LightningCLI warns when it is given both sys.argv and args; but keep a real command line:
    # Lightning's DDP launcher starts the other ranks with sys.argv
    from_command_line = argv is None or list(sys.argv[1:]) == list(argv)
    _import_plugins_for(resolved)
    if from_command_line:
        sys.argv = [old_argv[0], *resolved]
        argv = None
    else:
        sys.argv = ["domaindiff"]
        argv = resolved
    try:
        return cli_class(
            DiffusionModule,
            DomainDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            # parse errors are raised (main prints one line), not printed with the whole usage
            parser_kwargs={"parser_mode": "omegaconf", "exit_on_error": False},
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=argv,
            run=run,
        )
    finally:
        sys.argv = old_argv


CORE_COMMANDS = (*LIGHTNING_COMMANDS, "sample", "eval", "distill", "plugins", "configs")


def _cmd_plugin(name: str, argv: Sequence[str]) -> int:
    """``domaindiff <plugin> ...``: run ``<plugin package>.commands.main(argv)``.

    Only that plugin is imported. A plugin without a ``commands`` module is an error (one line).
    """
    import importlib

    from domaindiff.plugins import get_plugin

    try:
        target = get_plugin(name).__name__
    except (KeyError, ImportError) as err:
        print(f"error: {_text(err, name_type=False)}", file=sys.stderr)
        return 2
    module_name = f"{target}.commands"
    try:
        commands = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise ValueError(f"plugin {name!r} has no subcommands (no module {module_name}); "
                         f"see `domaindiff --help`") from None
    entry = getattr(commands, "main", None)
    if not callable(entry):
        raise ValueError(f"plugin {name!r}: {module_name} has no main(argv) function")
    try:
        code = entry(list(argv))
    except SystemExit as ex:  # an argparse-based main exits on --help and on bad arguments
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 2)
    return int(code or 0)


def _dispatch(cmd: str, rest: list[str]) -> int:
    if cmd == "configs":  # reads files only: no torch to configure
        return _cmd_configs(rest)
    set_threads_from_env()
    if cmd == "plugins":
        return _cmd_plugins(rest)
    if cmd == "sample":
        return _cmd_sample(rest)
    if cmd == "eval":
        return _cmd_eval(rest)
    if cmd == "distill":
        from domaindiff.distill.command import cmd_distill

        return cmd_distill(rest)
    if cmd in LIGHTNING_COMMANDS:
        lightning_cli([cmd, *rest])
        return 0
    from domaindiff.plugins import registered

    if cmd in registered():
        return _cmd_plugin(cmd, rest)
    extra = sorted(_plugin_command_names())
    print(f"error: unknown command {cmd!r}; use {', '.join((*CORE_COMMANDS, *extra))}",
          file=sys.stderr)
    return 2


def _plugin_command_names() -> list[str]:
    """Plugins that offer subcommands, not shadowed by a core command."""
    from domaindiff.plugins import plugin_commands

    return [n for n in plugin_commands() if n not in CORE_COMMANDS]


def _print_help() -> None:
    """The ``--help`` text: this module's docstring and the plugins' subcommands (none imported)."""
    from domaindiff.plugins import plugin_commands

    print(__doc__.strip())
    extra = {n: d for n, d in plugin_commands().items() if n not in CORE_COMMANDS}
    names = ",".join((*CORE_COMMANDS, *extra))
    print(f"\nusage: domaindiff {{{names}}} ...")
    if extra:
        print("\nplugin subcommands (`domaindiff <plugin> --help` for each):")
        for name, summary in extra.items():
            print(f"  {name:14s} {summary}".rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``domaindiff`` command.

    Returns:
        The exit code: 0, or 2 for a bad input (one ``error:`` line on stderr; set
        ``DOMAINDIFF_DEBUG=1`` for the traceback).
    """
    from domaindiff.quiet import quiet_third_party
    quiet_third_party()  # hide third-party notices that are not about the user's data
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        return _dispatch(cmd, rest)
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): not an error
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if debug_enabled() or (cmd == "eval" and _hydra_full_error()) or not is_user_error(err):
            raise
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
