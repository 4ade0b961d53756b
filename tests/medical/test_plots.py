"""Segmentation pictures: contours of truth and prediction with a legend, uncertainty colourbar."""

import torch
from matplotlib.contour import ContourSet

import domaindiff_medical.plots as plots

PNG = b"\x89PNG\r\n\x1a\n"


def _inputs(n=3, size=16):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 8) ** 2 + (xx - 8) ** 2) < 20).float()[None, None].repeat(n, 1, 1, 1)
    images = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))
    pred = torch.roll(disc, 2, dims=-1)
    var = (disc - pred).abs() * torch.arange(1, n + 1).view(n, 1, 1, 1) * 0.1
    return images, disc, pred, var


def test_overlays_png_is_written_through_save_figure(tmp_path, monkeypatch):
    saved = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: saved.append(path)
                        or real(fig, path, **kw))
    plots.write_overlays(tmp_path / "o.png", *_inputs(), num=2)
    assert saved == [tmp_path / "o.png"]
    assert (tmp_path / "o.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_overlays_show_both_contours_a_legend_and_a_shared_colourbar(tmp_path):
    title = plots.overlay_title("e.ckpt", "synthetic", "ddim", 10, 3, 0.8)
    fig = plots.write_overlays(tmp_path / "o.png", *_inputs(), num=3, title=title)
    assert fig.get_suptitle() == "e.ckpt on synthetic: ddim, 10 steps, ensemble of 3; mean Dice 0.800"
    panels = [a for a in fig.axes if a.get_title()]
    colourbars = [a for a in fig.axes if a.get_ylabel() == "ensemble variance"]
    assert len(panels) == 9 and len(colourbars) == 3
    assert [a.get_title() for a in panels[:3]] == ["test image 0", "truth and prediction",
                                                   "uncertainty"]
    sets = [c for c in panels[1].collections if isinstance(c, ContourSet)]
    assert [tuple(c.get_edgecolor()[0][:3]) for c in sets] == [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ground truth", "prediction"]
    # one colour scale for all rows: the largest variance (row 2) sets every colourbar's top
    tops = {round(float(c.images[0].norm.vmax), 6) for c in panels[2::3]}
    assert tops == {0.3}
    assert panels[6].get_xlabel() == "column (px)" and panels[0].get_ylabel() == "row (px)"
