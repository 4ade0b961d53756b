"""Plugin discovery through the ``domaindiff.plugins`` entry-point group.

A plugin is a package registered as ``<name> = "<package>"``; importing it registers its
DataModules and DiffusionModule subclasses (so LightningCLI resolves their short names). A plugin
that fails to import is recorded with its error and never breaks the others.

A plugin lists its DiffusionModule subclasses in ``MODELS``: that list is the allow-list of the
classes a checkpoint may name (:func:`exported_models`, used by
:func:`domaindiff.checkpoint.load_checkpoint`); a model missing from it cannot be loaded.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points, version
from pathlib import Path
from types import ModuleType

GROUP = "domaindiff.plugins"


@dataclass
class PluginInfo:
    """What discovery found about one plugin."""

    name: str
    target: str
    module: ModuleType | None = None
    version: str = "?"
    datamodules: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the plugin imported."""
        return self.error is None


_CACHE: dict[str, PluginInfo] | None = None


def _dist_version(ep) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist.version
    try:
        return version(ep.value.split(".")[0])
    except Exception:  # noqa: BLE001
        return "?"


def discover(refresh: bool = False) -> dict[str, PluginInfo]:
    """Import every registered plugin; returns ``{name: PluginInfo}`` (errors recorded)."""
    global _CACHE
    if _CACHE is not None and not refresh:
        return _CACHE
    found: dict[str, PluginInfo] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        info = PluginInfo(name=ep.name, target=ep.value, version=_dist_version(ep))
        try:
            mod = importlib.import_module(ep.value)
            info.module = mod
            info.version = getattr(mod, "__version__", info.version)
            info.datamodules = [c.__name__ for c in getattr(mod, "DATAMODULES", [])]
            info.models = [c.__name__ for c in getattr(mod, "MODELS", [])]
        except Exception as err:  # noqa: BLE001 - a broken plugin must not break the others
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            info.error = last
        found[ep.name] = info
    _CACHE = found
    return found


def _models_of(module: ModuleType, target: str) -> dict[str, type]:
    """``{"module.QualName": cls}`` of the DiffusionModule subclasses a plugin lists in ``MODELS``.

    Each class is also listed under the plugin's own name (``<package>.<Name>``) when the package
    exposes it there, as LightningCLI configs write it.
    """
    from domaindiff.module import DiffusionModule

    found: dict[str, type] = {}
    for cls in getattr(module, "MODELS", None) or []:
        if not (isinstance(cls, type) and issubclass(cls, DiffusionModule)) \
                or cls is DiffusionModule:
            continue
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        if getattr(module, cls.__name__, None) is cls:
            found[f"{target}.{cls.__name__}"] = cls
    return found


def exported_models(class_path: str | None = None) -> dict[str, type]:
    """The allow-list of buildable models: ``{"module.QualName": cls}`` over the installed plugins.

    Only the packages registered under the ``domaindiff.plugins`` entry point are imported (never
    a module named by a checkpoint). With ``class_path``, the plugins whose package prefixes it are
    imported first and the search stops as soon as it is found, so loading a graphs checkpoint
    does not import the other plugins. A plugin that fails to import contributes nothing.
    """
    eps = sorted(entry_points(group=GROUP), key=lambda e: e.name)
    if class_path is not None:
        first = [ep for ep in eps if class_path.startswith(ep.value + ".")]
        eps = first + [ep for ep in eps if ep not in first]
    allowed: dict[str, type] = {}
    for ep in eps:
        cached = (_CACHE or {}).get(ep.name)
        try:
            module = cached.module if cached is not None and cached.target == ep.value \
                else importlib.import_module(ep.value)
        except Exception:  # noqa: BLE001 - a broken plugin must not break the others
            continue
        if module is None:
            continue
        allowed.update(_models_of(module, ep.value))
        if class_path is not None and class_path in allowed:
            break
    return allowed


def registered() -> dict[str, EntryPoint]:
    """``{name: entry point}`` of the installed plugins, from metadata only (nothing imported)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


def package_dirs(target: str) -> list[Path]:
    """The directories of package ``target`` found without importing it (its parents may be).

    Returns an empty list when the package cannot be found or is a plain module.
    """
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def submodule_file(target: str, name: str) -> Path | None:
    """The source file of ``<target>.<name>`` (``name.py`` or ``name/__init__.py``), not imported."""
    for folder in package_dirs(target):
        for candidate in (folder / f"{name}.py", folder / name / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def summary_of(path: Path) -> str:
    """The first line of a module's docstring, read without importing it ("" if none)."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def plugin_commands() -> dict[str, str]:
    """``{plugin name: one-line summary}`` of the plugins that ship a ``commands`` module.

    Found from the entry-point metadata and the package's files: no plugin is imported.
    """
    found: dict[str, str] = {}
    for name, ep in registered().items():
        path = submodule_file(ep.value, "commands")
        if path is not None:
            found[name] = summary_of(path)
    return found


def get_plugin(name: str) -> ModuleType:
    """The imported module of one plugin (only that one is imported); clear error if absent/broken."""
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name in eps and _CACHE is None:
        try:
            return importlib.import_module(eps[name].value)
        except Exception as err:  # noqa: BLE001
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            raise ImportError(f"plugin {name!r} failed to import: {last}") from err
    plugins = discover()
    if name not in plugins:
        raise KeyError(f"no plugin named {name!r}; installed: {sorted(plugins)}")
    info = plugins[name]
    if info.module is None:
        raise ImportError(f"plugin {name!r} failed to import: {info.error}")
    return info.module
