"""Start-up of the `domaindiff` command: plugin subcommands and lazy plugin import.

Fake plugins are packages written under tmp_path, put on sys.path and registered by replacing
``domaindiff.plugins.entry_points`` (the metadata lookup every discovery function goes through).
"""

import contextlib
import io
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from domaindiff import plugins
from domaindiff.cli import main


def _call(args):
    """Run the command in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else 1
    return code, out.getvalue(), err.getvalue()


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
