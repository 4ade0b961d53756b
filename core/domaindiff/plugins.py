"""Plugin discovery through the ``domaindiff.plugins`` entry-point group.

A plugin is a package registered as ``<name> = "<package>"``; importing it registers its
DataModules and DiffusionModule subclasses (so LightningCLI resolves their short names). A plugin
that fails to import is recorded with its error and never breaks the others.
"""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points, version
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
