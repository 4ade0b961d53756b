"""Plugin discovery through the ``domaindiff.plugins`` entry-point group.

A plugin is a package registered as ``<name> = "<package>"``; importing it registers its
DataModules and DiffusionModule subclasses (so LightningCLI resolves their short names). A plugin
that fails to import is recorded with its error and never breaks the others.

Plugins are found from their entry-point metadata and imported only when used
(:func:`load_plugin`): listing them, their subcommands and their configs reads metadata and files
only; :func:`discover` imports all of them (``domaindiff plugins``). Which plugin provides a class
is known without importing for a dotted path (``domaindiff_graphs.GraphDiffusion``: the plugin
whose package prefixes it) and, for a short name, from the names the plugin's ``__init__.py``
imports or lists (read, not run; :func:`plugins_providing`).

Configs by name: ``<plugin>:<name>`` is the file ``<package>/conf/<name>.yaml`` shipped inside
the plugin's wheel (:func:`resolve_config`, :func:`plugin_configs`).

A plugin lists its DiffusionModule subclasses in ``MODELS``: that list is the allow-list of the
classes a checkpoint may name (:func:`exported_models`, used by
:func:`domaindiff.checkpoint.load_checkpoint`); a model missing from it cannot be loaded.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
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


#: the plugins imported so far, by name (tests reset it to None)
_CACHE: dict[str, PluginInfo] | None = None


def _dist_version(ep) -> str:
    dist = getattr(ep, "dist", None)
    if dist is not None:
        return dist.version
    try:
        return version(ep.value.split(".")[0])
    except Exception:  # noqa: BLE001
        return "?"


def registered() -> dict[str, EntryPoint]:
    """``{name: entry point}`` of the installed plugins, from metadata only (nothing imported)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


def _import(ep: EntryPoint) -> PluginInfo:
    info = PluginInfo(name=ep.name, target=ep.value, version=_dist_version(ep))
    try:
        mod = importlib.import_module(ep.value)
        info.module = mod
        info.version = getattr(mod, "__version__", info.version)
        info.datamodules = [c.__name__ for c in getattr(mod, "DATAMODULES", [])]
        info.models = [c.__name__ for c in getattr(mod, "MODELS", [])]
    except Exception as err:  # noqa: BLE001 - a broken plugin must not break the others
        info.error = traceback.format_exception_only(type(err), err)[-1].strip()
    return info


def load_plugin(name: str, ep: EntryPoint | None = None) -> PluginInfo:
    """Import one plugin (once; later calls return the cached result), recording any error.

    Raises:
        KeyError: no plugin of that name is installed (the message lists those that are).
    """
    global _CACHE
    if ep is None:
        eps = registered()
        if name not in eps:
            raise KeyError(f"no plugin named {name!r}; installed: {', '.join(eps) or 'none'}")
        ep = eps[name]
    cached = (_CACHE or {}).get(name)
    if cached is not None and cached.target == ep.value:
        return cached
    info = _import(ep)
    if _CACHE is None:
        _CACHE = {}
    _CACHE[name] = info
    return info


def loaded() -> dict[str, PluginInfo]:
    """The plugins imported so far (by :func:`load_plugin` or :func:`discover`)."""
    return dict(_CACHE or {})


def discover(refresh: bool = False) -> dict[str, PluginInfo]:
    """Import every registered plugin; returns ``{name: PluginInfo}`` (errors recorded)."""
    global _CACHE
    if refresh:
        _CACHE = None
    return {name: load_plugin(name, ep) for name, ep in registered().items()}


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
        exposed: object = getattr(module, cls.__name__, None)  # typed: `is` would narrow cls
        if exposed is cls:
            found[f"{target}.{cls.__name__}"] = cls
    return found


def exported_models(class_path: str | None = None) -> dict[str, type]:
    """The allow-list of buildable models: ``{"module.QualName": cls}`` over the installed plugins.

    Only the packages registered under the ``domaindiff.plugins`` entry point are imported (never
    a module named by a checkpoint). With ``class_path``, the plugins whose package prefixes it are
    imported first and the search stops as soon as it is found, so loading a graphs checkpoint
    does not import the other plugins. A plugin that fails to import contributes nothing.
    """
    eps = list(registered().values())
    if class_path is not None:
        first = [ep for ep in eps if class_path.startswith(ep.value + ".")]
        eps = first + [ep for ep in eps if ep not in first]
    allowed: dict[str, type] = {}
    for ep in eps:
        module = load_plugin(ep.name, ep).module
        if module is None:  # a broken plugin contributes nothing
            continue
        allowed.update(_models_of(module, ep.value))
        if class_path is not None and class_path in allowed:
            break
    return allowed


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
    """The imported module of one plugin (only that one is imported); clear error if absent/broken.

    Raises:
        KeyError: no such plugin (the message lists the installed ones).
        ImportError: the plugin failed to import (its error, in one line).
    """
    info = load_plugin(name)
    if info.module is None:
        raise ImportError(f"plugin {name!r} failed to import: {info.error}")
    return info.module


