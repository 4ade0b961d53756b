"""What every sampler shares: states, the wrapped model, time grids and progress.

The uniform signature is

    sample_<name>(denoiser, process, shape_or_x_T, steps, *, guidance=None, callback=None,
                  generator=None, progress=False, prior=None, info=None, **options) -> state

``prior`` says whether the diffused entries of ``shape_or_x_T`` are replaced by a prior draw
(default for shapes and state dicts) or taken as the given ``x_T`` (default for a tensor; pass
``prior=False`` to start a dict state from your own ``x_T``). To end sampling at another time than
the process's ``t_min``, pass ``process.with_t_min(t)``.

``steps`` is the number of network evaluations (NFE). A first-order sampler with ``steps = n``
visits ``n + 1`` time points ``T = t_0 > t_1 > ... > t_n = t_min`` and evaluates the network once at
each of ``t_0 .. t_{n-1}``; higher-order samplers fit as many steps as the NFE budget allows (each
sampler's docstring says how).

Network evaluations are counted one way for every sampler: the denoiser is wrapped in a
:class:`CountingDenoiser` (inside :class:`Model`), each callback dict carries the running count as
``"nfe"``, and a dict passed as ``info`` receives the total as ``info["nfe"]`` when sampling ends.
Guidance is any :class:`domaindiff.guidance.Guidance`.

A sampler is written as its grid and its update on a :class:`Run` (which starts, steps and ends
every sampler the same way); the names its signature is written in live in
:mod:`domaindiff.samplers.signature` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance, check_guidance
from domaindiff.parametrization import check, to_x0_eps
from domaindiff.processes import GaussianProcess, bcast
from domaindiff.samplers.signature import (  # the signature's names, re-exported
    Callback,
    Denoiser,
    Processes,
    Sample,
    Start,
    State,
    Timesteps,
)

SINGLE_KEY = "x"


@dataclass
class Setup:
    """A sampling problem brought to the structured form.

    Attributes:
        x: the initial state (diffused keys at time T, pass-through keys kept).
        procs: the process of each diffused key.
        single: whether the caller passed a single tensor (then the result is a tensor).
    """

    x: State
    procs: dict[str, GaussianProcess]
    single: bool

    def finish(self, x: State) -> Tensor | State:
        """Return the result in the caller's form."""
        return x[SINGLE_KEY] if self.single else x


def as_processes(process: Processes) -> tuple[dict[str, GaussianProcess], bool]:
    """Normalise ``process`` to a dict; report whether it was a single process.

    Raises:
        ValueError: for an empty mapping.
        TypeError: for an entry that is not a :class:`~domaindiff.processes.GaussianProcess`
            (e.g. the Bernoulli process, which has its own sampler).
    """
    if isinstance(process, Mapping):
        if not process:
            raise ValueError("process: empty mapping; give at least one component's process")
        procs, single = dict(process), False
    else:
        procs, single = {SINGLE_KEY: process}, True
    for k, p in procs.items():
        if not isinstance(p, GaussianProcess):
            hint = "; use sample_bernoulli" if type(p).__name__ == "Bernoulli" else ""
            raise TypeError(f"process[{k!r}]: expected a GaussianProcess, got "
                            f"{type(p).__name__}{hint}")
    return procs, single


def setup(process: Processes, shape_or_x_T: Start, generator: torch.Generator | None = None,
          prior: bool | None = None) -> Setup:
    """Build the initial state.

    Args:
        process: one process or a dict of processes keyed like the state.
        shape_or_x_T: a shape, a tensor ``x_T``, or a state dict. With ``prior=True`` (the default
            for shapes and dicts) the diffused entries are replaced by prior samples in their space;
            with ``prior=False`` (the default for a tensor) they are taken as ``x_T``.
        generator: random generator for the prior draw.
        prior: see above.
    """
    procs, single = as_processes(process)
    if isinstance(shape_or_x_T, Mapping):
        x = dict(shape_or_x_T)
        prior = True if prior is None else prior
    elif torch.is_tensor(shape_or_x_T):
        x = {SINGLE_KEY: shape_or_x_T}
        prior = False if prior is None else prior
    else:
        x = {SINGLE_KEY: torch.zeros(tuple(int(s) for s in shape_or_x_T))}
        prior = True
    if single and SINGLE_KEY not in x:
        raise ValueError(f"a single process needs the state key {SINGLE_KEY!r}")
    missing = [k for k in procs if k not in x]
    if missing:
        raise ValueError(f"shape_or_x_T has no entry for the diffused component(s) {missing}")
    for k, p in procs.items():
        x[k] = p.prior_sample(x[k], x, generator) if prior else p.space.project(x[k], x)
    return Setup(x=x, procs=procs, single=single)


