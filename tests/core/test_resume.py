"""A resumed run is the same run (toy plugin), and every run leaves a last.ckpt."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from domaindiff.cli import main
from domaindiff.module import LastCheckpoint, load_checkpoint
from domaindiff.resume import ResumableSampler
from domaindiff.toy import GaussianMixtureData, ToyDiffusion
from tests.catalogue import cli_message
from tests.resume_helpers import assert_bitwise_equal, check_resume, fit


def _model() -> ToyDiffusion:
    return ToyDiffusion(hidden=16, depth=1, sampling_steps=2, num_val_samples=8, lr=1e-2)


def _data() -> GaussianMixtureData:
    return GaussianMixtureData(num_train=64, num_val=16, batch_size=16)  # 4 batches an epoch


def test_toy_resume_mid_epoch_and_at_epoch_end_is_bitwise_equal(tmp_path):
    # step 3: mid-epoch; step 4: the last batch of epoch 0, before its validation
    check_resume(_model, _data, tmp_path, total=6, resume_from=(3, 4))


def test_resume_from_last_ckpt_written_at_max_steps(tmp_path):
    """A run stopped by max_steps before any validation leaves last.ckpt; resuming it repeats
    the longer run bitwise."""
    full = fit(_model, _data, tmp_path / "full", 6, check_val_every_n_epoch=1000)
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, deterministic=True,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        check_val_every_n_epoch=1000, default_root_dir=tmp_path / "short")
    trainer.fit(_model(), datamodule=_data())
    last = tmp_path / "short" / "checkpoints" / "last.ckpt"
    assert last.is_file(), "a run stopped by max_steps before any validation wrote no last.ckpt"
    assert any(isinstance(c, LastCheckpoint) for c in trainer.callbacks)
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert int(load_checkpoint(last).ema_network.n_averaged) == 3
    resumed = fit(_model, _data, tmp_path / "resumed", 6, ckpt_path=last,
                  check_val_every_n_epoch=1000)
    assert_bitwise_equal(full, resumed)


def test_sampler_order_is_a_function_of_seed_and_epoch_and_skips_once():
    data = list(range(10))
    a = ResumableSampler(data, seed=1, epoch=2)
    b = ResumableSampler(data, seed=1, epoch=2, skip=4)
    order = list(a)
    assert list(b) == order[4:]
    assert list(b) == order  # the skip applies once
    b.set_epoch(3)
    assert list(b) != order and sorted(b) == data
    shards = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=1, epoch=2))
              for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == data


# --- the command line: every shipped config leaves last.ckpt, the README's resume line works ---
ROOT = Path(__file__).resolve().parents[2]
TOY_DEMO = ROOT / "core" / "domaindiff" / "toy" / "conf" / "demo.yaml"
TINY = ["--data.init_args.num_train=64", "--data.init_args.num_val=16",
        "--data.init_args.batch_size=16", "--model.init_args.hidden=16",
        "--model.init_args.depth=1", "--model.init_args.num_val_samples=8",
        "--model.init_args.sampling_steps=2", "--trainer.enable_progress_bar=false",
        "--trainer.check_val_every_n_epoch=1000"]


def _cli(args: list[str], cwd: Path) -> None:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(args) == 0
    finally:
        os.chdir(old)


def _shipped_configs() -> list[Path]:
    confs = [*ROOT.glob("plugins/*/domaindiff_*/conf/*.yaml"), TOY_DEMO,
             ROOT / "tests" / "conf" / "toy_fit.yaml"]
    return sorted(p for p in confs if p.name != "eval.yaml")


@pytest.mark.parametrize("config", _shipped_configs(), ids=lambda p: f"{p.parent.parent.name}/"
                         f"{p.name}")
def test_every_shipped_config_writes_last_ckpt_at_an_interval(config):
    trainer = yaml.safe_load(config.read_text())["trainer"]
    last = [c for c in trainer.get("callbacks", [])
            if c["class_path"] == "domaindiff.module.LastCheckpoint"]
    assert len(last) == 1, f"{config}: no domaindiff.module.LastCheckpoint callback"
    cb = LastCheckpoint(**last[0].get("init_args", {}))
    assert cb.save_last and cb._every_n_train_steps >= 1


def test_readme_resume_line_repeats_the_uninterrupted_run(tmp_path):
    """``domaindiff fit --config C --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt``."""
    full, run = tmp_path / "full", tmp_path / "run"
    full.mkdir(), run.mkdir()
    _cli(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_steps=6"], full)
    _cli(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_steps=3"], run)
    last = run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    # a changed model argument (on the command line or in the config) is refused by name
    # before anything is written: LightningCLI would silently take the checkpoint's
    saved = last.read_bytes()
    resume = ["--ckpt_path", "lightning_logs/version_0/checkpoints/last.ckpt"]
    msg = cli_message(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_steps=6",
                       "--model.init_args.lr=0.5", *resume], cwd=run)
    assert "--model.init_args.lr=0.5: the checkpoint lightning_logs/version_0/checkpoints/" \
        "last.ckpt was started with 0.002" in msg, msg
    tree = yaml.safe_load(TOY_DEMO.read_text())
    tree["model"]["init_args"]["ema_decay"] = 0.9
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(tree))
    msg = cli_message(["fit", "--config", str(changed), *TINY, "--trainer.max_steps=6",
                       *resume], cwd=run)
    assert "model.init_args.ema_decay=0.9 (from --config): the checkpoint" in msg, msg
    assert "was started with 0.995" in msg and len(msg.strip().splitlines()) == 1, msg
    assert last.read_bytes() == saved
    assert not (run / "lightning_logs" / "version_1").exists()
    # the same arguments (the same config, defaults left out) resume
    _cli(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_steps=6", *resume], run)
    a = torch.load(full / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt",
                   weights_only=True)
    b = torch.load(run / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt",
                   weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])


def test_a_run_stopped_by_max_time_leaves_last_ckpt(tmp_path):
    _cli(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_epochs=100000",
          "--trainer.max_time=00:00:00:01"], tmp_path)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] > 0
    # written at the batch where the run stopped, so a resume continues inside that epoch
    epoch = ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]
    assert epoch["started"] > epoch["processed"]
    assert int(ckpt["state_dict"]["ema_network.n_averaged"]) == ckpt["global_step"]


def test_fitted_checkpoint_falls_back_to_last_ckpt_when_no_validation_ran(tmp_path):
    """The demos' choice of checkpoint: a plain ModelCheckpoint that never saved (no validation
    yet) must not hide LastCheckpoint's last.ckpt (the trajectories demo crashed on it)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from domaindiff.module import fitted_checkpoint

    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        check_val_every_n_epoch=1000, default_root_dir=tmp_path,
                        callbacks=[ModelCheckpoint(), LastCheckpoint(every_n_train_steps=100)])
    trainer.fit(_model(), datamodule=_data())
    assert trainer.checkpoint_callback.best_model_path == ""  # the old lookup found nothing
    path = fitted_checkpoint(trainer)
    assert Path(path).name == "last.ckpt" and Path(path).is_file()
    no_ckpt = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fitted_checkpoint(no_ckpt)


