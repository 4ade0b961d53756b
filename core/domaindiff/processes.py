"""Forward processes: how data is turned into noise.

Time runs from ``t_min`` (data) to ``T`` (noise). Every Gaussian process here has marginals

    x_t = alpha(t) * x_0 + sigma(t) * eps,   eps ~ N(0, I) in the component's space,

which is all the samplers need: the SDE drift ``f(t) = alpha'(t)/alpha(t)``, the squared
diffusion ``g^2(t) = 2 sigma sigma' - 2 f sigma^2``, the half log-SNR ``lambda(t) = log(alpha/sigma)``
and the probability-flow velocity ``alpha' x_0 + sigma' eps`` all follow from ``alpha`` and ``sigma``.
:class:`GaussianProcess` is an abstract base: subclasses give ``alpha`` and ``sigma`` (and their
derivatives where a closed form is handy).

:class:`Bernoulli` is the binary diffusion for 0/1 data (Echo-DND, BerDiff). Its marginals are not
Gaussian and it is discrete-time, so it is deliberately *not* a :class:`GaussianProcess`: the
Gaussian samplers refuse it and it has its own sampler
(:func:`domaindiff.samplers.sample_bernoulli`).
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from domaindiff.spaces import Plain, Space, State


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-batch ``(B,)`` (or scalar) tensor so that it broadcasts against ``x``."""
    v = torch.as_tensor(v, device=x.device, dtype=x.dtype)
    if v.dim() == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def _t(t: Tensor | float) -> Tensor:
    return torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t


def uniform_time(t: Tensor) -> float | None:
    """The one time of a CPU time tensor that holds a single value, else ``None``.

    That is a 0-dim tensor, or a 1-D batch of times that is an expanded scalar (stride 0): what
    :meth:`domaindiff.samplers.base.Model.time` passes when every sample is at the same time. A
    process then computes a coefficient once, in Python floats, instead of per sample. Gives
    ``None`` (the caller takes its per-sample tensor path) for tensors that need gradients, are
    not floating point, are not on the CPU (asking a GPU tensor for its value would
    synchronise), or are not finite. Deliberately no comparison of the entries: that costs as much
    as the per-sample path it would save.

    Args:
        t: times, a tensor.
    """
    if not t.is_cpu or t.requires_grad or not t.is_floating_point():
        return None
    nd = t.dim()
    if nd == 1:
        if t.shape[0] == 0 or (t.shape[0] > 1 and t.stride(0) != 0):
            return None
        v = float(t[0])
    elif nd == 0:
        v = float(t)
    else:
        return None
    return v if math.isfinite(v) else None


def _keeps_methods(cls: type, base: type, names: Mapping[str, Any]) -> bool:
    """Whether ``cls`` inherits every method ``names`` from ``base`` unchanged.

    A process's Python-float fast paths mirror its own methods (and one another); a subclass
    that redefines any of them gets the generic evaluation of its own methods instead.
    """
    return all(getattr(cls, n) is getattr(base, n) for n in names)


def _filled(value: float, t: Tensor) -> Tensor:
    """A fresh tensor shaped, typed and placed like ``t`` holding ``value`` everywhere."""
    return torch.full(t.shape, value, dtype=t.dtype, device=t.device)


