"""GraphDiffusion: GDSS loss, VE/VP score conventions, Lightning fit + checkpoint, sampling,
scaffold inpainting, likelihood and the evaluation app."""

import json

import lightning as L
import networkx as nx
import pytest
import torch
from omegaconf import OmegaConf

from domaindiff.module import load_checkpoint
from domaindiff_graphs import CommunitySmall, GraphDiffusion
from domaindiff_graphs.conditional import complete_scaffold
from domaindiff_graphs.likelihood import graph_log_likelihood

SMALL = dict(depth=1, nhid=8, num_layers=2, adim=8, num_heads=2, num_linears=2)


def _model(**kw):
    torch.manual_seed(0)
    args = dict(max_nodes=20, max_feat=10, sampling_steps=6, **SMALL)
    args.update(kw)
    return GraphDiffusion(**args)


def _batch(n=4):
    dm = CommunitySmall(batch_size=n)
    dm.setup()
    return dm, next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("sde", ["VP", "VE"])
def test_loss_is_gdss_sum_of_squared_score_errors(sde):
    cfg = {"type": sde, "beta_min": 0.2, "beta_max": 1.0}
    model = _model(sde_x=cfg, sde_adj=cfg)
    _, batch = _batch()
    state = model.batch_to_state(batch)
    t = torch.full((4,), 0.4)
    g = torch.Generator().manual_seed(1)
    from domaindiff.losses import denoising_loss

    loss = denoising_loss(lambda s, tt: model.denoise(model.network, s, tt), model.processes,
                          state, reduction="sum", t=t, generator=g)
    # GDSS by hand: same noise draws (x first, then adj), score from the raw network output
    g = torch.Generator().manual_seed(1)
    manual = 0.0
    noisy, zs = dict(state), {}
    for k, p in model.processes.items():
        z = p.space.noise(state[k], state, g)
        zs[k] = z
        noisy[k] = p.alpha(t).reshape(-1, *[1] * (z.dim() - 1)) * state[k] + \
            p.sigma(t).reshape(-1, *[1] * (z.dim() - 1)) * z
    out = model.network(noisy, t)
    for k, p in model.processes.items():
        s = p.sigma(t).reshape(-1, *[1] * (zs[k].dim() - 1))
        score = -out[k] / s if sde == "VP" else out[k]
        err = (score * s + zs[k]) ** 2
        if k == "adj":  # free coordinates: the upper triangle (GDSS sums both, a factor 2)
            err = 0.5 * err
        manual = manual + err.reshape(4, -1).sum(1).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_fit_checkpoint_round_trip_and_sampling(tmp_path):
    dm = CommunitySmall(batch_size=16)
    model = _model(num_val_samples=4, sampler="s4",
                   sampler_options={"snr": 0.15, "scale_eps": 0.7, "eps": 1e-3})
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", logger=False,
                        default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    assert {"val/degree_mmd", "val/clustering_mmd"} <= set(trainer.callback_metrics)
    assert int(model.node_count_hist.sum()) == 80
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded.node_count_hist, model.node_count_hist)
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    a, b = model.sample(5, generator=g1), loaded.sample(5, generator=g2)
    assert torch.allclose(a["adj"], b["adj"], atol=1e-5)
    sizes = a["mask"].sum(-1).long()
    allowed = set(torch.nonzero(model.node_count_hist).flatten().tolist())
    assert set(sizes.tolist()) <= allowed
    graphs = model.decode(a)
    assert len(graphs) == 5 and all(isinstance(g, nx.Graph) for g in graphs)


def test_requested_sizes_and_errors():
    model = _model()
    with pytest.raises(RuntimeError, match="node-count distribution"):
        model.sample(2)
    tmpl = model.template_for_sizes([3, 20])
    assert tmpl["mask"].sum(-1).tolist() == [3.0, 20.0]
    with pytest.raises(ValueError, match="sizes must lie"):
        model.template_for_sizes([21])
    out = model.sample(template=tmpl, sampler="dpm_solver", steps=4)
    assert (out["adj"][0, 3:] == 0).all()


def test_scaffold_completion_keeps_the_scaffold():
    model = _model()
    k = 4
    adj = torch.tensor(nx.to_numpy_array(nx.cycle_graph(k)), dtype=torch.float32)
    x = torch.nn.functional.one_hot(adj.sum(-1).long(), 10).float()
    out = complete_scaffold(model, x, adj, [6, 9, 12], sampler="s4", steps=8,
                            generator=torch.Generator().manual_seed(0))
    assert out["mask"].sum(-1).tolist() == [6.0, 9.0, 12.0]
    assert torch.equal(out["adj"][:, :k, :k], adj.expand(3, k, k))
    assert torch.equal(out["x"][:, :k], x.expand(3, k, 10))
    graphs = model.decode(out)
    for g in graphs:
        assert all(g.has_edge(i, (i + 1) % k) for i in range(k))
    with pytest.raises(ValueError, match="scaffold has 4 nodes"):
        complete_scaffold(model, x, adj, [3], steps=2)


def test_exact_likelihood_is_permutation_invariant():
    torch.manual_seed(0)
    # one attention layer: the exact divergence costs a backward pass per coordinate per step
    model = GraphDiffusion(max_nodes=4, max_feat=2, **{**SMALL, "num_layers": 1}).double()
    adj = torch.zeros(1, 4, 4, dtype=torch.float64)
    for u, v in [(0, 1), (1, 2)]:
        adj[0, u, v] = adj[0, v, u] = 1
    x = torch.tensor([[[1, 0], [0, 1], [1, 0], [0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0.0]], dtype=torch.float64)
    full = torch.tensor([2, 0, 1, 3])
    both = {"x": torch.cat([x, x[:, full]]), "adj": torch.cat([adj, adj[:, full][:, :, full]]),
            "mask": torch.cat([mask, mask])}  # a graph and a relabelling of it, one batch
    # loose tolerances: both graphs share one adaptive solve, so invariance is still exact
    ll = graph_log_likelihood(model, both, exact=True, rtol=1e-3, atol=1e-3)
    assert torch.isfinite(ll["logp"]).all()
    assert float(ll["logp"][0]) == pytest.approx(float(ll["logp"][1]), abs=1e-3)
    # free dimensions: 3 real nodes x 2 features + 3 upper-triangle pairs = 9
    assert float(ll["bpd"][0]) == pytest.approx(-float(ll["logp"][0]) / (9 * 0.6931471805599453))


def test_evaluate_app_writes_json_and_png(tmp_path):
    from domaindiff_graphs.evaluate import evaluate

    dm = CommunitySmall(batch_size=16)
    model = _model()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(model, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    cfg = OmegaConf.create({"ckpt": str(ckpt), "dataset": "community_small", "data_args": {},
                            "sampler": "dpm_solver", "steps": 4, "sampler_options": {},
                            "use_ema": None, "num_samples": 6, "batch_size": 4, "seed": 0,
                            "orbit": True, "nspdk": True, "fcd": False, "nll_graphs": 2,
                            "nll_exact": False, "nll_tol": 1e-3, "out_dir": str(tmp_path / "ev"),
                            "trust_checkpoint": False})
    res = evaluate(cfg)
    out = json.loads((tmp_path / "ev" / "metrics_community_small_dpm_solver_4.json").read_text())
    assert out["num_samples"] == 6 and out["nfe"] == 4
    assert {"degree_mmd", "clustering_mmd", "orbit_mmd", "nll_bpd"} <= set(out)
    assert out["degree_mmd"] == pytest.approx(res["degree_mmd"])
    assert (tmp_path / "ev" / "samples_community_small_dpm_solver_4.png").stat().st_size > 1000
