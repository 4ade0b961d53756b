"""The shared figure helpers: atomic saves that close the figure, used by the toy evaluation."""

import json

import pytest
from omegaconf import OmegaConf

from domaindiff.plotting import pyplot, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _figure():
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return plt, fig


def test_save_figure_writes_a_complete_png_and_closes_the_figure(tmp_path):
    plt, fig = _figure()
    out = save_figure(fig, tmp_path / "sub" / "plot.png", dpi=50)
    assert out == tmp_path / "sub" / "plot.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert fig.number not in plt.get_fignums()
    assert [p.name for p in out.parent.iterdir()] == ["plot.png"]  # no temporary left behind
    _, fig = _figure()
    assert save_figure(fig, tmp_path / "plot.svg").read_text().lstrip().startswith("<?xml")


def test_a_failed_save_keeps_the_previous_file_and_still_closes(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"previous picture")
    plt, fig = _figure()

    def broken(*args, **kwargs):
        raise RuntimeError("renderer failed")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="renderer failed"):
        save_figure(fig, target)
    assert target.read_bytes() == b"previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert fig.number not in plt.get_fignums()


def test_toy_evaluation_saves_its_plot_atomically_and_reports_nfe(tmp_path, monkeypatch):
    import domaindiff.toy.evaluate as toy_eval
    from domaindiff.toy.model import ToyDiffusion

    model = ToyDiffusion(hidden=8, depth=1, num_val_samples=0, ema_decay=0.0)
    monkeypatch.setattr(toy_eval.ToyEval, "load", lambda self, cfg: model)
    cfg = OmegaConf.create({"ckpt": "unused.ckpt", "sampler": "heun", "steps": 5,
                            "num_samples": 16, "seed": 0, "nll_samples": 0,
                            "out_dir": str(tmp_path)})
    result = toy_eval.evaluate(cfg)
    assert result["nfe"] == 5  # heun with 5 NFE: 3 intervals, the last an Euler step
    assert json.loads((tmp_path / "metrics_heun_5.json").read_text())["nfe"] == 5
    assert (tmp_path / "samples_heun_5.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics_heun_5.json",
                                                          "samples_heun_5.png",
                                                          "samples_heun_5.pt"]
    assert result["files"] == ["samples_heun_5.pt", "samples_heun_5.png"]
