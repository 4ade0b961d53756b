"""Loading checkpoints without running code from them.

A domaindiff checkpoint is a Lightning checkpoint with a ``domaindiff.class_path`` entry naming
the :class:`~domaindiff.module.DiffusionModule` subclass that wrote it, and the ``hyper_parameters``
it was built with. :func:`load_checkpoint` guarantees:

- The file is read with ``torch.load(weights_only=True)``: only tensors and plain Python data are
  accepted. ``trust=True`` (CLI: ``--trust-checkpoint``) allows full unpickling of a file whose
  source you trust -- unpickling can run arbitrary code -- and nothing else.
- The class named in the file is looked up, as a string, in an allow-list: the DiffusionModule
  subclasses exported (``MODELS``) by the packages registered under the ``domaindiff.plugins``
  entry point (the core's toy plugin included). Nothing named by the file is imported or called
  before it matched, and a file naming anything else (``os.system``, ``builtins.eval``, a class that
  is not a DiffusionModule) is refused with one line naming the file and the class. This holds
  with and without ``trust``.
- A checkpoint without hyper-parameters is refused when its class takes arguments, rather than
  rebuilt silently with the defaults. (The DiffusionModule base records the init arguments of
  every subclass itself, see :func:`record_init_args`, so checkpoints written by this version always
  carry them.)
"""

from __future__ import annotations

import copy
import inspect
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from domaindiff.module import DiffusionModule


class CheckpointError(RuntimeError):
    """A checkpoint is missing, malformed, not trusted or names a class that may not be built."""


_PLAIN = (type(None), bool, int, float, str)


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is data that ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, _PLAIN) and _is_plain(v) for k, v in value.items())
    return False


def _outermost_init_frame(module: object, start: FrameType | None) -> FrameType | None:
    """The frame of the outermost ``__init__`` running on ``module``, walking out from ``start``."""
    outer = None
    frame = start
    while frame is not None and frame.f_code.co_name == "__init__":
        names = frame.f_code.co_varnames
        if not names or frame.f_locals.get(names[0]) is not module:
            break
        outer, frame = frame, frame.f_back
    return outer


def record_init_args(module: DiffusionModule) -> None:
    """Record the outermost subclass's init arguments as ``module.hparams``, if none are saved.

    Called from ``DiffusionModule.__init__``. The arguments are read from the frame of the
    outermost ``__init__`` running on ``module`` (the class the user instantiated), so they are the
    bound arguments with defaults applied; ``**kwargs`` are flattened in. A subclass that calls
    ``save_hyperparameters()`` itself (before or after ``super().__init__``) keeps its own choice.
    Nothing is recorded for the base class itself (its network and processes are objects, not
    settings) or when a value is not plain data (the checkpoint must load with
    ``weights_only=True``); :func:`load_checkpoint` then refuses the checkpoint instead of
    rebuilding it with defaults.
    """
    if len(module.hparams) > 0:
        return
    base_frame = sys._getframe(1)  # DiffusionModule.__init__
    outer = _outermost_init_frame(module, base_frame)
    if outer is None or outer is base_frame:
        return
    info = inspect.getargvalues(outer)
    if info.varargs and info.locals.get(info.varargs):
        return  # positional extras cannot be replayed by name: let loading refuse instead
    args = {name: info.locals[name] for name in info.args[1:] if name in info.locals}
    if info.keywords:
        args.update(info.locals.get(info.keywords) or {})
    if args and _is_plain(args):
        # what save_hyperparameters(dict) does, without its walk over the callers' frames
        module._set_hparams(args)
        # Lightning's HyperparametersMixin sets these without declaring them (nn.Module's
        # __getattr__ types them Tensor | Module)
        module._hparams_name = "kwargs"  # type: ignore[assignment]
        module._hparams_initial = copy.deepcopy(module._hparams)  # type: ignore[assignment]


