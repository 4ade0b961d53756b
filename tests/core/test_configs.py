"""Configs by name: ``--config <plugin>:<name>`` and ``domaindiff configs``, without a checkout.

The names resolve to the YAML files inside the installed plugin packages (``<package>/conf``),
so they work from any directory and from a wheel install.
"""

from pathlib import Path

import pytest
import yaml

from domaindiff import plugins
from domaindiff.cli import classes_named, resolve_config_args
from tests.catalogue import run_cli

TOY_CONF = Path(plugins.__file__).parent / "toy" / "conf"


def _call(args):
    """Run the command in this process; returns (exit code, stdout, stderr)."""
    res = run_cli(args)
    return res.returncode, res.stdout, res.stderr


def test_names_resolve_to_the_yaml_inside_the_package():
    assert plugins.resolve_config("toy:demo") == TOY_CONF / "demo.yaml"
    assert plugins.resolve_config("toy:demo.yaml") == TOY_CONF / "demo.yaml"
    graphs = plugins.resolve_config("graphs:community_small")
    assert graphs.name == "community_small.yaml" and graphs.parent.name == "conf"
    assert graphs.parent.parent.name == "domaindiff_graphs"


def test_every_installed_plugin_ships_its_configs_in_its_package():
    configs = plugins.all_configs()
    assert set(configs) >= {"toy", "graphs", "timeseries", "trajectories", "medical"}
    for plugin, named in configs.items():
        target = plugins.registered()[plugin].value.replace(".", "/")
        assert "demo" in named and "eval" in named, plugin
        assert all(p.as_posix().endswith(f"{target}/conf/{n}.yaml") for n, p in named.items())


@pytest.mark.parametrize("value, expected", [
    ("nope:demo", "no plugin named 'nope'; installed: graphs, medical, timeseries, toy"),
    ("toy:nope", "plugin 'toy' has no config 'nope'; available: demo, eval"),
])
def test_unknown_names_are_one_line_listing_what_exists(value, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        plugins.resolve_config(value)
    code, _, err = _call(["fit", "--config", value, "--print_config"])
    assert code == 2 and err.count("\n") == 1 and expected in err and f"--config {value}" in err


def test_config_arguments_are_rewritten_anywhere_on_the_line(tmp_path):
    real = tmp_path / "mine.yaml"
    real.write_text("seed_everything: 1\n")
    args = ["fit", "--trainer.max_epochs=1", "--config", "toy:demo", f"--config={real}",
            "-c", "graphs:grid", "--config=toy:eval"]
    out = resolve_config_args(args)
    assert out == ["fit", "--trainer.max_epochs=1", "--config", str(TOY_CONF / "demo.yaml"),
                   f"--config={real}", "-c", str(plugins.resolve_config("graphs:grid")),
                   f"--config={TOY_CONF / 'eval.yaml'}"]


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("toy:demo").write_text("seed_everything: 3\n")
    assert resolve_config_args(["--config", "toy:demo"]) == ["--config", "toy:demo"]


def test_configs_lists_every_plugin_with_path_and_description():
    code, out, _ = _call(["configs"])
    assert code == 0
    for name in ("toy:demo", "graphs:community_small", "timeseries:demo", "medical:demo",
                 "trajectories:demo"):
        assert name in out
    assert str(TOY_CONF / "demo.yaml") in out
    assert "Toy demo: 2-D ring of 8 Gaussians" in out  # the YAML's first comment line


def test_configs_of_one_plugin_and_printing_one():
    code, out, _ = _call(["configs", "toy"])
    assert code == 0 and "toy:demo" in out and "toy:eval" in out and "graphs:" not in out
    code, out, _ = _call(["configs", "graphs:community_small"])
    assert code == 0
    assert out == plugins.resolve_config("graphs:community_small").read_text()
    assert yaml.safe_load(out)["model"]["class_path"] == "domaindiff_graphs.GraphDiffusion"


@pytest.mark.parametrize("args, expected", [
    (["configs", "nope"], "no plugin named 'nope'; installed: graphs"),
    (["configs", "toy:nope"], "has no config 'nope'; available: demo, eval"),
])
def test_configs_errors_are_one_line(args, expected):
    code, out, err = _call(args)
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err


def test_description_is_the_first_comment_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("\n#  Short run on 2 cores.\n# second line\nseed_everything: 0\n")
    assert plugins.config_description(path) == "Short run on 2 cores."
    path.write_text("seed_everything: 0\n# late comment\n")
    assert plugins.config_description(path) == ""


def test_classes_named_reads_the_config_files():
    names = classes_named(resolve_config_args(["fit", "--config", "toy:demo",
                                               "--data", "Other"]))
    assert "domaindiff.toy.ToyDiffusion" in names and "domaindiff.toy.GaussianMixtureData" in names
    assert "Other" in names


def test_print_config_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _call(["fit", "--config", "toy:demo", "--print_config"])
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["model"]["class_path"] == "domaindiff.toy.ToyDiffusion"
    assert cfg["trainer"]["max_epochs"] == 30  # the value shipped in toy/conf/demo.yaml


def test_tiny_real_fit_with_a_named_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _call([
        "fit", "--config", "toy:demo", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--trainer.logger=false", "--model.init_args.hidden=8", "--model.init_args.depth=1",
        "--model.init_args.num_val_samples=16", "--model.init_args.sampling_steps=2",
        "--data.init_args.num_train=64", "--data.init_args.num_val=16",
        "--data.init_args.batch_size=32"])
    assert code == 0, err[-2000:]
    assert list(tmp_path.rglob("last.ckpt")), "the named config's LastCheckpoint wrote nothing"


def test_eval_takes_a_named_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _call(["eval", "toy", "--config", "toy:eval", "--cfg", "job"])
    assert code == 0, err
    assert yaml.safe_load(out)["sampler"] == "dpm_solver_pp_2m"
    code, _, err = _call(["eval", "toy", "--config", "toy:evall"])
    assert code == 2 and "available: demo, eval" in err and err.count("\n") == 1


def test_every_pyproject_ships_the_conf_yaml_in_its_wheel():
    import tomllib

    root = Path(__file__).parents[2]
    projects = [root / "core" / "pyproject.toml", *sorted(root.glob("plugins/*/pyproject.toml"))]
    assert len(projects) == 5
    for path in projects:
        meta = tomllib.loads(path.read_text())
        data = meta["tool"]["setuptools"]["package-data"]
        assert "conf/*.yaml" in data.get("*", []), f"{path}: conf/*.yaml not in package-data"
        include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
        for target in meta["project"]["entry-points"]["domaindiff.plugins"].values():
            assert any(target.startswith(p.rstrip("*")) for p in include), path
