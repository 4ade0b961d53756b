"""Conditioning at sampling time, without retraining.

Every Gaussian sampler talks to guidance through the :class:`Guidance` protocol's two hooks:

- ``predict(model, x, t) -> (x0_hat, eps_hat)`` changes the model's prediction (energy /
  reconstruction guidance); ``model.raw_predict`` gives the unguided one;
- ``after_step(x, t_prev, t, procs, generator, final) -> x`` changes the state after each step
  from ``t_prev`` to ``t`` (replacement / inpainting, TSDiff's DDPM self-guidance).

Subclass :class:`Guidance` and override the hooks you need: the others default to "no change".
:class:`ClassifierFreeGuidance` is a denoiser wrapper instead (it needs two network calls).
:class:`Compose` chains several guidances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from domaindiff.processes import GaussianProcess, bcast

State = dict[str, Tensor]
Prediction = tuple[State, State]


class GuidedModel(Protocol):
    """What a guidance hook sees of the sampler's model (see :class:`domaindiff.samplers.base.Model`).

    Attributes:
        procs: the process of each diffused key.
    """

    procs: dict[str, GaussianProcess]

    def raw_predict(self, x: State, t: Tensor) -> Prediction:
        """The unguided prediction ``(x0_hat, eps_hat)`` at the ``(B,)`` times ``t``."""
        ...


@runtime_checkable
class Guidance(Protocol):
    """The interface every sampler calls; subclass it and override the hooks you need.

    The defaults change nothing, so a guidance that only edits predictions (or only edits the
    state after each step) overrides just that hook.
    """

    def predict(self, model: GuidedModel, x: State, t: Tensor) -> Prediction:
        """The (guided) prediction ``(x0_hat, eps_hat)`` at the ``(B,)`` times ``t``.

        Args:
            model: the sampler's model; ``model.raw_predict(x, t)`` is the unguided prediction.
            x: the current state.
            t: ``(B,)`` times.
        """
        return model.raw_predict(x, t)

    def after_step(self, x: State, t_prev: Tensor, t: Tensor,
                   procs: Mapping[str, GaussianProcess], generator: torch.Generator | None,
                   final: bool = False) -> State:
        """The state after a sampler step from ``t_prev`` to ``t`` (both ``(B,)`` tensors).

        Args:
            x: the state the sampler produced at ``t``.
            t_prev: the time the step started from.
            t: the time the step arrived at.
            procs: the process of each diffused key.
            generator: the sampler's random generator.
            final: whether this was the last step (``x`` is the returned sample).
        """
        return x


def check_guidance(guidance: object) -> Guidance:
    """``guidance`` as a :class:`Guidance`, or a TypeError naming the missing hook."""
    if isinstance(guidance, Guidance):
        return guidance
    missing = [h for h in ("predict", "after_step") if not callable(getattr(guidance, h, None))]
    raise TypeError(f"guidance: {type(guidance).__name__} lacks the hook(s) {missing}; subclass "
                    "domaindiff.guidance.Guidance (its defaults leave the prediction and the "
                    "state unchanged)")


class Inpainting(Guidance):
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

    def after_step(self, x: State, t_prev: Tensor, t: Tensor,
                   procs: Mapping[str, GaussianProcess], generator: torch.Generator | None,
                   final: bool = False) -> State:
        """Replace the known entries by the observation noised to ``t`` (itself when final)."""
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


class EnergyGuidance(Guidance):
    """Steer sampling down an energy of the predicted clean sample.

    ``eps <- eps + scale * sigma(t) * grad_x E(x0_hat(x_t, t))``, i.e. the score is shifted by
    ``-scale * grad E``: this samples (approximately) from ``p(x) exp(-scale E(x))``. TSDiff's
    self-guidance and DPS are instances.

    Nested in :class:`Compose` after another prediction hook, the gradient flows through the
    earlier hook's prediction (its own shift is a constant there, as in DPS), so two energy
    guidances composed guide by the sum of their energies.

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

    def predict(self, model: GuidedModel, x: State, t: Tensor) -> Prediction:
        """The prediction with ``eps`` shifted by ``scale * sigma * grad_x E(x0_hat)``."""
        keys = list(self.keys or model.procs)
        # an enclosing guidance differentiating through this prediction (Compose) passes a
        # state that already requires grad: keep its graph instead of cutting it
        nested = any(x[k].requires_grad for k in keys)
        with torch.enable_grad():
            xg = dict(x)
            for k in keys:
                if not x[k].requires_grad:
                    xg[k] = x[k].detach().requires_grad_(True)
            x0, eps = model.raw_predict(xg, t)
            e = self.energy({**xg, **x0}, t)
            grads = torch.autograd.grad(e.sum(), [xg[k] for k in keys], allow_unused=True,
                                        retain_graph=nested)
        factor = self.grad_scale(e.detach())
        if not nested:
            x0 = {k: v.detach() for k, v in x0.items()}
            eps = {k: v.detach() for k, v in eps.items()}
        else:
            x0, eps = dict(x0), dict(eps)
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
        """``1 / |y - A(x0_hat)|`` with ``normalize`` (DPS), else 1."""
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

    def __init__(self, denoiser: Callable[[State, Tensor], Any], scale: float, cond_key: str,
                 null_cond: Tensor | float = 0.0) -> None:
        self.denoiser, self.scale, self.cond_key, self.null_cond = (denoiser, float(scale),
                                                                    cond_key, null_cond)
        self.parametrization = getattr(denoiser, "parametrization", "eps")

    def __call__(self, state: State, t: Tensor) -> Tensor | State:
        """The guided prediction, in the denoiser's own form (tensor or per-key dict)."""
        if self.cond_key not in state:
            raise KeyError(f"ClassifierFreeGuidance: the state has no condition {self.cond_key!r}")
        cond = self.denoiser(state, t)
        null = torch.as_tensor(self.null_cond, dtype=state[self.cond_key].dtype,
                               device=state[self.cond_key].device).expand_as(state[self.cond_key])
        uncond = self.denoiser({**state, self.cond_key: null}, t)
        if torch.is_tensor(cond):
            return uncond + self.scale * (cond - uncond)
        return {k: uncond[k] + self.scale * (cond[k] - uncond[k]) for k in cond}


