"""Echo-DND as a DiffusionModule: dual-noise (Gaussian + Bernoulli) mask diffusion.

Forward processes on the same linear schedule (``beta`` 1e-4 -> 0.02, N = 1000):
Gaussian ``x_t = sqrt(abar_t) (2 m - 1) + sqrt(1 - abar_t) eps`` and Bernoulli
``x_t ~ Bern(abar_t m + (1 - abar_t) / 2)`` (the core's :class:`~domaindiff.processes.Bernoulli`).
Loss: ``MSE(eps) + l_bce BCE(x0) + l_kl KL(q(x_{t-1}|x_t, x0) || p(x_{t-1}|x_t)) + l_cal MSE(calib)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from torch.nn import functional as F

from domaindiff.data import atomic_save
from domaindiff.module import DiffusionModule
from domaindiff.processes import Bernoulli, DiscreteDDPM
from domaindiff.samplers.base import steps_iter

from .networks import EchoDNDNet

DUAL_SAMPLERS = ("ddpm", "ddim")


def time_points(num_steps: int, steps: int) -> list[int]:
    """Integer steps ``N = i_0 > i_1 > ... > i_steps = 0`` evenly spaced (``steps`` evaluations)."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps must be in [1, {num_steps}], got {steps}")
    pts = np.round(np.linspace(num_steps, 0, steps + 1)).astype(int)
    return [int(p) for p in pts]


