"""The toy picture (data beside generated, labelled) and one PNG-save path for every plugin."""

import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import domaindiff.toy.evaluate as toy_eval

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


def test_toy_samples_png_shows_data_beside_generated_with_labels(tmp_path, monkeypatch):
    saved = []
    real = toy_eval.save_figure
    monkeypatch.setattr(toy_eval, "save_figure", lambda fig, path, **kw: saved.append(fig)
                        or real(fig, path, **kw))
    data = torch.randn(50, 2)
    fig = toy_eval.plot_samples(data, data + 1, tmp_path / "s.png", "a.ckpt: heun, 5 steps")
    assert saved == [fig] and (tmp_path / "s.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]
    assert fig.get_suptitle() == "a.ckpt: heun, 5 steps"
    left, right = fig.axes
    assert (left.get_title(), right.get_title()) == ("data (exact mixture)", "generated")
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    assert left.get_xlabel() == right.get_xlabel() == "x1" and left.get_ylabel() == "x2"
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["generated, n=50"]


def test_toy_evaluation_titles_its_png_with_checkpoint_sampler_and_steps(tmp_path, monkeypatch):
    from domaindiff.toy.model import ToyDiffusion

    model = ToyDiffusion(hidden=8, depth=1, num_val_samples=0, ema_decay=0.0)
    monkeypatch.setattr(toy_eval.ToyEval, "load", lambda self, cfg: model)
    titles = []
    monkeypatch.setattr("domaindiff.plotting.save_figure",  # the core's driver saves it
                        lambda fig, path, **kw: titles.append(fig.get_suptitle()) or path)
    cfg = OmegaConf.create({"ckpt": "runs/epoch=3.ckpt", "sampler": "ddim", "steps": 4,
                            "num_samples": 16, "seed": 0, "nll_samples": 0,
                            "out_dir": str(tmp_path)})
    toy_eval.evaluate(cfg)
    assert len(titles) == 1
    assert titles[0].startswith("toy: epoch=3.ckpt, ddim, 4 steps (4 NFE), 16 samples; energy")


SOURCES = ["core/domaindiff/toy", "plugins/timeseries/domaindiff_timeseries",
           "plugins/trajectories/domaindiff_trajectories", "plugins/medical/domaindiff_medical",
           "plugins/graphs/domaindiff_graphs"]


@pytest.mark.parametrize("where", SOURCES)
def test_pictures_are_saved_only_through_the_core_helper(where):
    own = re.compile(r"\.savefig\(|matplotlib\.use\(|import matplotlib\.pyplot")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / where).rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if own.search(line)]
    assert hits == []
