"""S4 and GDSS PC: transitions equal GDSS's closed forms, exact-score sampling, invariants."""

import pytest
import torch

from domaindiff.guidance import Compose, Guidance, Inpainting
from domaindiff.processes import VE, VP
from domaindiff.samplers import get_sampler
from domaindiff.samplers.sde import langevin_update
from domaindiff.spaces import NodeMasked, SymmetricAdjacency
from domaindiff_graphs.solvers import backward_transition, sample_s4


def test_backward_transition_matches_gdss_closed_forms():
    x = torch.randn(3, 4)
    t = torch.tensor([0.9, 0.5, 0.2])
    dt = -torch.tensor([0.01, 0.02, 0.05])  # GDSS passes a negative dt
    vp = VP(0.1, 1.0)
    mean, std = backward_transition(vp, x, t, t + dt)
    lmc = 0.25 * dt * (2 * 0.1 + (2 * t + dt) * (1.0 - 0.1))  # GDSS VPSDE.transition
    assert torch.allclose(mean, torch.exp(-lmc)[:, None] * x, atol=1e-6)
    assert torch.allclose(std.flatten(), torch.sqrt(1 - torch.exp(2 * lmc)), atol=1e-6)
    ve = VE(0.2, 1.0)
    mean, std = backward_transition(ve, x, t, t + dt)
    s = lambda u: 0.2 * (1.0 / 0.2) ** u  # noqa: E731
    assert torch.allclose(mean, x)
    assert torch.allclose(std.flatten(), torch.sqrt(s(t) ** 2 - s(t + dt) ** 2), atol=1e-6)


def _gaussian_denoiser(procs, var0):
    """Exact eps prediction for x0 ~ N(0, var0 I): eps = sigma x / (alpha^2 var0 + sigma^2)."""

    def den(state, t):
        out = {}
        for k, p in procs.items():
            a, s = p.alpha(t), p.sigma(t)
            c = (s / (a**2 * var0 + s**2)).reshape(-1, *[1] * (state[k].dim() - 1))
            out[k] = c * state[k]
        return out

    return den


@pytest.mark.parametrize("sampler,steps,kw", [("s4", 200, {"snr": 0.1, "scale_eps": 1.0}),
                                               ("gdss_pc", 400, {"predictor": "reverse",
                                                                 "snr": 0.1, "scale_eps": 1.0})])
def test_exact_score_gives_data_variance_on_mixed_vp_ve(sampler, steps, kw):
    var0 = 0.25
    # VP with beta_max 20 and VE with sigma_max 10: the marginal at T equals the prior up to
    # <0.3%, so only the solver's error is measured
    procs = {"x": VP(0.1, 20.0, space=NodeMasked()),
             "adj": VE(0.01, 10.0, space=SymmetricAdjacency())}
    g = torch.Generator().manual_seed(0)
    tmpl = {"x": torch.zeros(1000, 4, 2), "adj": torch.zeros(1000, 4, 4),
            "mask": torch.ones(1000, 4)}
    out = get_sampler(sampler)(_gaussian_denoiser(procs, var0), procs, tmpl, steps, generator=g,
                               **kw)
    assert out["x"].var().item() == pytest.approx(var0, rel=0.12)
    upper = out["adj"][:, 0, 1:]
    assert upper.var().item() == pytest.approx(var0, rel=0.12)
    assert torch.equal(out["adj"], out["adj"].transpose(1, 2))
    assert (out["adj"].diagonal(dim1=1, dim2=2) == 0).all()


def test_s4_keeps_masks_and_counts_one_evaluation_per_step():
    procs = {"x": VP(0.1, 1.0, space=NodeMasked()), "adj": VP(0.1, 1.0, space=SymmetricAdjacency())}
    calls = []

    def den(state, t):
        calls.append(float(t[0]))
        return {"x": 0.1 * state["x"], "adj": 0.1 * state["adj"]}

    mask = torch.tensor([[1, 1, 1, 0, 0.0], [1, 1, 1, 1, 1]])
    tmpl = {"x": torch.zeros(2, 5, 3), "adj": torch.zeros(2, 5, 5), "mask": mask}
    out = sample_s4(den, procs, tmpl, 25, generator=torch.Generator().manual_seed(0), eps=1e-3)
    assert len(calls) == 25 and calls[0] == pytest.approx(1.0)
    assert (out["x"][0, 3:] == 0).all() and (out["adj"][0, 3:] == 0).all()
    assert (out["adj"][0, :, 3:] == 0).all()
    assert torch.equal(out["adj"], out["adj"].transpose(1, 2))
    assert out["mask"] is mask


