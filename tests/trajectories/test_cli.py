"""End to end: ``domaindiff fit`` with the demo config, checkpoint reload, evaluate.py outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from domaindiff.cli import lightning_cli
from domaindiff.module import load_checkpoint
from domaindiff_trajectories import GeoTDM
from domaindiff_trajectories.evaluate import evaluate

CONF = Path(__file__).resolve().parents[2] / "plugins" / "trajectories" / \
    "domaindiff_trajectories" / "conf"


def test_fit_demo_config_then_evaluate(tmp_path):
    data = ["--data.init_args.num_train=16", "--data.init_args.num_val=4",
            "--data.init_args.num_test=4", "--data.init_args.length=1600",
            "--data.init_args.cond_frames=5", "--data.init_args.pred_frames=6",
            "--data.init_args.batch_size=8"]
    cli = lightning_cli(["fit", "--config", str(CONF / "demo.yaml"), *data,
                         "--model.init_args.pred_frames=6", "--model.init_args.hidden=8",
                         "--model.init_args.layers=1", "--trainer.max_epochs=1",
                         f"--trainer.default_root_dir={tmp_path}",
                         "--trainer.enable_progress_bar=false",
                         "--trainer.check_val_every_n_epoch=1"])
    ckpt = cli.trainer.checkpoint_callback.last_model_path or \
        cli.trainer.checkpoint_callback.best_model_path
    assert Path(ckpt).is_file()
    # checkpoints hold only primitives: they load with weights_only=True
    model = load_checkpoint(ckpt)
    assert isinstance(model, GeoTDM) and model.hparams.pred_frames == 6
    torch.testing.assert_close(model.network.prior_head.weight,
                               cli.model.network.prior_head.weight)
    cfg = OmegaConf.load(CONF / "eval.yaml")
    cfg.pop("hydra")
    cfg.ckpt, cfg.sampler, cfg.steps, cfg.k, cfg.out_dir = ckpt, "ddim", 3, 2, str(tmp_path / "ev")
    cfg.data = {"system": "charged", "n_bodies": None, "num_train": 16, "num_val": 4,
                "num_test": 4, "length": 1600, "cond_frames": 5, "pred_frames": 6}
    result = evaluate(cfg)
    written = json.loads((tmp_path / "ev" / "metrics_ddim_3.json").read_text())
    assert written["items"] == 4 and written["nfe_per_trajectory"] == 6
    assert written["ade_min"] <= written["ade_avg"] and result["cv_ade"] > 0
    png = (tmp_path / "ev" / "forecasts_ddim_3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
