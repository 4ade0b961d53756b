"""Sampler accuracy against network evaluations, with the exact score of Gaussian mixtures.

Sections (``--sections``, default all):

* ``nfe``: for each sampler and NFE in {5, 10, 20, 50, 100, 250}, the energy distance between its
  samples and exact samples of the 8-Gaussian ring under the VP SDE, wall time, and which NFE each
  sampler needs to reach the accuracy of the adaptive probability-flow ODE (dopri5).
* ``sweep``: at 10 NFE, solver x grid x t_min on every core process (VP, sub-VP, VE, EDM, linear
  interpolant, discrete DDPM) for 8-mode isotropic mixtures in 2 and 16 dimensions: the
  within-mode spread ratio (RMS distance to the nearest mode over the exact one) and the energy
  distance against the two-sample noise floor.
* ``defaults``: every ODE sampler with its default options at 10 NFE on the same targets.
* ``optimize``: :func:`domaindiff.samplers.optimize_grid`'s fitted 10-NFE grid against the
  default grid, on prior draws it was not fitted on.
* ``familyfit``: a data-independent candidate in the spirit of "align your steps": one 10-NFE
  DEIS-3 grid per process fitted once on a reference family of mixtures (:data:`FIT_FAMILY`:
  other dimensions, mode counts and mode widths than the goal's targets), with
  :func:`optimize_grid`'s objective (squared error to the exact ODE solution from the same
  draws, log-averaged over the family) and its parametrisation (softmax log-SNR increments).
* ``odefloor``: the exact ODE solution from ``heldout``'s prior draws, scored the same way
  (the energy distance a deterministic solver from those draws can reach, per seed).
* ``heldout``: on held-out mixtures (:func:`heldout_targets`: the goal's 2-D ring and 16-D
  8-mode mixture, and 6-D / 48-D ones), 3 prior seeds each, the multistep solvers, DDIM and
  ancestral (the plugins' default samplers) with no options, the best fixed variant of the
  sweep per process (:data:`BEST_FIXED`: grid, t_min, last step) and the family-fitted grid
  (``--grids``, the JSON ``familyfit`` wrote), and DEIS with the defaults it had before the
  noise-level grids; spread ratio against the exact width and, paired, against the exact ODE
  solution from the same draws (``--deis-only``: the two DEIS rows only).
* ``noisegrid``: the noise-level grids (:class:`~domaindiff.samplers.base.NoiseLevelGrid`)
  DEIS-3's defaults were chosen from (log-SNR basis, clean last step), on VP (standing for every
  process whose ``sigma/alpha`` at ``T`` is above 50) and VE, on the held-out mixtures, 3 seeds.
* ``unseen``: DEIS with no options (and as before) on four mixtures and three seeds (3-5) that
  no default was chosen on (:func:`unseen_targets`).

The sections that compare grids for DEIS-3 (``sweep``, ``sweep2``, ``familyfit`` and the best
fixed variants of ``heldout``) pass ``basis="time"``, the DEIS they measured before the
per-process defaults; ``nfe``, ``defaults`` and ``optimize`` use DEIS as it now is by default.

    python benchmarks/core_samplers.py [--sections nfe,sweep,defaults,optimize] [--n 2000]
        [--out benchmarks/results/core_samplers.json]
    python benchmarks/core_samplers.py --sections sweep2 \
        --out benchmarks/results/core_samplers_sweep2.json
    python benchmarks/core_samplers.py --sections familyfit \
        --out benchmarks/results/core_samplers_familyfit.json
    python benchmarks/core_samplers.py --sections heldout \
        --grids benchmarks/results/core_samplers_familyfit.json \
        --out benchmarks/results/core_samplers_heldout.json
    python benchmarks/core_samplers.py --sections defaults      # (and unseen, noisegrid,
    python benchmarks/core_samplers.py --sections heldout --deis-only   # one at a time)

The denoiser is the closed-form ``eps`` of an isotropic mixture (the same function as
``domaindiff.toy.mixtures.ExactDenoiser``, without its general-covariance linear algebra).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from domaindiff.data import atomic_write_text
from domaindiff.processes import EDM, VE, VP, DiscreteDDPM, GaussianProcess, Interpolant, SubVP
from domaindiff.samplers import get_sampler, optimize_grid, sample_ode
from domaindiff.samplers.base import FINALS, MULTISTEP_GRIDS, NoiseLevelGrid
from domaindiff.toy.mixtures import IsoMixtureEps

NFE_SAMPLERS = [
    ("euler_maruyama", {}), ("pc", {"snr": 0.16}), ("ancestral", {}), ("ddim", {}),
    ("euler", {}), ("heun", {}), ("dpm_solver", {"order": 1}), ("dpm_solver", {"order": 2}),
    ("dpm_solver", {"order": 3}), ("dpm_solver_pp_2m", {}), ("dpm_solver_pp_3m", {}),
    ("sde_dpm_solver_pp_2m", {}), ("unipc", {"order": 2}), ("unipc", {"order": 3}),
    ("unipc", {"order": 3, "variant": "bh1"}), ("deis", {"order": 3}),
]
NFES = (5, 10, 20, 50, 100, 250)
SWEEP_SOLVERS = [("dpm_solver_pp_2m", {}), ("dpm_solver_pp_3m", {}), ("unipc", {"order": 3}),
                 ("deis", {"order": 3, "basis": "time"})]
GRID_NAMES = ("uniform", "logsnr", "karras", "quadratic", "cubic")
DEFAULT_SAMPLERS = ["ddim", "euler", "heun", "dpm_solver", "dpm_solver_pp_2m",
                    "dpm_solver_pp_3m", "unipc", "deis", "sde_dpm_solver_pp_2m"]
STD = 0.2


def processes() -> dict[str, GaussianProcess]:
    """Every core Gaussian process with its default settings."""
    return {"vp": VP(), "subvp": SubVP(), "ve": VE(), "edm": EDM(), "interpolant": Interpolant(),
            "ddpm": DiscreteDDPM()}


def modes(dim: int) -> Tensor:
    """8 mode centres: a ring of radius 2 in 2-D, seeded Gaussian draws (scale 2) otherwise."""
    if dim == 2:
        ang = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
        return 2 * torch.stack([ang.cos(), ang.sin()], 1)
    return 2.0 * torch.randn(8, dim, generator=torch.Generator().manual_seed(0),
                             dtype=torch.float64)


def exact(mu: Tensor, n: int, seed: int, std: float = STD) -> Tensor:
    """Exact samples of the mixture."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, len(mu), (n,), generator=g)
    return (mu[k] + std * torch.randn(n, mu.shape[1], generator=g, dtype=torch.float64)).float()


