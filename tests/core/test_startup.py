"""Start-up of the `domaindiff` command: plugin subcommands and lazy plugin import.

Fake plugins are packages written under tmp_path, put on sys.path and registered by replacing
``domaindiff.plugins.entry_points`` (the metadata lookup every discovery function goes through).
"""

import io
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from domaindiff import plugins
from domaindiff.cli import main
from tests.catalogue import run_cli


def _call(args):
    """Run the command in this process; returns (exit code, stdout, stderr)."""
    res = run_cli(args)
    return res.returncode, res.stdout, res.stderr


def _write_package(root, name, files):
    pkg = root / name
    pkg.mkdir(parents=True)
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return pkg


COMMANDS = '''\
    """Fake tools: echo the arguments."""
    import sys


    def main(argv):
        print("fake commands got", argv)
        return 3 if argv == ["fail"] else 0
'''


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Register toy plus: `fakecmd` (has commands), `nocmd` (none), `sample` (shadowed name)."""
    tag = tmp_path.name.replace("-", "_")
    names = {"fakecmd": f"fakecmd_{tag}", "nocmd": f"nocmd_{tag}", "sample": f"shadow_{tag}"}
    _write_package(tmp_path, names["fakecmd"], {"__init__.py": "MODELS = []\n",
                                                 "commands.py": COMMANDS})
    _write_package(tmp_path, names["nocmd"], {"__init__.py": "MODELS = []\n"})
    _write_package(tmp_path, names["sample"], {"__init__.py": "MODELS = []\n",
                                                "commands.py": COMMANDS})
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("toy", "domaindiff.toy", plugins.GROUP)] + [
        EntryPoint(n, t, plugins.GROUP) for n, t in names.items()]
    monkeypatch.setattr(plugins, "entry_points", lambda group: list(eps))
    monkeypatch.setattr(plugins, "_CACHE", None)
    yield names
    for target in names.values():
        for mod in [m for m in sys.modules if m == target or m.startswith(target + ".")]:
            del sys.modules[mod]


def test_plugin_subcommand_dispatches_to_commands_main(fake_plugins):
    code, out, err = _call(["fakecmd", "import-gdss", "IN", "OUT"])
    assert code == 0, err
    assert "fake commands got ['import-gdss', 'IN', 'OUT']" in out
    code, out, _ = _call(["fakecmd", "fail"])
    assert code == 3


def test_plugin_without_commands_is_one_clear_line(fake_plugins):
    code, out, err = _call(["nocmd", "anything"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nocmd" in lines[0] and "no subcommands" in lines[0], err


def test_core_command_names_take_precedence(fake_plugins):
    code, out, err = _call(["sample", "--help"])
    assert code == 0
    assert "Load a checkpoint" in out and "fake commands got" not in out


def test_help_lists_plugin_subcommands_without_importing_them(fake_plugins):
    code, out, _ = _call(["--help"])
    assert code == 0
    assert "fakecmd" in out and "Fake tools: echo the arguments." in out
    assert "nocmd" not in out.split("plugin subcommands")[-1]
    for target in fake_plugins.values():
        assert target not in sys.modules


def test_unknown_command_lists_plugin_subcommands(fake_plugins):
    code, _, err = _call(["nosuchcommand"])
    assert code == 2 and "fakecmd" in err and "nosuchcommand" in err


# ------------------------------------------------------------------- lazy import of plugins

BROKEN_INIT = '''\
    import os
    import pathlib

    pathlib.Path(os.environ["DOMAINDIFF_TEST_MARKER"]).write_text("imported")
    raise ImportError("this plugin must not be imported")
'''


def _dist_info(root, dist, entries):
    """A minimal installed distribution under ``root`` registering ``entries`` as plugins."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    info.joinpath("entry_points.txt").write_text(f"[{plugins.GROUP}]\n{lines}")


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    """An installed plugin (tmp dist-info on sys.path) whose import leaves a marker, then fails."""
    tag = tmp_path.name.replace("-", "_")
    target = f"aaa_broken_{tag}"  # sorts before every real plugin
    _write_package(tmp_path, target, {"__init__.py": BROKEN_INIT})
    _dist_info(tmp_path, f"aaa_broken_{tag}", {"aaabroken": target})
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("DOMAINDIFF_TEST_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_CACHE", None)
    assert "aaabroken" in plugins.registered()
    yield {"root": tmp_path, "target": target, "marker": marker}
    sys.modules.pop(target, None)


