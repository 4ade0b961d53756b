import pytest
import torch

from domaindiff.guidance import (
    ClassifierFreeGuidance,
    Compose,
    EnergyGuidance,
    Guidance,
    Inpainting,
    ReconstructionGuidance,
)
from domaindiff.losses import denoising_loss, flow_matching_loss, sample_time
from domaindiff.parametrization import convert
from domaindiff.processes import VP, Interpolant
from domaindiff.samplers import SAMPLERS, get_sampler
from domaindiff.samplers.base import Model, multistep_default
from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

MIX = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.tensor([0.2, 0.2]))


@pytest.mark.parametrize("sampler,steps", [("ddim", 30), ("ancestral", 50), ("heun", 31),
                                           ("dpm_solver_pp_2m", 20), ("euler_maruyama", 100)])
def test_inpainting_keeps_observations_and_completes_consistently(sampler, steps):
    """Mixture of two far-apart modes: fixing the first coordinate at +2 must select the +2 mode."""
    proc = VP()
    n = 256
    obs = torch.zeros(n, 2)
    obs[:, 0] = 2.0
    known = torch.tensor([1.0, 0.0]).expand(n, 2)
    out = get_sampler(sampler)(ExactDenoiser(MIX, proc), proc, (n, 2), steps,
                               guidance=Inpainting({"x": obs}, {"x": known}),
                               generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], obs[:, 0])
    # the +2 component has variance 0.2: the free coordinate keeps std sqrt(0.2) = 0.447
    assert abs(float(out[:, 1].mean())) < 0.15 and 0.35 < float(out[:, 1].std()) < 0.55


def test_energy_guidance_selects_a_mode():
    proc = VP()
    guid = EnergyGuidance(lambda x0, t: (x0["x"][:, 0] - 2.0) ** 2, scale=5.0)
    out = get_sampler("ddim")(ExactDenoiser(MIX, proc), proc, (256, 2), 50, guidance=guid,
                              generator=torch.Generator().manual_seed(0))
    free = get_sampler("ddim")(ExactDenoiser(MIX, proc), proc, (256, 2), 50,
                               generator=torch.Generator().manual_seed(0))
    assert (out[:, 0] > 0).float().mean() > 0.95
    assert 0.3 < (free[:, 0] > 0).float().mean() < 0.7


def test_reconstruction_guidance_fits_the_measurement():
    proc = VP()
    y = torch.full((128, 1), -2.0)
    guid = ReconstructionGuidance(lambda x0: x0["x"][:, :1], y, scale=3.0)
    out = get_sampler("ddim")(ExactDenoiser(MIX, proc), proc, (128, 2), 50, guidance=guid,
                              generator=torch.Generator().manual_seed(0))
    # unguided, half the samples sit at +2 (mean |x - (-2)| about 2); DPS pulls them all to -2
    assert float((out[:, 0] + 2.0).abs().mean()) < 0.4
    assert float((out[:, 0] < 0).float().mean()) > 0.95


def test_classifier_free_guidance_is_the_linear_combination():
    def cond_den(state, t):
        return {"x": state["x"] * 0 + state["c"]}

    state = {"x": torch.zeros(3, 2), "c": torch.ones(3, 2)}
    t = torch.full((3,), 0.5)
    for w in (0.0, 1.0, 3.0):
        out = ClassifierFreeGuidance(cond_den, w, "c", 0.0)(state, t)["x"]
        torch.testing.assert_close(out, torch.full((3, 2), w))
    with pytest.raises(KeyError, match="condition"):
        ClassifierFreeGuidance(cond_den, 2.0, "y")(state, t)


def test_compose_runs_step_hooks():
    g = Compose(Inpainting({"x": torch.ones(4, 2)}, {"x": torch.ones(4, 2)}))
    out = get_sampler("ddim")(ExactDenoiser(MIX, VP()), VP(), (4, 2), 5, guidance=g)
    assert torch.equal(out, torch.ones(4, 2))