def batch_size(x: State, procs: Mapping[str, GaussianProcess]) -> int:
    """Batch size of the diffused components."""
    return next(iter(x[k] for k in procs)).shape[0]


class CountingDenoiser:
    """A denoiser that counts its calls (network evaluations) in ``nfe``.

    Every sampler evaluates its network through one of these, so ``nfe`` is the count it reports
    (guidance's extra :meth:`Model.raw_predict` calls included).

    Args:
        denoiser: ``denoiser(state, t) -> predictions``; its ``parametrization`` is kept.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.parametrization: str | Mapping[str, str] = getattr(denoiser, "parametrization",
                                                                "eps")
        self.nfe = 0

    def __call__(self, state: State, t: Tensor) -> Any:
        self.nfe += 1
        return self.denoiser(state, t)


def report_nfe(info: dict[str, Any] | None, nfe: int) -> None:
    """Store a finished sampler's evaluation count in its ``info`` out-parameter (if given)."""
    if info is not None:
        info["nfe"] = int(nfe)


class Model:
    """A denoiser seen through its parametrization, with guidance applied.

    ``predict(x, t)`` returns ``(x0_hat, eps_hat)`` per diffused key, projected to each space;
    ``nfe`` is the number of network evaluations so far.

    Args:
        denoiser: ``denoiser(state, t) -> predictions``; its ``parametrization`` attribute (str or
            per-key dict) says what it predicts (default ``"eps"``). A tensor output is taken as
            the prediction of the single component.
        procs: the process of each diffused key.
        guidance: optional :class:`~domaindiff.guidance.Guidance`.

    Raises:
        TypeError: if ``guidance`` does not have the :class:`~domaindiff.guidance.Guidance` hooks.
    """

    def __init__(self, denoiser: Denoiser, procs: Mapping[str, GaussianProcess],
                 guidance: Guidance | None = None) -> None:
        self.denoiser = CountingDenoiser(denoiser)
        self.procs = dict(procs)
        self.guidance = check_guidance(guidance) if guidance is not None else None
        kinds = self.denoiser.parametrization
        if isinstance(kinds, str):
            kinds = {k: kinds for k in self.procs}
        self.kinds = {k: check(kinds.get(k, "eps")) for k in self.procs}

    @property
    def nfe(self) -> int:
        """Network evaluations made so far."""
        return self.denoiser.nfe

    def time(self, t: float | Tensor, x: State) -> Tensor:
        """A ``(B,)`` tensor of time ``t`` on the state's device.

        It is one value expanded over the batch (stride 0, read-only), which tells the processes
        to compute each coefficient once rather than per sample
        (:func:`domaindiff.processes.uniform_time`).
        """
        ref = next(iter(x[k] for k in self.procs))
        return torch.full((), float(t), device=ref.device, dtype=ref.dtype).expand(ref.shape[0])

    def raw_predict(self, x: State, t: Tensor) -> tuple[State, State]:
        """Network prediction without guidance, as ``(x0_hat, eps_hat)``."""
        out = self.denoiser(x, t)
        if torch.is_tensor(out):
            if len(self.procs) != 1:
                raise TypeError("the denoiser returned one tensor for a multi-component state")
            out = {next(iter(self.procs)): out}
        x0: State = {}
        eps: State = {}
        for k, p in self.procs.items():
            if k not in out:
                raise KeyError(f"the denoiser returned no prediction for component {k!r}")
            a, e = to_x0_eps(out[k], self.kinds[k], x[k], t, p)
            x0[k], eps[k] = p.space.project(a, x), p.space.project(e, x)
        return x0, eps

    def predict(self, x: State, t: float | Tensor) -> tuple[State, State]:
        """Guided prediction ``(x0_hat, eps_hat)`` at time ``t``."""
        tt = t if isinstance(t, Tensor) and t.dim() == 1 else self.time(t, x)
        if self.guidance is not None:
            return self.guidance.predict(self, x, tt)
        return self.raw_predict(x, tt)

    def score(self, x: State, t: float | Tensor) -> tuple[State, State]:
        """``(score, x0_hat)`` per key."""
        x0, eps = self.predict(x, t)
        tt = self.time(t, x)
        return {k: -eps[k] / bcast(p.sigma(tt), eps[k]) for k, p in self.procs.items()}, x0

    def velocity(self, x: State, t: float | Tensor) -> tuple[State, State]:
        """Probability-flow ODE velocity ``alpha' x0 + sigma' eps`` and ``x0_hat`` per key."""
        x0, eps = self.predict(x, t)
        tt = self.time(t, x)
        v = {k: bcast(p.d_alpha(tt), x0[k]) * x0[k] + bcast(p.d_sigma(tt), eps[k]) * eps[k]
             for k, p in self.procs.items()}
        return v, x0

    def after_step(self, x: State, t_prev: float, t_next: float,
                   generator: torch.Generator | None, final: bool = False) -> State:
        """Project onto the spaces and apply step-wise guidance (e.g. inpainting).

        Args:
            x: the state the step produced at ``t_next``.
            t_prev: the time the step started from.
            t_next: the time it arrived at.
            generator: random generator.
            final: whether this was the sampler's last step.
        """
        x = dict(x)
        for k, p in self.procs.items():
            x[k] = p.space.project(x[k], x)
        if self.guidance is not None:
            x = self.guidance.after_step(x, self.time(t_prev, x), self.time(t_next, x),
                                         self.procs, generator, final=final)
        return x