class _Chained:
    """A model whose "raw" prediction is another guidance's prediction (for :class:`Compose`)."""

    def __init__(self, model: GuidedModel, guidance: Guidance) -> None:
        self.model, self.guidance, self.procs = model, guidance, model.procs

    def raw_predict(self, x: State, t: Tensor) -> Prediction:
        return self.guidance.predict(self.model, x, t)


class Compose(Guidance):
    """Apply several guidances in order.

    Prediction hooks compose: the second guidance sees the first one's prediction as its
    ``model.raw_predict``, the third the second's, and so on (a guidance without a prediction hook
    passes the prediction through). Step hooks run in order, each on the previous one's state.

    Args:
        *guidances: :class:`Guidance` objects, applied first to last.
    """

    def __init__(self, *guidances: Guidance) -> None:
        self.guidances = tuple(check_guidance(g) for g in guidances)

    def predict(self, model: GuidedModel, x: State, t: Tensor) -> Prediction:
        """The last guidance's prediction on top of all the earlier ones."""
        if not self.guidances:
            return model.raw_predict(x, t)
        inner = model
        for g in self.guidances[:-1]:
            inner = _Chained(inner, g)
        return self.guidances[-1].predict(inner, x, t)

    def after_step(self, x: State, t_prev: Tensor, t: Tensor,
                   procs: Mapping[str, GaussianProcess], generator: torch.Generator | None,
                   final: bool = False) -> State:
        """Each guidance's step hook in turn."""
        for g in self.guidances:
            x = g.after_step(x, t_prev, t, procs, generator, final=final)
        return x
