"""Conditioning at sampling time, without retraining.

A guidance object plugs into every Gaussian sampler through two optional hooks:

- ``predict(model, x, t) -> (x0_hat, eps_hat)`` changes the model's prediction (energy /
  reconstruction guidance); ``model.raw_predict`` gives the unguided one;
- ``after_step(x, t_next, procs, generator, final) -> x`` changes the state after each step
  (replacement / inpainting).

:class:`ClassifierFreeGuidance` is a denoiser wrapper instead (it needs two network calls).
:class:`Compose` chains several guidances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from domaindiff.processes import bcast

State = dict[str, Tensor]


class Inpainting:
    """Replacement guidance: keep the known entries consistent with an observation.

    After every step the known entries of each listed component are replaced by the observation
    noised to the new time, ``alpha(t) y + sigma(t) eps`` (RePaint / SDEdit-style replacement), and
    at the final step by the observation itself.

    Args:
        observed: observed values per component key (full-shaped tensors; only known entries matter).
        known: masks per key (1 = known), broadcastable to the component.
    """

    def __init__(self, observed: Mapping[str, Tensor], known: Mapping[str, Tensor]) -> None:
        missing = set(observed) ^ set(known)
        if missing:
            raise ValueError(f"observed and known must name the same components; differ in {missing}")
        self.observed, self.known = dict(observed), dict(known)

    def after_step(self, x: State, t: Tensor, procs, generator, final: bool = False) -> State:
        x = dict(x)
        for k, y in self.observed.items():
            if k not in procs:
                raise KeyError(f"Inpainting: {k!r} is not a diffused component ({list(procs)})")
            p, m = procs[k], self.known[k].to(x[k].dtype)
            y = y.to(x[k])
            if final:
                target = y
            else:
                mean, std = p.marginal(y, t)
                target = mean + std * p.space.noise(y, x, generator)
            x[k] = p.space.project(m * target + (1 - m) * x[k], x)
        return x


class EnergyGuidance:
    """Steer sampling down an energy of the predicted clean sample.

    ``eps <- eps + scale * sigma(t) * grad_x E(x0_hat(x_t, t))``, i.e. the score is shifted by
    ``-scale * grad E``: this samples (approximately) from ``p(x) exp(-scale E(x))``. TSDiff's
    self-guidance and DPS are instances.

    Args:
        energy: ``energy(x0_hat_state, t) -> (B,)`` energies (differentiable).
        scale: guidance strength.
        keys: components to guide (default: all diffused ones).
    """

    def __init__(self, energy: Callable[[State, Tensor], Tensor], scale: float = 1.0,
                 keys: Sequence[str] | None = None) -> None:
        self.energy, self.scale, self.keys = energy, float(scale), keys

    def grad_scale(self, residual: Tensor) -> Tensor:
        """Extra per-sample factor on the gradient (1 here; DPS normalises)."""
        return torch.ones_like(residual)

    def predict(self, model, x: State, t: Tensor) -> tuple[State, State]:
        keys = list(self.keys or model.procs)
        with torch.enable_grad():
            xg = dict(x)
            for k in keys:
                xg[k] = x[k].detach().requires_grad_(True)
            x0, eps = model.raw_predict(xg, t)
            e = self.energy({**xg, **x0}, t)
            grads = torch.autograd.grad(e.sum(), [xg[k] for k in keys], allow_unused=True)
        factor = self.grad_scale(e.detach())
        x0 = {k: v.detach() for k, v in x0.items()}
        eps = {k: v.detach() for k, v in eps.items()}
        for k, g in zip(keys, grads):
            if g is None:
                continue
            p = model.procs[k]
            a, s = bcast(p.alpha(t), g), bcast(p.sigma(t), g)
            shift = self.scale * bcast(factor, g) * s * p.space.project(g, x)
            eps[k] = eps[k] + shift
            x0[k] = x0[k] - s / a * shift
        return x0, eps


class ReconstructionGuidance(EnergyGuidance):
    """Diffusion posterior sampling (DPS, Chung et al. 2023) for a differentiable measurement.

    Energy ``|y - A(x0_hat)|^2``; with ``normalize`` the gradient is divided by the residual norm
    ``|y - A(x0_hat)|`` as in DPS (step ``zeta / |y - A(x0_hat)|``).

    Args:
        measure: ``A``: state of clean predictions -> measurement tensor ``(B, ...)``.
        y: the observed measurement.
        scale: ``zeta``.
        normalize: DPS normalisation.
        keys: components to guide.
    """

    def __init__(self, measure: Callable[[State], Tensor], y: Tensor, scale: float = 1.0,
                 normalize: bool = True, keys: Sequence[str] | None = None) -> None:
        self.measure, self.y, self.normalize = measure, y, normalize

        def energy(x0: State, t: Tensor) -> Tensor:
            r = self.y.to(t.device) - self.measure(x0)
            return (r.reshape(r.shape[0], -1) ** 2).sum(1)

        super().__init__(energy, scale, keys)

    def grad_scale(self, residual: Tensor) -> Tensor:
        if not self.normalize:
            return torch.ones_like(residual)
        return 1.0 / residual.clamp_min(1e-12).sqrt()


class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper.

    ``pred = pred_uncond + scale * (pred_cond - pred_uncond)`` where the unconditional prediction
    replaces the condition ``state[cond_key]`` by ``null_cond`` (the value used for condition
    dropout in training). ``scale = 1`` is the plain conditional model.

    Args:
        denoiser: a conditional denoiser reading ``state[cond_key]``.
        scale: guidance weight ``w``.
        cond_key: the condition's key in the state.
        null_cond: the "no condition" value (tensor or scalar broadcast to the condition).
    """

    def __init__(self, denoiser, scale: float, cond_key: str, null_cond: Tensor | float = 0.0
                 ) -> None:
        self.denoiser, self.scale, self.cond_key, self.null_cond = (denoiser, float(scale),
                                                                    cond_key, null_cond)
        self.parametrization = getattr(denoiser, "parametrization", "eps")

    def __call__(self, state: State, t: Tensor):
        if self.cond_key not in state:
            raise KeyError(f"ClassifierFreeGuidance: the state has no condition {self.cond_key!r}")
        cond = self.denoiser(state, t)
        null = torch.as_tensor(self.null_cond, dtype=state[self.cond_key].dtype,
                               device=state[self.cond_key].device).expand_as(state[self.cond_key])
        uncond = self.denoiser({**state, self.cond_key: null}, t)
        if torch.is_tensor(cond):
            return uncond + self.scale * (cond - uncond)
        return {k: uncond[k] + self.scale * (cond[k] - uncond[k]) for k in cond}


class Compose:
    """Apply several guidances: prediction hooks nest, step hooks run in order."""

    def __init__(self, *guidances) -> None:
        self.guidances = guidances

    def predict(self, model, x: State, t: Tensor) -> tuple[State, State]:
        preds = [g for g in self.guidances if hasattr(g, "predict")]
        if not preds:
            return model.raw_predict(x, t)
        if len(preds) > 1:
            raise ValueError("Compose supports one prediction-changing guidance at a time")
        return preds[0].predict(model, x, t)

    def after_step(self, x: State, t: Tensor, procs, generator, final: bool = False) -> State:
        for g in self.guidances:
            if hasattr(g, "after_step"):
                x = g.after_step(x, t, procs, generator, final=final)
        return x