def reference_process(procs: Mapping[str, GaussianProcess]) -> GaussianProcess:
    """The process whose time grid all components share (the first)."""
    return next(iter(procs.values()))


#: a time grid by name (the process's or :data:`GRIDS`') or as ``fn(process, n) -> n + 1 times``
#: (e.g. a :class:`NoiseLevelGrid`)
Schedule = str | Callable[[GaussianProcess, int], list[float]]


def time_points(procs: Mapping[str, GaussianProcess], n: int, schedule: Schedule | None = None,
                t_start: float | None = None, t_end: float | None = None) -> list[float]:
    """``n + 1`` time points shared by all components, ``T -> t_min``.

    The schedule is the process's grid (``"uniform"``, ``"logsnr"``, ``"karras"``, see
    :meth:`~domaindiff.processes.GaussianProcess.time_grid`), one of the grids defined here
    (:data:`GRIDS`) or a callable ``(process, n) -> n + 1 times`` such as
    :class:`NoiseLevelGrid`.
    """
    if n < 1:
        raise ValueError(f"steps: need at least 1 network evaluation for this sampler, got {n}")
    ref = reference_process(procs)
    if callable(schedule):
        ts = [float(v) for v in schedule(ref, n)]
    elif schedule in GRIDS:
        ts = GRIDS[schedule](ref, n)
    else:
        ts = ref.time_grid(n, schedule).tolist()
    if t_start is not None or t_end is not None:
        ts = [float(x) for x in torch.linspace(t_start or ref.T, t_end or ref.t_min, n + 1)]
    return ts


def _time_power_grid(p: GaussianProcess, n: int, power: float) -> list[float]:
    """``t_i = t_min + (T - t_min) (1 - i/n)^power``: polynomial in time (DDIM's "quad" for 2)."""
    u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    ts = (p.t_min + (p.T - p.t_min) * (1 - u) ** power).tolist()
    ts[0], ts[-1] = p.T, p.t_min
    return [float(v) for v in ts]


