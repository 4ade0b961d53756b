"""Fit a sampler's time grid to a trained model: global error against a fine reference solve.

The method (one of the seed papers' families, chosen because it can be tested exactly): the
grid's interior points are chosen to minimise the mean squared distance between what the
``nfe``-step solver returns and what a fine adaptive solve of the same probability-flow ODE
returns *from the same prior draws*, i.e. the solver's global truncation error measured on the
model itself. This is the objective of the "optimised time steps" line of work (Xue et al. 2024,
*Accelerating Diffusion Sampling with Optimized Time Steps*; AutoDiffusion and "Align Your Steps"
search the grid for the same end with other distances: a sample-quality score and a KL upper
bound), here minimised directly over the grid without a surrogate: the ``nfe - 1`` interior
points are parametrised by softmax increments of the half log-SNR ``lambda`` between the fixed end
points (any parameter gives a valid, strictly decreasing grid) and searched by Nelder-Mead
(derivative-free: each trial is one ``nfe``-step solve of a batch, so the network needs no
gradient). The fitted grid is then used with ``timesteps=`` on fresh draws.

For an exact Gaussian-mixture denoiser the reference solve is the exact ODE solution, so the
objective and its improvement over the default grid are exact (``tests/core/test_grids.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from domaindiff.samplers.base import (
    CountingDenoiser,
    Denoiser,
    Processes,
    Start,
    as_processes,
    multistep_grid,
    reference_process,
    time_points,
)

#: samplers whose grid has one network evaluation per interval and ends at ``t_min``
GRID_SAMPLERS = ("euler", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc", "deis")


def _grid_from_params(p: Any, z: np.ndarray, lam_hi: float, lam_lo: float) -> list[float]:
    w = np.exp(z - z.max())
    u = np.cumsum(w / w.sum())[:-1]
    lam = torch.tensor(lam_hi + (lam_lo - lam_hi) * u, dtype=torch.float64)
    inner = p.t_from_lambda(lam).tolist()
    return [float(p.T), *[float(v) for v in inner], float(p.t_min)]


def optimize_grid(model_or_denoiser: Any, process: Processes | None = None,
                  shape_or_x_T: Start | None = None, nfe: int = 10, *,
                  sampler: str = "dpm_solver_pp_2m",
                  sampler_options: Mapping[str, Any] | None = None,
                  init_schedule: str | None = None, n_samples: int = 256,
                  max_trials: int = 300, rtol: float = 1e-5, atol: float = 1e-5,
                  generator: torch.Generator | None = None,
                  info: dict[str, Any] | None = None) -> Tensor:
    """The ``nfe + 1``-point grid that minimises ``sampler``'s error against a fine ODE solve.

    Args:
        model_or_denoiser: a denoiser ``denoiser(state, t)`` (with its ``parametrization``), or a
            :class:`~domaindiff.module.DiffusionModule` (its EMA denoiser, processes and
            ``sample_template`` are used).
        process: one process or a dict per key (default: the module's).
        shape_or_x_T: the states to fit on: a shape, an ``x_T`` or a state template (default for
            a module: ``sample_template(n_samples)``). Prior draws use ``generator``.
        nfe: the network evaluations of the grid to fit (``nfe + 1`` points, ends fixed at ``T``
            and ``t_min``).
        sampler: one of :data:`GRID_SAMPLERS`.
        sampler_options: the sampler's options (e.g. ``{"order": 3}``).
        init_schedule: the grid the search starts from (default: the sampler's).
        n_samples: prior draws for a module's template.
        max_trials: Nelder-Mead's budget of trial grids (each costs ``nfe`` evaluations).
        rtol: tolerance of the reference solve (adaptive dopri5).
        atol: tolerance of the reference solve.
        generator: random generator of the prior draws.
        info: if a dict, receives ``nfe`` (all evaluations spent), ``error_init``, ``error``
            (mean squared distance to the reference per coordinate, before and after) and
            ``trials``.

    Returns:
        The fitted grid, a float64 tensor of ``nfe + 1`` strictly decreasing times, ready for
        ``timesteps=``.

    Raises:
        ValueError: for a sampler outside :data:`GRID_SAMPLERS`, ``nfe < 2`` or a missing process
            or shape.
    """
    from scipy.optimize import minimize

    from domaindiff.samplers import get_sampler
    from domaindiff.samplers.base import setup
    from domaindiff.samplers.ode import sample_ode

    if sampler not in GRID_SAMPLERS:
        raise ValueError(f"sampler: optimize_grid fits samplers with one evaluation per "
                         f"interval, {list(GRID_SAMPLERS)}; got {sampler!r}")
    if int(nfe) < 2:
        raise ValueError(f"nfe: a grid with interior points needs nfe >= 2, got {nfe}")
    den: Denoiser = model_or_denoiser
    if callable(getattr(model_or_denoiser, "denoiser", None)) and hasattr(model_or_denoiser,
                                                                          "processes"):
        den = model_or_denoiser.denoiser(True)
        process = model_or_denoiser.processes if process is None else process
        if shape_or_x_T is None:
            shape_or_x_T = model_or_denoiser.sample_template(n_samples)
    if process is None or shape_or_x_T is None:
        raise ValueError("optimize_grid: give process and shape_or_x_T (or a DiffusionModule)")
    procs, _ = as_processes(process)
    counter = CountingDenoiser(den)
    opts = dict(sampler_options or {})
    fn = get_sampler(sampler)
    st = setup(process, shape_or_x_T, generator, None)
    start = st.x
    keys = list(procs)
    with torch.no_grad():
        ref_state = sample_ode(counter, process, dict(start), None, prior=False, rtol=rtol,
                               atol=atol)
    ref = ref_state if isinstance(ref_state, dict) else {keys[0]: ref_state}

    def error(ts: list[float]) -> float:
        with torch.no_grad():
            out = fn(counter, process, dict(start), None, prior=False, timesteps=ts, **opts)
        out = out if isinstance(out, dict) else {keys[0]: out}
        tot = sum(float(((out[k] - ref[k]).double() ** 2).mean()) for k in keys)
        return tot if np.isfinite(tot) else 1e30

    p = reference_process(procs)
    lam_hi = float(p.lambda_(torch.tensor(p.T, dtype=torch.float64)))
    lam_lo = float(p.lambda_(torch.tensor(p.t_min, dtype=torch.float64)))
    schedule = init_schedule or _default_schedule(fn)
    if schedule is None and sampler != "euler":
        schedule = multistep_grid(procs, None)
    init = torch.tensor(time_points(procs, int(nfe), schedule), dtype=torch.float64)
    dlam = np.diff(p.lambda_(init).numpy())
    z0 = np.log(np.clip(dlam / dlam.sum(), 1e-6, None))
    err0 = error(_grid_from_params(p, z0, lam_hi, lam_lo))
    res = minimize(lambda z: error(_grid_from_params(p, z, lam_hi, lam_lo)), z0,
                   method="Nelder-Mead",
                   options={"maxfev": int(max_trials), "xatol": 1e-4, "fatol": 1e-12,
                            "adaptive": True})
    best = res.x if res.fun < err0 else z0
    if info is not None:
        info.update(nfe=counter.nfe, error_init=err0, error=float(min(res.fun, err0)),
                    trials=int(res.nfev))
    return torch.tensor(_grid_from_params(p, best, lam_hi, lam_lo), dtype=torch.float64)


def _default_schedule(fn: Any) -> str | None:
    import inspect

    par = inspect.signature(fn).parameters.get("schedule")
    return None if par is None else par.default