def test_a_checkpoint_written_outside_lightningcli_resumes_with_its_recorded_class(tmp_path):
    """``domaindiff fit --ckpt_path`` on a plain ``Trainer``'s checkpoint (a distilled student,
    an imported GDSS model, a user's script): no ``_class_path`` in its hyper-parameters, so the
    class comes from the checkpoint's own ``domaindiff.class_path``; Lightning alone parsed its
    arguments as the base class's and failed with ``Option 'dim' is not accepted``."""
    model = ToyDiffusion(dim=2, hidden=16, depth=1, process="vp",
                         process_kwargs={"beta_min": 0.1, "beta_max": 20.0}, lr=0.002,
                         ema_decay=0.995, sampler="dpm_solver_pp_2m", sampling_steps=2,
                         num_val_samples=8)
    data = GaussianMixtureData(num_train=64, num_val=16, batch_size=16)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    plain = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(plain)
    raw = torch.load(plain, weights_only=True)
    assert "_class_path" not in raw["hyper_parameters"]
    assert raw["domaindiff"]["class_path"] == "domaindiff.toy.model.ToyDiffusion"
    run = tmp_path / "run"
    run.mkdir()
    _cli(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_steps=5",
          "--ckpt_path", str(plain)], run)
    last = run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 5
    assert resumed["hyper_parameters"]["hidden"] == 16
    # a checkpoint that names no class at all is refused by name, nothing written
    raw["hyper_parameters"]["hidden"] = 16
    del raw["domaindiff"]
    nameless = tmp_path / "nameless.ckpt"
    torch.save(raw, nameless)
    msg = cli_message(["fit", "--config", str(TOY_DEMO), *TINY, "--trainer.max_steps=5",
                       "--ckpt_path", str(nameless)], cwd=run)
    assert "nameless.ckpt: its hyper_parameters do not fit the configured model" in msg, msg
    assert len(msg.strip().splitlines()) == 1, msg
    assert not (run / "lightning_logs" / "version_1").exists()