#: extra named grids beyond the process's own: ``name -> fn(process, n) -> n + 1 times``
GRIDS: dict[str, Callable[[GaussianProcess, int], list[float]]] = {
    "quadratic": lambda p, n: _time_power_grid(p, n, 2.0),
    "cubic": lambda p, n: _time_power_grid(p, n, 3.0),
}

def noise_level(p: GaussianProcess, t: float) -> float:
    """The noise level ``sigma / alpha = exp(-lambda)`` of ``p`` at time ``t``."""
    return math.exp(-p.coefficient("lambda_", t))


@dataclass(frozen=True)
class NoiseLevelGrid:
    """Time points spaced as EDM's (Karras et al. 2022) in the noise level ``s = sigma / alpha``.

    The ``n + 1`` points run from ``T`` to ``t_min`` of the process; in between, the noise levels
    are ``s_i = (s_hi^(1/rho) + u_i (s_lo^(1/rho) - s_hi^(1/rho)))^rho`` for ``u_i`` evenly
    spaced, between ``s_hi = s(T)`` (or ``sigma_max``) and ``s_lo = sigma_min`` (or
    ``s(t_min)``), each mapped back to its time. As ``s`` is ``sigma/alpha`` of the process (not
    ``t``), the grid is the same sequence of log-SNRs on every process with the same levels,
    which makes the exponential integrators (DEIS with ``basis="logsnr"``, DPM-Solver++, UniPC)
    give the same samples on all of them.

    Args:
        rho: the Karras exponent (larger: more points at low noise).
        sigma_max: if the process's ``s(T)`` is above it, the grid reaches ``s = sigma_max`` in
            ``max(1, round(above * n))`` intervals evenly spaced in ``log s`` (at 10 points: one
            step from ``T``), and the other intervals are Karras-spaced from there (for VP,
            whose ``s(T)`` is about 150, or the interpolant's 1000). ``None``: Karras-spaced from
            ``s(T)``.
        sigma_min: the noise level the spacing ends at (``None``: ``s(t_min)``). The last point
            is always ``t_min``: a ``sigma_min`` below the process's ``s(t_min)`` (a level it
            does not reach, e.g. below VE's ``sigma_min`` or DDPM's first step) only sets the
            spacing of the other points; if that would put another point at or below
            ``s(t_min)`` (a process with a large ``t_min``, or many points) the spacing ends at
            ``s(t_min)`` instead. With a clean last step (a sampler's ``final="denoise"``) the
            last point is not evaluated: the last evaluation is at the point before it.
        above: the fraction of the intervals spent above ``sigma_max`` (see there), so that
            the whole grid refines with ``n``.

    Raises:
        ValueError: for ``rho <= 0``, a non-positive noise level or ``above`` outside
            ``(0, 1)``; when called, if ``sigma_min`` is not below the start level.
    """

    rho: float = 7.0
    sigma_max: float | None = None
    sigma_min: float | None = None
    above: float = 0.1

    def __post_init__(self) -> None:
        if not self.rho > 0:
            raise ValueError(f"rho: must be > 0, got {self.rho}")
        for name in ("sigma_max", "sigma_min"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a positive noise level or None, got {v}")
        if not 0 < self.above < 1:
            raise ValueError(f"above: must be in (0, 1), got {self.above}")

    def levels(self, p: GaussianProcess, n: int) -> list[float]:
        """The ``n + 1`` noise levels of the points (the last is ``s(t_min)``)."""
        s_T, s_end = noise_level(p, p.T), noise_level(p, p.t_min)
        hi = s_T if self.sigma_max is None else min(s_T, self.sigma_max)
        k = min(max(1, round(self.above * n)), n - 1) if hi < s_T * (1 - 1e-9) else 0
        if k == 0:
            hi = s_T
        lo = s_end if self.sigma_min is None else self.sigma_min
        if lo >= hi:
            raise ValueError(f"NoiseLevelGrid: sigma_min {lo:g} is not below the start level "
                             f"{hi:g} of {p!r}")
        r = 1.0 / self.rho

        def karras(lo: float) -> list[float]:
            u = torch.linspace(0.0, 1.0, n - k + 1, dtype=torch.float64)
            return ((hi**r + u * (lo**r - hi**r)) ** self.rho).tolist()

        lev = karras(lo)
        if lo < s_end and min(lev[:-1]) <= s_end * (1 + 1e-9):
            lev = karras(s_end)
        top = torch.logspace(math.log10(s_T), math.log10(hi), k + 1, dtype=torch.float64)
        return [*top.tolist()[:-1], *lev[:-1], s_end]

    def __call__(self, p: GaussianProcess, n: int) -> list[float]:
        """``n + 1`` decreasing times of ``p`` from ``T`` to ``t_min`` (``n >= 1`` intervals)."""
        lev = torch.tensor(self.levels(p, n), dtype=torch.float64)
        ts = p.t_from_lambda(-torch.log(lev)).clamp(p.t_min, p.T).tolist()
        ts[0], ts[-1] = p.T, p.t_min
        if any(b >= a for a, b in zip(ts, ts[1:])):
            raise ValueError(f"NoiseLevelGrid(rho={self.rho}, sigma_max={self.sigma_max}, "
                             f"sigma_min={self.sigma_min}): the noise levels do not give "
                             f"{n + 1} strictly decreasing times of {p!r} (got {ts})")
        return [float(v) for v in ts]


#: how a multistep solver's last step ends: ``"step"`` integrates to the last grid point
#: (``t_min``); ``"denoise"`` returns the clean prediction at the point before it (the grid's
#: last point replaced by ``t = 0``, as DDIM and k-diffusion's ``sigma = 0`` end do)
FINALS = ("step", "denoise")


@dataclass(frozen=True)
class MultistepDefault:
    """What a multistep solver uses on a process when called without ``schedule``/``final``.

    Attributes:
        schedule: the grid (a name or a callable, see :data:`Schedule`).
        final: the last step, one of :data:`FINALS`.
    """

    schedule: Schedule
    final: str = "step"


#: the grid the multistep exponential integrators (DPM-Solver++(2M)/(3M), UniPC, DEIS) used
#: before the per-solver defaults of :data:`MULTISTEP_DEFAULTS`, per process class (first match
#: along the class's MRO), from ``benchmarks/core_samplers.py``'s first 10-NFE sweep; a solver
#: without an entry there still uses it (with ``final="step"``)
MULTISTEP_GRIDS: dict[str, str] = {
    "SubVP": "uniform", "VP": "quadratic", "DiscreteDDPM": "quadratic", "VE": "logsnr",
    "EDM": "logsnr", "Interpolant": "uniform",
}

#: per solver, per process class (first match along the class's MRO): the grid and last step a
#: solver called with neither ``schedule`` nor ``final`` uses, chosen from
#: ``benchmarks/core_samplers.py --sections defaults,heldout`` (10 NFE, exact mixture scores;
#: see ``core/README.md``, "what the defaults reach")
MULTISTEP_DEFAULTS: dict[str, dict[str, MultistepDefault]] = {
    # the noise-level grid of least worst deviation of the mean paired spread over the four
    # held-out mixtures (``--sections noisegrid``); for every process but VE (whose sigma/alpha
    # at T is 50) it is the same grid, as DEIS in the log-SNR basis makes them one
    "deis": {
        "VE": MultistepDefault(NoiseLevelGrid(rho=6.0, sigma_max=50.0, sigma_min=0.007),
                               "denoise"),
        "GaussianProcess": MultistepDefault(
            NoiseLevelGrid(rho=6.0, sigma_max=50.0, sigma_min=0.005), "denoise"),
    },
}


def multistep_default(procs: Mapping[str, GaussianProcess],
                      solver: str | None = None) -> MultistepDefault:
    """The measured default of ``solver`` for the reference process of ``procs``.

    :data:`MULTISTEP_DEFAULTS` for ``solver`` if it lists the process class, else
    :data:`MULTISTEP_GRIDS` with ``final="step"``; a process class listed nowhere gets
    ``"logsnr"`` (the grid these solvers are derived on) and ``"step"``.
    """
    mro = [c.__name__ for c in type(reference_process(procs)).__mro__]
    table = MULTISTEP_DEFAULTS.get(solver or "", {})
    for name in mro:
        if name in table:
            return table[name]
    for name in mro:
        if name in MULTISTEP_GRIDS:
            return MultistepDefault(MULTISTEP_GRIDS[name])
    return MultistepDefault("logsnr")


def multistep_grid(procs: Mapping[str, GaussianProcess], schedule: Schedule | None,
                   solver: str | None = None) -> Schedule:
    """``schedule`` if given, else ``solver``'s measured default grid (:func:`multistep_default`)."""
    if schedule is not None:
        return schedule
    return multistep_default(procs, solver).schedule


def check_final(final: str | None) -> str | None:
    """``final`` if it is ``None`` or one of :data:`FINALS`.

    Raises:
        ValueError: naming ``final`` otherwise.
    """
    if final is not None and final not in FINALS:
        raise ValueError(f"final: unknown last step {final!r}; use one of {FINALS}")
    return final


def explicit_grid(procs: Mapping[str, GaussianProcess], timesteps: Timesteps,
                  arg: str = "timesteps", zero_end: bool = False) -> list[float]:
    """Validate a user's own time grid and return it as floats.

    Args:
        procs: the process of each diffused key; every time must lie in each one's
            ``[t_min, T]``.
        timesteps: a 1-D sequence (list, tuple, array or tensor) of at least two strictly
            decreasing, finite times: where the sampler starts, its intermediate points and where
            it ends.
        arg: the argument's name, for the error messages.
        zero_end: the posterior samplers (``ancestral``, ``ddim``) may end at ``t = 0``, the clean
            end (their last step then returns the clean prediction).

    Raises:
        ValueError: naming ``arg``, for a grid that is not 1-D, has fewer than two points, is not
            finite, does not strictly decrease or leaves a process's ``[t_min, T]``.
    """
    try:
        t = (timesteps.detach().to("cpu", torch.float64) if torch.is_tensor(timesteps)
             else torch.as_tensor(timesteps, dtype=torch.float64))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{arg}: expected a 1-D sequence of times, got {timesteps!r}") from err
    if t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"{arg}: expected a 1-D sequence of at least 2 times (start .. end), "
                         f"got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{arg}: times must be finite, got {t.tolist()}")
    bad = (t[1:] >= t[:-1]).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{arg}: times must strictly decrease (noise -> data); "
                         f"{arg}[{i}]={float(t[i])!r} <= {arg}[{i + 1}]={float(t[i + 1])!r}")
    inner = t[:-1] if zero_end and float(t[-1]) == 0.0 else t
    out = t.tolist()
    for k, p in procs.items():
        tol = 1e-9 * max(1.0, abs(p.T))
        lo, hi = float(inner.min()), float(inner.max())
        if hi > p.T + tol or lo < p.t_min - tol:
            end = " (or end at 0, the clean end)" if zero_end else ""
            raise ValueError(f"{arg}: times must lie in process[{k!r}]'s range [t_min={p.t_min}, "
                             f"T={p.T}]{end}; got {lo!r} .. {hi!r} (to stop below t_min pass "
                             f"process.with_t_min(t))")
        last = len(out) - (1 if len(inner) < len(t) else 0)
        out[:last] = [min(max(v, p.t_min), p.T) for v in out[:last]]
    return [float(v) for v in out]


