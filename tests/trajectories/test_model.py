"""EGTN / GeoTDM: equivariance of the denoiser and of whole samplers, loss, finite sampling."""

from __future__ import annotations

import pytest
import torch

from domaindiff_trajectories import GeoTDM
from domaindiff_trajectories.networks import TEMPORAL, TemporalAttention


def _orthogonal(gen: torch.Generator, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def _batch(gen: torch.Generator, b: int = 3, n: int = 4, tc: int = 4, tp: int = 6) -> dict:
    mask = torch.ones(b, n, dtype=torch.float64)
    mask[0, -1] = 0.0  # one padded node
    x = torch.randn(b, n, tp, 3, generator=gen, dtype=torch.float64) * mask[:, :, None, None]
    cond = torch.randn(b, n, tc, 3, generator=gen, dtype=torch.float64) * mask[:, :, None, None]
    h = torch.randn(b, n, 1, generator=gen, dtype=torch.float64).sign()
    return {"x": x, "cond": cond, "h": h, "mask": mask}


def _model(task: str = "forecast", prior: str = "learnable", **kw) -> GeoTDM:
    torch.manual_seed(0)
    m = GeoTDM(task=task, hidden=16, layers=2, time_dim=8, prior=prior, prior_layers=1,
               pred_frames=6, num_steps=25, ema_decay=0.0, **kw).double()
    # make the coordinate heads non-trivial (they start near zero, as in EGNN)
    with torch.no_grad():
        for name, p in m.network.named_parameters():
            if "phi_x" in name or "rel_x" in name or "prior_head" in name:
                p.normal_(0, 0.3)
            elif "radial.2" in name:  # e3nn layer's tensor-product weights
                p.normal_(0, 0.1)
    return m.eval()


def _transform(batch: dict, q: torch.Tensor, shift: torch.Tensor) -> dict:
    m = batch["mask"][:, :, None, None]
    out = dict(batch)
    out["x"] = (batch["x"] @ q.T + shift) * m
    out["cond"] = (batch["cond"] @ q.T + shift) * m
    return out


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("prior,spatial,temporal", [
    ("learnable", "egnn", "attention"), ("last", "egnn", "attention"),
    ("com", "egnn", "attention"), ("learnable", "e3nn", "attention"),
    ("learnable", "egnn", "fixed"), ("learnable", "egnn", "absolute")])
def test_denoiser_equivariant(reflect, prior, spatial, temporal):
    gen = torch.Generator().manual_seed(1)
    model = _model(prior=prior, spatial=spatial, temporal=temporal)
    q, shift = _orthogonal(gen, reflect), torch.randn(3, generator=gen, dtype=torch.float64)
    batch = _batch(gen)
    t = torch.rand(3, generator=gen, dtype=torch.float64)
    moved = _transform(batch, q, shift)
    net = model.network
    ref, ref_m = net.reference(batch), net.reference(moved)
    m = batch["mask"][:, :, None, None]
    torch.testing.assert_close(ref_m, (ref @ q.T + shift) * m, rtol=1e-9, atol=1e-9)
    # the residual (diffused state) rotates but does not translate; eps rotates
    state = {**batch, "x": batch["x"] - ref}
    state_m = {**moved, "x": moved["x"] - ref_m}
    eps, eps_m = net(state, t)["x"], net(state_m, t)["x"]
    assert eps.abs().max() > 1e-3  # non-trivial output
    torch.testing.assert_close(eps_m, eps @ q.T, rtol=1e-9, atol=1e-9)
    # permuting nodes permutes the output
    perm = torch.tensor([2, 0, 3, 1])
    sp = {k: v[:, perm] for k, v in state.items()}
    torch.testing.assert_close(net(sp, t)["x"], eps[:, perm], rtol=1e-9, atol=1e-9)


def _temporal_layer(mode: str) -> TemporalAttention:
    torch.manual_seed(0)
    layer = TemporalAttention(8, 4, mode).double()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "phi_x" in name or "rel_x" in name:
                p.normal_(0, 0.3)
    return layer


@pytest.mark.parametrize("mode", TEMPORAL)
def test_temporal_ablations_change_the_layer_as_stated(mode):
    """``fixed`` ("no attention"): weights per frame offset, the same for any features, no
    queries or keys; ``absolute`` ("no shift invariance"): the output depends on the frame
    indices themselves; ``attention`` and ``fixed`` only on their differences."""
    gen = torch.Generator().manual_seed(7)
    h, h2 = (torch.randn(2, 3, 5, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    x = torch.randn(2, 3, 5, 3, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.float64)
    layer = _temporal_layer(mode)
    names = {n.split(".")[0] for n, _ in layer.named_parameters()}
    shifted = torch.arange(5, dtype=torch.float64) + 7.0  # the same window, 7 frames later
    (hh, xx), (hs, xs) = layer(h, x, mask), layer(h, x, mask, frames=shifted)
    a, a2 = layer.weights(h), layer.weights(h2)
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    assert (xx - x).abs().max() > 1e-3  # the coordinates move
    if mode == "absolute":
        assert "pos" in names and not names & {"rel_k", "rel_v", "rel_x"}
        assert (hs - hh).abs().max() > 1e-3 and (xs - xx).abs().max() > 1e-4
    else:
        assert "pos" not in names and {"rel_v", "rel_x"} <= names
        torch.testing.assert_close(hs, hh, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(xs, xx, rtol=1e-10, atol=1e-10)
    if mode == "fixed":
        assert not names & {"q", "k", "rel_k"} and a.shape == (5, 5)
        torch.testing.assert_close(a, a2)  # independent of the features
        # its logits depend on t - s only: log a_ts - log a_tu = w(t - s) - w(t - u)
        la = a.log()
        torch.testing.assert_close(la[1:, 1:] - la[1:, 1:2], la[:-1, :-1] - la[:-1, :1])
    else:
        assert {"q", "k"} <= names and a.shape == (2, 3, 5, 5)
        assert (a - a2).abs().max() > 1e-3  # data-dependent attention


def test_temporal_option_reaches_every_egtn_and_is_checked():
    model = GeoTDM(hidden=8, layers=2, time_dim=8, prior_layers=1, pred_frames=6,
                   temporal="fixed")
    net = model.network
    assert model.hparams["temporal"] == "fixed"
    assert {m.mode for m in [*net.egtn.temporal, *net.prior_net.temporal]} == {"fixed"}
    assert {m.mode for m in GeoTDM(hidden=8, layers=1).network.egtn.temporal} == {"attention"}
    with pytest.raises(ValueError, match="temporal"):
        GeoTDM(hidden=8, layers=1, temporal="bogus")
    with pytest.raises(ValueError, match="frames"):
        _temporal_layer("attention")(torch.zeros(1, 2, 5, 8, dtype=torch.float64),
                                     torch.zeros(1, 2, 5, 3, dtype=torch.float64),
                                     torch.ones(1, 2, dtype=torch.float64),
                                     frames=torch.arange(4.0))


def test_no_equivariance_ablation_is_not_equivariant_but_edges_are_used():
    """The ablation row's spatial layer breaks rotations and translations (so its score measures
    what equivariance buys); the data's ``edge`` attributes, when given, replace ``h_i h_j``."""
    gen = torch.Generator().manual_seed(3)
    model = _model(spatial="plain")
    with torch.no_grad():
        for name, p in model.network.named_parameters():
            if "phi_x.2" in name:
                p.normal_(0, 0.3)
    q, shift = _orthogonal(gen, False), torch.randn(3, generator=gen, dtype=torch.float64)
    batch = _batch(gen)
    t = torch.rand(3, generator=gen, dtype=torch.float64)
    net = model.network
    state = {**batch, "x": batch["x"] - net.reference(batch)}
    moved = _transform(batch, q, shift)
    state_m = {**moved, "x": moved["x"] - net.reference(moved)}
    eps, eps_m = net(state, t)["x"], net(state_m, t)["x"]
    assert (eps_m - eps @ q.T).abs().max() > 1e-3
    # edges: the batch's spring constants change the output; h_i h_j is the default
    eq = _model()
    h = batch["h"]
    same = {**state, "edge": h[:, :, None] * h[:, None]}
    torch.testing.assert_close(eq.network(same, t)["x"], eq.network(state, t)["x"])
    springs = {**state, "edge": torch.rand(3, 4, 4, 1, generator=gen, dtype=torch.float64)}
    assert (eq.network(springs, t)["x"] - eq.network(state, t)["x"]).abs().max() > 1e-6


@pytest.mark.parametrize("kw", [{}, {"parametrization": "x0", "scale": 0.5}])
def test_unconditional_denoiser_equivariant_and_centred(kw):
    gen = torch.Generator().manual_seed(2)
    model = _model("unconditional", **kw)
    q, shift = _orthogonal(gen, True), torch.randn(3, generator=gen, dtype=torch.float64)
    batch = model.batch_to_state(_batch(gen))  # centred over nodes and frames
    space = model.processes["x"].space
    t = torch.rand(3, generator=gen, dtype=torch.float64)
    eps = model.denoise(model.network, batch, t)["x"]
    moved = {**batch, "x": space.project((batch["x"] @ q.T + shift), batch)}
    torch.testing.assert_close(moved["x"], batch["x"] @ q.T)  # translation removed
    torch.testing.assert_close(model.denoise(model.network, moved, t)["x"], eps @ q.T,
                               rtol=1e-9, atol=1e-9)
    m = batch["mask"][:, :, None, None]
    torch.testing.assert_close((eps * m).sum((1, 2)), torch.zeros(3, 3, dtype=torch.float64),
                               atol=1e-10, rtol=0)


def test_x0_skip_alpha_feeds_alpha_scaled_residual():
    gen = torch.Generator().manual_seed(5)
    kw = {"parametrization": "x0", "scale": 0.5}
    plain, skip = _model(**kw), _model(x0_skip="alpha", skip_sigma_data=1.0, **kw)
    skip.network.load_state_dict(plain.network.state_dict())
    state = skip.batch_to_state(_batch(gen))
    t = torch.rand(3, generator=gen, dtype=torch.float64)
    a = skip.processes["x"].alpha(t).view(-1, 1, 1, 1)
    out = skip.denoise(skip.network, state, t)["x"]
    ref = plain.denoise(plain.network, {**state, "x": state["x"] * a}, t)["x"]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="x0_skip"):
        _model(x0_skip="alpha")  # eps prediction has no skip connection to change


def test_skip_sigma_data_is_the_linear_posterior_mean_factor():
    """``skip_sigma_data = s`` feeds ``alpha s^2 / (alpha^2 s^2 + sigma^2) x_t``: checked against
    E[x0 | x_t] of a Gaussian x0 ~ N(0, s^2) by regression on simulated pairs."""
    gen = torch.Generator().manual_seed(6)
    kw = {"parametrization": "x0", "scale": 0.5}
    plain, skip = _model(**kw), _model(x0_skip="alpha", skip_sigma_data=0.3, **kw)
    skip.network.load_state_dict(plain.network.state_dict())
    proc = skip.processes["x"]
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    c = skip.skip_factor(t)
    a, sig = proc.alpha(t), proc.sigma(t)
    x0 = 0.3 * torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    xt = a * x0 + sig * torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    slope = (x0 * xt).sum(0) / (xt * xt).sum(0)  # least-squares E[x0 | x_t] = slope * x_t
    torch.testing.assert_close(c, slope, rtol=0.02, atol=3e-3)
    assert float(c[1]) < float(a[1]) / 2  # much less noise passes at mid noise than with alpha
    state = skip.batch_to_state(_batch(gen))
    out = skip.denoise(skip.network, state, t)["x"]
    ref = plain.denoise(plain.network, {**state, "x": state["x"] * c.view(-1, 1, 1, 1)}, t)["x"]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert torch.equal(_model(x0_skip="alpha", skip_sigma_data=1.0, **kw).skip_factor(t),
                       a)  # s = 1: exactly alpha
    default = _model(x0_skip="alpha", **kw)  # unset: SKIP_SIGMA_DATA = 0.25, recorded as used
    assert default.skip_sigma_data == 0.25 and default.hparams["skip_sigma_data"] == 0.25
    s2 = 0.25 ** 2
    torch.testing.assert_close(default.skip_factor(t), a * s2 / (a * a * s2 + sig * sig))
    assert _model(**kw).hparams["skip_sigma_data"] == 1.0  # no alpha skip: nothing to change
    with pytest.raises(ValueError, match="skip_sigma_data"):
        _model(skip_sigma_data=0.5, **kw)  # no alpha skip to change
    with pytest.raises(ValueError, match="skip_sigma_data"):
        _model(x0_skip="alpha", skip_sigma_data=0.0, **kw)


def test_checkpoint_from_before_skip_sigma_data_keeps_its_alpha_skip(tmp_path):
    """An alpha-skip checkpoint without ``skip_sigma_data`` (older versions) was trained with
    plain ``alpha``: the loader rebuilds it with 1, not today's default 0.25."""
    from domaindiff.checkpoint import load_checkpoint

    kw = {"parametrization": "x0", "scale": 0.5, "x0_skip": "alpha"}
    for hp, want in (({}, 1.0), ({"skip_sigma_data": 0.25}, 0.25)):
        m = _model(**kw, **hp)
        hparams = {k: v for k, v in dict(m.hparams).items() if k != "skip_sigma_data"}
        hparams.update(hp)
        path = tmp_path / f"old{len(hp)}.ckpt"
        torch.save({"state_dict": m.state_dict(), "hyper_parameters": hparams,
                    "domaindiff": {"class_path": "domaindiff_trajectories.model.GeoTDM"}}, path)
        assert load_checkpoint(path).skip_sigma_data == want
    assert GeoTDM.upgrade_hparams({"x0_skip": "identity"}) == {"x0_skip": "identity"}


class _RotatedNoise:
    """A space whose noise is the base space's noise rotated by ``q`` (same generator stream)."""

    def __init__(self, base, q):
        self.base, self.q = base, q

    def noise(self, x_like, state=None, generator=None):
        return self.base.noise(x_like, state, generator) @ self.q.T

    def __getattr__(self, name):
        return getattr(self.base, name)


@pytest.mark.parametrize("sampler,steps,kw", [
    ("ancestral", 25, {}), ("ddim", 8, {}), ("dpm_solver_pp_2m", 6, {}),
    ("ddim", 8, {"parametrization": "x0", "scale": 0.5, "prior_init": "last"}),
    ("ancestral", 25, {"parametrization": "x0", "scale": 0.5, "x0_skip": "alpha"})])
def test_whole_sampler_commutes_with_rigid_motions(sampler, steps, kw):
    gen = torch.Generator().manual_seed(3)
    model = _model(**kw)
    q, shift = _orthogonal(gen, True), 5 * torch.randn(3, generator=gen, dtype=torch.float64)
    batch = _batch(gen)
    moved = _transform(batch, q, shift)
    out = model.sample(template=model.sample_template(3, batch), sampler=sampler, steps=steps,
                       generator=torch.Generator().manual_seed(7), use_ema=False)["x"]
    space = model.processes["x"].space
    model.processes["x"].space = _RotatedNoise(space, q)
    try:
        out_m = model.sample(template=model.sample_template(3, moved), sampler=sampler,
                             steps=steps, generator=torch.Generator().manual_seed(7),
                             use_ema=False)["x"]
    finally:
        model.processes["x"].space = space
    m = batch["mask"][:, :, None, None]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out_m, (out @ q.T + shift) * m, rtol=1e-8, atol=1e-8)


def test_untrained_sampling_stays_bounded_with_x0_clip():
    gen = torch.Generator().manual_seed(4)
    batch = _batch(gen)
    free = _model(x0_clip=None)
    clipped = _model(x0_clip=10.0)
    kw = {"sampler": "ddim", "steps": 10, "use_ema": False}
    out_free = free.sample(template=free.sample_template(3, batch),
                           generator=torch.Generator().manual_seed(0), **kw)["x"]
    out = clipped.sample(template=clipped.sample_template(3, batch),
                         generator=torch.Generator().manual_seed(0), **kw)["x"]
    ref = clipped.network.reference(batch)
    assert torch.isfinite(out).all()
    # the residual's nodes are within the clip bound; without the clip they drift far away
    assert (out - ref).norm(dim=-1).max() <= 10.0 + 1e-6
    assert not ((out_free - ref).norm(dim=-1) <= 10.0).all()  # (also false for NaN)


def test_training_reduces_loss_and_trains_the_prior():
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    model = GeoTDM(hidden=16, layers=1, time_dim=8, prior_layers=1, pred_frames=6, lr=3e-3,
                   num_steps=50)
    b = _batch(gen, b=8)
    # a learnable target: straight-line motion continuing the condition
    vel = torch.randn(8, 4, 1, 3, generator=gen, dtype=torch.float64) * 0.3
    cond = b["cond"][:, :, :1] + vel * torch.arange(4, dtype=torch.float64)[None, None, :, None]
    x = cond[:, :, -1:] + vel * torch.arange(1, 7, dtype=torch.float64)[None, None, :, None]
    batch = {k: v.float() for k, v in {**b, "cond": cond, "x": x,
                                       "mask": torch.ones(8, 4)}.items()}
    opt = torch.optim.Adam(model.network.parameters(), lr=3e-3)
    head0 = model.network.prior_head.weight.detach().clone()
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = model.loss(model.batch_to_state(batch))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert not torch.equal(model.network.prior_head.weight, head0)


def test_time_power_draws_training_times_with_density_proportional_to_t_power():
    """``time_power`` p: t = t_min + (T - t_min) u^(1/p); p = 1 keeps the uniform loss exactly."""
    gen = torch.Generator().manual_seed(3)
    batch = {k: v.repeat(40, *([1] * (v.dim() - 1))) for k, v in _batch(gen).items()}
    base, same = _model(x0_skip="alpha", parametrization="x0"), _model(
        x0_skip="alpha", parametrization="x0", time_power=1.0)
    near = _model(x0_skip="alpha", parametrization="x0", time_power=1.0 + 1e-9)
    for m in (base, same, near):
        m.generator.manual_seed(5)
    state = base.batch_to_state(batch)
    loss = base.loss(state)
    torch.testing.assert_close(loss, same.loss(state))
    # the time_power path (its own draw of t) is the uniform loss when p -> 1
    torch.testing.assert_close(near.loss(state), loss, rtol=1e-6, atol=0.0)
    seen: list[torch.Tensor] = []
    for p in (1.0, 2.0, 4.0):
        m = _model(x0_skip="alpha", parametrization="x0", time_power=p)
        orig = m.denoise
        m.denoise = lambda net, s, t, orig=orig: (seen.append(t), orig(net, s, t))[1]
        m.generator.manual_seed(5)
        m.loss(state)
        t = seen[-1]
        proc = m.processes["x"]
        assert t.min() >= proc.t_min and t.max() <= proc.T
        # E[u^(1/p)] = p / (p + 1): 0.5, 0.667, 0.8 (120 draws: within 0.06)
        assert abs(float(t.mean()) - p / (p + 1)) < 0.06, (p, float(t.mean()))
    # the same uniform draw u, raised to 1/p: ordered pointwise
    assert bool((seen[1] >= seen[0] - 1e-12).all()) and bool((seen[2] >= seen[1] - 1e-12).all())
    with pytest.raises(ValueError, match="time_power"):
        _model(time_power=0.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="task"):
        GeoTDM(task="bogus")
    with pytest.raises(ValueError, match="prior"):
        GeoTDM(prior="bogus")
    with pytest.raises(KeyError, match="cond"):
        GeoTDM(hidden=8, layers=1).batch_to_state({"x": torch.zeros(1, 2, 20, 3),
                                                   "h": torch.zeros(1, 2, 1)})


def test_two_dimensional_pedestrian_states_with_padding():
    torch.manual_seed(0)
    model = GeoTDM(hidden=8, layers=1, time_dim=8, prior_layers=1, pred_frames=12,
                   num_steps=100, ema_decay=0.0)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    batch = {"x": torch.randn(2, 3, 12, 2) * mask[:, :, None, None],
             "cond": torch.randn(2, 3, 8, 2) * mask[:, :, None, None],
             "h": torch.ones(2, 3, 1), "mask": mask}
    assert torch.isfinite(model.loss(model.batch_to_state(batch)))
    out = model.forecast(batch, k=2, sampler="ddim", steps=4)
    assert out.shape == (2, 2, 3, 12, 2) and torch.isfinite(out).all()
    assert (out[:, 1, 1:] == 0).all()  # padded agents stay at zero


@pytest.mark.parametrize(("sampler", "steps"), [("heun", 5), ("pc", 7), ("ddim", 3)])
def test_evaluate_reports_the_network_calls_as_nfe(sampler, steps):
    from domaindiff_trajectories.evaluate import forecast_metrics

    model = _model()
    gen = torch.Generator().manual_seed(0)
    loader = [_batch(gen), _batch(gen, b=2)]  # two batches
    calls = []
    hook = model.network.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        res, _ = forecast_metrics(model, loader, sampler, steps, k=2, progress=False)
    finally:
        hook.remove()
    assert res["nfe_per_trajectory"] == len(calls) / 2 > 0  # per batch: 2 forecasts
    assert res["nfe"] == len(calls) / 4