def plugin_for_class_path(class_path: str) -> str | None:
    """The plugin whose package prefixes a dotted ``class_path`` (longest match), or None."""
    best: tuple[int, str] | None = None
    for name, ep in registered().items():
        if class_path == ep.value or class_path.startswith(ep.value + "."):
            if best is None or len(ep.value) > best[0]:
                best = (len(ep.value), name)
    return best[1] if best else None


def exported_names(target: str) -> set[str]:
    """Names a plugin package's ``__init__.py`` imports, defines or lists, read without running it."""
    path = next((d / "__init__.py" for d in package_dirs(target) if (d / "__init__.py").is_file()),
                None)
    if path is None:
        return set()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.isidentifier():
            names.add(node.value)  # entries of __all__
    return names


def plugins_providing(name: str) -> list[str] | None:
    """The plugins that provide class ``name`` (a dotted class path or a short name), unimported.

    Returns:
        The matching plugin names; ``[]`` for a dotted path outside every plugin (e.g.
        ``lightning.pytorch.callbacks.ModelCheckpoint``); None for a short name no plugin's
        ``__init__.py`` mentions (the caller imports plugins one by one to find it).
    """
    if "." in name:
        found = plugin_for_class_path(name)
        return [found] if found else []
    hits = [n for n, ep in registered().items() if name in exported_names(ep.value)]
    return hits or None


def find_short_name(name: str) -> str | None:
    """Import plugins one by one until one exposes ``name``; returns that plugin or None."""
    for plugin, ep in registered().items():
        module = load_plugin(plugin, ep).module
        if module is not None and hasattr(module, name):
            return plugin
    return None


# ----------------------------------------------------------------------------------- configs

def config_dir(name: str) -> Path | None:
    """The ``conf`` folder shipped in plugin ``name``'s package (found without importing it).

    Falls back to :mod:`importlib.resources` (which imports the package) only when the package
    is not a plain folder on disk.

    Raises:
        KeyError: no such plugin (the message lists the installed ones).
    """
    eps = registered()
    if name not in eps:
        raise KeyError(f"no plugin named {name!r}; installed: {', '.join(eps) or 'none'}")
    folders = package_dirs(eps[name].value)
    for folder in folders:
        if (folder / "conf").is_dir():
            return folder / "conf"
    if folders:  # a package on disk without a conf folder ships no configs
        return None
    try:
        from importlib.resources import files

        conf = files(eps[name].value).joinpath("conf")
    except Exception:  # noqa: BLE001 - a broken plugin simply has no configs to list
        return None
    return conf if isinstance(conf, Path) and conf.is_dir() else None


def plugin_configs(name: str) -> dict[str, Path]:
    """``{config name: file}`` of the YAML configs plugin ``name`` ships (``conf/**/*.yaml``)."""
    conf = config_dir(name)
    if conf is None:
        return {}
    files = sorted(p for p in conf.rglob("*.yaml") if p.is_file())
    return {p.relative_to(conf).with_suffix("").as_posix(): p for p in files}


def all_configs() -> dict[str, dict[str, Path]]:
    """``{plugin: {config name: file}}`` over every installed plugin (none is imported)."""
    return {name: plugin_configs(name) for name in registered()}


def config_description(path: Path) -> str:
    """The first comment line of a YAML file (its one-line description), "" if it has none."""
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                text = line.strip()
                if text.startswith("#"):
                    return text.lstrip("#").strip()
                if text:
                    return ""
    except (OSError, UnicodeDecodeError):
        return ""
    return ""


#: ``plugin:name`` (a name may hold folders: ``plugin:sub/name``; ``.yaml`` optional)
CONFIG_NAME = re.compile(r"^(?P<plugin>[A-Za-z_][\w-]*):(?P<name>[\w.-]+(?:/[\w.-]+)*)$")


def is_config_name(value: str) -> bool:
    """Whether ``value`` reads as ``plugin:name`` rather than a path (an existing file wins)."""
    return bool(CONFIG_NAME.match(value)) and not Path(value).exists()


def resolve_config(value: str) -> Path:
    """The file of config ``plugin:name`` shipped in that plugin's package.

    Raises:
        ValueError: not of the form ``plugin:name``, unknown plugin or unknown config (the message
            lists the installed plugins or that plugin's configs).
    """
    match = CONFIG_NAME.match(value)
    if match is None:
        raise ValueError(f"{value}: expected <plugin>:<name>, e.g. toy:demo")
    plugin, name = match.group("plugin"), match.group("name")
    eps = registered()
    if plugin not in eps:
        raise ValueError(f"{value}: no plugin named {plugin!r}; installed: "
                         f"{', '.join(eps) or 'none'}")
    configs = plugin_configs(plugin)
    key = name[:-5] if name.endswith(".yaml") else name
    if key not in configs:
        raise ValueError(f"{value}: plugin {plugin!r} has no config {key!r}; "
                         f"available: {', '.join(configs) or 'none'}")
    return configs[key]