def grid_or_steps(procs: Mapping[str, GaussianProcess], steps: int | None,
                  timesteps: Timesteps | None, name: str,
                  intervals: Callable[[int], int] = lambda s: s,
                  nfe: Callable[[int], int] = lambda n: n,
                  grid: Callable[[int], list[float]] | None = None,
                  zero_end: bool = False) -> list[float]:
    """A sampler's time points: the user's ``timesteps`` or the default grid for ``steps``.

    Args:
        procs: the process of each diffused key.
        steps: the NFE budget (may be ``None`` when ``timesteps`` is given).
        timesteps: the user's own grid (see :func:`explicit_grid`), or ``None``.
        name: the sampler, for messages.
        intervals: ``steps -> number of intervals`` of the default grid.
        nfe: ``number of intervals -> network evaluations`` the sampler makes on a grid.
        grid: ``intervals -> points`` (default :func:`time_points` with the process's schedule).
        zero_end: see :func:`explicit_grid`.

    Raises:
        ValueError: if neither is given, or ``steps`` would give another number of intervals than
            the grid has (naming both).
    """
    if timesteps is None:
        if steps is None:
            raise ValueError(f"steps: {name} needs a number of network evaluations or timesteps=")
        n = intervals(int(steps))
        return grid(n) if grid is not None else time_points(procs, n)
    ts = explicit_grid(procs, timesteps, zero_end=zero_end)
    if steps is not None and intervals(int(steps)) != len(ts) - 1:
        implied = nfe(len(ts) - 1)
        raise ValueError(f"steps={steps} does not match timesteps: its {len(ts)} points are "
                         f"{implied} network evaluations for {name}; pass steps={implied} or "
                         "steps=None")
    return ts


