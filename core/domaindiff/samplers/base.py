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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from domaindiff.guidance import Guidance, check_guidance
from domaindiff.parametrization import check, to_x0_eps
from domaindiff.processes import GaussianProcess, bcast

State = dict[str, Tensor]
Denoiser = Callable[[State, Tensor], Any]
Callback = Callable[[dict[str, Any]], None]
#: a sampler's ``process`` argument: one process, or one per diffused key
Processes = GaussianProcess | Mapping[str, GaussianProcess]
#: a sampler's ``shape_or_x_T`` argument
Start = Sequence[int] | Tensor | Mapping[str, Tensor]
#: what a sampler returns: a tensor for a tensor/shape input with one process, else a state
Sample = Tensor | State

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
        """A ``(B,)`` tensor of time ``t`` on the state's device."""
        ref = next(iter(x[k] for k in self.procs))
        return torch.full((ref.shape[0],), float(t), device=ref.device, dtype=ref.dtype)

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


def time_points(procs: Mapping[str, GaussianProcess], n: int, schedule: str | None = None,
                t_start: float | None = None, t_end: float | None = None) -> list[float]:
    """``n + 1`` time points shared by all components, ``T -> t_min``."""
    if n < 1:
        raise ValueError(f"steps: need at least 1 network evaluation for this sampler, got {n}")
    ref = reference_process(procs)
    ts = ref.time_grid(n, schedule).tolist()
    if t_start is not None or t_end is not None:
        ts = [float(x) for x in torch.linspace(t_start or ref.T, t_end or ref.t_min, n + 1)]
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


def scalar(p: GaussianProcess, fn: str, t: float) -> float:
    """A process coefficient at a scalar time, in float64."""
    return float(getattr(p, fn)(torch.tensor(t, dtype=torch.float64)))
