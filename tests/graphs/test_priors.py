"""The moment-matched start (priors.py) against closed forms, and sampling on trimmed padding."""

import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch

from domaindiff.processes import VE, VP
from domaindiff.spaces import NodeMasked, SymmetricAdjacency
from domaindiff_graphs import GraphDiffusion
from domaindiff_graphs.data import graph_to_data, to_dense_state
from domaindiff_graphs.priors import data_moments, moment_matched_start, moments_at_T

SMALL = dict(depth=1, nhid=8, num_layers=2, adim=8, num_heads=2, num_linears=2)
#: cycles: every node has degree 2 and C_n has n edges on n(n-1)/2 pairs
SIZES = (5, 6, 8, 10)
CYCLES = [nx.cycle_graph(n) for n in SIZES]
P_EDGE = sum(2 * n for n in SIZES) / sum(n * (n - 1) for n in SIZES)  # 58 / 196 ordered pairs


def _state(graphs, max_nodes=12, max_feat=4):
    return to_dense_state(Batch.from_data_list([graph_to_data(g, max_feat) for g in graphs]),
                          max_nodes)


def test_data_moments_of_cycles_are_the_closed_form():
    m = data_moments([_state(CYCLES[:2]), _state(CYCLES[2:])])  # pooled over chunks
    assert m["adj_mean"].item() == pytest.approx(P_EDGE, abs=1e-12)
    assert m["adj_var"].item() == pytest.approx(P_EDGE * (1 - P_EDGE), abs=1e-12)
    # every node has degree 2: feature column 2 is always 1, the others always 0
    assert m["x_mean"].tolist() == pytest.approx([0, 0, 1, 0], abs=1e-12)
    assert m["x_var"].tolist() == pytest.approx([0, 0, 0, 0], abs=1e-12)


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_moment_matched_start_has_the_forward_marginals_mean_and_std_at_T(kind):
    """Draws match ``alpha(T) p`` / ``sqrt(alpha^2 p (1 - p) + sigma^2)`` and forward noising."""
    adj_proc = (VP(0.1, 1.0, space=SymmetricAdjacency("mask")) if kind == "vp"
                else VE(0.2, 1.0, space=SymmetricAdjacency("mask")))
    procs = {"x": VP(0.1, 1.0, space=NodeMasked("mask")), "adj": adj_proc}
    data = _state(CYCLES * 200)
    moments = data_moments([data])
    gen = torch.Generator().manual_seed(0)
    x_T = moment_matched_start(procs, {**data}, moments, gen)
    t = torch.tensor(1.0, dtype=torch.float64)
    a, s = float(adj_proc.alpha(t)), float(adj_proc.sigma(t))
    want_mean, want_std = a * P_EDGE, (a**2 * P_EDGE * (1 - P_EDGE) + s**2) ** 0.5
    mean_T, std_T = moments_at_T(adj_proc, moments["adj_mean"], moments["adj_var"])
    assert mean_T.item() == pytest.approx(want_mean, rel=1e-9)
    assert std_T.item() == pytest.approx(want_std, rel=1e-9)
    mask = data["mask"]
    pairs = (mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(12))) > 0
    vals = x_T["adj"][pairs]
    # 200 copies x 196 ordered pairs = 39,200 entries (19,600 independent)
    assert vals.mean().item() == pytest.approx(want_mean, abs=0.03)
    assert vals.std().item() == pytest.approx(want_std, rel=0.03)
    # the true marginal: forward-noised data graphs, alpha(T) A0 + sigma(T) z
    z = adj_proc.space.noise(data["adj"], data, gen)
    noised = adj_proc.q_sample(data["adj"], torch.ones(len(mask)), z)[pairs]
    assert vals.mean().item() == pytest.approx(noised.mean().item(), abs=0.04)
    assert vals.std().item() == pytest.approx(noised.std().item(), rel=0.04)
    # the N(0, I) prior is not that distribution: the test above can fail
    std_prior = adj_proc.prior_std
    assert abs(want_mean) > 0.05 or abs(std_prior - want_std) > 0.05
    # space constraints: symmetric, empty diagonal, padded nodes zero; X only on real nodes
    assert torch.equal(x_T["adj"], x_T["adj"].transpose(1, 2))
    assert x_T["adj"].diagonal(dim1=1, dim2=2).abs().max() == 0
    assert x_T["adj"][~(mask[:, :, None] * mask[:, None, :]).bool()].abs().max() == 0
    assert x_T["x"][mask == 0].abs().max() == 0
    ax, sx = float(procs["x"].alpha(t)), float(procs["x"].sigma(t))
    col2 = x_T["x"][mask > 0][:, 2]
    assert col2.mean().item() == pytest.approx(ax, abs=0.02)
    assert col2.std().item() == pytest.approx(sx, rel=0.03)