def test_fast_s4_options_keep_the_total_langevin_time():
    from domaindiff_graphs.solvers import fast_s4_options

    opts = fast_s4_options(100, 0.05)
    assert opts["scale_eps"] == 1.0
    # eta ~ snr^2 per time point: 100 points x eta(100) == 1000 points x eta(1000)
    assert 100 * opts["snr"] ** 2 == pytest.approx(1000 * 0.05**2)
    assert fast_s4_options(1000, 0.05)["snr"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        fast_s4_options(0, 0.05)


def test_fast_s4_snr_cap_bounds_the_langevin_step_but_never_below_the_reference():
    from domaindiff_graphs.solvers import SNR_CAP, fast_s4_options

    # community-small (0.05) at 100 NFE is below the cap: unchanged
    assert fast_s4_options(100, 0.05, snr_cap=SNR_CAP)["snr"] == pytest.approx(0.05 * 10**0.5)
    # ENZYMES (0.15) at 50 NFE would get 0.67, a step of 0.9 sigma^2: capped at 0.16
    assert fast_s4_options(50, 0.15)["snr"] == pytest.approx(0.15 * 20**0.5)
    assert fast_s4_options(50, 0.15, snr_cap=SNR_CAP)["snr"] == pytest.approx(SNR_CAP)
    # QM9 (0.2, above the cap) keeps its own snr; ego-small (0) keeps no corrector
    assert fast_s4_options(100, 0.2, snr_cap=SNR_CAP)["snr"] == pytest.approx(0.2)
    assert fast_s4_options(50, 0.0, snr_cap=SNR_CAP)["snr"] == 0.0
    with pytest.raises(ValueError, match="snr_cap must be > 0"):
        fast_s4_options(50, 0.1, snr_cap=0.0)


def test_s4_per_component_options_equal_the_scalar_ones_and_act_per_component():
    den, procs, tmpl = _fixed_problem()
    run = lambda **kw: sample_s4(den, procs, tmpl, 8,  # noqa: E731
                                 generator=torch.Generator().manual_seed(3), **kw)
    same = run(snr=0.2, scale_eps=0.7)
    split = run(snr={"x": 0.2, "adj": 0.2}, scale_eps={"x": 0.7, "adj": 0.7})
    assert torch.equal(same["x"], split["x"]) and torch.equal(same["adj"], split["adj"])
    # a different adjacency noise scale leaves X alone only if the components are independent:
    # here the denoiser is per component, so X is unchanged and A changes
    other = run(snr=0.2, scale_eps={"x": 0.7, "adj": 1.0})
    assert torch.equal(other["x"], same["x"]) and not torch.equal(other["adj"], same["adj"])
    with pytest.raises(ValueError, match=r"scale_eps: per-component values must name exactly "
                                         r"\['adj', 'x'\], got \['x'\]"):
        run(snr=0.2, scale_eps={"x": 0.7})


# Outputs of sample_s4 / sample_gdss_pc on a fixed seed, recorded before the solvers were moved
# onto the core's Langevin step and with_t_min: the refactor must not change a number.
_REFERENCE = {
    "s4": ([-0.7661768198013306, -0.26208269596099854, 0.7148444652557373, -1.0649890899658203,
            0.0, 0.0, 0.819481611251831, 0.5025089383125305, 1.7018353939056396,
            -0.9994344115257263, -0.1897474080324173, 0.5483086705207825],
           [-1.7805134057998657, 0.0, 2.1419920921325684, -0.8387357592582703, 0.0,
            1.7400922775268555]),
    "pc_euler": ([-0.5571588277816772, -0.342383474111557, 0.9653517007827759,
                  -1.0790364742279053, 0.0, 0.0, -0.8662732839584351, 0.16160255670547485,
                  0.645118236541748, 0.10642271488904953, -0.08136262744665146,
                  -0.23113828897476196],
                 [-1.582987666130066, 0.0, 1.1773406267166138, 0.11423181742429733, 0.0,
                  0.31129342317581177]),
    "pc_reverse_none": ([-0.22935864329338074, -0.37393635511398315, 1.1410497426986694,
                         -0.8715349435806274, 0.0, 0.0, -0.8720332384109497,
                         0.47998619079589844, 0.4719516634941101, -0.18816938996315002,
                         -0.0001262519508600235, -0.059586912393569946],
                        [-1.0355337858200073, 0.0, 0.758788526058197, -0.03453735634684563,
                         0.0, 0.2721449136734009]),
}
_RUNS = {
    "s4": ("s4", {"snr": 0.2}),
    "pc_euler": ("gdss_pc", {"predictor": "euler", "snr": 0.2, "scale_eps": 0.7}),
    "pc_reverse_none": ("gdss_pc", {"predictor": "reverse", "corrector": "none"}),
}


def _fixed_problem():
    procs = {"x": VP(0.1, 1.0, space=NodeMasked()), "adj": VE(0.2, 1.0, space=SymmetricAdjacency())}

    def den(state, t):
        c = (1 + t).reshape(-1, 1, 1)
        return {"x": 0.3 * c * state["x"] + 0.05, "adj": 0.2 * c * state["adj"]}

    tmpl = {"x": torch.zeros(2, 3, 2), "adj": torch.zeros(2, 3, 3),
            "mask": torch.tensor([[1, 1, 0.0], [1, 1, 1]])}
    return den, procs, tmpl


@pytest.mark.parametrize("run", sorted(_RUNS))
def test_solvers_give_the_recorded_numbers_for_a_fixed_seed(run):
    name, kw = _RUNS[run]
    den, procs, tmpl = _fixed_problem()
    out = get_sampler(name)(den, procs, tmpl, 6, generator=torch.Generator().manual_seed(7),
                            eps=1e-3, **kw)
    x_ref, adj_ref = _REFERENCE[run]
    adj = torch.cat([out["adj"][:, 0, 1:].flatten(), out["adj"][:, 1, 2]])
    assert torch.allclose(out["x"].flatten(), torch.tensor(x_ref), atol=1e-6, rtol=0)
    assert torch.allclose(adj, torch.tensor(adj_ref), atol=1e-6, rtol=0)


class _Counted:
    """A denoiser wrapper that counts its calls (independently of the samplers' own counter)."""

    def __init__(self, den):
        self.den, self.calls = den, 0

    def __call__(self, state, t):
        self.calls += 1
        return self.den(state, t)


@pytest.mark.parametrize("name,kw", [("s4", {}), ("gdss_pc", {"n_corrector": 2}),
                                     ("gdss_pc", {"corrector": "none"})])
def test_solvers_report_the_network_calls_in_info_and_callback(name, kw):
    den, procs, tmpl = _fixed_problem()
    counted, info, seen = _Counted(den), {}, []
    get_sampler(name)(counted, procs, tmpl, 9, generator=torch.Generator().manual_seed(0),
                      eps=1e-3, info=info, callback=lambda d: seen.append(d["nfe"]),
                      progress=True, **kw)
    assert info["nfe"] == counted.calls > 0
    assert seen[-1] == counted.calls and seen == sorted(seen) and len(set(seen)) == len(seen)


class _DoublePrediction(Guidance):
    """A prediction hook that evaluates the network twice (returns the second evaluation)."""

    def predict(self, model, x, t):
        model.raw_predict(x, t)
        return model.raw_predict(x, t)


@pytest.mark.parametrize("name", ["s4", "gdss_pc"])
def test_solvers_count_guidance_evaluations_and_apply_inpainting(name):
    den, procs, tmpl = _fixed_problem()
    counted, info = _Counted(den), {}
    y = torch.full((2, 3, 2), 0.5) * tmpl["mask"][..., None]
    known = torch.zeros(2, 3, 1)
    known[:, 0] = 1
    guide = Compose(_DoublePrediction(), Inpainting({"x": y}, {"x": known}))
    out = get_sampler(name)(counted, procs, tmpl, 6, guidance=guide, info=info,
                            generator=torch.Generator().manual_seed(0))
    plain = _Counted(den)
    get_sampler(name)(plain, procs, tmpl, 6, generator=torch.Generator().manual_seed(0))
    assert info["nfe"] == counted.calls == 2 * plain.calls
    assert torch.equal(out["x"][:, 0], y[:, 0])


@pytest.mark.parametrize("name", ["s4", "gdss_pc"])
def test_solvers_start_from_the_given_state_with_prior_false(name):
    den, procs, tmpl = _fixed_problem()
    x_T = {**tmpl, "x": torch.randn(2, 3, 2) * tmpl["mask"][..., None],
           "adj": torch.zeros(2, 3, 3)}
    first = []

    def recording(state, t):
        if not first:
            first.append(state["x"].clone())
        return den(state, t)

    get_sampler(name)(recording, procs, x_T, 4, prior=False)
    assert torch.equal(first[0], x_T["x"])
    first.clear()
    get_sampler(name)(recording, procs, x_T, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(first[0], x_T["x"])


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, 2.0])
def test_solvers_refuse_an_end_time_outside_the_process(eps):
    den, procs, tmpl = _fixed_problem()
    for name in ("s4", "gdss_pc"):
        with pytest.raises(ValueError, match=r"^eps: need 0 < eps < T=1.0, got"):
            get_sampler(name)(den, procs, tmpl, 4, eps=eps)


