"""``domaindiff eval trajectories`` through the CLI: the core's EvalApp with the GeoTDM hooks.

An untrained small GeoTDM checkpoint is written directly (no fit) and scored on a simulated
charged split; what is checked is the app's plumbing: files, their contents, pictures, errors.
"""

from __future__ import annotations

import json

import pytest
import torch

from domaindiff_trajectories import GeoTDM
from tests.catalogue import cli_message, run_cli
from tests.trajectories.test_cli import _save_ckpt

PNG = b"\x89PNG\r\n\x1a\n"
NBODY = ["nbody.simulate=true", "nbody.num_train=4", "nbody.num_val=4", "nbody.num_test=6",
         "+nbody.length=1600", "nbody.cond_frames=5", "nbody.pred_frames=6"]


def _ckpt(path):
    torch.manual_seed(0)
    return _save_ckpt(GeoTDM(hidden=8, layers=1, time_dim=8, prior_layers=1, pred_frames=6,
                             num_steps=50), path)


def _eval(*args):
    res = run_cli(["eval", "trajectories", *args])
    return res.returncode, res.stdout, res.stderr


def test_cli_sweep_writes_samples_pictures_and_ade_against_k_and_nfe(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path / "data"))
    ckpt, out = _ckpt(tmp_path / "m.ckpt"), tmp_path / "ev"
    code, _, err = _eval(f"ckpt={ckpt}", *NBODY, "k=3", "batch_size=4", "plots=2",
                         f"out_dir={out}", "--multirun", "sampler=ddim", "steps=2,4")
    assert code == 0, err[-2000:]
    for steps in (2, 4):
        stem = f"ddim_{steps}"
        res = json.loads((out / f"metrics_{stem}.json").read_text())
        assert res["files"] == [f"samples_{stem}.pt", f"forecasts_{stem}.png",
                                f"ade_vs_k_{stem}.png"]
        # 6 items in batches of 4 + 2; K = 3 sampling calls per batch, `steps` NFE each
        assert res["items"] == res["num_samples"] == 6 and res["batches"] == 2
        assert res["nfe"] == steps and res["nfe_per_trajectory"] == 3 * steps
        assert res["ade_min"] <= res["ade_avg"] and res["fde_min"] <= res["fde_avg"]
        x = torch.load(out / f"samples_{stem}.pt", weights_only=True)["x"]
        assert x.shape == (6, 3, 5, 6, 3)  # items, K, bodies, predicted frames, xyz
        for name in res["files"][1:]:
            assert (out / name).read_bytes()[:8] == PNG
    # the sweep's two NFE: ADE / FDE against NFE over this out_dir's runs of the checkpoint
    assert (out / "ade_vs_nfe.png").read_bytes()[:8] == PNG


def test_ade_against_k_is_the_running_mean_and_min():
    from domaindiff_trajectories.plots import plot_ade_vs_k

    ade = torch.tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 0.5]])  # (K = 3, items = 2)
    fig = plot_ade_vs_k(ade, ade * 2, "run", cv=(1.5, 3.0))
    avg, mins = fig.axes[0].lines[0].get_ydata(), fig.axes[0].lines[1].get_ydata()
    assert list(avg) == pytest.approx([2.0, 1.75, 1.5833333])
    assert list(mins) == pytest.approx([2.0, 1.0, 0.75])
    assert fig.axes[0].get_xlabel() == "K (samples per trajectory)"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "ADE avg over K", "ADE min over K", "constant velocity"]


def test_bad_settings_are_one_line_before_any_work(tmp_path):
    ckpt = _ckpt(tmp_path / "m.ckpt")  # one checkpoint, every refusal in turn
    refused = {"protocol=best": "protocol: unknown 'best'", "dataset=ucy": "dataset: unknown 'ucy'",
               "k=0": "k=0: expected a positive integer",
               "plots=-1": "plots=-1: expected an integer >= 0"}
    for arg, expect in refused.items():
        err = cli_message(["eval", "trajectories", f"ckpt={ckpt}", f"out_dir={tmp_path}", arg])
        assert len(err.strip().splitlines()) == 1 and expect in err, (arg, err)
    assert not list(tmp_path.glob("*.json"))
