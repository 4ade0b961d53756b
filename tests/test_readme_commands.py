"""The README command lines that ``scripts/check_wheel_install.sh`` runs from a wheels-only venv.

These checks are the cheap part of that script (no subprocess, no install): the lines are found,
every ``--config <plugin>:<name>`` they use is shipped inside a package, and every evaluation
line gets a real checkpoint in place of its placeholder.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIRS = {
    "toy": ROOT / "core/domaindiff/toy/conf",
    **{p: ROOT / f"plugins/{p}/conf" for p in ("graphs", "timeseries", "trajectories", "medical")},
}


def _checker():
    """``benchmarks/wheel_install_check.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "wheel_install_check", ROOT / "benchmarks/wheel_install_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


W = _checker()
LINES = [ln for rel in W.READMES if (ROOT / rel).is_file() for ln in W.extract(ROOT / rel, rel)]


def test_extract_joins_continuations_and_keeps_placeholders_whole(tmp_path):
    md = tmp_path / "R.md"
    md.write_text("text\n```bash\ndomaindiff eval toy ckpt=<its checkpoint> \\\n"
                  "    steps=5   # comment\nls -l\n```\ndomaindiff plugins\n")
    (ln,) = W.extract(md, "R.md")
    assert ln.lineno == 3
    assert ln.argv == ["domaindiff", "eval", "toy", "ckpt=<its_checkpoint>", "steps=5"]


def test_readmes_have_command_lines_for_every_plugin():
    text = " ".join(ln.text for ln in LINES)
    for plugin in CONF_DIRS:
        assert f"domaindiff eval {plugin}" in text, f"no README line evaluates {plugin}"


@pytest.mark.parametrize("ln", [ln for ln in LINES if W._config_of(W._strip_prefix(ln.argv))],
                         ids=lambda ln: f"{ln.readme}:{ln.lineno}")
def test_every_readme_config_name_is_shipped_in_a_package(ln):
    cfg = W._config_of(W._strip_prefix(ln.argv))
    assert re.fullmatch(r"[a-z]+:[a-z0-9_]+", cfg), \
        f"{ln.readme}:{ln.lineno}: --config {cfg} is not <plugin>:<name> (a path needs a checkout)"
    plugin, name = cfg.split(":")
    assert (CONF_DIRS[plugin] / f"{name}.yaml").is_file(), \
        f"{ln.readme}:{ln.lineno}: {cfg} names no YAML in {CONF_DIRS[plugin]}"


@pytest.mark.parametrize("ln", [ln for ln in LINES if W._strip_prefix(ln.argv)[:2]
                                == ["domaindiff", "eval"]],
                         ids=lambda ln: f"{ln.readme}:{ln.lineno}")
def test_every_eval_line_gets_a_real_checkpoint(ln, tmp_path):
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    keys = ["toy:demo", "graphs:qm9", "graphs:community_small", "timeseries:taylor", "timeseries:demo",
            "timeseries:cond", "trajectories:uncond_charged", "trajectories:nbody_springs",
            "trajectories:nbody_charged", "trajectories:md17_aspirin",
            "trajectories:uncond_md17", "medical:demo"]
    runner.ckpts = {k: tmp_path / f"{k.replace(':', '_')}.ckpt" for k in keys}
    argv = [a for a in W._strip_prefix(ln.argv) if not re.fullmatch(r"\[.*\]", a)]
    new, why = W._rewrite_eval(runner, argv[2], argv)
    assert why == ""
    ckpts = [a.split("=", 1)[1] for a in new if a.startswith(("ckpt=", "cond_ckpt="))]
    assert ckpts and all(Path(c).parent == tmp_path for c in ckpts), new
    steps = [a for a in new if a.startswith("steps=")]
    assert all(int(s) <= W.MAX_EVAL_STEPS for a in steps for s in a[6:].split(","))