def test_graphs_keeps_no_copy_of_the_core_langevin_step_or_with_t_min():
    import domaindiff_graphs.solvers as solvers

    assert not hasattr(solvers, "with_t_min") and not hasattr(solvers, "_langevin_alpha")
    assert solvers.langevin_update is langevin_update


def test_fast_s4_rule_keeps_the_cold_corrector_only_where_the_component_ends_noisy():
    from domaindiff_graphs.solvers import SNR_CAP, fast_s4_rule

    enzymes = {"x": VP(0.1, 1.0, space=NodeMasked()), "adj": VE(0.2, 1.0, space=SymmetricAdjacency())}
    opts = fast_s4_rule(enzymes, 50, {"snr": 0.15, "scale_eps": 0.7, "eps": 1e-4})
    # the VE adjacency ends at sigma(1e-4) = 0.2: its N(0, 0.04) noise crosses 0.5 for 0.6%
    assert opts["scale_eps"] == {"x": 1.0, "adj": 0.7}
    assert opts["snr"] == pytest.approx(SNR_CAP) and opts["eps"] == 1e-4
    community = {"x": VP(0.1, 1.0, space=NodeMasked()),
                 "adj": VP(0.1, 1.0, space=SymmetricAdjacency())}
    opts = fast_s4_rule(community, 100, {"snr": 0.05, "scale_eps": 0.7, "eps": 1e-4})
    assert opts["scale_eps"] == {"x": 1.0, "adj": 1.0}
    assert opts["snr"] == pytest.approx(0.05 * 10**0.5)
    qm9 = {"x": VE(0.1, 1.0, space=NodeMasked()), "adj": VE(0.1, 1.0, space=SymmetricAdjacency())}
    opts = fast_s4_rule(qm9, 100, {"snr": 0.2, "scale_eps": 0.7, "eps": 1e-4})
    # QM9's VE components end at sigma 0.1 > END_NOISE_MAX: the reference's colder chain
    assert opts["scale_eps"] == {"x": 0.7, "adj": 0.7} and opts["snr"] == pytest.approx(0.2)