class AddToEps(Guidance):
    """A prediction hook: ``eps + c`` (x0 left alone: enough to see the order of composition)."""

    def __init__(self, c):
        self.c = c

    def predict(self, model, x, t):
        x0, eps = model.raw_predict(x, t)
        return x0, {k: v + self.c for k, v in eps.items()}


class ScaleEps(AddToEps):
    def predict(self, model, x, t):
        x0, eps = model.raw_predict(x, t)
        return x0, {k: v * self.c for k, v in eps.items()}


class _Then:
    """``outer`` applied on top of ``inner``: the sequence, written out by hand."""

    def __init__(self, model, inner):
        self.model, self.inner, self.procs = model, inner, model.procs

    def raw_predict(self, x, t):
        return self.inner.predict(self.model, x, t)


def _model(den=None):
    proc = VP()
    return Model(den or (lambda s, t: {"x": 0.5 * s["x"]}), {"x": proc})


def test_compose_of_two_prediction_hooks_is_applying_them_in_sequence():
    model, x, t = _model(), {"x": torch.randn(3, 2)}, torch.full((3,), 0.4)
    a, b = AddToEps(1.0), ScaleEps(2.0)
    _, raw = model.raw_predict(x, t)
    _, ab = Compose(a, b).predict(model, x, t)  # raised "one prediction-changing guidance" before
    _, ba = Compose(b, a).predict(model, x, t)
    torch.testing.assert_close(ab["x"], (raw["x"] + 1.0) * 2.0)
    torch.testing.assert_close(ba["x"], raw["x"] * 2.0 + 1.0)
    _, seq = b.predict(_Then(model, a), x, t)
    torch.testing.assert_close(ab["x"], seq["x"])
    torch.testing.assert_close(Compose().predict(model, x, t)[1]["x"], raw["x"])
    # a step-only guidance in the chain passes the prediction through
    inp = Inpainting({"x": torch.zeros(3, 2)}, {"x": torch.zeros(3, 2)})
    _, mixed = Compose(a, inp, b).predict(model, x, t)
    torch.testing.assert_close(mixed["x"], ab["x"])


def test_compose_of_two_energy_guidances_guides_by_the_summed_energy():
    """The second energy's gradient flows through the first one's prediction (DPS-style)."""
    model, x, t = _model(), {"x": torch.randn(4, 2)}, torch.full((4,), 0.3)
    w1, w2 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    g1 = EnergyGuidance(lambda s, t: s["x"] @ w1, scale=0.7)
    g2 = EnergyGuidance(lambda s, t: s["x"] @ w2, scale=0.7)
    both = EnergyGuidance(lambda s, t: s["x"] @ (w1 + w2), scale=0.7)
    x0c, epsc = Compose(g1, g2).predict(model, x, t)
    x0s, epss = both.predict(model, x, t)
    torch.testing.assert_close(epsc["x"], epss["x"])
    torch.testing.assert_close(x0c["x"], x0s["x"])
    assert not epsc["x"].requires_grad and not x.get("x").requires_grad
    _, raw = model.raw_predict(x, t)
    assert not torch.allclose(epsc["x"], g1.predict(model, x, t)[1]["x"])  # g2 did something
    assert not torch.allclose(epsc["x"], raw["x"])


class RecordSteps(Guidance):
    def __init__(self):
        self.seen = []

    def after_step(self, x, t_prev, t, procs, generator, final=False):
        assert t_prev.shape == t.shape == (x["x"].shape[0],)
        self.seen.append((float(t_prev[0]), float(t[0]), final))
        return x


#: samplers whose last step returns the clean prediction (t = 0): the posterior samplers and the
#: distilled students' samplers (domaindiff.distill.sampling)
ZERO_END = ("ancestral", "ddim", "distilled", "consistency")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_after_step_receives_the_previous_and_the_new_time(name):
    proc = VP()
    rec = RecordSteps()
    steps = 6
    get_sampler(name)(lambda s, t: torch.zeros_like(s["x"]), proc, (2, 2), steps,
                      guidance=rec, generator=torch.Generator().manual_seed(0))
    seen = rec.seen
    assert seen, name
    assert seen[0][0] == pytest.approx(proc.T), name  # the first step starts at T
    for (_, t0, f0), (p1, _, _) in zip(seen, seen[1:]):
        assert p1 == pytest.approx(t0) and not f0, name  # each step starts where the last ended
    assert all(p > t for p, t, _ in seen), name  # time runs backwards
    # a multistep solver whose measured default last step is the clean prediction ends at 0 too
    clean = name in ZERO_END or multistep_default({"x": proc}, name).final == "denoise"
    assert seen[-1][2] and seen[-1][1] == pytest.approx(0.0 if clean else proc.t_min), name


