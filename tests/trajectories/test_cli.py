"""End to end: ``domaindiff fit`` with the demo config, checkpoint reload, evaluate.py outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    cfg.nbody = {"system": "charged", "n_bodies": None, "num_train": 16, "num_val": 4,
                 "num_test": 4, "length": 1600, "cond_frames": 5, "pred_frames": 6,
                 "simulate": True}
    result = evaluate(cfg)
    written = json.loads((tmp_path / "ev" / "metrics_ddim_3.json").read_text())
    assert written["items"] == 4 and written["nfe_per_trajectory"] == 6
    assert written["ade_min"] <= written["ade_avg"] and result["cv_ade"] > 0
    png = (tmp_path / "ev" / "forecasts_ddim_3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _save_ckpt(model, path: Path) -> str:
    """A Lightning-layout checkpoint of an untrained model (what load_checkpoint reads)."""
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


def _eval_cfg(tmp_path, ckpt: str, **over):
    cfg = OmegaConf.load(CONF / "eval.yaml")
    cfg.pop("hydra")
    cfg.ckpt, cfg.out_dir, cfg.plots = ckpt, str(tmp_path / "ev"), 2
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def test_eval_md17_table_on_sgdml_file(tmp_path, monkeypatch):
    """MD17 path: a tiny sgdml npz (keys R, z, E, F) -> ADE/FDE avg/min over K + PNG."""
    import numpy as np

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    (tmp_path / "md17").mkdir()
    rng = np.random.default_rng(0)
    r = np.cumsum(rng.normal(0, 0.01, (400, 4, 3)), 0) + rng.normal(0, 1, (1, 4, 3))
    np.savez(tmp_path / "md17" / "md17_toy.npz", R=r, z=np.array([6, 1, 1, 8]),
             E=np.zeros(400), F=np.zeros_like(r))
    model = GeoTDM(node_features=4, hidden=8, layers=1, time_dim=8, prior_layers=1,
                   pred_frames=4, num_steps=50)
    cfg = _eval_cfg(tmp_path, _save_ckpt(model, tmp_path / "m.ckpt"), dataset="md17",
                    sampler="dpm_solver_pp_2m", steps=4, k=2, num_items=3,
                    md17={"molecule": "toy", "every": 2, "cond_frames": 3, "pred_frames": 4,
                          "standin_steps": 0})
    res = evaluate(cfg)
    assert res["protocol"] == "avg_k" and res["items"] == 3
    assert res["ade_min"] <= res["ade_avg"] and res["cv_ade"] > 0
    assert (tmp_path / "ev" / "forecasts_dpm_solver_pp_2m_4.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_eth_ucy_kmeans_protocol(tmp_path, monkeypatch):
    """ETH-UCY path: EqMotion npy files with padded agents -> min of k-means clusters."""
    import numpy as np

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    d = tmp_path / "eth_ucy"
    d.mkdir()
    data = np.cumsum(np.random.default_rng(1).normal(0, 0.1, (3, 3, 20, 2)), 2)
    for split in ("train", "test"):
        np.save(d / f"hotel_data_{split}.npy", data)
        np.save(d / f"hotel_num_{split}.npy", np.array([3, 1, 2]))
    model = GeoTDM(hidden=8, layers=1, time_dim=8, prior_layers=1, pred_frames=12, num_steps=100)
    cfg = _eval_cfg(tmp_path, _save_ckpt(model, tmp_path / "e.ckpt"), dataset="eth_ucy",
                    sampler="ddim", steps=3, **{"eth_ucy.scene": "hotel",
                                                "kmeans.samples": 6, "kmeans.clusters": 3})
    res = evaluate(cfg)
    assert res["protocol"] == "kmeans" and res["items"] == 3
    assert 0 < res["min_ade"] < 200 and res["min_fde"] > 0 and res["nfe_per_trajectory"] == 18
    assert (tmp_path / "ev" / "forecasts_ddim_3.png").is_file()
    # the reference's traj_scale: the model sees test positions / 2, errors come back in metres
    OmegaConf.update(cfg, "eth_ucy.traj_scale", 2.0)
    scaled = evaluate(cfg)
    assert scaled["traj_scale"] == 2.0
    assert scaled["cv_ade"] == pytest.approx(res["cv_ade"], rel=1e-5)  # linear: exact


def test_eval_unconditional_scores(tmp_path, monkeypatch):
    """Unconditional checkpoint -> marginal, classification and prediction scores + PNG."""
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    model = GeoTDM(task="unconditional", hidden=8, layers=1, time_dim=8, pred_frames=6,
                   num_steps=50)
    cfg = _eval_cfg(tmp_path, _save_ckpt(model, tmp_path / "u.ckpt"), sampler="ddim", steps=3,
                    num_items=8, **{"scores.epochs": 2},
                    nbody={"system": "charged", "n_bodies": None, "num_train": 4, "num_val": 4,
                           "num_test": 8, "length": 1600, "cond_frames": 5, "pred_frames": 6,
                           "simulate": True})
    res = evaluate(cfg)
    assert res["protocol"] == "unconditional" and res["items"] == 8 and res["finite"]
    assert res["marginal"] >= 0 and res["classification"] > 0 and res["prediction"] > 0
    written = json.loads((tmp_path / "ev" / "metrics_ddim_3.json").read_text())
    assert written["classification"] == res["classification"]
    assert (tmp_path / "ev" / "trajectories_ddim_3.png").read_bytes()[:4] == b"\x89PNG"


def test_conf_link_points_at_package_configs():
    """``domaindiff fit --config plugins/trajectories/conf/<x>.yaml`` reads the package's files."""
    link = CONF.parents[1] / "conf"
    assert link.is_symlink() and link.resolve() == CONF.resolve()
    for name in ("demo", "nbody_charged", "md17_aspirin", "eth_ucy", "uncond_charged", "eval"):
        assert (link / f"{name}.yaml").is_file()


def test_eval_refuses_a_checkpoint_whose_node_features_do_not_fit_the_data(tmp_path, monkeypatch):
    """An N-body checkpoint (1 node feature) on MD17 (4): one line naming both, not a shape error
    deep inside the network (found by the wheel-install README check)."""
    import numpy as np

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    (tmp_path / "md17").mkdir()
    rng = np.random.default_rng(0)
    r = np.cumsum(rng.normal(0, 0.01, (400, 4, 3)), 0)
    np.savez(tmp_path / "md17" / "md17_toy.npz", R=r, z=np.array([6, 1, 1, 8]))
    model = GeoTDM(node_features=1, hidden=8, layers=1, time_dim=8, prior_layers=1,
                   pred_frames=4, num_steps=50)
    cfg = _eval_cfg(tmp_path, _save_ckpt(model, tmp_path / "nbody.ckpt"), dataset="md17",
                    sampler="ddim", steps=2, k=1, num_items=1,
                    md17={"molecule": "toy", "every": 2, "cond_frames": 3, "pred_frames": 4,
                          "standin_steps": 0})
    with pytest.raises(ValueError, match=r"nbody\.ckpt: the model reads 1 node feature\(s\) but "
                                         r"dataset 'md17' has 4"):
        evaluate(cfg)
