"""Explicit time grids: every ODE/SDE sampler runs on the caller's own times, validated."""

import pytest
import torch

from domaindiff.processes import VE, VP
from domaindiff.samplers import SAMPLERS, get_sampler
from domaindiff.samplers.base import NoiseLevelGrid, explicit_grid
from domaindiff.toy.mixtures import IsoMixtureEps
from tests.catalogue import BadInput, assert_refused, raised

GRID_SAMPLERS = sorted(set(SAMPLERS) - {"ode"})
# evaluations a sampler makes on a grid of K intervals (its default options)
NFE = {"heun": lambda k: 2 * k - 1, "pc": lambda k: 2 * k, "dpm_solver": lambda k: 3 * k}


def _recorder():
    calls = []

    def den(x, t):
        calls.append(float(t[0]))
        return torch.zeros_like(x["x"])

    return den, calls


@pytest.mark.parametrize("name", GRID_SAMPLERS)
def test_sampler_evaluates_on_the_given_grid_and_counts_it(name):
    """The network is called at the grid's points; ``info["nfe"]`` and ``steps`` agree with them."""
    proc = VP(t_min=1e-3)
    zero_end = name in ("ancestral", "ddim")
    grid = [0.9, 0.6, 0.35, 0.2, 0.05, 0.0 if zero_end else 0.002]
    den, calls = _recorder()
    info, seen = {}, []
    get_sampler(name)(den, proc, (3, 2), None, timesteps=torch.tensor(grid), info=info,
                      callback=lambda d: seen.append(d["t"]))
    k = len(grid) - 1
    assert info["nfe"] == len(calls) == NFE.get(name, lambda k: k)(k), name
    for point in grid[:-1]:  # every interval starts at a grid point where the network is called
        assert any(abs(c - point) < 1e-6 for c in calls), (name, point, calls)
    assert max(calls) <= grid[0] + 1e-6 and min(calls) >= grid[-1] - 1e-6, name
    assert seen[-1] == pytest.approx(grid[-1]), name
    # the same grid with a matching steps is accepted; a disagreeing one is refused
    get_sampler(name)(den, proc, (3, 2), info["nfe"], timesteps=grid)
    with pytest.raises(ValueError, match=r"steps=\d+ does not match timesteps"):
        get_sampler(name)(den, proc, (3, 2), info["nfe"] + 3, timesteps=grid)


@pytest.mark.parametrize("name", ["euler", "dpm_solver_pp_2m", "deis", "unipc", "ddim"])
def test_the_default_grid_given_explicitly_gives_the_same_samples(name):
    proc = VP()
    from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

    den = ExactDenoiser(GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), 0.1), proc)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    seen = []

    def rec(x, t):
        seen.append(float(t[0]))
        return den(x, t)

    base = get_sampler(name)(rec, proc, x_T.clone(), 8)
    # DDIM and DEIS (whose default last step is the clean prediction) end at 0
    grid = [*seen, 0.0] if name in ("ddim", "deis") else [*seen, proc.t_min]
    again = get_sampler(name)(den, proc, x_T.clone(), None, timesteps=grid)
    torch.testing.assert_close(again, base, rtol=1e-5, atol=1e-5)


def test_adaptive_ode_runs_between_the_grid_ends():
    proc = VP(t_min=1e-3)
    den, calls = _recorder()
    info = {}
    get_sampler("ode")(den, proc, (3, 2), None, timesteps=[0.8, 0.5, 0.1], info=info)
    assert calls and max(calls) <= 0.8 + 1e-6 and min(calls) >= 0.1 - 1e-6
    assert info["nfe"] == len(calls)
    with pytest.raises(ValueError, match="adaptive method"):
        get_sampler("ode")(den, proc, (3, 2), None, timesteps=[0.8, 0.5, 0.1], method="rk4",
                           options={"step_size": 0.1})