def test_model_samples_from_the_moment_matched_start_and_keeps_it_in_its_state_dict():
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=12, max_feat=4, sampling_steps=2, sampler="ddim",
                           prior="moment_matched", **SMALL)
    model.set_node_counts([10] * 4)
    with pytest.raises(RuntimeError, match="set_prior_moments"):
        model.sample(4)
    model.set_prior_moments(CYCLES)
    seen = []
    net = model.ema_network.module if model.sample_ema else model.network
    hook = net.register_forward_pre_hook(lambda mod, args: seen.append(args[0]["adj"].clone()))
    try:
        model.sample(400, generator=torch.Generator().manual_seed(1))
    finally:
        hook.remove()
    first = seen[0]
    assert first.shape[-1] == 10  # sampled on padding trimmed to the largest graph
    vals = first[:, ~torch.eye(10, dtype=torch.bool)]
    mean_T, std_T = moments_at_T(model.processes["adj"], model.prior_adj_mean,
                                 model.prior_adj_var)
    assert vals.mean().item() == pytest.approx(mean_T.item(), abs=0.02)
    assert vals.std().item() == pytest.approx(std_T.item(), rel=0.03)
    # stored with the weights; a state dict from before the buffers existed loads unset
    other = GraphDiffusion(max_nodes=12, max_feat=4, **SMALL)
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.prior_adj_mean, model.prior_adj_mean)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("prior_")}
    fresh = GraphDiffusion(max_nodes=12, max_feat=4, **SMALL)
    fresh.load_state_dict(old)
    assert fresh.prior_moments is None


def test_standard_start_is_the_process_prior():
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=12, max_feat=4, sampling_steps=1, sampler="ddim", **SMALL)
    model.set_node_counts([12] * 4)
    seen = []
    hook = model.network.register_forward_pre_hook(lambda m, a: seen.append(a[0]["adj"].clone()))
    model.sample(300, use_ema=False, generator=torch.Generator().manual_seed(2))
    hook.remove()
    vals = seen[0][:, ~torch.eye(12, dtype=torch.bool)]
    assert vals.mean().item() == pytest.approx(0.0, abs=0.02)
    assert vals.std().item() == pytest.approx(1.0, rel=0.03)


def test_network_outputs_on_real_nodes_do_not_depend_on_the_padding():
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=16, max_feat=4, **SMALL)
    st = _state([nx.cycle_graph(9), nx.path_graph(7), nx.star_graph(5)], max_nodes=16)
    gen = torch.Generator().manual_seed(3)
    st["x"] = (st["x"] + torch.randn(st["x"].shape, generator=gen)) * st["mask"][..., None]
    k = 9
    cut = {"x": st["x"][:, :k], "adj": st["adj"][:, :k, :k], "mask": st["mask"][:, :k]}
    t = torch.full((3,), 0.4)
    with torch.no_grad():
        full, small = model.network(st, t), model.network(cut, t)
    assert torch.allclose(full["x"][:, :k], small["x"], atol=1e-5)
    assert torch.allclose(full["adj"][:, :k, :k], small["adj"], atol=1e-5)
    model.set_node_counts([5, 6])
    out = model.sample(3, sampler="ddim", steps=2)
    assert out["adj"].shape == (3, 16, 16) and out["x"].shape == (3, 16, 4)
    assert out["adj"][:, 6:].abs().max() == 0 and out["mask"][:, 6:].abs().max() == 0


def test_unknown_prior_names_are_refused():
    with pytest.raises(ValueError, match=r"prior: unknown prior 'gauss'; use one of standard, "
                                         "moment_matched"):
        GraphDiffusion(max_nodes=8, max_feat=2, prior="gauss", **SMALL)
    model = GraphDiffusion(max_nodes=8, max_feat=2, **SMALL)
    model.set_node_counts([4])
    with pytest.raises(ValueError, match=r"sample: prior: unknown prior 'moments'"):
        model.sample(2, prior="moments")
    with pytest.raises(ValueError, match=r"x_mean must be 2 finite value"):
        model.set_prior_moments({"x_mean": [0.5], "x_var": [0.1, 0.1], "adj_mean": 0.1,
                                 "adj_var": 0.09})


def test_evaluate_model_estimates_missing_moments_from_the_named_dataset():
    from domaindiff_graphs import CommunitySmall
    from domaindiff_graphs.evaluate import evaluate_model

    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=20, max_feat=10, sampler="ddim", sampling_steps=2, **SMALL)
    dm = CommunitySmall()
    res, samples, _ = evaluate_model(model, dm, num_samples=4, orbit=False,
                                     sampler_options={"prior": "moment_matched"})
    assert res["prior"] == "moment_matched"
    assert res["prior_moments_from"] == "CommunitySmall training split"
    dense = to_dense_state(Batch.from_data_list(dm.train_data), 20)
    assert model.prior_adj_mean.item() == pytest.approx(
        data_moments([dense])["adj_mean"].item(), abs=1e-12)