def energy(x: Tensor, y: Tensor, yy: float | None = None) -> float:
    """Energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` (V-statistic)."""
    x, y = x.float(), y.float()
    yy = float(torch.cdist(y, y).mean()) if yy is None else yy
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean()) - yy


def spread(x: Tensor, mu: Tensor, std: float = STD) -> float:
    """Within-mode RMS distance to the nearest mode, per coordinate, over the exact ``std``."""
    x = x.double()
    k = torch.cdist(x, mu.to(x.dtype)).argmin(1)
    return float(((x - mu[k]) ** 2).mean().sqrt()) / std


class Target:
    """One mixture with its reference set and noise floor.

    Args:
        dim: dimension (the mode centres are :func:`modes` unless ``mu`` is given).
        n: samples per set.
        floors: exact-vs-exact draws of the energy-distance noise floor.
        mu: ``(K, dim)`` mode centres (default :func:`modes`).
        std: the modes' standard deviation (default :data:`STD`).
        name: label of the tables.
    """

    def __init__(self, dim: int, n: int, floors: int = 8, mu: Tensor | None = None,
                 std: float = STD, name: str | None = None) -> None:
        self.dim, self.n, self.std = dim, n, std
        self.mu = modes(dim) if mu is None else mu
        self.name = name or f"{dim}-D K{len(self.mu)}"
        self.ref = exact(self.mu, n, 1, std)
        self.yy = float(torch.cdist(self.ref, self.ref).mean())
        eds = torch.tensor([energy(exact(self.mu, n, 100 + i, std), self.ref, self.yy)
                            for i in range(floors)])
        self.floor_mean, self.floor_max = float(eds.mean()), float(eds.max())
        self.floor_sd = float(eds.std())
        self.spread_exact = spread(exact(self.mu, n, 2, std), self.mu, std)

    def score(self, x: Tensor) -> dict[str, float]:
        """Spread ratio and energy distance of samples ``x``."""
        if not torch.isfinite(x).all():
            return {"spread": float("inf"), "ed": float("inf")}
        return {"spread": spread(x, self.mu, self.std), "ed": energy(x, self.ref, self.yy)}

    def ok(self, s: dict[str, float]) -> bool:
        """The goal: spread within 2% of exact and ED within the floor's range (max of draws)."""
        return abs(s["spread"] - 1) <= 0.02 and s["ed"] <= self.floor_max


def grid(p: GaussianProcess, name: str, n: int) -> list[float]:
    """A named grid of ``n`` intervals (the process's, or time-polynomial ones)."""
    if name in ("uniform", "logsnr", "karras"):
        return p.time_grid(n, name).tolist()
    power = {"quadratic": 2, "cubic": 3}[name]
    u = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    ts = (p.t_min + (p.T - p.t_min) * (1 - u) ** power).tolist()
    ts[0], ts[-1] = p.T, p.t_min
    return ts


def run(name: str, opts: dict, p: GaussianProcess, tgt: Target, nfe: int | None,
        timesteps: list[float] | None = None, seed: int = 0) -> Tensor:
    """Samples of one sampler on a target."""
    den = IsoMixtureEps(tgt.mu, tgt.std, p)
    return get_sampler(name)(den, p, (tgt.n, tgt.dim), nfe, timesteps=timesteps,
                             generator=torch.Generator().manual_seed(seed), **opts)


def label(name: str, opts: dict) -> str:
    """Readable sampler name."""
    extra = "".join(f"-{v}" for k, v in opts.items() if k in ("order", "variant"))
    return name + extra


