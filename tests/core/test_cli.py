"""The real `domaindiff` command on the toy plugin, from YAML in tests/conf."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domaindiff import plugins
from domaindiff.cli import main
from domaindiff.module import CheckpointError, load_checkpoint
from tests.catalogue import run_cli

CONF = Path(__file__).parents[1] / "conf"
EXE = [sys.executable, "-m", "domaindiff.cli"]


def _run(args, cwd, **kw):
    """The command in a fresh process (used for training: it is what users run)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*EXE, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300, **kw)


def _call(args, cwd):
    """The same command in this process (fast: no re-import of torch and Lightning)."""
    return run_cli(args, cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    res = _run(["fit", "--config", str(CONF / "toy_fit.yaml"),
                f"--trainer.default_root_dir={root}"], cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = sorted(root.rglob("*.ckpt"))
    assert ckpts, "fit wrote no checkpoint"
    return root, ckpts[-1]


def test_fit_writes_a_checkpoint_that_loads_weights_only(trained):
    _, ckpt = trained
    raw = torch.load(ckpt, weights_only=True)  # no pickled objects inside
    assert raw["domaindiff"]["class_path"] == "domaindiff.toy.model.ToyDiffusion"
    model = load_checkpoint(ckpt)
    assert model.hparams["hidden"] == 32
    assert model.ema_network is not None and int(model.ema_network.n_averaged) == 8


def test_validation_metrics_are_logged(trained):
    root, _ = trained
    metrics = next(root.rglob("metrics.csv")).read_text()
    assert "val/energy_distance" in metrics and "val/loss" in metrics


def test_sample_command_writes_samples(trained, tmp_path):
    _, ckpt = trained
    out = tmp_path / "s.pt"
    res = _call(["sample", "--ckpt", str(ckpt), "--sampler", "heun", "--steps", "9", "--n", "50",
                "--batch-size", "20", "--out", str(out), "--no-progress"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    samples = torch.load(out, weights_only=True)
    assert samples["x"].shape == (50, 2) and torch.isfinite(samples["x"]).all()


def test_eval_command_writes_json_and_png(trained, tmp_path):
    _, ckpt = trained
    res = _call(["eval", "toy", f"ckpt={ckpt}", "sampler=ddim", "steps=5", "num_samples=200",
                "nll_samples=4", f"out_dir={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((tmp_path / "metrics_ddim_5.json").read_text())
    assert result["steps"] == 5 and result["energy_distance"] > 0 and "nll_model" in result
    assert (tmp_path / "samples_ddim_5.png").stat().st_size > 1000


def test_eval_multirun_sweeps_samplers_and_steps(trained, tmp_path):
    _, ckpt = trained
    res = _call(["eval", "toy", f"ckpt={ckpt}", "num_samples=100", "nll_samples=0",
                f"out_dir={tmp_path}", "--multirun", "sampler=ddim,heun", "steps=3,5"],
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.glob("metrics_*.json"))
    assert names == ["metrics_ddim_3.json", "metrics_ddim_5.json", "metrics_heun_3.json",
                     "metrics_heun_5.json"]


def test_plugins_command_lists_toy(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "ToyDiffusion" in out and "GaussianMixtureData" in out


def test_broken_plugin_is_reported_and_others_work(monkeypatch, capsys):
    from importlib.metadata import EntryPoint

    good = EntryPoint("toy", "domaindiff.toy", plugins.GROUP)
    bad = EntryPoint("broken", "domaindiff_no_such_module_xyz", plugins.GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [good, bad])
    found = plugins.discover(refresh=True)
    try:
        assert found["toy"].ok and not found["broken"].ok
        assert "No module named" in found["broken"].error
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert "broken" in out and "FAILED" in out and "ToyDiffusion" in out
    finally:
        monkeypatch.undo()
        plugins.discover(refresh=True)


def test_bad_config_names_the_problem(tmp_path):
    res = _call(["fit", "--model", "NoSuchModel", "--data", "GaussianMixtureData",
                "--trainer.max_epochs=1"], cwd=tmp_path)
    assert res.returncode != 0
    assert "NoSuchModel" in res.stderr
    res = _call(["fit", "--config", str(CONF / "toy_fit.yaml"), "--model.init_args.hiddden=3"],
               cwd=tmp_path)
    assert res.returncode != 0 and "hiddden" in res.stderr


def test_short_class_names_and_print_config(tmp_path):
    res = _call(["fit", "--model", "ToyDiffusion", "--data", "GaussianMixtureData",
                "--print_config"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "class_path: domaindiff.toy" in res.stdout and "ToyDiffusion" in res.stdout
    assert "mixture: ring8" in res.stdout


def test_bad_checkpoints_give_clear_errors(tmp_path, trained):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.ckpt is not a readable torch file"):
        load_checkpoint(junk)
    # a checkpoint holding an arbitrary pickled object is refused unless trusted
    _, ckpt = trained
    raw = torch.load(ckpt, weights_only=True)
    raw["extra"] = Path("/")  # not an allow-listed type
    evil = tmp_path / "evil.ckpt"
    torch.save(raw, evil)
    with pytest.raises(CheckpointError, match="trust"):
        load_checkpoint(evil)
    assert load_checkpoint(evil, trust=True).hparams["hidden"] == 32
    res = _call(["sample", "--ckpt", str(evil), "--n", "2"], cwd=tmp_path)
    assert res.returncode == 2 and "--trust-checkpoint" in res.stderr
    no_meta = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, no_meta)
    with pytest.raises(CheckpointError, match="class_path"):
        load_checkpoint(no_meta)


def test_sample_rejects_bad_arguments(trained, tmp_path):
    _, ckpt = trained
    res = _call(["sample", "--ckpt", str(ckpt), "--n", "0"], cwd=tmp_path)
    assert res.returncode == 2 and "--n" in res.stderr
    res = _call(["sample", "--ckpt", str(ckpt), "--sampler", "nope", "--n", "2"], cwd=tmp_path)
    assert res.returncode == 2 and "unknown sampler" in res.stderr


def test_predict_writes_samples_with_the_sample_writer(trained, tmp_path):
    _, ckpt = trained
    res = _call(["predict", "--config", str(CONF / "toy_fit.yaml"), f"--ckpt_path={ckpt}",
                 "--trainer.callbacks+=domaindiff.module.SampleWriter",
                 f"--trainer.callbacks.out_dir={tmp_path / 'pred'}",
                 f"--trainer.default_root_dir={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    files = sorted((tmp_path / "pred").glob("samples_*.pt"))
    assert files and torch.load(files[0], weights_only=True)["x"].shape == (64, 2)


def test_threads_from_environment(monkeypatch):
    import torch

    from domaindiff.cli import main, set_threads_from_env

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("DOMAINDIFF_THREADS", "1")
        assert set_threads_from_env() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("DOMAINDIFF_THREADS", "two")
        with pytest.raises(ValueError, match="DOMAINDIFF_THREADS"):
            set_threads_from_env()
        assert main(["plugins"]) == 2
        monkeypatch.delenv("DOMAINDIFF_THREADS")
        assert set_threads_from_env() is None
    finally:
        torch.set_num_threads(before)


def test_sample_draws_in_batches_by_default(trained, tmp_path, monkeypatch):
    from domaindiff.cli import DEFAULT_BATCH_SIZE
    from domaindiff.toy.model import ToyDiffusion

    sizes, seen = [], {}
    original = ToyDiffusion.sample

    def spy(self, n=None, **kw):
        sizes.append(n)
        seen.update(kw)
        return original(self, n, **kw)

    monkeypatch.setattr(ToyDiffusion, "sample", spy)
    _, ckpt = trained
    out = tmp_path / "s.pt"
    n = DEFAULT_BATCH_SIZE + 44
    res = _call(["sample", "--ckpt", str(ckpt), "--sampler", "ddim", "--steps", "2", "--n", str(n),
                 "--option", "eta=1", "--out", str(out), "--no-progress"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sizes == [DEFAULT_BATCH_SIZE, 44]  # never all n at once
    assert seen["eta"] == 1.0 and isinstance(seen["eta"], float)  # typed by the sampler's default
    assert torch.load(out, weights_only=True)["x"].shape == (n, 2)


def test_eval_help_exits_0_and_lists_plugins(capsys):
    for flag in ("--help", "-h"):
        assert main(["eval", flag]) == 0
        out = capsys.readouterr().out
        assert "usage: domaindiff eval <plugin>" in out and "toy" in out
    assert main(["eval"]) == 2  # no plugin named: a usage error


def test_eval_plugin_help_is_the_hydra_help(tmp_path):
    res = _call(["eval", "toy", "--help"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "powered by Hydra" in res.stdout and "steps: 20" in res.stdout


def test_debug_variables_give_the_full_traceback(tmp_path, monkeypatch):
    """DOMAINDIFF_DEBUG=1 (any command) and HYDRA_FULL_ERROR=1 (eval) let the exception through."""
    monkeypatch.setenv("DOMAINDIFF_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown sampler 'ddimm'"):
        main(["fit", "--config", str(CONF / "toy_fit.yaml"), "--model.init_args.sampler", "ddimm"])
    with pytest.raises(CheckpointError, match="no such file"):
        main(["sample", "--ckpt", str(tmp_path / "missing.ckpt")])
    monkeypatch.delenv("DOMAINDIFF_DEBUG")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(CheckpointError, match="no such file"):
        main(["eval", "toy", f"ckpt={tmp_path / 'missing.ckpt'}", f"out_dir={tmp_path}"])


def test_eval_app_run_directly_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    """The Hydra app itself (``python -m domaindiff.toy.evaluate ...``), without the CLI."""
    from domaindiff.toy import evaluate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["evaluate", "ckpt=missing.ckpt", f"out_dir={tmp_path}"])
    with pytest.raises(SystemExit) as info:
        evaluate.main()
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: checkpoint missing.ckpt: no such file"


@pytest.mark.parametrize("plugin", ["graphs", "timeseries", "trajectories", "medical"])
def test_every_eval_app_refuses_bad_settings_in_one_line(plugin, tmp_path):
    """Each plugin's Hydra app: steps=0 is refused (it used to run the default), and so is a
    missing checkpoint, each with one line and exit code 2 instead of Hydra's traceback."""
    pytest.importorskip(f"domaindiff_{plugin}.evaluate")
    for args, want in (([f"ckpt={tmp_path / 'missing.ckpt'}"], "missing.ckpt: no such file"),
                       ([f"ckpt={tmp_path / 'missing.ckpt'}", "steps=0"], "steps=0: expected a "
                                                                          "positive integer")):
        res = _call(["eval", plugin, *args, f"out_dir={tmp_path}"], cwd=tmp_path)
        assert res.returncode == 2, res.stderr[-2000:]
        lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "warn" not in ln.lower()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], \
            res.stderr[-2000:]


def test_bugs_keep_their_traceback(monkeypatch):
    """Only bad inputs become one line: a bug raised while handling a KeyError propagates."""
    import domaindiff.cli as cli

    def broken(cmd, rest):
        try:
            {}["missing"]
        except KeyError:
            return None.attribute  # a bug, with a KeyError as its implicit context

    monkeypatch.setattr(cli, "_dispatch", broken)
    with pytest.raises(AttributeError):
        cli.main(["plugins"])
    monkeypatch.setattr(cli, "_dispatch", lambda cmd, rest: int("x"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["plugins"]) == 2
    assert err.getvalue() == "error: invalid literal for int() with base 10: 'x'\n"