def resolve_class(class_path: object, path: str | Path = "<checkpoint>") -> type:
    """The allow-listed DiffusionModule subclass named ``class_path``.

    Only installed plugins are imported (the entry points' own packages); the string from the file
    is compared with the names of the classes they export and is never imported itself.

    Raises:
        CheckpointError: ``class_path`` is not a string or names no exported DiffusionModule.
    """
    from domaindiff.plugins import exported_models

    if not isinstance(class_path, str):
        raise CheckpointError(f"checkpoint {path}: domaindiff.class_path must be a string, got "
                              f"{type(class_path).__name__}")
    allowed = exported_models(class_path)
    if class_path in allowed:
        return allowed[class_path]
    raise CheckpointError(
        f"checkpoint {path}: refusing class {class_path!r}: only DiffusionModule subclasses "
        f"exported by domaindiff or an installed plugin can be loaded (allowed: "
        f"{', '.join(sorted({_name(c) for c in allowed.values()})) or 'none'})")


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _unpickler_reason(err: BaseException) -> tuple[bool, str]:
    """Whether a weights-only failure is a pickled object (not bad bytes), and the short reason."""
    text = str(err).replace("\x1b[1m", "").replace("\x1b[0m", "")
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return True, found.group(1)
    after = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in after.splitlines() if ln.strip()]
    return False, lines[0][:200] if lines else ""


_TRUST_HINT = "if you trust its source, pass trust=True (CLI: --trust-checkpoint)"


def _read(path: Path, trust: bool, map_location: str, hint: str = _TRUST_HINT) -> Any:
    """``torch.load`` with ``weights_only=True`` (full unpickling only with ``trust``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        is_object, reason = _unpickler_reason(err)
        if not trust:
            if not is_object:
                raise CheckpointError(f"checkpoint {path} is not a readable torch file (corrupt, "
                                      f"truncated or not a checkpoint: {reason})") from err
            raise CheckpointError(
                f"checkpoint {path} holds a pickled Python object ({reason}) that "
                f"weights_only=True refuses; {hint}") from err
    except Exception as err:  # noqa: BLE001 - torch raises several types for a bad file
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (corrupt, "
                              f"truncated or not a checkpoint: {type(err).__name__}: "
                              f"{_first_line(err)})") from err
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: "
                              f"{type(err).__name__}: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():
        line = line.replace("\x1b[1m", "").replace("\x1b[0m", "").strip()
        if line:
            return line[:300]
    return ""


def _required_args(cls: type[Any]) -> list[str]:
    """Names of the init parameters of ``cls`` (after ``self``), ``*args``/``**kwargs`` excluded."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in list(params)[1:] if p.kind not in skip]


def _check_path(path: Path) -> None:
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.ckpt"))
        hint = f"; it holds {', '.join(inside[:5])}" if inside else ""
        raise CheckpointError(f"checkpoint {path} is a directory, expected a .ckpt file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")


