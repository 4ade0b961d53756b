"""``domaindiff eval medical`` end to end on tiny CAMUS and EchoNet files in the real formats."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from domaindiff.data import atomic_save
from domaindiff_medical import EchoDND, evaluate
from domaindiff_medical.evaluate import expected_dice_error, run, uncertainty_correlation
from domaindiff_medical.model import checkpoint_image_size

from .formats import write_camus, write_echonet

PNG = b"\x89PNG\r\n\x1a\n"


def _ckpt(path, size=16):
    torch.manual_seed(0)
    model = EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=20, ema_decay=0.0)
    model.batch_to_state({"image": torch.zeros(1, 1, size, size),
                          "mask": torch.zeros(1, 1, size, size)})  # records the image side
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)  # what Lightning adds: class path, batch count, image side
    atomic_save(ckpt, path)
    return path


def _cfg(**kw):
    cfg = OmegaConf.load(Path(evaluate.__file__).parent / "conf" / "eval.yaml")
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize("fmt", ["mhd", "nii"])
def test_eval_app_on_camus_files(tmp_path, fmt):
    root = tmp_path / "camus"
    write_camus(root, fmt, [f"patient{k:04d}" for k in range(1, 5)], np.random.default_rng(0))
    ckpt = _ckpt(tmp_path / "m.ckpt")
    assert checkpoint_image_size(str(ckpt)) == 16
    out = tmp_path / "eval"
    summary = run(_cfg(ckpt=str(ckpt), data="camus", data_root=str(root), size=16,
                       sampler="ddpm", steps=3, num_samples=2, out_dir=str(out)))
    assert summary["num_images"] == 4 and summary["nfe_per_image"] == 6  # 1 patient x 2 x 2
    saved = json.loads((out / "metrics_ddpm_3.json").read_text())
    for key in ("dice", "iou", "hd95", "assd", "dice_std", "hd95_p95", "variance", "ece", "ged",
                "corr_variance_dice_error", "spearman_variance_dice_error", "expected_dice_error",
                "real_dice_error", "calibration_gap", "spearman_expected_dice_error", "seconds"):
        assert key in saved
    assert saved["distance_unit"] == "mm" and saved["num_samples"] == 2
    rows = (out / "per_image_ddpm_3.csv").read_text().splitlines()
    assert rows[0].startswith("image,dice,iou,hd95,assd") and len(rows) == 5
    dice = [float(r.split(",")[1]) for r in rows[1:]]
    assert np.mean(dice) == pytest.approx(saved["dice"], abs=1e-5)
    assert (out / "overlays_ddpm_3.png").read_bytes()[:8] == PNG
    # the JSON, written last, lists every file written before it
    assert set(saved["files"]) == {"samples_ddpm_3.pt", "per_image_ddpm_3.csv",
                                   "overlays_ddpm_3.png"}
    assert all((out / f).is_file() for f in saved["files"])


def test_eval_app_on_echonet_files_defaults_to_checkpoint_size(tmp_path):
    root = tmp_path / "EchoNet-Dynamic"
    write_echonet(root, np.random.default_rng(1), size=16)
    ckpt = _ckpt(tmp_path / "m.ckpt", size=16)
    out = tmp_path / "eval"
    summary = run(_cfg(ckpt=str(ckpt), data="echonet", data_root=str(root), size=None,
                       steps=2, num_samples=3, out_dir=str(out)))
    assert summary["num_images"] == 2 and summary["nfe_per_image"] == 6
    assert summary["distance_unit"] == "px"  # EchoNet's files carry no spacing
    assert (out / "overlays_ddim_2.png").read_bytes()[:8] == PNG


def test_domaindiff_eval_medical_cli_multirun(tmp_path, monkeypatch):
    """The ``domaindiff eval medical ... --multirun`` command line (run in-process: fast)."""
    from domaindiff.cli import main
    root = tmp_path / "camus"
    write_camus(root, "mhd", [f"patient{k:04d}" for k in range(1, 5)], np.random.default_rng(2))
    ckpt = _ckpt(tmp_path / "m.ckpt")
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "medical", f"ckpt={ckpt}", "data=camus", f"data_root={root}",
            "max_images=2", "num_overlays=2", f"out_dir={tmp_path}/sweep/${{sampler}}_${{steps}}",
            "--multirun", "sampler=ddim,ddpm", "steps=2", "num_samples=2"]
    assert main(argv) == 0
    for sampler in ("ddim", "ddpm"):
        d = tmp_path / "sweep" / f"{sampler}_2"
        assert json.loads((d / f"metrics_{sampler}_2.json").read_text())["sampler"] == sampler
        assert (d / f"overlays_{sampler}_2.png").read_bytes()[:8] == PNG


def test_uncertainty_correlation_exact():
    v = torch.tensor([0.1, 0.2, 0.3, 0.4])
    c = uncertainty_correlation(v, torch.tensor([0.0, 0.1, 0.4, 0.9]))
    assert c["spearman"] == pytest.approx(1.0)
    assert c["pearson"] == pytest.approx(float(np.corrcoef(v, [0.0, 0.1, 0.4, 0.9])[0, 1]))
    assert np.isnan(uncertainty_correlation(v, torch.zeros(4))["pearson"])


def test_expected_dice_error_by_hand():
    fused = torch.zeros(2, 1, 4, 4)
    fused[0, 0, :2, :2] = 1                       # image 0: 4 pixels; image 1: empty
    s = torch.zeros(2, 2, 1, 4, 4)
    s[0, 0, 0, :2, :2] = 0.9                      # agrees: Dice 1
    s[1, 0, 0, :2, :1] = 0.8                      # 2 of 4 pixels: Dice 2*2/(2+4) = 2/3
    s[1, 1, 0, 0, 0] = 0.7                        # image 1: one stray pixel: Dice 0
    want = torch.tensor([1 - (1 + 2 / 3) / 2, 1 - (1 + 0) / 2])
    assert torch.allclose(expected_dice_error(s, fused), want)


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 4), ("ddim", 3)])
def test_evaluate_reports_the_network_calls_as_nfe(sampler, steps):
    from domaindiff_medical.evaluate import evaluate_arrays

    torch.manual_seed(0)
    model = EchoDND(base_channels=4, levels=2, temb_dim=8, num_steps=20, ema_decay=0.0)
    calls = []
    hook = model.network.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        summary, _ = evaluate_arrays(model, torch.rand(3, 1, 16, 16),
                                     (torch.rand(3, 1, 16, 16) > 0.5).float(), sampler=sampler,
                                     steps=steps, num_samples=2, batch_size=2)
    finally:
        hook.remove()
    assert summary["nfe"] == len(calls) / 2 == steps  # two batches, one walk each
    assert summary["nfe_per_image"] == 2 * steps


def test_an_unknown_sampler_in_the_eval_app_is_refused_before_any_work(tmp_path):
    ckpt = _ckpt(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match=r"unknown sampler 'ddimm'.*ddim"):
        run(_cfg(ckpt=str(ckpt), sampler="ddimm", out_dir=str(tmp_path / "e")))
    assert not (tmp_path / "e").exists()


def test_data_seed_fixes_the_synthetic_test_split_across_sampling_seeds(tmp_path, monkeypatch):
    """``seed`` alone seeds the sampling and the generated split; ``data_seed`` fixes the split."""
    ckpt = _ckpt(tmp_path / "m.ckpt", size=32)
    seen: list[int] = []
    real = evaluate.load_split

    def spy(data, split, root, size, max_images, seed=0, **synthetic):
        seen.append(seed)
        return real(data, split, root, size, max_images, seed, **synthetic)

    monkeypatch.setattr(evaluate, "load_split", spy)
    common = dict(ckpt=str(ckpt), max_images=2, steps=1, num_samples=1, num_overlays=0)
    masks = []
    for k, (seed, data_seed) in enumerate([(0, None), (1, None), (1, 0)]):
        out = tmp_path / f"e{k}"
        run(_cfg(**common, seed=seed, data_seed=data_seed, out_dir=str(out)))
        masks.append(real("synthetic", "test", None, 32, 2, seen[-1])[1])
    assert seen == [0, 1, 0]
    assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])
    with pytest.raises(ValueError, match=r"data_seed=3: only the synthetic data"):
        run(_cfg(ckpt=str(ckpt), data="camus", data_root=str(tmp_path), data_seed=3,
                 out_dir=str(tmp_path / "c")))
    with pytest.raises(ValueError, match=r"data_seed=-1: expected an integer >= 0 or null"):
        run(_cfg(ckpt=str(ckpt), data_seed=-1, out_dir=str(tmp_path / "d")))
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