def test_ddim_may_stop_at_a_time_above_zero():
    """A grid ending at s > 0: the last step is a posterior step to s, not the clean prediction."""
    proc = VP(t_min=1e-3)
    seen = []
    out = get_sampler("ddim")(lambda x, t: torch.ones_like(x["x"]), proc, torch.zeros(2, 2), None,
                              timesteps=[0.5, 0.3], callback=lambda d: seen.append(d))
    x0 = seen[-1]["denoised"]["x"]
    # x_s = alpha_s x0 + sigma_s eps with eps = 1
    a, s = float(proc.alpha(torch.tensor(0.3))), float(proc.sigma(torch.tensor(0.3)))
    torch.testing.assert_close(out, a * x0 + s * torch.ones_like(out))


def _bad(grid, name="euler", proc=None):
    proc = proc or VP(t_min=1e-3)
    return lambda tmp: raised(ValueError, lambda: get_sampler(name)(
        lambda x, t: torch.zeros_like(x["x"]), proc, (2, 2), None, timesteps=grid))


CATALOGUE = [
    BadInput("core-grid-increasing", "sample_euler(..., timesteps=[0.5, 0.7, 0.1])",
             r"^timesteps: times must strictly decrease .*timesteps\[0\]=0\.5 <= "
             r"timesteps\[1\]=0\.7", _bad([0.5, 0.7, 0.1]), 1),
    BadInput("core-grid-repeated", "sample_euler(..., timesteps=[0.5, 0.5, 0.1])",
             r"^timesteps: times must strictly decrease", _bad([0.5, 0.5, 0.1]), 1),
    BadInput("core-grid-above-T", "sample_euler(VP(), ..., timesteps=[1.5, 0.1])",
             r"^timesteps: times must lie in process\['x'\]'s range \[t_min=0\.001, T=1\.0\]",
             _bad([1.5, 0.1]), 1),
    BadInput("core-grid-below-t-min",
             "sample_dpm_solver_pp_2m(VP(t_min=1e-3), timesteps=[1, 5e-4])",
             r"^timesteps: times must lie in .*with_t_min",
             _bad([1.0, 5e-4], "dpm_solver_pp_2m"), 1),
    BadInput("core-grid-zero-end-integrator", "sample_euler(VP(t_min=1e-3), timesteps=[1, 0])",
             r"^timesteps: times must lie in .*with_t_min", _bad([1.0, 0.0]), 1),
    BadInput("core-grid-2d", "sample_unipc(..., timesteps=[[1.0, 0.5]])",
             r"^timesteps: expected a 1-D sequence of at least 2 times", _bad([[1.0, 0.5]],
                                                                             "unipc"), 1),
    BadInput("core-grid-one-point", "sample_deis(..., timesteps=[0.5])",
             r"^timesteps: expected a 1-D sequence of at least 2 times", _bad([0.5], "deis"), 1),
    BadInput("core-grid-nan", "sample_heun(..., timesteps=[1.0, nan, 0.1])",
             r"^timesteps: times must be finite", _bad([1.0, float("nan"), 0.1], "heun"), 1),
    BadInput("core-grid-text", "sample_pc(..., timesteps='fast')",
             r"^timesteps: expected a 1-D sequence of times", _bad("fast", "pc"), 1),
    BadInput("core-final-unknown", "sample_deis(..., 5, final='clean')",
             r"^final: unknown last step 'clean'; use one of \('step', 'denoise'\)",
             lambda tmp: raised(ValueError, lambda: get_sampler("deis")(
                 lambda x, t: torch.zeros_like(x["x"]), VP(), (2, 2), 5, final="clean")), 1),
    BadInput("core-final-denoise-grid",
             "sample_unipc(..., timesteps=[1.0, 0.5, 0.1], final='denoise')",
             r"^final='denoise' with timesteps: end the grid at 0",
             lambda tmp: raised(ValueError, lambda: get_sampler("unipc")(
                 lambda x, t: torch.zeros_like(x["x"]), VP(), (2, 2), None,
                 timesteps=[1.0, 0.5, 0.1], final="denoise")), 1),
    BadInput("core-deis-basis", "sample_deis(..., 5, basis='lambda')",
             r"^basis: unknown DEIS basis 'lambda'; use one of \('time', 'logsnr'\)",
             lambda tmp: raised(ValueError, lambda: get_sampler("deis")(
                 lambda x, t: torch.zeros_like(x["x"]), VP(), (2, 2), 5, basis="lambda")), 1),
    BadInput("core-noise-grid-levels", "sample_deis(VE(), ..., schedule=NoiseLevelGrid("
             "sigma_min=100))",
             r"^NoiseLevelGrid: sigma_min 100 is not below the start level 50",
             lambda tmp: raised(ValueError, lambda: get_sampler("deis")(
                 lambda x, t: torch.zeros_like(x["x"]), VE(), (2, 2), 5,
                 schedule=NoiseLevelGrid(sigma_min=100.0))), 1),
    BadInput("core-grid-no-steps", "sample_ddim(..., steps=None)",
             r"^steps: ddim needs a number of network evaluations or timesteps=",
             lambda tmp: raised(ValueError, lambda: get_sampler("ddim")(
                 lambda x, t: torch.zeros_like(x["x"]), VP(), (2, 2), None)), 1),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_grids_are_refused(case, tmp_path):
    assert_refused(case, tmp_path)


def test_grid_is_checked_against_every_component():
    procs = {"a": VP(t_min=1e-3), "b": VP(t_min=0.1)}
    with pytest.raises(ValueError, match=r"process\['b'\]"):
        explicit_grid(procs, [0.9, 0.05])
    assert explicit_grid(procs, (0.9, 0.1)) == [0.9, 0.1]


def test_optimized_grid_beats_the_default_grid_on_fresh_draws():
    """optimize_grid's 10-NFE grid for DPM-Solver++(2M) on a 4-mode mixture: on prior draws it was
    not fitted on, its squared error to the exact ODE solution is below a third of the default
    (log-SNR) grid's."""
    from domaindiff.samplers import optimize_grid, sample_ode

    proc = VP(t_min=1e-3)
    ang = torch.arange(4) * torch.pi / 2
    den = IsoMixtureEps(2 * torch.stack([ang.cos(), ang.sin()], 1), 0.2, proc)
    info = {}
    grid = optimize_grid(den, proc, (128, 2), 10, generator=torch.Generator().manual_seed(0),
                         max_trials=120, info=info)
    assert grid.shape == (11,) and (grid[1:] < grid[:-1]).all()
    assert grid[0] == proc.T and grid[-1] == pytest.approx(proc.t_min)
    assert info["error"] < info["error_init"] and info["nfe"] > 1000
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    exact = sample_ode(den, proc, x_T.clone(), None, rtol=1e-8, atol=1e-8)
    errs = {}
    for key, ts in (("default", None), ("optimized", grid)):
        x = get_sampler("dpm_solver_pp_2m")(den, proc, x_T.clone(), 10 if ts is None else None,
                                            timesteps=ts)
        errs[key] = float(((x - exact) ** 2).mean())
    assert errs["optimized"] < errs["default"] / 3, errs


def test_optimize_grid_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="sampler: optimize_grid fits"):
        from domaindiff.samplers import optimize_grid

        optimize_grid(lambda x, t: x["x"], VP(), (4, 2), 10, sampler="heun")
    with pytest.raises(ValueError, match="nfe"):
        optimize_grid(lambda x, t: x["x"], VP(), (4, 2), 1)


def test_iso_mixture_eps_is_the_exact_mixture_eps():
    """The isotropic closed form equals the general mixture's exact eps (-sigma * score)."""
    from domaindiff.toy.mixtures import ExactDenoiser, GaussianMixture

    g = torch.Generator().manual_seed(0)
    means = 2 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    proc = VP()
    x = torch.randn(7, 3, generator=g, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    exact = ExactDenoiser(GaussianMixture(means, 0.3**2), proc)(x, t)
    torch.testing.assert_close(IsoMixtureEps(means, 0.3, proc)(x, t), exact, rtol=1e-10,
                               atol=1e-12)
    assert IsoMixtureEps(means, 0.3, proc)({"x": x}, t)["x"].shape == (7, 3)