def load_checkpoint(path: str | Path, trust: bool = False, map_location: str = "cpu",
                    strict: bool = True) -> DiffusionModule:
    """Load a DiffusionModule from a Lightning checkpoint written by this library.

    Args:
        path: the ``.ckpt`` file.
        trust: allow full unpickling of the file (it can run code); the class allow-list applies
            regardless.
        map_location: device of the loaded tensors.
        strict: ``load_state_dict`` strictness.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: missing, truncated or malformed file, untrusted pickle, a class that is
            not an exported DiffusionModule, missing hyper-parameters, wrong weights.
    """
    path = Path(path)
    _check_path(path)
    ckpt = _read(path, trust, map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a Lightning checkpoint (no 'state_dict')")
    meta = ckpt.get("domaindiff")
    if not isinstance(meta, dict) or "class_path" not in meta:
        raise CheckpointError(f"checkpoint {path}: no 'domaindiff.class_path' entry; it was not "
                              "written by a domaindiff DiffusionModule")
    cls = resolve_class(meta["class_path"], path)
    name = meta["class_path"]
    raw = ckpt.get("hyper_parameters") or {}
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"checkpoint {path}: hyper_parameters must be a dict, got "
                              f"{type(raw).__name__}")
    hparams = {k: v for k, v in dict(raw).items() if not str(k).startswith("_")}
    if not hparams and _required_args(cls):
        raise CheckpointError(
            f"checkpoint {path}: no hyper_parameters, but {name} takes arguments "
            f"({', '.join(_required_args(cls))}); refusing to rebuild it with its defaults")
    upgrade = getattr(cls, "upgrade_hparams", None)  # a module's hparams of older versions
    hparams = upgrade(hparams) if callable(upgrade) else hparams
    try:
        model = cls(**hparams)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: hyper_parameters do not fit {name}: "
                              f"{_first_line(err)}") from err
    if not isinstance(ckpt["state_dict"], Mapping):
        raise CheckpointError(f"checkpoint {path}: state_dict must be a dict of tensors")
    try:
        model.load_state_dict(ckpt["state_dict"], strict=strict)
    except (RuntimeError, TypeError, KeyError) as err:
        raise CheckpointError(f"checkpoint {path}: weights do not fit {name}: "
                              f"{_first_line(err)}") from err
    model.eval()
    return model


def load_export(path: str | Path, map_location: str = "cpu") -> DiffusionModule:
    """Rebuild a model from a file written by ``DiffusionModule.export`` (weights only, EMA or raw).

    The same rules as :func:`load_checkpoint` apply: ``weights_only=True`` and the class allow-list.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    path = Path(path)
    _check_path(path)
    data = _read(path, False, map_location)
    if not isinstance(data, dict) or not {"class_path", "network"} <= set(data):
        raise CheckpointError(f"export {path}: not a domaindiff export (needs class_path, "
                              "hyper_parameters and network)")
    cls = resolve_class(data["class_path"], path)
    hparams = dict(data.get("hyper_parameters") or {})
    if not hparams and _required_args(cls):
        raise CheckpointError(f"export {path}: no hyper_parameters, but {data['class_path']} "
                              "takes arguments; refusing to rebuild it with its defaults")
    upgrade = getattr(cls, "upgrade_hparams", None)
    hparams = upgrade(hparams) if callable(upgrade) else hparams
    try:
        model = cls(**hparams)
        model.network.load_state_dict(data["network"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"export {path}: does not fit {data['class_path']}: "
                              f"{_first_line(err)}") from err
    if model.ema_network is not None:
        model.ema_network.module.load_state_dict(data["network"])
    model.eval()
    return model


#: ``ckpt_path`` values Lightning resolves itself
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def check_resume_checkpoint(path: str | Path) -> None:
    """Vet a ``--ckpt_path`` before LightningCLI reads it (it applies the file's hyper-parameters).

    LightningCLI loads the file to copy its ``hyper_parameters`` into the model's config, taking
    the model class from their ``_class_path`` when present; a remote (``http``) checkpoint is
    unpickled fully by Lightning. So: the file must exist, be a file, read with
    ``weights_only=True``, and any class it names must be an exported DiffusionModule.

    Raises:
        CheckpointError: naming the file and what is wrong.
    """
    text = str(path)
    if text in LIGHTNING_CKPT_NAMES or text.startswith("registry:"):
        return
    if "://" in text:
        raise CheckpointError(f"checkpoint {text}: remote checkpoints are refused (Lightning "
                              "unpickles them fully); download the file and pass its path")
    path = Path(path)
    _check_path(path)
    ckpt = _read(path, False, "cpu", hint="Lightning resumes only weights-only checkpoints")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: not a Lightning checkpoint (not a dict)")
    hparams = ckpt.get("hyper_parameters") or {}
    if isinstance(hparams, Mapping) and "_class_path" in hparams:
        resolve_class(hparams["_class_path"], path)
    meta = ckpt.get("domaindiff")
    if isinstance(meta, Mapping) and "class_path" in meta:
        resolve_class(meta["class_path"], path)
