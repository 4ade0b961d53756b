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
    ev = tmp_path / "ev"
    stem = "samples_community_small_dpm_solver_4"
    assert out["files"] == [f"{stem}.g6", f"{stem}.pt", f"{stem}.png"]
    assert (ev / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the generated graphs, saved: graph6 round trip and PyG edge_index lists, one per sample
    lines = (ev / f"{stem}.g6").read_bytes().splitlines()
    graphs = [nx.from_graph6_bytes(line) for line in lines]
    saved = torch.load(ev / f"{stem}.pt", weights_only=True)
    assert len(graphs) == len(saved["edge_index"]) == len(saved["num_nodes"]) == 6
    for g, ei, n in zip(graphs, saved["edge_index"], saved["num_nodes"]):
        assert g.number_of_nodes() == n and ei.shape == (2, 2 * g.number_of_edges())
        assert {tuple(sorted(e)) for e in ei.T.tolist()} == {tuple(sorted(e)) for e in g.edges()}
    assert not list(ev.glob(".*"))  # no temporary files left behind


def _eval_cfg(ckpt, out, **over):
    cfg = {"ckpt": str(ckpt), "dataset": "community_small", "data_args": {},
           "sampler": "dpm_solver", "steps": 3, "sampler_options": {}, "use_ema": None,
           "num_samples": 5, "batch_size": 8, "seed": 0, "orbit": False, "nspdk": False,
           "fcd": False, "nll_graphs": 0, "nll_exact": False, "nll_tol": 1e-3,
           "out_dir": str(out), "trust_checkpoint": False}
    return OmegaConf.create({**cfg, **over})


def _fit_one_step(model, dm, tmp_path):
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(model, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def test_evaluate_app_on_your_own_molecules_writes_smiles_and_png(tmp_path):
    from rdkit import Chem

    from domaindiff_graphs import UserMolecules
    from domaindiff_graphs.evaluate import evaluate

    smiles = ["c1ccccc1O", "CCO", "OCC=O", "C1CC1", "NCC#N", "CCN", "O=C1CCCCC1", "CC(N)C=O"]
    csv = tmp_path / "mols.csv"
    csv.write_text("smi\n" + "\n".join(smiles) + "\n")
    args = {"path": str(csv), "smiles_col": "smi", "test_split": 0.25}
    dm = UserMolecules(**args, batch_size=4)
    dm.setup()
    model = _model(molecule=",".join(dm.atom_types), max_feat=len(dm.atom_types),
                   max_nodes=dm.max_nodes)
    ckpt = _fit_one_step(model, dm, tmp_path)
    res = evaluate(_eval_cfg(ckpt, tmp_path / "ev", dataset="user_molecules", data_args=args,
                             num_samples=5, nspdk=True))
    stem = tmp_path / "ev" / "samples_user_molecules_dpm_solver_3"
    rows = stem.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "index,smiles" and len(rows) == 1 + 5
    valid = [r.split(",", 1)[1] for r in rows[1:] if r.split(",", 1)[1]]
    assert all(Chem.MolFromSmiles(s) is not None for s in valid)
    assert stem.with_suffix(".txt").read_text().splitlines() == valid
    assert res["validity"] == pytest.approx(len(valid) / 5)
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a checkpoint with other atom types is refused, not decoded into the wrong elements
    from domaindiff_graphs.evaluate import check_model_fits

    with pytest.raises(ValueError, match=r"atom types \['C', 'N', 'O', 'F'\] differ from "
                                         r"UserMolecules's \['C', 'N', 'O'\]"):
        check_model_fits(_model(molecule="C,N,O,F", max_feat=4, max_nodes=dm.max_nodes), dm)


def test_evaluate_app_refuses_a_checkpoint_that_does_not_fit_the_data(tmp_path):
    from domaindiff_graphs.evaluate import check_model_fits

    dm = CommunitySmall(batch_size=4)
    with pytest.raises(ValueError, match=r"max_feat=5 but CommunitySmall has 10 node features"):
        check_model_fits(_model(max_feat=5), dm)
    with pytest.raises(ValueError, match=r"the model generates molecules"):
        check_model_fits(_model(molecule="C,N,O", max_feat=3), dm)
    with pytest.raises(ValueError, match=r"max_nodes=12 but CommunitySmall needs 20"):
        check_model_fits(_model(max_nodes=12), dm)


def test_evaluate_app_on_your_own_graphs_keeps_their_isolated_nodes(tmp_path):
    from domaindiff_graphs import UserGraphs
    from domaindiff_graphs.evaluate import evaluate, evaluate_model

    graphs = [nx.path_graph(n) for n in range(3, 13)]
    for g in graphs[::2]:
        g.add_node(g.number_of_nodes())  # isolated nodes are part of this data
    path = tmp_path / "mine.g6"
    path.write_bytes(b"".join(nx.to_graph6_bytes(g, header=False) for g in graphs))
    dm = UserGraphs(path=str(path), batch_size=4)
    ckpt = _fit_one_step(_model(max_nodes=13), dm, tmp_path)
    model = load_checkpoint(ckpt)
    _, samples, decoded = evaluate_model(model, dm, sampler="dpm_solver", steps=2, num_samples=4,
                                         orbit=False)
    sizes = samples["mask"].sum(-1).long().tolist()
    assert [g.number_of_nodes() for g in decoded] == sizes
    assert [g.number_of_nodes() for g in model.decode(samples)] != sizes  # GDSS decoding drops
    res = evaluate(_eval_cfg(ckpt, tmp_path / "ev", dataset="user_graphs",
                             data_args={"path": str(path)}, num_samples=3, steps=2))
    lines = (tmp_path / "ev" / "samples_user_graphs_dpm_solver_2.g6").read_bytes().splitlines()
    assert len(lines) == res["num_samples"] == 3


@pytest.mark.parametrize("sampler,steps", [("heun", 5), ("gdss_pc", 7), ("s4", 3)])
def test_evaluate_reports_the_network_calls_as_nfe(sampler, steps):
    from domaindiff_graphs.evaluate import sample_graphs

    model = _model()
    model.set_node_counts([3, 4, 5, 4])
    calls = []
    nets = [model.network] + ([model.ema_network.module] if model.ema_network is not None else [])
    hooks = [n.register_forward_pre_hook(lambda *_: calls.append(1)) for n in nets]
    try:
        _, _, nfe = sample_graphs(model, 3, sampler, steps, batch_size=3, seed=0)
    finally:
        for h in hooks:
            h.remove()
    assert nfe == len(calls) > 0