def noise_like(x: State, procs: Mapping[str, GaussianProcess],
               generator: torch.Generator | None) -> State:
    """Standard noise in each component's space."""
    return {k: p.space.noise(x[k], x, generator) for k, p in procs.items()}


def combine(x: State, upd: Mapping[str, Tensor]) -> State:
    """A copy of ``x`` with the diffused entries replaced."""
    out = dict(x)
    out.update(upd)
    return out


def steps_iter(n: int, progress: bool, desc: str) -> Iterable[int]:
    """``range(n)`` with an optional tqdm bar."""
    if progress:
        from tqdm.auto import tqdm

        return tqdm(range(n), desc=desc, leave=False)
    return range(n)


def emit(callback: Callback | None, i: int, t: float, x: State, x0: State | None,
         nfe: int | None = None) -> None:
    """Report one step to the callback (k-diffusion style dict, plus the running ``nfe``)."""
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "denoised": x0, "nfe": nfe})


class Run:
    """One sampling run, started, stepped and ended the one way every sampler does it.

    It brings ``shape_or_x_T`` to the structured form (:func:`setup`, which draws the prior first
    from ``generator``), wraps the denoiser (:class:`Model`: counted, guided) and keeps the common
    arguments, so that a sampler is its grid and its update:

        run = Run("euler", denoiser, process, shape_or_x_T, guidance=guidance, ...)
        ts = run.grid(steps, timesteps, schedule)
        x = run.x
        for i in run.steps(len(ts) - 1):
            ...  # the update ``upd`` from ts[i] to ts[i + 1]
            x = run.step(i, x, upd, ts[i], ts[i + 1], x0, final=...)
        return run.result(x)

    Args:
        name: the sampler's name, for messages and the progress bar.
        denoiser: ``denoiser(state, t) -> predictions`` (see :class:`Model`).
        process: one process or one per diffused key.
        shape_or_x_T: the start (see :func:`setup`).
        guidance: optional :class:`~domaindiff.guidance.Guidance`.
        callback: optional per-step callback (see :func:`emit`).
        generator: random generator of the prior draw and of every step's noise.
        progress: show a progress bar.
        prior: see :func:`setup`.
        info: a dict that receives ``info["nfe"]`` at the end (see :func:`report_nfe`).
    """

    def __init__(self, name: str, denoiser: Denoiser, process: Processes, shape_or_x_T: Start,
                 *, guidance: Guidance | None, callback: Callback | None,
                 generator: torch.Generator | None, progress: bool, prior: bool | None,
                 info: dict[str, Any] | None) -> None:
        self.name = name
        self.start = setup(process, shape_or_x_T, generator, prior)
        self.procs = self.start.procs
        self.model = Model(denoiser, self.procs, guidance)
        self.x = self.start.x
        self.callback, self.generator, self.progress, self.info = (callback, generator,
                                                                    progress, info)
        self._clean = False  # set by grid(): the last step returns the clean prediction

    def grid(self, steps: int | None, timesteps: Timesteps | None,
             schedule: Schedule | None = None, *, multistep: bool | str = False,
             intervals: Callable[[int], int] = lambda s: s,
             nfe: Callable[[int], int] = lambda n: n,
             grid: Callable[[int], list[float]] | None = None,
             zero_end: bool = False, final: str | None = None) -> list[float]:
        """The time points: :func:`grid_or_steps` on :func:`time_points` with ``schedule``.

        ``multistep`` (``True`` or the solver's name in :data:`MULTISTEP_DEFAULTS`) resolves
        ``schedule`` and ``final`` through :func:`multistep_default` (the measured default of
        the multistep exponential integrators): with neither given, the solver's default grid
        and last step; with ``schedule`` given, ``final`` defaults to ``"step"``. A
        ``"denoise"`` last step replaces the grid's last point by ``0`` (see :data:`FINALS`);
        the solver then returns the clean prediction at the point before (:meth:`clean_end`).
        With ``timesteps`` the grid says it: ending at ``0`` is the clean last step (so
        ``final="denoise"`` needs such a grid and ``final="step"`` one that does not).
        ``grid`` replaces :func:`time_points`.

        Raises:
            ValueError: for an unknown ``final`` or one that contradicts ``timesteps``.
        """
        wanted = check_final(final)
        sched, final = schedule, wanted
        if multistep:
            default = multistep_default(self.procs, multistep if isinstance(multistep, str)
                                        else None)
            if timesteps is not None:
                zero_end = wanted != "step"
            elif schedule is None:
                sched = default.schedule
                final = default.final if wanted is None else wanted
            else:
                final = wanted or "step"

        def points(n: int) -> list[float]:
            return time_points(self.procs, n, sched)

        ts = grid_or_steps(self.procs, steps, timesteps, self.name, intervals=intervals,
                           nfe=nfe, grid=points if grid is None else grid, zero_end=zero_end)
        if timesteps is not None:
            if multistep and wanted == "denoise" and ts[-1] != 0.0:
                raise ValueError("final='denoise' with timesteps: end the grid at 0 (the clean "
                                 f"end) for a clean last step, got last time {ts[-1]!r}")
            self._clean = multistep and wanted != "step" and ts[-1] == 0.0
        elif multistep and final == "denoise":
            ts = [*ts[:-1], 0.0]
            self._clean = True
        return ts

    def clean_end(self, t_next: float) -> bool:
        """Whether a step to ``t_next`` is the clean last step (it returns the clean prediction).

        That is the step to the ``0`` that :meth:`grid` put at the end for ``final="denoise"``
        (or found there in ``timesteps``); with ``final="step"`` a process whose ``t_min`` is 0
        steps to ``t = 0`` as to any other time.
        """
        return self._clean and t_next == 0.0

    def steps(self, n: int, desc: str | None = None) -> Iterable[int]:
        """``range(n)``, with a progress bar named ``desc`` (default: the sampler) if asked."""
        return steps_iter(n, self.progress, self.name if desc is None else desc)

    def noise(self, x: State) -> State:
        """Standard noise in each diffused component's space, from the run's generator."""
        return noise_like(x, self.procs, self.generator)

    def step(self, i: int, x: State, upd: Mapping[str, Tensor], t_prev: float, t_next: float,
             x0: State | None, final: bool) -> State:
        """End step ``i``: ``x`` with ``upd``, projected and guided (:meth:`Model.after_step`).

        The callback then receives the state at ``t_next`` with the running NFE.
        """
        x = self.model.after_step(combine(x, upd), t_prev, t_next, self.generator, final=final)
        emit(self.callback, i, t_next, x, x0, self.model.nfe)
        return x

    def result(self, x: State) -> Sample:
        """Report the NFE to ``info`` and return ``x`` in the caller's form."""
        report_nfe(self.info, self.model.nfe)
        return self.start.finish(x)


def scalar(p: GaussianProcess, fn: str, t: float) -> float:
    """A process coefficient at a scalar time, in float64 (see ``GaussianProcess.coefficient``)."""
    return p.coefficient(fn, t)