def bernoulli_kl(q: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Elementwise ``KL(Bern(q) || Bern(p))``."""
    q, p = q.clamp(eps, 1 - eps), p.clamp(eps, 1 - eps)
    return q * (q.log() - p.log()) + (1 - q) * ((1 - q).log() - (1 - p).log())


def postprocess(prob: Tensor, threshold: float = 0.5, opening: int = 1) -> Tensor:
    """Threshold, keep the largest connected component, then a morphological opening.

    Args:
        prob: ``(B, 1, H, W)`` probabilities.
        threshold: binarisation threshold.
        opening: opening radius in pixels (0 disables it).

    Returns:
        ``(B, 1, H, W)`` float 0/1 masks.
    """
    out = np.zeros(prob.shape, np.float32)
    arr = prob.detach().cpu().numpy() > threshold
    struct = np.ones((2 * opening + 1, 2 * opening + 1), bool) if opening > 0 else None
    for b in range(arr.shape[0]):
        m = arr[b, 0]
        lab, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, lab, index=range(1, n + 1))
            m = lab == (1 + int(np.argmax(sizes)))
        if struct is not None and m.any():
            opened = ndimage.binary_opening(m, structure=struct)
            m = opened if opened.any() else m
        out[b, 0] = m
    return torch.from_numpy(out).to(prob.device)


def save_checkpoint(model: DiffusionModule, path: str) -> None:
    """Atomically write a minimal checkpoint that ``load_checkpoint`` reads (weights_only).

    For models trained outside a Lightning Trainer (demo, benchmark).
    """
    cls = type(model)
    atomic_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "hyper_parameters": dict(model.hparams),
                 "domaindiff": {"class_path": f"{cls.__module__}.{cls.__qualname__}"}}, path)


class EchoDND(DiffusionModule):
    """Echo-DND: dual-noise diffusion for left-ventricle segmentation conditioned on the image.

    Args:
        base_channels: network width at full resolution.
        levels: U-Net resolutions.
        temb_dim: shared timestep embedding width.
        num_steps: diffusion steps N (paper: 1000).
        beta_start: first beta of the linear schedule.
        beta_end: last beta.
        lambda_bce: weight of the Bernoulli branch BCE.
        lambda_kl: weight of the Bernoulli KL (VLB) term.
        lambda_cal: weight of the calibration-map MSE.
        lr: Adam learning rate.
        ema_decay: EMA decay.
        dual_sampler: "ddpm" (ancestral, eta = 1) or "ddim" (eta = 0) for the Gaussian branch;
            the Bernoulli branch always walks its exact (skip-step) reverse chain.
        sampling_steps: network evaluations per sample.
        num_ensemble: samples fused per image.
        seed: noise seed.
    """

    def __init__(self, base_channels: int = 16, levels: int = 3, temb_dim: int = 64,
                 num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 lambda_bce: float = 1.0, lambda_kl: float = 0.01, lambda_cal: float = 1.0,
                 lr: float = 2e-4, ema_decay: float = 0.999, dual_sampler: str = "ddim",
                 sampling_steps: int = 25, num_ensemble: int = 5, seed: int = 0) -> None:
        self.save_hyperparameters()
        if dual_sampler not in DUAL_SAMPLERS:
            raise ValueError(f"dual_sampler must be one of {DUAL_SAMPLERS}, got {dual_sampler!r}")
        net = EchoDNDNet(base_channels, levels, temb_dim)
        gauss = DiscreteDDPM("linear", num_steps, beta_start, beta_end)
        super().__init__(net, {"mask": gauss}, parametrization="eps", lr=lr,
                         ema_decay=ema_decay, sampler="ddim", sampling_steps=sampling_steps,
                         seed=seed)
        self.bern = Bernoulli(num_steps, beta_start, beta_end)
        self.num_steps = num_steps
        self.dual_sampler, self.num_ensemble = dual_sampler, num_ensemble
        self.lambdas = (lambda_bce, lambda_kl, lambda_cal)

    # ----------------------------------------------------------------------------- data hooks
    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        if not isinstance(batch, dict) or "image" not in batch or "mask" not in batch:
            raise TypeError("EchoDND expects batches {'image': (B,1,H,W), 'mask': (B,1,H,W)}")
        return {"image": batch["image"], "mask": batch["mask"]}

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is None:
            raise ValueError("EchoDND samples masks for images: pass a batch holding 'image'")
        img = batch["image"][:n]
        return {"image": img, "mask": torch.zeros_like(img)}

    def _abar(self, i: Tensor, like: Tensor) -> Tensor:
        return self.bern.abar.to(like.device, like.dtype)[i.long()].view(-1, 1, 1, 1)

    # ----------------------------------------------------------------------------- training
    def loss_terms(self, state: dict[str, Tensor], net: torch.nn.Module | None = None,
                   i: Tensor | None = None) -> dict[str, Tensor]:
        """The four loss terms at random (or given) integer steps ``i`` in 1..N."""
        net = self.network if net is None else net
        image, m = state["image"], state["mask"]
        b = m.shape[0]
        g = self.generator
        if i is None:
            i = torch.randint(1, self.num_steps + 1, (b,), generator=g, device=g.device)
            i = i.to(m.device)
        a = self._abar(i, m)
        eps = torch.randn(m.shape, generator=g, device=g.device).to(m)
        xg = a.sqrt() * (2 * m - 1) + (1 - a).sqrt() * eps
        xb = self.bern.q_sample(m, i, generator=g)
        eps_hat, prob, calib = net(image, xg, xb, i.float() / self.num_steps)
        q = self.bern.posterior_prob(xb, m, i, i - 1)
        p = self.bern.reverse_prob(xb, prob, i, i - 1)
        return {"mse": F.mse_loss(eps_hat, eps),
                "bce": F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), m),
                "kl": bernoulli_kl(q, p).mean(),
                "cal": F.mse_loss(calib, m)}

    def loss(self, state: dict[str, Tensor], net: torch.nn.Module | None = None) -> Tensor:
        """Echo-DND loss: MSE(eps) + BCE + KL (Bernoulli VLB) + calibration MSE."""
        terms = self.loss_terms(state, net)
        lb, lk, lc = self.lambdas
        return terms["mse"] + lb * terms["bce"] + lk * terms["kl"] + lc * terms["cal"]

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def dual_sample(self, image: Tensor, steps: int | None = None, sampler: str | None = None,
                    generator: torch.Generator | None = None, progress: bool = False,
                    use_ema: bool = True) -> dict[str, Tensor]:
        """One joint reverse walk of both branches for each image.

        Gaussian branch: DDIM (``eta = 0``) or ancestral DDPM (``eta = 1``; with all N steps this
        is the paper's 1000-step sampler) on the subsequence of steps; Bernoulli branch: the
        exact skip-step reverse chain ``p(x_j | x_i)`` averaged over the predicted x0.

        Returns:
            ``{"prob": fused, "gauss": Gaussian-branch x0 in [0, 1], "bern": Bernoulli x0 prob}``.
        """
        sampler = sampler or self.dual_sampler
        if sampler not in DUAL_SAMPLERS:
            raise ValueError(f"sampler must be one of {DUAL_SAMPLERS}, got {sampler!r}")
        eta = 1.0 if sampler == "ddpm" else 0.0
        steps = steps or (self.num_steps if sampler == "ddpm" else self.sampling_steps)
        net = self.ema_network.module if (use_ema and self.ema_network is not None) \
            else self.network
        was = net.training
        net.eval()
        pts = time_points(self.num_steps, steps)
        b, dev = image.shape[0], image.device
        gdev = generator.device if generator is not None else dev

        def rand(fn):
            return fn(image.shape, generator=generator, device=gdev).to(dev)

        xg = rand(torch.randn)
        xb = (rand(torch.rand) < 0.5).to(image.dtype)
        x0g = prob = None
        for n in steps_iter(len(pts) - 1, progress, "echo-dnd"):
            i, j = pts[n], pts[n + 1]
            ii = torch.full((b,), i, device=dev)
            jj = torch.full((b,), j, device=dev)
            eps_hat, prob, _ = net(image, xg, xb, ii.float() / self.num_steps)
            a_i, a_j = self._abar(ii, image), self._abar(jj, image)
            x0g = ((xg - (1 - a_i).sqrt() * eps_hat) / a_i.sqrt()).clamp(-1, 1)
            if j == 0:
                break
            e = (xg - a_i.sqrt() * x0g) / (1 - a_i).sqrt()
            sig = eta * ((1 - a_j) / (1 - a_i) * (1 - a_i / a_j)).sqrt()
            xg = a_j.sqrt() * x0g + (1 - a_j - sig ** 2).clamp_min(0).sqrt() * e
            if eta > 0:
                xg = xg + sig * rand(torch.randn)
            post = self.bern.reverse_prob(xb, prob, ii, jj)
            xb = (rand(torch.rand) < post).to(image.dtype)
        net.train(was)
        pg = (x0g + 1) / 2
        return {"prob": (pg + prob) / 2, "gauss": pg, "bern": prob}

    @torch.no_grad()
    def segment(self, image: Tensor, num_samples: int | None = None, steps: int | None = None,
                sampler: str | None = None, generator: torch.Generator | None = None,
                progress: bool = False, threshold: float = 0.5) -> dict[str, Tensor]:
        """Ensemble segmentation: fused probability, per-pixel variance and post-processed mask.

        Returns:
            ``prob`` (mean of the samples), ``var`` (per-pixel variance across samples),
            ``mask`` (threshold + largest component + opening), ``samples`` (K, B, 1, H, W).
        """
        k = num_samples or self.num_ensemble
        if k < 1:
            raise ValueError(f"num_samples must be >= 1, got {k}")
        rep = image.repeat(k, 1, 1, 1)
        out = self.dual_sample(rep, steps, sampler, generator, progress)["prob"]
        samples = out.view(k, *image.shape)
        mean = samples.mean(0)
        var = samples.var(0, unbiased=False)
        return {"prob": mean, "var": var, "mask": postprocess(mean, threshold),
                "samples": samples}

    @torch.no_grad()
    def sample(self, n: int | None = None, *, template: dict | None = None,
               sampler: str | None = None, steps: int | None = None, guidance: Any = None,
               generator: torch.Generator | None = None, progress: bool = False,
               use_ema: bool = True, batch: Any = None, **options: Any) -> dict[str, Tensor]:
        """Segment the template's (or batch's) images; returns ``{"image", "mask", "prob", "var"}``."""
        if guidance is not None:
            raise ValueError("EchoDND.sample does not take guidance")
        if template is None:
            template = self.sample_template(n or len(batch["image"]), batch)
        out = self.segment(template["image"], options.get("num_samples"), steps,
                           sampler if sampler in DUAL_SAMPLERS else None, generator, progress)
        return {"image": template["image"], "mask": out["mask"], "prob": out["prob"],
                "var": out["var"]}
