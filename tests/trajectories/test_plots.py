"""Trajectory pictures: ground truth beside samples, equal aspect, labels, legend, atomic PNG."""

import numpy as np
import torch

import domaindiff_trajectories.plots as plots

PNG = b"\x89PNG\r\n\x1a\n"


def _first(b=3, n=4, tc=5, t=6, k=3):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(b, n, tc, 3, generator=g)
    x = torch.randn(b, n, t, 3, generator=g)
    mask = torch.ones(b, n)
    mask[1, 2:] = 0  # padded agents of item 1, put far away: they must not be drawn
    x[1, 2:] = 100.0
    return {"cond": cond, "x": x, "samples": x[None] + 0.1 * torch.randn(k, b, n, t, 3,
                                                                          generator=g),
            "mask": mask}


def _capture(monkeypatch):
    saved = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kw: saved.append(path)
                        or real(fig, path, **kw))
    return saved


def test_forecasts_png_has_truth_beside_samples_with_equal_shared_limits(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    fig = plots.plot_forecasts(_first(), tmp_path / "f.png", n=3, title="a.ckpt: ddim 10 NFE")
    assert saved == [tmp_path / "f.png"]
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
    assert fig.get_suptitle() == "a.ckpt: ddim 10 NFE"
    axes = np.array(fig.axes[:6]).reshape(2, 3)
    assert [a.get_title() for a in axes[:, 0]] == ["item 0: ground truth", "item 0: 3 sampled"]
    for top, bottom in axes.T:
        assert top.get_xlim() == bottom.get_xlim() and top.get_ylim() == bottom.get_ylim()
        assert top.get_aspect() == bottom.get_aspect() == 1.0
    assert axes[1, 0].get_xlabel() == "x" and axes[0, 0].get_ylabel() == "y"
    assert max(abs(v) for v in axes[0, 1].get_xlim() + axes[0, 1].get_ylim()) < 50  # masked
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["observed", "start", "ground-truth future", "true end", "sampled future",
                      "sampled end"]
    # start and end markers sit on the first observed and the last true frame of each agent
    marks = {ln.get_marker(): ln for ln in axes[0, 0].get_lines() if ln.get_marker() != "None"}
    first = _first()
    starts = [tuple(ln.get_xydata()[0]) for ln in axes[0, 0].get_lines() if ln.get_marker() == "o"]
    ends = [tuple(ln.get_xydata()[0]) for ln in axes[0, 0].get_lines() if ln.get_marker() == "*"]
    assert set(marks) == {"o", "*"}
    np.testing.assert_allclose(starts, first["cond"][0, :, 0, :2].numpy(), rtol=1e-6)
    np.testing.assert_allclose(ends, first["x"][0, :, -1, :2].numpy(), rtol=1e-6)


def test_eth_style_limits_fit_the_observed_and_true_tracks_only(tmp_path):
    first = _first()
    first["samples"] = first["samples"] * 2.5  # samples spread well beyond the true tracks
    fig = plots.plot_forecasts(first, tmp_path / "f.png", n=2, fit="truth")
    for i in range(2):
        keep = first["mask"][i].bool()
        pts = torch.cat([first["cond"][i][keep].reshape(-1, 3),
                         first["x"][i][keep].reshape(-1, 3)])[:, :2]
        half = float((pts - (pts.max(0).values + pts.min(0).values) / 2).abs().max()) * 1.08
        lo, hi = fig.axes[i].get_xlim()
        assert abs((hi - lo) - 2 * half) < 1e-6  # padded agents (at 100) and samples ignored


def test_unconditional_png_has_test_data_above_generated(tmp_path, monkeypatch):
    saved = _capture(monkeypatch)
    first = _first()
    sets = {"real": first["x"][:, :2], "fake": first["samples"][0][:, :2]}
    fig = plots.plot_unconditional(sets, tmp_path / "u.png", n=2, title="u.ckpt: marginal 0.1")
    assert saved == [tmp_path / "u.png"] and (tmp_path / "u.png").read_bytes()[:8] == PNG
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["test data 0", "test data 1", "generated 0", "generated 1"]
    assert len({(a.get_xlim(), a.get_ylim()) for a in fig.axes}) == 1  # one scale for all
    assert all(a.get_aspect() == 1.0 for a in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["path", "first frame",
                                                                   "last frame"]


def test_a_diverged_sample_does_not_shrink_the_ground_truth_to_a_dot(tmp_path):
    first = _first()
    first["samples"][0, 0, 0] = 1e4  # one sample of item 0 ran away
    fig = plots.plot_forecasts(first, tmp_path / "f.png", n=1)
    truth = torch.cat([first["cond"][0].reshape(-1, 3), first["x"][0].reshape(-1, 3)])[:, :2]
    extent = float((truth.max(0).values - truth.min(0).values).max())
    lo, hi = fig.axes[0].get_xlim()
    assert extent <= hi - lo <= 3.5 * extent