class GaussianProcess(abc.ABC):
    """Abstract base of the processes with Gaussian marginals ``alpha(t) x0 + sigma(t) eps``.

    A subclass must implement :meth:`alpha` and :meth:`sigma`; everything else (SDE, log-SNR,
    derivatives, time grids, prior) follows from them and may be overridden with closed forms.

    Args:
        T: final time (noise end).
        t_min: smallest time used for training and sampling (data end).
        space: where the component's noise lives.
    """

    #: the preferred time grid of first-order samplers: "uniform", "logsnr" or "karras"
    default_schedule = "uniform"
    #: closed forms ``(self, t) -> value`` in Python floats of some coefficient methods, used by
    #: :meth:`coefficient` while ``_fast`` (a subclass sets it when it keeps the methods they mirror)
    _FLOAT_FORMS: ClassVar[Mapping[str, Callable[[Any, float], float]]] = {}
    _fast = False

    def __init__(self, T: float = 1.0, t_min: float = 1e-5, space: Space | None = None) -> None:
        if not 0 <= t_min < T:
            raise ValueError(f"need 0 <= t_min < T, got t_min={t_min}, T={T}")
        self.T = float(T)
        self.t_min = float(t_min)
        self.space = space if space is not None else Plain()

    # --- to be provided by subclasses -------------------------------------------------------
    @abc.abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Mean coefficient of the marginal."""

    @abc.abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Standard deviation of the marginal."""

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior ``N(0, prior_std^2 I)`` at time ``T``."""
        return float(self.sigma(torch.tensor(self.T, dtype=torch.float64)))

    # --- derived quantities --------------------------------------------------------------------
    def _derivative(self, fn: Callable[[Tensor], Tensor], t: Tensor) -> Tensor:
        with torch.enable_grad():
            tt = t.detach().to(torch.float64).requires_grad_(True)
            out = fn(tt)
            if not out.requires_grad:  # constant in t
                return torch.zeros_like(t)
            (d,) = torch.autograd.grad(out.sum(), tt)
        return d.to(t.dtype)

    def d_alpha(self, t: Tensor) -> Tensor:
        """Time derivative of :meth:`alpha`."""
        return self._derivative(self.alpha, t)

    def d_sigma(self, t: Tensor) -> Tensor:
        """Time derivative of :meth:`sigma`."""
        return self._derivative(self.sigma, t)

    def f(self, t: Tensor) -> Tensor:
        """Linear drift coefficient: the SDE drift is ``f(t) * x``."""
        return self.d_alpha(t) / self.alpha(t)

    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion coefficient ``g(t)^2``."""
        s = self.sigma(t)
        return (2 * s * self.d_sigma(t) - 2 * self.f(t) * s**2).clamp_min(0.0)

    def lambda_(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio ``log(alpha / sigma)`` (DPM-Solver's lambda)."""
        return torch.log(self.alpha(t)) - torch.log(self.sigma(t))

    def log_snr(self, t: Tensor) -> Tensor:
        """Log signal-to-noise ratio ``2 * lambda``."""
        return 2 * self.lambda_(t)

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`lambda_` (bisection on ``[t_min, T]``; closed form where known)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo = torch.full_like(lam, self.t_min)
        hi = torch.full_like(lam, self.T)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            above = self.lambda_(mid) > lam  # lambda decreases with t
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def coefficient(self, name: str, t: float) -> float:
        """One coefficient (``"alpha"``, ``"sigma"``, ``"lambda_"``, ``"f"``, ...) at one time.

        What samplers ask for at every step. Evaluated through the tensor method in float64;
        processes with closed forms list them in ``_FLOAT_FORMS``, Python-float arithmetic used
        while ``_fast`` (the same values up to float rounding, without creating tensors).

        Args:
            name: the name of a coefficient method of this process.
            t: the time.
        """
        form = self._FLOAT_FORMS.get(name)
        if form is not None and self._fast and math.isfinite(t):
            return form(self, float(t))
        return float(getattr(self, name)(torch.tensor(t, dtype=torch.float64)))

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (broadcastable) standard deviation of ``q(x_t | x_0)``."""
        return bcast(self.alpha(t), x0) * x0, bcast(self.sigma(t), x0)

    def noise(self, x0: Tensor, state: State | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """Standard noise in the component's space."""
        return self.space.noise(x0, state, generator)

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``alpha(t) x0 + sigma(t) eps``."""
        mean, std = self.marginal(x0, t)
        return mean + std * eps

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift ``f(t) x`` and diffusion ``g(t)`` (shape ``(B,)``) of the forward SDE."""
        return bcast(self.f(t), x) * x, self.g2(t).sqrt()

    def discretize(self, x: Tensor, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        """One forward step ``x_{t+dt} = x + f + G z``: returns ``(f, G)`` (Euler by default)."""
        drift, g = self.sde(x, t)
        return drift * bcast(dt, x), g * dt.sqrt()

    def prior_sample(self, like: Tensor | Sequence[int], state: State | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        """Draw from the prior ``N(0, prior_std^2)`` in the space."""
        if not torch.is_tensor(like):
            like = torch.zeros(tuple(like))
        return self.prior_std * self.space.noise(like, state, generator)

    def prior_logp(self, x: Tensor, state: State | None = None) -> Tensor:
        """Log-density of the prior in the space's free coordinates, shape ``(B,)``."""
        var = self.prior_std**2
        d = self.space.dim(x, state)
        return -0.5 * self.space.sq_norm(x, state) / var - 0.5 * d * math.log(2 * math.pi * var)

    def time_grid(self, n: int, schedule: str | None = None, rho: float = 7.0,
                  device: torch.device | None = None) -> Tensor:
        """``n + 1`` decreasing time points from ``T`` to ``t_min``.

        Args:
            n: number of intervals.
            schedule: "uniform" in t, "logsnr" (uniform in lambda) or "karras" (EDM's rho-spaced
                noise levels ``sigma/alpha``); default :attr:`default_schedule`.
            rho: Karras exponent.
            device: device of the result.
        """
        schedule = schedule or self.default_schedule
        u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
        T, tm = torch.tensor(self.T, dtype=torch.float64), torch.tensor(self.t_min,
                                                                          dtype=torch.float64)
        if schedule == "uniform":
            ts = T + (tm - T) * u
        elif schedule == "logsnr":
            l0, l1 = self.lambda_(T), self.lambda_(tm)
            ts = self.t_from_lambda(l0 + (l1 - l0) * u)
        elif schedule == "karras":
            s0, s1 = torch.exp(-self.lambda_(T)), torch.exp(-self.lambda_(tm))
            sig = (s0 ** (1 / rho) + u * (s1 ** (1 / rho) - s0 ** (1 / rho))) ** rho
            ts = self.t_from_lambda(-torch.log(sig))
        else:
            raise ValueError(f"unknown schedule {schedule!r}: use 'uniform', 'logsnr' or 'karras'")
        ts[0], ts[-1] = T, tm
        return ts.to(device=device)

    def with_t_min(self, t_min: float) -> GaussianProcess:
        """A copy of this process whose data end (where samplers stop) is ``t_min``.

        Args:
            t_min: the new data-end time, ``0 <= t_min < T``.

        Raises:
            ValueError: if ``t_min`` is outside ``[0, T)``.
        """
        if not 0 <= t_min < self.T:
            raise ValueError(f"t_min: need 0 <= t_min < T={self.T}, got {t_min}")
        out = copy.copy(self)
        out.t_min = float(t_min)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T}, t_min={self.t_min}, space={self.space})"


class VP(GaussianProcess):
    """Variance-preserving SDE ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dW``, linear ``beta``.

    Args:
        beta_min: ``beta(0)``.
        beta_max: ``beta(1)``.
        T: final time.
        t_min: data-end time.
        space: the component's space.
    """

    default_schedule = "uniform"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0,
                 t_min: float = 1e-5, space: Space | None = None) -> None:
        super().__init__(T, t_min, space)
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self._fast = _keeps_methods(type(self), VP, VP._FLOAT_FORMS)

    def beta(self, t: Tensor) -> Tensor:
        """Instantaneous noise rate ``beta(t)``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t: Tensor) -> Tensor:
        """``int_0^t beta``."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    # Python-float forms of the coefficients (see GaussianProcess.coefficient): the same
    # arithmetic as the tensor methods, in float64
    def _beta_float(self, v: float) -> float:
        return self.beta_min + v * (self.beta_max - self.beta_min)

    def _int_beta_float(self, v: float) -> float:
        return self.beta_min * v + 0.5 * v**2 * (self.beta_max - self.beta_min)

    def _alpha_float(self, v: float) -> float:
        return math.exp(-0.5 * self._int_beta_float(v))

    def _sigma_float(self, v: float) -> float:
        return math.sqrt(max(-math.expm1(-self._int_beta_float(v)), 1e-20))

    def _lambda_float(self, v: float) -> float:
        return math.log(self._alpha_float(v)) - math.log(self._sigma_float(v))

    def _d_alpha_float(self, v: float) -> float:
        return -0.5 * self._beta_float(v) * self._alpha_float(v)

    def _d_sigma_float(self, v: float) -> float:
        return 0.5 * self._beta_float(v) * math.exp(-self._int_beta_float(v)) / self._sigma_float(v)

    def _f_float(self, v: float) -> float:
        return -0.5 * self._beta_float(v)

    _FLOAT_FORMS = {"alpha": _alpha_float, "sigma": _sigma_float, "lambda_": _lambda_float,
                    "f": _f_float, "g2": _beta_float, "d_alpha": _d_alpha_float,
                    "d_sigma": _d_sigma_float, "beta": _beta_float, "int_beta": _int_beta_float}

    def _one_time(self, t: Tensor) -> float | None:
        return uniform_time(t) if self._fast and isinstance(t, Tensor) else None

    def alpha(self, t: Tensor) -> Tensor:
        v = self._one_time(t)
        if v is not None:
            return _filled(self._alpha_float(v), t)
        return torch.exp(-0.5 * self.int_beta(t))

    def sigma(self, t: Tensor) -> Tensor:
        v = self._one_time(t)
        if v is not None:
            return _filled(self._sigma_float(v), t)
        return (-torch.expm1(-self.int_beta(t))).clamp_min(1e-20).sqrt()

    def d_alpha(self, t: Tensor) -> Tensor:
        v = self._one_time(t)
        if v is not None:
            return _filled(self._d_alpha_float(v), t)
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        v = self._one_time(t)
        if v is not None:
            return _filled(self._d_sigma_float(v), t)
        a2 = torch.exp(-self.int_beta(t))
        return 0.5 * self.beta(t) * a2 / self.sigma(t)

    def f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        log_term = torch.log1p(torch.exp(-2 * lam))  # = int_beta(t)
        b0, db = self.beta_min, self.beta_max - self.beta_min
        if db == 0:
            return log_term / b0
        return 2 * log_term / (math.sqrt(b0**2) + torch.sqrt(b0**2 + 2 * db * log_term))

    def discretize(self, x: Tensor, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        """DDPM-style discretisation ``x' = sqrt(1 - b) x + sqrt(b) z`` with ``b = beta dt``."""
        b = (self.beta(t) * dt).clamp(max=0.999)
        return (bcast(torch.sqrt(1 - b), x) - 1) * x, b.sqrt()

    def __repr__(self) -> str:
        return f"VP(beta_min={self.beta_min}, beta_max={self.beta_max}, space={self.space})"


class SubVP(VP):
    """Sub-VP SDE of Song et al. (2021): variance ``(1 - exp(-int beta))^2``."""

    def sigma(self, t: Tensor) -> Tensor:
        return (-torch.expm1(-self.int_beta(t))).clamp_min(1e-20)

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.beta(t) * torch.exp(-self.int_beta(t))

    def g2(self, t: Tensor) -> Tensor:
        return self.beta(t) * (-torch.expm1(-2 * self.int_beta(t)))

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        return GaussianProcess.t_from_lambda(self, lam)

    def discretize(self, x: Tensor, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        return GaussianProcess.discretize(self, x, t, dt)

    def __repr__(self) -> str:
        return f"SubVP(beta_min={self.beta_min}, beta_max={self.beta_max}, space={self.space})"


class VE(GaussianProcess):
    """Variance-exploding SDE, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``alpha = 1``."""

    default_schedule = "uniform"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0,
                 t_min: float = 1e-5, space: Space | None = None) -> None:
        super().__init__(T, t_min, space)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(_t(t))

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_t(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        return self.sigma(t) * self._log_ratio

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_t(t))

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self.sigma(t) ** 2 * self._log_ratio

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def __repr__(self) -> str:
        return f"VE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, space={self.space})"


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule of Nichol & Dhariwal (2021)."""
    u = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    abar = abar / abar[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class DiscreteDDPM(GaussianProcess):
    """A discrete-time DDPM schedule wrapped as a continuous VP process.

    Step ``i`` (1..N) sits at ``t = i / N``. ``log alpha_bar`` is interpolated piecewise linearly
    between the grid points (as DPM-Solver wraps discrete models), so every continuous-time sampler
    applies; the ancestral sampler with ``steps = N`` is exactly DDPM.

    Args:
        schedule: "linear" (``beta_start .. beta_end``) or "cosine"; ignored if ``betas`` given.
        num_steps: N.
        beta_start: first beta of the linear schedule.
        beta_end: last beta of the linear schedule.
        betas: explicit betas (overrides the schedule).
        space: the component's space.
        max_beta: betas of the linear and cosine schedules are clipped to this value, so a
            linear schedule rescaled for few steps (``beta_end * 1000 / N >= 1``, as GeoTDM does)
            stays a valid diffusion whose last step is (almost) pure noise. Explicit ``betas`` are
            never changed and must lie in (0, 1).
    """

    default_schedule = "uniform"

    def __init__(self, schedule: str = "linear", num_steps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, betas: Sequence[float] | None = None,
                 space: Space | None = None, max_beta: float = 0.999) -> None:
        if not 0 < max_beta < 1:
            raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
        if betas is not None:
            b = torch.as_tensor(betas, dtype=torch.float64)
        elif schedule == "linear":
            if not 0 < beta_start <= beta_end:
                raise ValueError(f"need 0 < beta_start <= beta_end, got {beta_start}, {beta_end}")
            b = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
            b = b.clamp(max=max_beta)
        elif schedule == "cosine":
            b = cosine_betas(num_steps, max_beta=max_beta)
        else:
            raise ValueError(f"unknown schedule {schedule!r}: use 'linear' or 'cosine'")
        if b.dim() != 1 or len(b) == 0 or (b <= 0).any() or (b >= 1).any():
            raise ValueError("betas must be a non-empty 1-D sequence in (0, 1)")
        n = len(b)
        super().__init__(T=1.0, t_min=1.0 / n, space=space)
        self.num_steps = n
        self.betas = b
        self.alphas_cumprod = torch.cumprod(1 - b, 0)
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64),
                                    torch.log(self.alphas_cumprod)])
        self._log_abar_list: list[float] = self._log_abar.tolist()
        self._fast = _keeps_methods(type(self), DiscreteDDPM, DiscreteDDPM._FLOAT_FORMS)
        self._log_abar_by_device: dict[torch.device, Tensor] = {self._log_abar.device:
                                                                 self._log_abar}

    # Every coefficient has a per-sample tensor path and, for one time shared by all samples
    # (what samplers ask for), a Python-float path that interpolates the table once: the same
    # float64 arithmetic, rounded to the dtype of ``t`` at the end.
    def _log_abar_float(self, v: float) -> float:
        pos = min(max(v * self.num_steps, 0.0), float(self.num_steps))
        lo = min(math.floor(pos), self.num_steps - 1)
        w = pos - lo
        table = self._log_abar_list
        return table[lo] * (1 - w) + table[lo + 1] * w

    def _slope_float(self, v: float) -> float:
        pos = min(max(v * self.num_steps, 0.0), float(self.num_steps))
        lo = min(math.floor(pos), self.num_steps - 1)
        table = self._log_abar_list
        return (table[lo + 1] - table[lo]) * self.num_steps

    def _alpha_float(self, v: float) -> float:
        return math.exp(0.5 * self._log_abar_float(v))

    def _sigma_float(self, v: float) -> float:
        return math.sqrt(max(-math.expm1(self._log_abar_float(v)), 1e-20))

    def _lambda_float(self, v: float) -> float:
        return math.log(self._alpha_float(v)) - math.log(self._sigma_float(v))

    def _f_float(self, v: float) -> float:
        return 0.5 * self._slope_float(v)

    def _g2_float(self, v: float) -> float:
        return -self._slope_float(v)

    def _d_alpha_float(self, v: float) -> float:
        return self._f_float(v) * self._alpha_float(v)

    def _d_sigma_float(self, v: float) -> float:
        return (-0.5 * self._slope_float(v) * math.exp(self._log_abar_float(v))
                / self._sigma_float(v))

    _FLOAT_FORMS = {"alpha": _alpha_float, "sigma": _sigma_float, "lambda_": _lambda_float,
                    "f": _f_float, "g2": _g2_float, "d_alpha": _d_alpha_float,
                    "d_sigma": _d_sigma_float}

    def _one_time(self, t: Tensor) -> float | None:
        return uniform_time(t) if self._fast else None

    def _table_on(self, device: torch.device) -> Tensor:
        """The float64 ``log alpha_bar`` table on ``device`` (copied once per device)."""
        table = self._log_abar_by_device.get(device)
        if table is None:
            table = self._log_abar.to(device)
            self._log_abar_by_device[device] = table
        return table

    def _cell(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Each time's cell of the step table: its lower step index and the upper step's weight."""
        pos = (t.to(torch.float64) * self.num_steps).clamp(0, self.num_steps)
        lo = pos.floor().clamp(max=self.num_steps - 1)
        return lo.long(), pos - lo

    def _log_abar_at(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._log_abar_float(v), t)
        lo, w = self._cell(t)
        table = self._table_on(t.device)
        out = table[lo] * (1 - w) + table[lo + 1] * w
        return out.to(t.dtype)

    def _slope(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._slope_float(v), t)
        lo, _ = self._cell(t)
        table = self._table_on(t.device)
        return ((table[lo + 1] - table[lo]) * self.num_steps).to(t.dtype)

    def alpha(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._alpha_float(v), t)
        return torch.exp(0.5 * self._log_abar_at(t))

    def sigma(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._sigma_float(v), t)
        return (-torch.expm1(self._log_abar_at(t))).clamp_min(1e-20).sqrt()

    def lambda_(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._lambda_float(v), t)
        return super().lambda_(t)

    def f(self, t: Tensor) -> Tensor:
        return 0.5 * self._slope(t)

    def d_alpha(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._d_alpha_float(v), t)
        return self.f(t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        t = _t(t)
        v = self._one_time(t)
        if v is not None:
            return _filled(self._d_sigma_float(v), t)
        return -0.5 * self._slope(t) * torch.exp(self._log_abar_at(t)) / self.sigma(t)

    def g2(self, t: Tensor) -> Tensor:
        return -self._slope(t)

    @property
    def prior_std(self) -> float:
        return 1.0

    def t_to_index(self, t: Tensor) -> Tensor:
        """Nearest integer step ``i`` in ``1..N`` for continuous time ``t``."""
        return (_t(t) * self.num_steps).round().long().clamp(1, self.num_steps)

    def index_to_t(self, i: Tensor) -> Tensor:
        """Continuous time of integer step ``i``."""
        return torch.as_tensor(i, dtype=torch.get_default_dtype()) / self.num_steps

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        lam = torch.as_tensor(lam, dtype=torch.float64)
        log_abar = -torch.log1p(torch.exp(-2 * lam))
        table = self._log_abar  # decreasing
        idx = torch.searchsorted(-table, -log_abar).clamp(1, self.num_steps)
        lo, hi = table[idx - 1], table[idx]
        w = ((log_abar - lo) / (hi - lo)).clamp(0, 1)
        return (idx - 1 + w) / self.num_steps

    def __repr__(self) -> str:
        return f"DiscreteDDPM(num_steps={self.num_steps}, space={self.space})"


class EDM(GaussianProcess):
    """EDM (Karras et al. 2022) in sigma-space: ``t = sigma``, ``alpha = 1``.

    Time runs over ``[sigma_min, sigma_max]``; the network preconditioning lives in
    :func:`domaindiff.parametrization.edm_preconditioning`.
    """

    default_schedule = "karras"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 sigma_data: float = 0.5, space: Space | None = None) -> None:
        super().__init__(T=sigma_max, t_min=sigma_min, space=space)
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(_t(t))

    def sigma(self, t: Tensor) -> Tensor:
        return _t(t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_t(t))

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(_t(t))

    def f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_t(t))

    def g2(self, t: Tensor) -> Tensor:
        return 2 * _t(t)

    def t_from_lambda(self, lam: Tensor) -> Tensor:
        return torch.exp(-torch.as_tensor(lam, dtype=torch.float64))

    @property
    def prior_std(self) -> float:
        return self.sigma_max


class Interpolant(GaussianProcess):
    """Interpolants between data (t = 0) and Gaussian noise (t = 1).

    ``x_t = a(t) x0 + b(t) x1 + gamma(t) z``: ``kind="linear"`` (rectified flow / flow matching,
    ``a = 1 - t``, ``b = t``) or ``"trig"`` (``a = cos(pi t / 2)``, ``b = sin(pi t / 2)``), and the
    stochastic interpolant's latent term ``gamma(t)^2 = latent_gamma * t (1 - t)``. With a Gaussian
    base, the marginal given x0 is Gaussian with ``sigma = sqrt(b^2 + gamma^2)``.

    Args:
        kind: "linear" or "trig".
        latent_gamma: scale of the latent noise term (0: a deterministic interpolant).
        t_min: data-end time.
        T: noise-end time (kept below 1 so that log-SNR solvers stay finite).
        space: the component's space.
    """

    default_schedule = "uniform"

    def __init__(self, kind: str = "linear", latent_gamma: float = 0.0, t_min: float = 1e-3,
                 T: float = 1.0 - 1e-3, space: Space | None = None) -> None:
        if kind not in ("linear", "trig"):
            raise ValueError(f"unknown interpolant kind {kind!r}: use 'linear' or 'trig'")
        super().__init__(T=T, t_min=t_min, space=space)
        self.kind, self.latent_gamma = kind, float(latent_gamma)

    def _ab(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = _t(t)
        if self.kind == "linear":
            return 1 - t, t
        return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)

    def alpha(self, t: Tensor) -> Tensor:
        return self._ab(t)[0]

    def sigma(self, t: Tensor) -> Tensor:
        t = _t(t)
        b = self._ab(t)[1]
        return torch.sqrt(b**2 + self.latent_gamma * t * (1 - t))

    @property
    def prior_std(self) -> float:
        return 1.0

    def __repr__(self) -> str:
        return f"Interpolant(kind={self.kind!r}, latent_gamma={self.latent_gamma})"


class Bernoulli:
    """Binary diffusion for 0/1 data: ``x_i ~ Bern(abar_i x0 + (1 - abar_i) / 2)``.

    Each step flips towards a fair coin: ``q(x_i | x_{i-1}) = Bern((1 - beta_i) x_{i-1} + beta_i/2)``.
    Steps are integers ``i = 1..N``; ``abar_0 = 1``.

    Args:
        num_steps: N.
        beta_start: first beta of the linear schedule.
        beta_end: last beta.
        betas: explicit betas (overrides the linear schedule).
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 betas: Sequence[float] | None = None) -> None:
        b = (torch.as_tensor(betas, dtype=torch.float64) if betas is not None
             else torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))
        if (b <= 0).any() or (b >= 1).any():
            raise ValueError("betas must lie in (0, 1)")
        self.num_steps = len(b)
        self.betas = b
        self.abar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - b, 0)])

    def _abar(self, i: Tensor, like: Tensor) -> Tensor:
        i = torch.as_tensor(i, device=like.device).long()
        return bcast(self.abar.to(like.device)[i].to(like.dtype), like)

    def marginal_prob(self, x0: Tensor, i: Tensor) -> Tensor:
        """``P(x_i = 1 | x0) = abar_i x0 + (1 - abar_i) / 2`` (``x0`` may be a probability)."""
        a = self._abar(i, x0)
        return a * x0 + 0.5 * (1 - a)

    def q_sample(self, x0: Tensor, i: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``x_i ~ q(x_i | x0)``."""
        p = self.marginal_prob(x0, i)
        gdev = generator.device if generator is not None else p.device
        u = torch.rand(p.shape, generator=generator, device=gdev, dtype=p.dtype).to(p.device)
        return (u < p).to(x0.dtype)

    def posterior_prob(self, x_i: Tensor, x0: Tensor, i: Tensor,
                       j: Tensor | None = None) -> Tensor:
        """``q(x_j = 1 | x_i, x0)`` for ``j < i`` (default ``j = i - 1``), exact for 0/1 ``x0``.

        With a fractional ``x0`` this is the plug-in formula (BerDiff's ``theta_post`` with the
        predicted mean in place of x0); :meth:`reverse_prob` is the exact reverse step for a
        predicted probability.
        """
        i = torch.as_tensor(i, device=x_i.device).long()
        j = i - 1 if j is None else torch.as_tensor(j, device=x_i.device).long()
        a_i, a_j = self._abar(i, x_i), self._abar(j, x_i)
        a_ij = a_i / a_j  # the flip-towards-fair-coin factor of q(x_i | x_j)
        # likelihood of the observed x_i given x_j = 1 and x_j = 0
        like1 = a_ij * x_i + 0.5 * (1 - a_ij)
        like0 = a_ij * (1 - x_i) + 0.5 * (1 - a_ij)
        prior1 = a_j * x0 + 0.5 * (1 - a_j)
        num1 = like1 * prior1
        num0 = like0 * (1 - prior1)
        return num1 / (num1 + num0)

    def reverse_prob(self, x_i: Tensor, x0_prob: Tensor, i: Tensor,
                     j: Tensor | None = None) -> Tensor:
        """``p(x_j = 1 | x_i)`` given ``x0_prob = P(x0 = 1 | x_i)``: the posterior averaged over x0.

        ``x0_prob * q(x_j | x_i, x0=1) + (1 - x0_prob) * q(x_j | x_i, x0=0)``, the exact reverse
        transition when ``x0_prob`` is the true posterior mean.
        """
        one, zero = torch.ones_like(x_i), torch.zeros_like(x_i)
        return (x0_prob * self.posterior_prob(x_i, one, i, j)
                + (1 - x0_prob) * self.posterior_prob(x_i, zero, i, j))

    def __repr__(self) -> str:
        return f"Bernoulli(num_steps={self.num_steps})"


PROCESSES: dict[str, type[GaussianProcess]] = {
    "vp": VP, "subvp": SubVP, "ve": VE, "ddpm": DiscreteDDPM, "edm": EDM,
    "interpolant": Interpolant,
}


def make_process(name: str, space: Space | None = None, **kwargs: Any) -> GaussianProcess:
    """Build a Gaussian process by short name with keyword settings.

    Names: ``vp``, ``subvp``, ``ve``, ``ddpm``, ``edm``, ``interpolant``; a bad name or setting
    raises a ValueError naming it.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {sorted(PROCESSES)}")
    try:
        return PROCESSES[key](space=space, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad settings for process {name!r}: {err}") from err
