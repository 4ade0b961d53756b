"""What a network predicts, and exact conversions between the choices.

For a Gaussian process ``x_t = a x0 + s eps`` (``a = alpha(t)``, ``s = sigma(t)``):

- ``eps``: the noise; ``x0``: the clean data; ``score``: ``grad log p_t(x_t) = -eps / s``;
- ``v``: ``a eps - s x0`` (Salimans & Ho's v for VP, used as is for other processes);
- ``velocity``: the probability-flow ODE velocity ``a' x0 + s' eps`` (flow matching's target).

Each prediction determines ``(x0, eps)`` given ``x_t``; :func:`to_x0_eps` solves for them and
:func:`from_x0_eps` goes back, so :func:`convert` is exact in both directions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from domaindiff.processes import GaussianProcess, bcast

PARAMETRIZATIONS = ("eps", "x0", "v", "score", "velocity")


def check(name: str) -> str:
    """Validate a parametrization name (a clear error otherwise)."""
    if name not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {name!r}; choose one of {PARAMETRIZATIONS}")
    return name


def _coeffs(process: GaussianProcess, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    a, s = bcast(process.alpha(t), x), bcast(process.sigma(t), x)
    return a, s


def to_x0_eps(pred: Tensor, kind: str, x_t: Tensor, t: Tensor,
              process: GaussianProcess) -> tuple[Tensor, Tensor]:
    """Recover ``(x0, eps)`` from a prediction of the given kind."""
    a, s = _coeffs(process, t, x_t)
    if kind == "eps":
        return (x_t - s * pred) / a, pred
    if kind == "x0":
        return pred, (x_t - a * pred) / s
    if kind == "score":
        eps = -s * pred
        return (x_t - s * eps) / a, eps
    if kind == "v":
        n = a**2 + s**2
        return (a * x_t - s * pred) / n, (s * x_t + a * pred) / n
    if kind == "velocity":
        da, ds = bcast(process.d_alpha(t), x_t), bcast(process.d_sigma(t), x_t)
        det = ds * a - s * da
        return (ds * x_t - s * pred) / det, (a * pred - da * x_t) / det
    raise ValueError(f"unknown parametrization {kind!r}; choose one of {PARAMETRIZATIONS}")


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, t: Tensor,
                process: GaussianProcess) -> Tensor:
    """Express ``(x0, eps)`` as a prediction of the given kind."""
    a, s = _coeffs(process, t, x0)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / s
    if kind == "v":
        return a * eps - s * x0
    if kind == "velocity":
        return bcast(process.d_alpha(t), x0) * x0 + bcast(process.d_sigma(t), x0) * eps
    raise ValueError(f"unknown parametrization {kind!r}; choose one of {PARAMETRIZATIONS}")


def convert(pred: Tensor, from_: str, to: str, x_t: Tensor, t: Tensor,
            process: GaussianProcess) -> Tensor:
    """Convert a prediction between parametrizations at ``(x_t, t)``."""
    if from_ == to:
        return pred
    x0, eps = to_x0_eps(pred, from_, x_t, t, process)
    return from_x0_eps(x0, eps, to, t, process)


def eps_error_factor(kind: str, t: Tensor, process: GaussianProcess) -> Tensor:
    """``c(t)`` with ``|eps_hat - eps|^2 = c(t) |pred_hat - pred|^2`` for a fixed ``x_t``.

    Used to express any weighting (likelihood, min-SNR) in the network's own parametrization.
    """
    a, s = process.alpha(t), process.sigma(t)
    if kind == "eps":
        return torch.ones_like(a)
    if kind == "x0":
        return (a / s) ** 2
    if kind == "score":
        return s**2
    if kind == "v":
        return (a / (a**2 + s**2)) ** 2
    if kind == "velocity":
        det = process.d_sigma(t) * a - s * process.d_alpha(t)
        return (a / det) ** 2
    raise ValueError(f"unknown parametrization {kind!r}; choose one of {PARAMETRIZATIONS}")


def edm_preconditioning(sigma: Tensor, sigma_data: float = 0.5) -> dict[str, Tensor]:
    """EDM's ``c_skip, c_out, c_in, c_noise`` for ``D(x) = c_skip x + c_out F(c_in x, c_noise)``."""
    s2, d2 = sigma**2, sigma_data**2
    return {
        "c_skip": d2 / (s2 + d2),
        "c_out": sigma * sigma_data / (s2 + d2).sqrt(),
        "c_in": 1 / (s2 + d2).sqrt(),
        "c_noise": 0.25 * torch.log(sigma),
    }


def edm_wrap(raw: Callable[[Tensor, Tensor], Tensor], sigma_data: float = 0.5
             ) -> Callable[[Tensor, Tensor], Tensor]:
    """Wrap a raw network ``F(x_in, c_noise)`` into EDM's preconditioned x0-denoiser ``D(x, sigma)``."""

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        c = edm_preconditioning(sigma, sigma_data)
        return bcast(c["c_skip"], x) * x + bcast(c["c_out"], x) * raw(
            bcast(c["c_in"], x) * x, c["c_noise"])

    return denoise