def test_guidance_without_the_hooks_is_refused_clearly():
    class OnlyAfterStep:  # duck-typed, not a Guidance: the missing hook is named
        def after_step(self, x, t_prev, t, procs, generator, final=False):
            return x

    with pytest.raises(TypeError, match=r"OnlyAfterStep lacks the hook\(s\) \['predict'\]"):
        get_sampler("ddim")(lambda s, t: torch.zeros_like(s["x"]), VP(), (2, 2), 3,
                            guidance=OnlyAfterStep())
    with pytest.raises(TypeError, match="subclass domaindiff.guidance.Guidance"):
        Compose(object())
    # a subclass overriding one hook gets the "no change" default for the other
    assert isinstance(RecordSteps(), Guidance) and isinstance(Inpainting({}, {}), Guidance)


def test_losses_are_consistent_across_parametrizations():
    """Same network, same t and noise: likelihood / min-SNR weighted losses are equal whatever the
    network outputs (the weighting is converted exactly)."""
    proc = VP()
    x0 = MIX.sample(64, torch.Generator().manual_seed(0))
    t = torch.rand(64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05

    def wrong_eps(state, t):
        return {"x": 0.9 * ExactDenoiser(MIX, proc)(state, t)["x"] + 0.1}

    for weighting in ("likelihood", "min_snr", "uniform"):
        ref = denoising_loss(wrong_eps, proc, x0, t=t, weighting=weighting,
                             generator=torch.Generator().manual_seed(2))
        for kind in ("x0", "v", "score"):
            def net(state, t, kind=kind):
                return {"x": convert(wrong_eps(state, t)["x"], "eps", kind, state["x"], t, proc)}

            got = denoising_loss(net, proc, x0, t=t, weighting=weighting, parametrization=kind,
                                 generator=torch.Generator().manual_seed(2))
            if weighting == "uniform":
                assert not torch.isclose(got, ref)
            else:
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


def test_exact_denoiser_minimises_the_loss():
    proc = VP()
    x0 = MIX.sample(4096, torch.Generator().manual_seed(0))
    exact = ExactDenoiser(MIX, proc)
    base = denoising_loss(exact, proc, x0, generator=torch.Generator().manual_seed(1))
    worse = denoising_loss(lambda s, t: {"x": exact(s, t)["x"] * 1.1}, proc, x0,
                           generator=torch.Generator().manual_seed(1))
    assert base < worse


def test_flow_matching_loss_zero_for_exact_velocity_on_a_point_mass():
    proc = Interpolant()
    x0 = torch.ones(32, 2)
    loss = flow_matching_loss(
        lambda s, t: {"x": (s["x"] - x0) / t[:, None]},  # x1 - x0, with x1 = (x_t - (1-t) x0)/t
        proc, x0)
    assert float(loss) < 1e-8


def test_time_samplers():
    proc = VP()
    t = sample_time(100, proc, "stratified", torch.Generator().manual_seed(0))
    strata = ((t - proc.t_min) / (proc.T - proc.t_min) * 100).floor()
    assert len(torch.unique(strata)) == 100
    t = sample_time(1000, proc, "lognormal", torch.Generator().manual_seed(0))
    assert t.min() >= proc.t_min and t.max() <= proc.T
    with pytest.raises(ValueError, match="time_sampler"):
        sample_time(3, proc, "sobol")
    with pytest.raises(ValueError, match="weighting"):
        denoising_loss(lambda s, t: s, proc, torch.zeros(3, 2), weighting="snr")
