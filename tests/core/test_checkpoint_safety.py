"""Checkpoints never run code, never rebuild a model with defaults, and files keep the umask.

The hostile checkpoint of the issue: a dict that ``torch.load(weights_only=True)`` reads without
complaint, whose ``domaindiff.class_path`` names ``os.system`` and whose hyper-parameters are
``{"command": "touch PWNED"}``. Loading it used to run the shell command.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from domaindiff import plugins
from domaindiff.checkpoint import CheckpointError, load_checkpoint, load_export
from domaindiff.data import atomic_save, atomic_write, atomic_write_text
from domaindiff.module import DiffusionModule
from domaindiff.processes import make_process
from domaindiff.toy.model import ToyDiffusion
from domaindiff.toy.networks import MLPDenoiser
from tests.catalogue import cli_message


class Forgetful(DiffusionModule):
    """A plugin model that never calls ``save_hyperparameters()``."""

    def __init__(self, beta_max: float = 20.0, hidden: int = 8, **kwargs) -> None:
        super().__init__(MLPDenoiser(2, hidden, 1), {"x": make_process("vp", beta_max=beta_max)},
                         **kwargs)

    def sample_template(self, n, batch=None):
        return {"x": torch.zeros(n, 2)}


class ForgetfulChild(Forgetful):
    """A subclass of it, again without ``save_hyperparameters()``."""

    def __init__(self, extra: int = 3, beta_max: float = 7.0) -> None:
        super().__init__(beta_max=beta_max, hidden=4)


#: what this module "exports" when it is registered as a plugin in a test
MODELS = [Forgetful, ForgetfulChild]


@pytest.fixture
def test_plugin(monkeypatch):
    """Register this test module as an installed plugin (next to the real ones)."""
    real = plugins.entry_points

    def eps(group):
        return [*real(group=group), EntryPoint("forgetful", __name__, plugins.GROUP)]

    monkeypatch.setattr(plugins, "entry_points", eps)
    monkeypatch.setattr(plugins, "_CACHE", None)
    yield
    monkeypatch.undo()
    plugins.discover(refresh=True)


def _toy_state() -> dict:
    model = ToyDiffusion(hidden=8, depth=1)
    return {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
            "domaindiff": {"class_path": "domaindiff.toy.model.ToyDiffusion"}}


def _hostile(path: Path, class_path: str = "os.system", **hparams) -> Path:
    ckpt = {"state_dict": {}, "hyper_parameters": hparams or {"command": "touch PWNED"},
            "domaindiff": {"class_path": class_path}}
    torch.save(ckpt, path)
    torch.load(path, weights_only=True)  # the file is "safe" by torch's own standard
    return path


# --- checkpoints never run code ----------------------------------------------------------------
@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("class_path", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_checkpoint_naming_a_callable_is_refused_and_nothing_runs(tmp_path, monkeypatch, trust,
                                                                  class_path):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append((a, k)) or 0)
    ckpt = _hostile(tmp_path / "evil.ckpt", class_path,
                    command="touch PWNED", source="open('PWNED', 'w')", args="touch PWNED")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt, trust=trust)
    msg = str(info.value)
    assert "evil.ckpt" in msg and repr(class_path) in msg and "\n" not in msg
    assert not calls and not (tmp_path / "PWNED").exists()


def test_class_path_is_never_imported(tmp_path, monkeypatch):
    """The module a checkpoint names is not imported, even when it is on sys.path."""
    (tmp_path / "dd_evil_module_xyz.py").write_text(
        "open(__file__ + '.imported', 'w').close()\n"
        "class Evil:\n    def __init__(self, **kw):\n        open('PWNED', 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ckpt = _hostile(tmp_path / "evil.ckpt", "dd_evil_module_xyz.Evil")
    with pytest.raises(CheckpointError, match="refusing class 'dd_evil_module_xyz.Evil'"):
        load_checkpoint(ckpt, trust=True)
    assert "dd_evil_module_xyz" not in sys.modules
    assert not (tmp_path / "dd_evil_module_xyz.py.imported").exists()
    assert not (tmp_path / "PWNED").exists()


def test_fit_ckpt_path_naming_a_module_does_not_import_it(tmp_path, monkeypatch):
    """LightningCLI copies a --ckpt_path's hyper_parameters (and their _class_path) into the config."""
    (tmp_path / "dd_evil_cli_xyz.py").write_text("open(__file__ + '.imported', 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    state = _toy_state()
    state["hyper_parameters"]["_class_path"] = "dd_evil_cli_xyz.Evil"
    torch.save(state, tmp_path / "resume.ckpt")
    msg = cli_message(["fit", "--config", str(Path(__file__).parents[1] / "conf/toy_fit.yaml"),
                       "--ckpt_path", str(tmp_path / "resume.ckpt")], cwd=tmp_path)
    assert "refusing class 'dd_evil_cli_xyz.Evil'" in msg and "resume.ckpt" in msg
    assert "dd_evil_cli_xyz" not in sys.modules
    assert not (tmp_path / "dd_evil_cli_xyz.py.imported").exists()


def test_non_diffusion_module_classes_are_refused(tmp_path):
    ckpt = _hostile(tmp_path / "linear.ckpt", "torch.nn.Linear", in_features=2, out_features=2)
    with pytest.raises(CheckpointError, match="refusing class 'torch.nn.Linear'"):
        load_checkpoint(ckpt)
    # a DiffusionModule subclass that no installed plugin exports is refused too
    ckpt = _hostile(tmp_path / "forgetful.ckpt", f"{__name__}.Forgetful", beta_max=5.0)
    with pytest.raises(CheckpointError, match="only DiffusionModule subclasses exported"):
        load_checkpoint(ckpt)
    # as is the base class itself and a class_path that is not a string
    ckpt = _hostile(tmp_path / "base.ckpt", "domaindiff.module.DiffusionModule", lr=1.0)
    with pytest.raises(CheckpointError, match="refusing class"):
        load_checkpoint(ckpt)
    bad = _toy_state()
    bad["domaindiff"]["class_path"] = ["os", "system"]
    torch.save(bad, tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="must be a string"):
        load_checkpoint(tmp_path / "list.ckpt")


def test_exported_models_resolve_by_both_names(tmp_path):
    state = _toy_state()
    for name in ("domaindiff.toy.model.ToyDiffusion", "domaindiff.toy.ToyDiffusion"):
        state["domaindiff"]["class_path"] = name
        torch.save(state, tmp_path / "toy.ckpt")
        assert isinstance(load_checkpoint(tmp_path / "toy.ckpt"), ToyDiffusion)


def test_sample_command_refuses_the_hostile_checkpoint(tmp_path):
    ckpt = _hostile(tmp_path / "evil.ckpt")
    for extra in ([], ["--trust-checkpoint"]):
        msg = cli_message(["sample", "--ckpt", str(ckpt), "--n", "2", *extra], cwd=tmp_path)
        assert "refusing class 'os.system'" in msg and "evil.ckpt" in msg
        assert len(msg.strip().splitlines()) == 1
    assert not (tmp_path / "PWNED").exists()


def test_eval_app_refuses_the_hostile_checkpoint(tmp_path):
    ckpt = _hostile(tmp_path / "evil.ckpt")
    for extra in ([], ["trust_checkpoint=true"]):
        msg = cli_message(["eval", "toy", f"ckpt={ckpt}", f"out_dir={tmp_path}", *extra],
                          cwd=tmp_path)
        assert "refusing class 'os.system'" in msg and "Traceback" not in msg
    assert not (tmp_path / "PWNED").exists()


def test_export_is_loaded_under_the_same_rules(tmp_path):
    model = ToyDiffusion(hidden=8, depth=1, ema_decay=0.0)
    model.export(tmp_path / "w.pt")
    loaded = load_export(tmp_path / "w.pt")
    assert loaded.hparams["hidden"] == 8
    for k, v in model.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[k], v)
    evil = torch.load(tmp_path / "w.pt", weights_only=True)
    evil["class_path"], evil["hyper_parameters"] = "os.system", {"command": "touch PWNED"}
    torch.save(evil, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refusing class 'os.system'"):
        load_export(tmp_path / "evil.pt")


# --- init arguments are recorded by the base class ---------------------------------------------
def test_base_records_init_arguments_of_a_forgetful_subclass():
    model = Forgetful(beta_max=5, lr=0.01)
    assert dict(model.hparams) == {"beta_max": 5, "hidden": 8, "lr": 0.01}
    child = ForgetfulChild(extra=4)
    assert dict(child.hparams) == {"extra": 4, "beta_max": 7.0}  # the outermost class's
    # a subclass that saves its own hyper-parameters keeps them
    assert ToyDiffusion(hidden=16).hparams["hidden"] == 16


def test_forgetful_subclass_trained_with_beta_max_5_reloads_with_beta_max_5(tmp_path,
                                                                            test_plugin):
    model = Forgetful(beta_max=5.0, ema_decay=0.5)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(torch.randn(16, 2), batch_size=8))
    trainer.save_checkpoint(tmp_path / "f.ckpt")
    raw = torch.load(tmp_path / "f.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["beta_max"] == 5.0
    loaded = load_checkpoint(tmp_path / "f.ckpt")
    assert type(loaded) is Forgetful
    assert loaded.processes["x"].beta_max == 5.0 and loaded.ema_decay == 0.5
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_checkpoint_without_hyper_parameters_is_refused(tmp_path, test_plugin):
    state = _toy_state()
    state["hyper_parameters"] = {}
    torch.save(state, tmp_path / "nohp.ckpt")
    with pytest.raises(CheckpointError, match="no hyper_parameters, but .*ToyDiffusion takes "
                                              "arguments .*refusing to rebuild it with its defaults"):
        load_checkpoint(tmp_path / "nohp.ckpt")
    model = Forgetful(beta_max=5.0)
    torch.save({"state_dict": model.state_dict(),
                "domaindiff": {"class_path": f"{__name__}.Forgetful"}}, tmp_path / "f.ckpt")
    with pytest.raises(CheckpointError, match="beta_max"):
        load_checkpoint(tmp_path / "f.ckpt")


# --- files get the usual permissions ----------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writers_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        atomic_save({"x": torch.zeros(2)}, tmp_path / "b.pt")
        with atomic_write(tmp_path / "c.bin") as fh:
            fh.write(b"abc")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert (tmp_path / "plain").stat().st_mode & 0o777 == want
    for name in ("a.json", "b.pt", "c.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name


def test_atomic_write_is_still_atomic(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left