def test_fast_s4_rule_snr_is_the_capped_sqrt_law_and_adds_no_corrector():
    from domaindiff_graphs.solvers import SNR_CAP, fast_s4_rule

    grid = {"x": VP(0.1, 1.0, space=NodeMasked()), "adj": VP(0.2, 0.8, space=SymmetricAdjacency())}
    opts = fast_s4_rule(grid, 100, {"snr": 0.1, "scale_eps": 0.7, "eps": 1e-4})
    assert opts["snr"] == pytest.approx(SNR_CAP) and set(opts) == {"snr", "scale_eps", "eps"}
    # a reference without corrector (ego-small: snr 0) gets none
    assert fast_s4_rule(grid, 50, {"snr": 0.0, "scale_eps": 0.0, "eps": 1e-4})["snr"] == 0.0
    enzymes = {"x": VP(0.1, 1.0, space=NodeMasked()), "adj": VE(0.2, 1.0, space=SymmetricAdjacency())}
    for snr in (0.05, 0.15, 0.3):
        last = None
        for steps in (10, 50, 100, 500, 1000, 4000):
            opts = fast_s4_rule(enzymes, steps, {"snr": snr, "scale_eps": 0.7})
            law = snr * (1000 / steps) ** 0.5
            assert opts["snr"] == pytest.approx(min(law, max(snr, SNR_CAP)))
            assert "eps" not in opts  # no end time given: the process's own
            assert last is None or opts["snr"] <= last  # more steps never a stronger corrector
            last = opts["snr"]


def test_s4_final_x0_ends_on_the_last_denoised_prediction_per_component():
    procs = {"x": VP(0.1, 1.0, space=NodeMasked()), "adj": VE(0.2, 1.0, space=SymmetricAdjacency())}
    tmpl = {"x": torch.zeros(8, 5, 2), "adj": torch.zeros(8, 5, 5), "mask": torch.ones(8, 5)}
    den = _gaussian_denoiser(procs, 0.25)
    seen = []
    outs = {}
    for flag in (False, {"x": False, "adj": True}):
        g = torch.Generator().manual_seed(3)
        outs[str(flag)] = sample_s4(den, procs, tmpl, 6, generator=g, snr=0.1, final_x0=flag,
                                    callback=lambda d: seen.append(d["denoised"]))
    plain, x0_adj = outs["False"], outs[str({"x": False, "adj": True})]
    last = seen[-1]  # the second run's last evaluation
    assert torch.equal(x0_adj["adj"], last["adj"])  # the denoised prediction, not the step
    assert torch.equal(x0_adj["x"], plain["x"])  # the other component is unchanged
    assert not torch.allclose(x0_adj["adj"], plain["adj"])
    with pytest.raises(ValueError, match="final_x0"):
        sample_s4(den, procs, tmpl, 2, final_x0={"adj": True})