def _fresh(code, broken, *args):
    """Run ``code`` in a fresh interpreter that sees the broken plugin; returns its stdout."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(broken["root"]), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


PROBE = '''\
import contextlib, io, json, sys
from domaindiff.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "lightning")
         or m.startswith(("domaindiff_", "aaa_broken", "domaindiff.toy"))]
print(json.dumps({"code": code, "heavy": sorted(heavy), "out": out.getvalue()}))
'''


@pytest.mark.parametrize("args", [["--help"], ["configs"], ["configs", "toy"]])
def test_help_and_configs_import_no_plugin_and_no_torch(broken_plugin, args):
    import json

    res = json.loads(_fresh(PROBE, broken_plugin, *args))
    assert res["code"] == 0
    assert res["heavy"] == []
    assert not broken_plugin["marker"].exists()
    if args == ["--help"]:
        assert "plugin subcommands" in res["out"] and "graphs" in res["out"]


@pytest.mark.parametrize("args", [
    ["fit", "--config", "toy:demo", "--print_config"],
    ["fit", "--model", "ToyDiffusion", "--data", "GaussianMixtureData", "--print_config"],
    ["fit", "--model", "domaindiff.toy.ToyDiffusion", "--data=GaussianMixtureData",
     "--print_config"],
])
def test_fit_imports_only_the_plugins_it_uses(broken_plugin, args):
    code, out, err = _call(args)
    assert code == 0, err[-2000:]
    assert "domaindiff.toy.ToyDiffusion" in out
    assert not broken_plugin["marker"].exists() and broken_plugin["target"] not in sys.modules
    assert set(plugins.loaded()) == {"toy"}
    assert "failed to import" not in err


def test_a_fit_naming_no_class_still_reports_broken_plugins(broken_plugin, monkeypatch):
    real = plugins.entry_points  # only toy and the broken one: importing all would be slow
    monkeypatch.setattr(plugins, "entry_points", lambda group: [
        ep for ep in real(group=group) if ep.name in ("toy", "aaabroken")])
    _, _, err = _call(["fit", "--print_config"])
    assert broken_plugin["marker"].exists()
    assert "warning: plugin 'aaabroken' failed to import" in err


def test_checkpoint_allow_list_imports_only_the_matching_plugin(broken_plugin):
    allowed = plugins.exported_models("domaindiff.toy.model.ToyDiffusion")
    assert "domaindiff.toy.model.ToyDiffusion" in allowed
    assert not broken_plugin["marker"].exists()
    assert set(plugins.loaded()) == {"toy"}


def test_get_plugin_imports_only_that_one(broken_plugin):
    assert plugins.get_plugin("toy").__name__ == "domaindiff.toy"
    assert set(plugins.loaded()) == {"toy"}
    with pytest.raises(ImportError, match="aaabroken.*must not be imported"):
        plugins.get_plugin("aaabroken")
    with pytest.raises(KeyError, match="installed: aaabroken, graphs"):
        plugins.get_plugin("nope")


def test_plugins_command_imports_each_and_reports_the_broken_one(broken_plugin, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "aaabroken" in out and "FAILED" in out and "must not be imported" in out
    assert "ToyDiffusion" in out


HIDDEN_INIT = '''\
    import sys

    sys.modules[__name__].__dict__["Hidden" + "Model"] = type("Hidden" + "Model", (), {})
'''


def test_short_names_no_init_lists_are_found_by_importing_one_by_one(tmp_path, monkeypatch):
    tag = tmp_path.name.replace("-", "_")
    first, second = f"first_{tag}", f"second_{tag}"
    _write_package(tmp_path, first, {"__init__.py": "MODELS = []\n"})
    _write_package(tmp_path, second, {"__init__.py": HIDDEN_INIT})
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("a", first, plugins.GROUP), EntryPoint("b", second, plugins.GROUP),
           EntryPoint("toy", "domaindiff.toy", plugins.GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: list(eps))
    monkeypatch.setattr(plugins, "_CACHE", None)
    assert plugins.plugins_providing("ToyDiffusion") == ["toy"]  # read from toy's __init__
    assert plugins.plugins_providing("domaindiff.toy.model.ToyDiffusion") == ["toy"]
    assert plugins.plugins_providing("lightning.pytorch.callbacks.ModelCheckpoint") == []
    assert plugins.plugins_providing("HiddenModel") is None
    assert set(plugins.loaded()) == set()
    assert plugins.find_short_name("HiddenModel") == "b"
    assert set(plugins.loaded()) == {"a", "b"}  # stopped before toy
    for mod in (first, second):
        sys.modules.pop(mod, None)


def test_plugins_with_names_imports_only_those(broken_plugin):
    code, out, _ = _call(["plugins", "toy"])
    assert code == 0 and out.startswith("toy") and "ToyDiffusion" in out
    assert set(plugins.loaded()) == {"toy"} and not broken_plugin["marker"].exists()
    code, out, err = _call(["plugins", "nope"])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no plugin named 'nope'; installed: aaabroken, graphs" in err



def test_output_piped_into_head_is_not_an_error(monkeypatch, capsys):
    """`domaindiff configs | head -1`: the reader stops early; exit 0, no error line."""
    import sys

    from domaindiff.cli import main

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["configs"]) == 0
    assert "error" not in capsys.readouterr().err
