"""Samplers: one module per family, one signature for all.

    sample_<name>(denoiser, process, shape_or_x_T, steps, *, guidance=None, callback=None,
                  generator=None, progress=False, prior=None, info=None, **options) -> state

``steps`` counts network evaluations (NFE). The time-points convention, once: a first-order
sampler with ``steps = n`` visits ``n + 1`` points ``T = t_0 > ... > t_n`` and evaluates the
network at ``t_0 .. t_{n-1}``. For the SDE and ODE integrators (``euler_maruyama``, ``pc``,
``euler``, ``heun``, ``dpm_solver``, ``dpm_solver_pp_2m``, ``dpm_solver_pp_3m``,
``sde_dpm_solver_pp_2m``, ``unipc``, ``deis``) ``t_n = t_min``; for the
posterior samplers (``ancestral``, ``ddim``) ``t_{n-1} = t_min`` and ``t_n = 0`` (the sample is the
last clean prediction), so that ``ancestral`` with ``n = N`` is exactly DDPM. The multistep
solvers end the same way with ``final="denoise"`` (``t_n = 0``: the clean prediction at
``t_{n-1}``), which is DEIS's default (see ``MULTISTEP_DEFAULTS`` in
:mod:`domaindiff.samplers.base`). Samplers that take
several evaluations per step fit as many steps as the budget allows (see each docstring);
``ode`` is adaptive and ignores ``steps``. Every one of them also takes ``timesteps=``, the
caller's own grid (see :mod:`domaindiff.samplers.base`).

Every sampler reports the network evaluations it used the same way: a dict passed as ``info``
receives ``info["nfe"]``, and each callback dict carries the running count under ``"nfe"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from domaindiff.samplers.base import NoiseLevelGrid
from domaindiff.samplers.bernoulli import sample_bernoulli
from domaindiff.samplers.ddpm import sample_ancestral, sample_ddim
from domaindiff.samplers.deis import sample_deis
from domaindiff.samplers.dpm_solver import (
    sample_dpm_solver,
    sample_dpm_solver_pp_2m,
    sample_dpm_solver_pp_3m,
    sample_sde_dpm_solver_pp_2m,
)
from domaindiff.samplers.ode import sample_euler, sample_heun, sample_ode
from domaindiff.samplers.schedule import optimize_grid
from domaindiff.samplers.sde import sample_euler_maruyama, sample_pc
from domaindiff.samplers.unipc import sample_unipc

SAMPLERS: dict[str, Callable[..., Any]] = {
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpm_solver": sample_dpm_solver,
    "dpm_solver_pp_2m": sample_dpm_solver_pp_2m,
    "dpm_solver_pp_3m": sample_dpm_solver_pp_3m,
    "sde_dpm_solver_pp_2m": sample_sde_dpm_solver_pp_2m,
    "unipc": sample_unipc,
    "deis": sample_deis,
    "ode": sample_ode,
}


def register_sampler(name: str, fn: Callable[..., Any]) -> None:
    """Make a plugin's sampler available by name (e.g. GDSS's S4 solver)."""
    SAMPLERS[name] = fn


def get_sampler(name: str) -> Callable[..., Any]:
    """Look a sampler up by name (aliases: ``dpm_solver1/2/3``, ``ddpm``); clear error otherwise."""
    aliases: dict[str, tuple[str, dict[str, Any]]] = {
               "ddpm": ("ancestral", {}), "em": ("euler_maruyama", {}),
               "dpm_solver1": ("dpm_solver", {"order": 1}),
               "dpm_solver2": ("dpm_solver", {"order": 2}),
               "dpm_solver3": ("dpm_solver", {"order": 3}),
               "dpm_solver++": ("dpm_solver_pp_2m", {}),
               "unipc_bh1": ("unipc", {"variant": "bh1"}),
               "unipc_bh2": ("unipc", {"variant": "bh2"})}
    if name in SAMPLERS:
        return SAMPLERS[name]
    if name in aliases:
        base, kw = aliases[name]
        fn = SAMPLERS[base]

        # wraps sets __wrapped__: inspect.signature shows the options (domaindiff sample checks)
        @functools.wraps(fn)
        def aliased(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **{**kw, **kwargs})

        aliased.__name__ = aliased.__qualname__ = f"sample_{name}"
        return aliased
    raise ValueError(f"unknown sampler {name!r}; available: {sorted(SAMPLERS) + sorted(aliases)}")


__all__ = [
    "SAMPLERS",
    "NoiseLevelGrid",
    "get_sampler",
    "optimize_grid",
    "register_sampler",
    "sample_ancestral",
    "sample_bernoulli",
    "sample_ddim",
    "sample_deis",
    "sample_dpm_solver",
    "sample_dpm_solver_pp_2m",
    "sample_dpm_solver_pp_3m",
    "sample_sde_dpm_solver_pp_2m",
    "sample_euler",
    "sample_euler_maruyama",
    "sample_heun",
    "sample_ode",
    "sample_pc",
    "sample_unipc",
]

# the samplers of distilled students (domaindiff.distill), on the grid they were distilled for;
# registered here so that a student checkpoint naming one loads wherever samplers are imported
from domaindiff.distill.sampling import sample_consistency, sample_distilled  # noqa: E402

SAMPLERS.update({"distilled": sample_distilled, "consistency": sample_consistency})