def section_nfe(n: int) -> dict:
    """The NFE table on the VP ring."""
    proc, tgt = VP(), Target(2, n)
    den = IsoMixtureEps(tgt.mu, STD, proc)
    t0 = time.perf_counter()
    info: dict = {}
    x = sample_ode(den, proc, (n, 2), None, generator=torch.Generator().manual_seed(0), info=info)
    ode = {**tgt.score(x), "seconds": time.perf_counter() - t0, "nfe": info["nfe"]}
    rows = []
    for name, opts in NFE_SAMPLERS:
        for nfe in NFES:
            t0 = time.perf_counter()
            x = run(name, opts, proc, tgt, nfe)
            rows.append({"sampler": label(name, opts), "nfe": nfe, **tgt.score(x),
                         "seconds": time.perf_counter() - t0})
    target = 1.25 * ode["ed"]
    needed = {}
    print(f"\n## NFE sweep: 8-Gaussian ring, VP, {n} samples; noise floor ED "
          f"{tgt.floor_mean:.4f} (max of 8 draws {tgt.floor_max:.4f}); adaptive ODE ED "
          f"{ode['ed']:.4f} at {ode['nfe']} NFE")
    print("| sampler | " + " | ".join(f"NFE {v}" for v in NFES) + " | NFE to reach ODE |")
    print("|---" * (len(NFES) + 2) + "|")
    for name, opts in NFE_SAMPLERS:
        lab = label(name, opts)
        mine = [r for r in rows if r["sampler"] == lab]
        ok = [r["nfe"] for r in mine if r["ed"] <= target]
        needed[lab] = min(ok) if ok else None
        print(f"| {lab} | " + " | ".join(f"{r['ed']:.4f}" for r in mine) + f" | {needed[lab]} |")
    print("\nseconds: | sampler | " + " | ".join(str(v) for v in NFES) + " |")
    for name, opts in NFE_SAMPLERS:
        lab = label(name, opts)
        print(f"| {lab} | " + " | ".join(f"{r['seconds']:.3f}" for r in rows
                                         if r["sampler"] == lab) + " |")
    return {"ode": ode, "rows": rows, "nfe_to_reach_ode": needed, "floor": tgt.floor_mean,
            "criterion": "energy distance <= 1.25 x adaptive ODE's"}


def section_sweep(n: int, targets: dict[int, Target]) -> list[dict]:
    """Solver x grid x t_min at 10 NFE on every process, 2-D and 16-D."""
    rows = []
    print("\n## 10-NFE sweep: within-mode spread ratio / energy distance (floor per dim below)")
    for dim, tgt in targets.items():
        print(f"\nD = {dim}: floor ED mean {tgt.floor_mean:.4f}, max {tgt.floor_max:.4f}; "
              f"exact spread ratio {tgt.spread_exact:.3f}")
        print("| process | t_min | grid | " + " | ".join(label(*s) for s in SWEEP_SOLVERS)
              + " |")
        print("|---" * (3 + len(SWEEP_SOLVERS)) + "|")
        for pname, p0 in processes().items():
            t_mins = [p0.t_min] + ([1e-3] if pname in ("vp", "subvp") else [])
            for tm in t_mins:
                p = p0.with_t_min(tm)
                for g in GRID_NAMES:
                    if pname == "edm" and g in ("uniform", "quadratic", "cubic"):
                        continue  # t = sigma: polynomial-in-t grids put no step at low noise
                    cells = []
                    for name, opts in SWEEP_SOLVERS:
                        s = tgt.score(run(name, opts, p, tgt, None, grid(p, g, 10)))
                        rows.append({"dim": dim, "process": pname, "t_min": tm, "grid": g,
                                     "sampler": label(name, opts), **s, "ok": tgt.ok(s)})
                        mark = " **ok**" if tgt.ok(s) else ""
                        cells.append(f"{s['spread']:.3f} / {s['ed']:.4f}{mark}")
                    print(f"| {pname} | {tm:g} | {g} | " + " | ".join(cells) + " |", flush=True)
    return rows


def section_defaults(targets: dict[int, Target], nfe: int = 10) -> list[dict]:
    """Every ODE sampler with default options at ``nfe`` NFE."""
    rows = []
    print(f"\n## Default options at {nfe} NFE: spread ratio / energy distance "
          "(ok: spread within 2% and ED <= max of 8 floor draws)")
    for dim, tgt in targets.items():
        print(f"\nD = {dim} (floor ED mean {tgt.floor_mean:.4f}, max {tgt.floor_max:.4f})")
        print("| process | " + " | ".join(DEFAULT_SAMPLERS) + " |")
        print("|---" * (1 + len(DEFAULT_SAMPLERS)) + "|")
        for pname, p in processes().items():
            cells = []
            for name in DEFAULT_SAMPLERS:
                s = tgt.score(run(name, {}, p, tgt, nfe))
                rows.append({"dim": dim, "process": pname, "sampler": name, **s,
                             "ok": tgt.ok(s)})
                cells.append(f"{s['spread']:.3f} / {s['ed']:.4f}" + (" ok" if tgt.ok(s) else ""))
            print(f"| {pname} | " + " | ".join(cells) + " |", flush=True)
    return rows


