"""Gaussian mixtures: data whose every diffusion quantity is known in closed form.

Under a Gaussian process ``x_t = alpha x0 + sigma eps`` a mixture of Gaussians stays a mixture:
component ``k`` becomes ``N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)``. So the marginal density,
its score and the optimal ``eps`` prediction are exact, which is what the samplers, likelihoods and
losses are tested against.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from domaindiff.processes import GaussianProcess
from domaindiff.spaces import Space


class GaussianMixture:
    """A mixture of full-covariance Gaussians in R^D.

    Args:
        means: ``(K, D)`` component means.
        covs: ``(K, D, D)`` covariances (or ``(K,)`` / scalar isotropic variances).
        weights: ``(K,)`` mixing weights (normalised here); uniform if omitted.
    """

    def __init__(self, means: Tensor, covs: Tensor | float = 1.0,
                 weights: Tensor | None = None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must be (K, D), got shape {tuple(means.shape)}")
        k, d = means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.dim() <= 1:
            covs = covs.expand(k) if covs.dim() == 1 else covs.expand(k)
            covs = covs[:, None, None] * torch.eye(d, dtype=torch.float64)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must be (K, D, D) = {(k, d, d)}, got {tuple(covs.shape)}")
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64)
        self.means, self.covs, self.weights = means, covs, w / w.sum()

    @property
    def dim(self) -> int:
        """Dimension D."""
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """Exact samples ``(n, D)``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)
        return x.to(dtype)

    def _components(self, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample means ``(B, K, D)`` and covariances ``(B, K, D, D)`` at scales a, s."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        mu = a[:, None, None] * self.means[None]
        cov = a[:, None, None, None] ** 2 * self.covs[None] + s[:, None, None, None] ** 2 * eye
        return mu, cov

    def _log_prob_and_score(self, x: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(torch.float64)
        mu, cov = self._components(a, s)
        diff = x[:, None, :] - mu
        prec = torch.linalg.inv(cov)
        pd = torch.einsum("bkij,bkj->bki", prec, diff)
        maha = (diff * pd).sum(-1)
        logdet = torch.linalg.slogdet(cov)[1]
        logc = torch.log(self.weights)[None] - 0.5 * (maha + logdet + self.dim * math.log(
            2 * math.pi))
        logp = torch.logsumexp(logc, dim=1)
        resp = torch.softmax(logc, dim=1)
        score = -(resp[..., None] * pd).sum(1)
        return logp, score

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the data distribution, ``(B,)``."""
        one = torch.ones(x.shape[0], dtype=torch.float64)
        return self._log_prob_and_score(x, one, 0 * one)[0]

    def marginal_log_prob(self, x: Tensor, t: Tensor, process: GaussianProcess) -> Tensor:
        """Log-density of ``p_t`` under the process, ``(B,)``."""
        t = _per_batch(t, x)
        return self._log_prob_and_score(x, process.alpha(t), process.sigma(t))[0]

    def marginal_score(self, x: Tensor, t: Tensor, process: GaussianProcess) -> Tensor:
        """``grad log p_t(x)``, ``(B, D)``."""
        t = _per_batch(t, x)
        return self._log_prob_and_score(x, process.alpha(t), process.sigma(t))[1]

    def marginal_samples(self, n: int, t: float, process: GaussianProcess,
                         generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of ``p_t``."""
        x0 = self.sample(n, generator, torch.float64)
        tt = torch.full((n,), float(t), dtype=torch.float64)
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return (process.alpha(tt)[:, None] * x0 + process.sigma(tt)[:, None] * eps).float()


def _per_batch(t: Tensor | float, x: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    return t.expand(x.shape[0]) if t.dim() == 0 else t.to(torch.float64)


class ExactDenoiser:
    """The optimal ``eps`` predictor for a mixture: ``eps*(x, t) = -sigma(t) grad log p_t(x)``.

    Works on a plain tensor or on a state dict with the component under ``key``.
    """

    parametrization = "eps"

    def __init__(self, mixture: GaussianMixture, process: GaussianProcess,
                 key: str = "x") -> None:
        self.mixture, self.process, self.key = mixture, process, key

    def __call__(self, x, t: Tensor):
        xt = x[self.key] if isinstance(x, dict) else x
        tt = _per_batch(t, xt)
        eps = -self.process.sigma(tt)[:, None] * self.mixture.marginal_score(xt, tt, self.process)
        eps = eps.to(xt.dtype)
        return {self.key: eps} if isinstance(x, dict) else eps


class IsoMixtureEps:
    """The exact ``eps`` of an equally weighted isotropic mixture ``(1/K) sum_k N(mu_k, c^2 I)``.

    The same prediction as :class:`ExactDenoiser` of ``GaussianMixture(means, std**2)``, in the
    isotropic closed form (no matrix inverses: O(B K D) a call), so grid sweeps and optimised
    grids stay cheap. Works on a plain ``(B, D)`` tensor or on a state dict under ``"x"``.

    Args:
        means: ``(K, D)`` component means.
        std: the components' standard deviation ``c``.
        process: the process the prediction is for.
    """

    parametrization = "eps"

    def __init__(self, means: Tensor, std: float, process: GaussianProcess) -> None:
        self.mu, self.c, self.p = means.double(), std, process

    def __call__(self, x: Any, t: Tensor) -> Any:
        xt = x["x"] if isinstance(x, dict) else x
        t = t.double()
        a, s = self.p.alpha(t)[:, None, None], self.p.sigma(t)[:, None, None]
        var = a**2 * self.c**2 + s**2
        d = xt.double()[:, None, :] - a * self.mu[None]
        r = torch.softmax(-(d**2).sum(-1) / (2 * var[..., 0]), 1)[..., None]
        eps = (s[:, 0] * (r * d / var).sum(1)).to(xt.dtype)
        return {"x": eps} if isinstance(x, dict) else eps


class SubspaceGaussian:
    """``x0 = m + c * P z``: an isotropic Gaussian inside a space (masked, symmetric, zero-CoM).

    Its exact ``eps`` prediction is ``sigma (x - alpha m) / (alpha^2 c^2 + sigma^2)``, projected. Used to
    test that every sampler keeps a space's invariants and still reaches the right distribution.

    Args:
        space: the space.
        mean: a point ``m`` of the space (projected here), shape of one sample with batch dim 1.
        scale: the standard deviation ``c`` along every free direction.
        state: pass-through entries (e.g. the node mask) the space reads.
    """

    parametrization = "eps"

    def __init__(self, space: Space, mean: Tensor, scale: float, process: GaussianProcess,
                 key: str = "x") -> None:
        self.space, self.scale, self.process, self.key = space, float(scale), process, key
        self.mean = mean

    def sample(self, state: dict, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples shaped like ``state[key]``."""
        like = state[self.key]
        m = self.space.project(self.mean.expand_as(like), state)
        return m + self.scale * self.space.noise(like, state, generator)

    def __call__(self, state: dict, t: Tensor) -> dict:
        x = state[self.key]
        a = self.process.alpha(t).reshape(-1, *([1] * (x.dim() - 1)))
        s = self.process.sigma(t).reshape(-1, *([1] * (x.dim() - 1)))
        m = self.space.project(self.mean.expand_as(x), state)
        eps = s * (x - a * m) / (a**2 * self.scale**2 + s**2)
        return {self.key: self.space.project(eps, state)}