def section_optimize(n: int) -> list[dict]:
    """optimize_grid against the default grid on held-out draws (VP, 2-D ring, 10 NFE)."""
    proc, tgt = VP(), Target(2, n)
    den = IsoMixtureEps(tgt.mu, STD, proc)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    ref = sample_ode(den, proc, x_T.clone(), None, rtol=1e-8, atol=1e-8)
    rows = []
    print("\n## optimize_grid (global error against a fine ODE solve), VP ring, 10 NFE, "
          f"fitted on 256 draws, scored on {n} others")
    print("| sampler | grid | squared error to the exact ODE solution | spread ratio | ED | "
          "fit NFE | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, opts in [("dpm_solver_pp_2m", {}), ("unipc", {"order": 3}), ("deis", {"order": 3})]:
        t0 = time.perf_counter()
        info: dict = {}
        fitted = optimize_grid(den, proc, (256, 2), 10, sampler=name, sampler_options=opts,
                               generator=torch.Generator().manual_seed(0), info=info,
                               max_trials=300)
        sec = time.perf_counter() - t0
        for gname, ts in (("default", None), ("optimized", fitted.tolist())):
            x = get_sampler(name)(den, proc, x_T.clone(), 10 if ts is None else None,
                                  timesteps=ts, **opts)
            err = float(((x - ref) ** 2).mean())
            s = tgt.score(x.float())
            rows.append({"sampler": label(name, opts), "grid": gname, "error": err, **s,
                         "timesteps": ts, "fit_nfe": info["nfe"], "fit_seconds": sec})
            print(f"| {label(name, opts)} | {gname} | {err:.2e} | {s['spread']:.3f} | "
                  f"{s['ed']:.4f} | {info['nfe'] if ts else ''} | "
                  f"{f'{sec:.0f}' if ts else ''} |", flush=True)
    return rows


#: the reference family ``familyfit`` fits on: ``(dim, modes, mode std, centre seed)``, none of
#: them a held-out target of :func:`heldout_targets`
FIT_FAMILY = [(4, 4, 0.2, 11), (8, 6, 0.15, 12), (32, 12, 0.25, 13), (3, 10, 0.2, 14)]
#: the grid each process's family fit starts from (its best fixed DEIS-3 grid in the sweep)
FIT_INIT = {"vp": "quadratic", "subvp": "quadratic", "ve": "karras7", "edm": "karras10",
            "interpolant": "logsnr", "ddpm": "quadratic"}
#: the best fixed 10-NFE variant per process in ``benchmarks/results/core_samplers_sweep2.json``
#: (solver, grid, t_min, last step): the one nearest the goal in 2-D and 16-D together
BEST_FIXED = {"vp": ("deis", "quadratic", 3e-3, "step"),
              "subvp": ("deis", "quadratic", 3e-3, "step"),
              "ve": ("deis", "karras7", 1e-5, "denoise"),
              "edm": ("dpm_solver_pp_2m", "logsnr", 1e-2, "denoise"),
              "interpolant": ("deis", "karras10", 1e-4, "step"),
              "ddpm": ("deis", "quadratic", 3e-3, "step")}
SOLVER_OPTS: dict[str, dict] = {"deis": {"order": 3, "basis": "time"}, "unipc": {"order": 3},
                                "dpm_solver_pp_2m": {}, "dpm_solver_pp_3m": {}, "ddim": {}}


def centres(dim: int, k: int, seed: int) -> Tensor:
    """``k`` seeded mode centres in ``dim`` dimensions (scale 2)."""
    return 2.0 * torch.randn(k, dim, generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64)


def named_grid(p: GaussianProcess, name: str, n: int) -> list[float]:
    """:func:`grid`, plus ``karras<rho>`` (EDM's rho-spaced noise levels with that rho)."""
    if name.startswith("karras") and name != "karras":
        return p.time_grid(n, "karras", rho=float(name[6:])).tolist()
    return grid(p, name, n)


def sample_last(name: str, opts: dict, p: GaussianProcess, den: Any, x_T: Tensor,
                ts: list[float], last: str) -> Tensor:
    """``len(ts) - 1`` evaluations on ``ts`` ending at ``t_min`` (``last="step"``), or the
    same budget as ``len(ts) - 2`` steps to ``ts[-2]`` and the clean prediction there
    (``"denoise"``, DDIM's last step)."""
    fn = get_sampler(name)
    if last == "step":
        return fn(den, p, x_T.clone(), None, timesteps=ts, **opts)
    x = fn(den, p, x_T.clone(), None, timesteps=ts[:-1], **opts).double()
    t = torch.full((len(x),), ts[-2], dtype=torch.float64)
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    return ((x - s * den(x, t).double()) / a).to(x_T.dtype)


def section_familyfit(nfe: int = 10, n: int = 256, trials: int = 500) -> list[dict]:
    """Per process, one DEIS-3 grid fitted on :data:`FIT_FAMILY` (see the module docstring)."""
    import numpy as np
    from scipy.optimize import minimize

    from domaindiff.samplers.schedule import _grid_from_params

    rows = []
    fn = get_sampler("deis")
    print(f"\n## family fit: DEIS-3, {nfe} NFE, {len(FIT_FAMILY)} mixtures x {n} draws")
    print("| process | log mean squared error, start grid | fitted | trials | s | normalised "
          "log-SNR points |")
    print("|---|---|---|---|---|---|")
    for pname, p in processes().items():
        t0 = time.perf_counter()
        members = []
        for i, (d, k, std, seed) in enumerate(FIT_FAMILY):
            den = IsoMixtureEps(centres(d, k, seed), std, p)
            x_T = p.prior_std * torch.randn(n, d, generator=torch.Generator().manual_seed(
                50 + i), dtype=torch.float64)
            members.append((den, x_T, sample_ode(den, p, x_T.clone(), None, rtol=1e-7,
                                                 atol=1e-7)))

        def err(ts: list[float], members: list = members,
                p: GaussianProcess = p) -> float:
            tot = 0.0
            for den, x_T, ref in members:
                e = float(((fn(den, p, x_T.clone(), None, timesteps=ts, order=3,
                                basis="time") - ref) ** 2).mean())
                if not math.isfinite(e) or e <= 0:
                    return 1e30
                tot += math.log(e)
            return tot / len(members)

        lam = p.lambda_(torch.tensor([p.T, p.t_min], dtype=torch.float64)).tolist()
        ts0 = torch.tensor(named_grid(p, FIT_INIT[pname], nfe), dtype=torch.float64)
        z0 = np.log(np.clip(np.diff(p.lambda_(ts0).numpy()) / (lam[1] - lam[0]), 1e-6, None))

        def obj(z: Any, lam: list = lam, err: Any = err, p: GaussianProcess = p) -> float:
            return err(_grid_from_params(p, z, lam[0], lam[1]))

        e0 = obj(z0)
        opt = {"xatol": 1e-4, "fatol": 1e-9, "adaptive": True}
        r1 = minimize(obj, z0, method="Nelder-Mead", options={"maxfev": trials, **opt})
        r2 = minimize(obj, r1.x, method="Nelder-Mead", options={"maxfev": trials // 2, **opt})
        best = min((r1, r2), key=lambda r: r.fun)
        ts = _grid_from_params(p, best.x, lam[0], lam[1])
        u = [(float(p.lambda_(torch.tensor(t, dtype=torch.float64))) - lam[0])
             / (lam[1] - lam[0]) for t in ts]
        sec = time.perf_counter() - t0
        rows.append({"process": pname, "sampler": "deis-3", "init": FIT_INIT[pname],
                     "log_error_init": e0, "log_error": float(best.fun),
                     "trials": int(r1.nfev + r2.nfev), "seconds": sec, "timesteps": ts,
                     "u": u})
        print(f"| {pname} | {e0:.2f} | {best.fun:.2f} | {r1.nfev + r2.nfev} | {sec:.0f} | "
              + ", ".join(f"{v:.3f}" for v in u) + " |", flush=True)
    return rows


SWEEP2_SOLVERS = [("dpm_solver_pp_2m", {}), ("dpm_solver_pp_3m", {}), ("unipc", {"order": 3}),
                  ("unipc", {"order": 3, "variant": "bh1"}), ("deis", {"order": 3, "basis": "time"}),
                  ("unipc", {"order": 3, "lower_order_final": False}),
                  ("dpm_solver_pp_3m", {"lower_order_final": False})]
SWEEP2_GRIDS = ["logsnr", "uniform", "quadratic", "cubic"] + [
    f"karras{r:g}" for r in (1.5, 2, 3, 5, 7, 10, 20)]


def section_sweep2(targets: dict[int, Target], nfe: int = 10) -> list[dict]:
    """What the first sweep left out: Karras grids with rho swept, t_min, last step, UniPC-bh1
    and the solvers without their lower-order last step, at ``nfe`` NFE, seed 0."""
    rows = []
    for dim, tgt in targets.items():
        for pname, p0 in processes().items():
            tms = sorted({p0.t_min, 1e-4, 1e-3, 3e-3} if pname != "edm" else {2e-3, 5e-3, 1e-2})
            for tm in tms:
                p = p0.with_t_min(tm)
                for g in SWEEP2_GRIDS:
                    if pname == "edm" and g in ("uniform", "quadratic", "cubic"):
                        continue
                    ts = named_grid(p, g, nfe)
                    for last in ("step", "denoise"):
                        for name, opts in SWEEP2_SOLVERS:
                            den = IsoMixtureEps(tgt.mu, tgt.std, p)
                            x_T = p.prior_sample(torch.zeros(tgt.n, tgt.dim), None,
                                                 torch.Generator().manual_seed(0))
                            s = tgt.score(sample_last(name, opts, p, den, x_T, ts, last))
                            lab = label(name, opts) + ("-nolof" if opts.get(
                                "lower_order_final") is False else "")
                            rows.append({"dim": dim, "process": pname, "t_min": tm, "grid": g,
                                         "last": last, "sampler": lab, **s, "ok": tgt.ok(s)})
            print(f"sweep2 D={dim} {pname}: {len(rows)} runs", flush=True)
    return rows


def heldout_targets(n: int) -> list[Target]:
    """The goal's two targets and two of other dimension and mode count (none in the fit)."""
    return [Target(2, n, name="2-D ring K8"), Target(16, n, name="16-D K8"),
            Target(6, n, mu=centres(6, 3, 21), name="6-D K3"),
            Target(48, n, mu=centres(48, 16, 22), name="48-D K16")]


def unseen_targets(n: int) -> list[Target]:
    """Mixtures no default was chosen on (``noisegrid`` and ``heldout`` use the ones above)."""
    return [Target(3, n, mu=centres(3, 5, 31), name="3-D K5"),
            Target(12, n, mu=centres(12, 10, 32), name="12-D K10"),
            Target(24, n, mu=centres(24, 6, 33), name="24-D K6"),
            Target(64, n, mu=centres(64, 12, 34), name="64-D K12")]


#: a variant of a table: ``(label, process, sample(denoiser, process, x_T, seed) -> samples)``
Variant = tuple[str, GaussianProcess, Any]


def no_options(solver: str, nfe: int) -> Any:
    """A variant's sampler: ``solver`` with no options at ``nfe`` NFE."""
    return lambda den, p, x_T, seed: get_sampler(solver)(
        den, p, x_T.clone(), nfe, generator=torch.Generator().manual_seed(seed))


def with_options(solver: str, nfe: int, **opts: Any) -> Any:
    """A variant's sampler: ``solver`` with ``opts`` at ``nfe`` NFE."""
    return lambda den, p, x_T, seed: get_sampler(solver)(
        den, p, x_T.clone(), nfe, generator=torch.Generator().manual_seed(seed), **opts)


def score_variants(pname: str, p0: GaussianProcess, variants: list[Variant],
                   tgts: list[Target], seeds: list[int]) -> list[dict]:
    """Each variant on each target from the prior draws of ``seeds``, with the paired scores.

    Per seed: the spread ratio, the same over the exact ODE solution's from the same draws
    (``spread_paired``), the ED and the exact ODE solution's ED (``ed_ode``, the least a
    deterministic solver from those draws can reach). ``ok``: every seed within 2% and ED at
    most the floor's max (the goal as stated); ``ok_paired``: every seed's paired ratio within
    2% and ED at most ``max(floor max, ed_ode + floor sd)``.
    """
    rows = []
    refs: dict[tuple[str, int], tuple[float, float]] = {}
    for vname, p, sample in variants:
        cells = []
        for t in tgts:
            den = IsoMixtureEps(t.mu, t.std, p)
            sc, paired, ode_ed = [], [], []
            for seed in seeds:
                x_T = p0.prior_sample(torch.zeros(t.n, t.dim), None,
                                      torch.Generator().manual_seed(seed)).double()
                if (t.name, seed) not in refs:
                    ref = sample_ode(IsoMixtureEps(t.mu, t.std, p0), p0, x_T.clone(), None,
                                     rtol=1e-6, atol=1e-6)
                    r = t.score(ref.float())
                    refs[t.name, seed] = (r["spread"], r["ed"])
                s = t.score(sample(den, p, x_T, seed).float())
                sc.append(s)
                paired.append(s["spread"] / refs[t.name, seed][0])
                ode_ed.append(refs[t.name, seed][1])
            ok = all(t.ok(s) for s in sc)
            ok_paired = all(abs(q - 1) <= 0.02 and s["ed"] <= max(t.floor_max, e + t.floor_sd)
                            for q, s, e in zip(paired, sc, ode_ed))
            row = {"process": pname, "variant": vname, "target": t.name, "seeds": list(seeds),
                   "spread": [s["spread"] for s in sc], "ed": [s["ed"] for s in sc],
                   "spread_paired": paired, "ed_ode": ode_ed, "floor_mean": t.floor_mean,
                   "floor_max": t.floor_max, "floor_sd": t.floor_sd, "ok": ok,
                   "ok_paired": ok_paired}
            rows.append(row)
            k = len(seeds)
            mark = " **ok**" if ok else (" *paired ok*" if ok_paired else "")
            cells.append(f"{sum(row['spread']) / k:.3f} ({sum(paired) / k:.3f}) / "
                         f"{sum(row['ed']) / k:.4f}" + mark)
        print(f"| {pname} | {vname} | " + " | ".join(cells) + " |", flush=True)
    return rows


def print_head(title: str, tgts: list[Target]) -> None:
    """The header of a held-out style table."""
    print(f"\n## {title}: spread ratio (mean of seeds; paired: over the exact ODE solution "
          "from the same draws) / ED (mean of seeds); ok = every seed within 2% and ED <= the "
          "floor's max; paired ok = every seed's paired ratio within 2% and ED <= max(floor "
          "max, exact ODE's ED + floor sd)")
    for t in tgts:
        print(f"{t.name}: floor ED mean {t.floor_mean:.4f}, max {t.floor_max:.4f}, "
              f"sd {t.floor_sd:.4f}")
    print("| process | variant | " + " | ".join(t.name for t in tgts) + " |\n"
          + "|---" * (2 + len(tgts)) + "|")


def before_deis(pname: str, nfe: int) -> Variant:
    """DEIS-3 with the defaults it had before the noise-level grids (time basis, the process's
    :data:`~domaindiff.samplers.base.MULTISTEP_GRIDS` grid, a last step to ``t_min``)."""
    p = processes()[pname]
    return ("deis before (time basis, " + MULTISTEP_GRIDS[type(p).__name__] + ", step)", p,
            with_options("deis", nfe, basis="time", final="step",
                         schedule=MULTISTEP_GRIDS[type(p).__name__]))


def section_heldout(n: int, fitted: dict[str, list[float]], seeds: int = 3,
                    nfe: int = 10, only: list[str] | None = None,
                    deis_only: bool = False) -> list[dict]:
    """Defaults, the earlier DEIS default, best fixed variants and family-fitted grids on the
    held-out mixtures (``deis_only``: DEIS with no options and as it was before, only)."""
    rows = []
    tgts = heldout_targets(n)
    print_head(f"held-out mixtures, {nfe} NFE, seeds 0..{seeds - 1}", tgts)
    for pname, p0 in processes().items():
        if only and pname not in only:
            continue
        variants: list[Variant] = [(f"{s} (no options)", p0, no_options(s, nfe))
                                   for s in ("deis", "unipc", "dpm_solver_pp_2m",
                                             "dpm_solver_pp_3m", "ddim", "ancestral")]
        variants.append(before_deis(pname, nfe))
        if deis_only:
            rows += score_variants(pname, p0, [variants[0], variants[-1]], tgts,
                                   list(range(seeds)))
            continue
        solver, gname, tm, last = BEST_FIXED[pname]
        pb = p0.with_t_min(tm)
        ts = named_grid(pb, gname, nfe)
        variants.append((f"{solver} {gname} t_min={tm:g} {last}", pb,
                         lambda den, p, x_T, seed, solver=solver, ts=ts, last=last:
                         sample_last(solver, SOLVER_OPTS[solver], p, den, x_T, ts, last)))
        if pname in fitted:
            variants.append(("deis family-fitted", p0,
                             lambda den, p, x_T, seed, ts=fitted[pname]:
                             sample_last("deis", SOLVER_OPTS["deis"], p, den, x_T, ts, "step")))
        rows += score_variants(pname, p0, variants, tgts, list(range(seeds)))
    return rows


def section_unseen(n: int, seeds: tuple[int, ...] = (3, 4, 5), nfe: int = 10,
                   only: list[str] | None = None) -> list[dict]:
    """DEIS with no options (and as it was before) on mixtures and seeds no default was
    chosen on."""
    rows = []
    tgts = unseen_targets(n)
    print_head(f"unseen mixtures, {nfe} NFE, seeds {', '.join(map(str, seeds))}", tgts)
    for pname, p0 in processes().items():
        if only and pname not in only:
            continue
        variants = [("deis (no options)", p0, no_options("deis", nfe)), before_deis(pname, nfe)]
        rows += score_variants(pname, p0, variants, tgts, list(seeds))
    return rows


#: ``noisegrid``: the noise-level grids DEIS-3 (log-SNR basis, clean last step) was chosen
#: from, on VP (every process whose ``sigma/alpha`` at ``T`` is above ``sigma_max``: VP, sub-VP,
#: DDPM, EDM, the interpolant, by the basis's invariance) and VE (``sigma/alpha`` 50 at ``T``);
#: ``(rho, sigma_max, sigma_min)``, ``None``: the process's own end (VP: 152 and 0.001)
NOISEGRID = {"vp": [(7.0, None, None), (7.0, None, 0.007)] + [
    (rho, 50.0, lo) for rho in (6.0, 7.0, 8.0) for lo in (0.005, 0.006, 0.007, 0.008, 0.01)],
             "ve": [(rho, 50.0, lo) for rho in (6.0, 7.0, 8.0) for lo in (0.007, 0.01)]}


#: ``noisegrid``'s grids for the data-prediction solvers (DPM-Solver++, UniPC)
NOISEGRID_OTHERS = [(7.0, 50.0, 0.007), (7.0, None, None), (5.0, 50.0, 0.007),
                    (10.0, 50.0, 0.02), (3.0, 50.0, 0.01)]


def section_noisegrid(n: int, seeds: int = 3, nfe: int = 10) -> list[dict]:
    """DEIS-3 (log-SNR basis, ``final="denoise"``) on :data:`NOISEGRID`'s noise-level grids, on
    the held-out mixtures; then DPM-Solver++(2M)/(3M) and UniPC on :data:`NOISEGRID_OTHERS`
    with both last steps (seed 0, the goal's two mixtures)."""
    rows = []
    tgts = heldout_targets(n)
    print_head(f"noise-level grids for DEIS-3 (log-SNR basis, clean last step), {nfe} NFE, "
               f"seeds 0..{seeds - 1}", tgts)
    for pname, grids in NOISEGRID.items():
        p0 = processes()[pname]
        variants = [(f"rho {rho:g}, sigma_max {hi}, sigma_min {lo}", p0,
                     with_options("deis", nfe, schedule=NoiseLevelGrid(rho, hi, lo),
                                  final="denoise", basis="logsnr"))
                    for rho, hi, lo in grids]
        rows += score_variants(pname, p0, variants, tgts, list(range(seeds)))
    print("\n## the data-prediction solvers on noise-level grids, seed 0, 2-D / 16-D K8: "
          "spread ratio / ED (ok: within 2% and ED <= the floor's max)")
    goal = [Target(2, n), Target(16, n)]
    print("| process | solver | grid | last step | 2-D | 16-D |\n|---|---|---|---|---|---|")
    for pname in ("vp", "ve"):
        p = processes()[pname]
        for name, opts in (("dpm_solver_pp_2m", {}), ("dpm_solver_pp_3m", {}),
                           ("unipc", {"order": 3}), ("unipc", {"order": 2})):
            for rho, hi, lo in NOISEGRID_OTHERS:
                g = NoiseLevelGrid(rho, hi, lo)
                for final in FINALS:
                    cells, res = [], []
                    for t in goal:
                        x = get_sampler(name)(IsoMixtureEps(t.mu, t.std, p), p, (t.n, t.dim), nfe,
                                              schedule=g, final=final,
                                              generator=torch.Generator().manual_seed(0), **opts)
                        sc = t.score(x)
                        res.append({**sc, "ok": t.ok(sc)})
                        cells.append(f"{sc['spread']:.3f} / {sc['ed']:.4f}"
                                     + (" ok" if t.ok(sc) else ""))
                    rows.append({"process": pname, "variant": label(name, opts), "grid": repr(g),
                                 "final": final, "targets": ["2-D K8", "16-D K8"], "scores": res,
                                 "seeds": [0]})
                    print(f"| {pname} | {label(name, opts)} | {g!r} | {final} | "
                          + " | ".join(cells) + " |", flush=True)
    return rows


def section_odefloor(n: int, seeds: int = 3) -> list[dict]:
    """The exact ODE solution from the heldout section's prior draws, scored like a sampler.

    Its energy distance per seed is the floor a deterministic solver from those draws can
    reach (the two-sample floor of :class:`Target` plus the draws' own noise).
    """
    rows = []
    tgts = heldout_targets(n)[:2]
    print(f"\n## exact ODE solution from the heldout draws (seeds 0..{seeds - 1}): spread / ED")
    print("| process | " + " | ".join(t.name for t in tgts) + " |")
    print("|---" * (1 + len(tgts)) + "|")
    for pname, p in processes().items():
        cells = []
        for t in tgts:
            sc = []
            for seed in range(seeds):
                x_T = p.prior_sample(torch.zeros(t.n, t.dim), None,
                                     torch.Generator().manual_seed(seed)).double()
                ref = sample_ode(IsoMixtureEps(t.mu, t.std, p), p, x_T.clone(), None,
                                 rtol=1e-6, atol=1e-6)
                sc.append(t.score(ref.float()))
            rows.append({"process": pname, "target": t.name, "spread": [x["spread"] for x in sc],
                         "ed": [x["ed"] for x in sc], "floor_mean": t.floor_mean,
                         "floor_max": t.floor_max})
            cells.append(" ".join(f"{x['spread']:.3f}/{x['ed']:.4f}" for x in sc))
        print(f"| {pname} | " + " | ".join(cells) + " |", flush=True)
    return rows


def main() -> None:
    """Run the chosen sections, print the tables, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="samples per run")
    parser.add_argument("--sections", default="nfe,sweep,defaults,optimize")
    parser.add_argument("--out", default="benchmarks/results/core_samplers.json")
    parser.add_argument("--grids", default=None, metavar="JSON",
                        help="heldout: the family-fitted grids (the JSON familyfit wrote)")
    parser.add_argument("--processes", default=None,
                        help="heldout, unseen: only these processes (comma-separated, e.g. "
                        "vp,ddpm)")
    parser.add_argument("--deis-only", action="store_true",
                        help="heldout: only DEIS with no options and DEIS as it was before")
    parser.add_argument("--merge", nargs="*", default=None, metavar="JSON",
                        help="combine earlier runs' section files into --out (runs nothing)")
    args = parser.parse_args()
    if args.merge is not None:
        merged: dict[str, Any] = {}
        for f in args.merge:
            merged.update(json.loads(Path(f).read_text()))
        merged["merged_from"] = list(args.merge)
        atomic_write_text(args.out, json.dumps(merged, indent=2))
        plot(merged, Path(args.out).with_suffix(".png"))
        print(f"wrote {args.out}")
        return
    from domaindiff.cli import set_threads_from_env

    if set_threads_from_env() is None:  # DOMAINDIFF_THREADS, else both cores
        torch.set_num_threads(2)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"nfe", "sweep", "defaults", "optimize", "familyfit",
                               "heldout", "sweep2", "odefloor", "noisegrid", "unseen"}
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)}")
    result: dict[str, Any] = {"machine": platform.platform(), "processor": platform.processor(),
                              "threads": torch.get_num_threads(), "n_samples": args.n,
                              "defaults": {name: {k: v.default for k, v in inspect.signature(
                                  get_sampler(name)).parameters.items()
                                  if k in ("schedule", "order", "variant")}
                                  for name in DEFAULT_SAMPLERS}}
    only = args.processes.split(",") if args.processes else None
    result["command"] = "python benchmarks/core_samplers.py " + " ".join(sys.argv[1:])
    result["load_average_start"] = os.getloadavg()
    t0 = time.perf_counter()
    targets = {d: Target(d, args.n) for d in (2, 16)} if {"sweep", "defaults", "sweep2"} & set(
        sections) else {}
    result["floors"] = {d: {"mean": t.floor_mean, "max": t.floor_max, "sd": t.floor_sd}
                        for d, t in targets.items()}
    if "nfe" in sections:
        result["nfe"] = section_nfe(max(args.n, 4000))
    if "sweep" in sections:
        result["sweep"] = section_sweep(args.n, targets)
    if "defaults" in sections:
        result["defaults_10nfe"] = section_defaults(targets)
    if "optimize" in sections:
        result["optimize"] = section_optimize(args.n)
    if "sweep2" in sections:
        cols = ["dim", "process", "t_min", "grid", "last", "sampler", "spread", "ed", "ok"]
        result["sweep2"] = {"columns": cols, "rows": [[r[c] for c in cols]
                                                      for r in section_sweep2(targets)]}
    if "familyfit" in sections:
        result["familyfit"] = section_familyfit()
    if "heldout" in sections:
        fitted = {}
        if args.grids:
            fitted = {r["process"]: r["timesteps"] for r in
                      json.loads(Path(args.grids).read_text())["familyfit"]}
        result["heldout"] = section_heldout(args.n, fitted, only=only,
                                            deis_only=args.deis_only)
    if "odefloor" in sections:
        result["odefloor"] = section_odefloor(args.n)
    if "noisegrid" in sections:
        result["noisegrid"] = section_noisegrid(args.n)
    if "unseen" in sections:
        result["unseen"] = section_unseen(args.n, only=only)
    result["seconds"] = time.perf_counter() - t0
    result["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")


def plot(result: dict[str, Any], path: Path) -> None:
    """Energy distance against NFE per sampler, and the 10-NFE spread ratios of the defaults."""
    from domaindiff.plotting import pyplot, save_figure

    if "nfe" not in result and "defaults_10nfe" not in result:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    if "nfe" in result:
        ax = axes[0]
        rows = result["nfe"]["rows"]
        for lab in dict.fromkeys(r["sampler"] for r in rows):
            mine = [r for r in rows if r["sampler"] == lab]
            ax.loglog([r["nfe"] for r in mine], [max(r["ed"], 1e-5) for r in mine], marker="o",
                      ms=3, label=lab)
        ax.axhline(result["nfe"]["floor"], color="k", ls="--", lw=1, label="noise floor")
        ax.set(xlabel="NFE", ylabel="energy distance", title="VP ring, exact score")
        ax.legend(fontsize=6, ncol=2)
    if "defaults_10nfe" in result:
        ax = axes[1]
        rows = result["defaults_10nfe"]
        names = list(dict.fromkeys(r["sampler"] for r in rows))
        cases = list(dict.fromkeys((r["process"], r["dim"]) for r in rows))
        for j, (pn, d) in enumerate(cases):
            vals = [next(r["spread"] for r in rows if r["sampler"] == nm and r["process"] == pn
                         and r["dim"] == d) for nm in names]
            ax.scatter(range(len(names)), [min(v, 2.0) for v in vals], s=14,
                       label=f"{pn} {d}-D", marker="os^vDP<>"[j % 8])
        ax.axhspan(0.98, 1.02, color="g", alpha=0.2, label="within 2%")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7)
        ax.set(ylabel="within-mode spread / exact (capped at 2)",
               title="default options at 10 NFE")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
