"""Echo-DND as a DiffusionModule: dual-noise (Gaussian + Bernoulli) mask diffusion.

Forward processes on the same linear schedule (``beta`` 1e-4 -> 0.02, N = 1000), for a 0/1
mask ``m``: Gaussian ``x_i = sqrt(abar_i) (2 m - 1) + sqrt(1 - abar_i) eps`` (the core's
:class:`~domaindiff.processes.DiscreteDDPM`, state key ``"mask"``) and Bernoulli
``x_i ~ Bern(abar_i m + (1 - abar_i) / 2)`` (the core's :class:`~domaindiff.processes.Bernoulli`).

Sampling is the core's: :meth:`EchoDND.sample` runs any registered sampler (``ddim``,
``ancestral``/``ddpm``, ``dpm_solver``, ``heun``, ...) on the Gaussian branch through
:meth:`DiffusionModule.sample`, so EMA weights, the NFE count, guidance and the sampler-name check
are the core's. The Bernoulli branch walks beside it (:class:`BernoulliWalk`): at each network
evaluation at time ``t`` it stands at integer step ``i = round(t N)``, moved there from the previous
evaluation's step by the core's exact skip-step reverse kernel ``p(x_j | x_i)``
(:meth:`~domaindiff.processes.Bernoulli.reverse_prob`) or its DDIM analogue; one network call
serves both branches. With ``ddim``/``ancestral`` on ``steps = n`` the Bernoulli branch visits
exactly the steps of the core's :func:`~domaindiff.samplers.sample_bernoulli`.

Loss (the paper's terms)::

    MSE(eps) + l_vlb L_vlb^gauss + l_bce BCE(x0) + l_kl KL(q(x_{i-1}|x_i, m) || p(x_{i-1}|x_i))
             + l_cal MSE(calibration map, m)

(``MSE(v)`` or ``MSE(x0)`` instead of ``MSE(eps)`` with ``parametrization="v"`` / ``"x0"``.)

``L_vlb^gauss`` is the improved-DDPM variational term that trains the Gaussian branch's learned
variance (mean stop-gradiented, bits per pixel, times ``N / 1000``; at ``i = 1`` the exact
negative log-likelihood of the binary mask under the Gaussian decoder). The Bernoulli KL at
``i = 1`` is the negative log-likelihood ``-log p(m | x_1)``. The core's samplers use the
posterior variance of the Gaussian branch, not the learned one (see the plugin README).

``noise="gaussian"`` / ``"bernoulli"`` are the paper's single-noise ablations: only that branch's
loss terms are trained and only its prediction is fused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from domaindiff.guidance import Compose, Guidance
from domaindiff.module import DiffusionModule
from domaindiff.processes import Bernoulli, DiscreteDDPM
from domaindiff.samplers import get_sampler

from .distill import BERN_KEY
from .networks import EchoDNDNet
from .postprocess import postprocess, sector_mask

__all__ = ["BERNOULLI_SAMPLERS", "NOISES", "BernoulliWalk", "ClipX0", "EchoDND", "postprocess",
           "sector_mask"]

BERNOULLI_SAMPLERS = ("posterior", "ddim")
NOISES = ("dual", "gaussian", "bernoulli")


def bernoulli_kl(q: Tensor, p: Tensor, eps: float = 1e-6) -> Tensor:
    """Elementwise ``KL(Bern(q) || Bern(p))`` in nats."""
    q, p = q.clamp(eps, 1 - eps), p.clamp(eps, 1 - eps)
    return q * (q.log() - p.log()) + (1 - q) * ((1 - q).log() - (1 - p).log())


def gaussian_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise ``KL(N(mean1, exp logvar1) || N(mean2, exp logvar2))`` in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def binary_decoder_nll(x0: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """``-log p(x0 | x_1)`` in nats for ``x0`` in {-1, +1} under ``N(mean, exp logvar)``.

    The decoder discretises the Gaussian into the two mask values at the threshold 0:
    ``P(x0 = +1) = Phi(mean / std)`` and ``P(x0 = -1) = Phi(-mean / std)``.
    """
    return -torch.special.log_ndtr(torch.sign(x0) * mean * torch.exp(-0.5 * logvar))


def gaussian_step(a_i: Tensor, a_j: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Coefficients of the Gaussian posterior ``q(x_j | x_i, x0)`` for ``j < i`` (skip steps).

    With ``beta_ij = 1 - abar_i / abar_j``:
    ``mean = c0 x0 + ci x_i``, ``c0 = sqrt(abar_j) beta_ij / (1 - abar_i)``,
    ``ci = sqrt(abar_i / abar_j) (1 - abar_j) / (1 - abar_i)``, variance
    ``beta_tilde_ij = (1 - abar_j) / (1 - abar_i) beta_ij``. For ``j = i - 1`` these are DDPM's.

    Returns:
        ``(c0, ci, beta_ij, beta_tilde_ij)``.
    """
    beta = 1 - a_i / a_j
    c0 = a_j.sqrt() * beta / (1 - a_i)
    ci = (a_i / a_j).sqrt() * (1 - a_j) / (1 - a_i)
    return c0, ci, beta, (1 - a_j) / (1 - a_i) * beta


def bernoulli_ddim_prob(x_i: Tensor, x0_prob: Tensor, a_i: Tensor, a_j: Tensor) -> Tensor:
    """Bernoulli analogue of DDIM: ``P(x_j = 1 | x_i) = s x_i + (abar_j - s abar_i) x0 + c``.

    The non-Markovian family ``q_s(x_j | x_i, x0) = Bern(s x_i + k x0 + c)`` keeps the forward
    marginals ``Bern(abar_j x0 + (1 - abar_j)/2)`` for ``k = abar_j - s abar_i`` and
    ``c = ((1 - abar_j) - s (1 - abar_i)) / 2``; its largest valid ``s`` is
    ``(1 - abar_j) / (1 - abar_i)``, where ``c = 0``: a pixel that agrees with x0 is kept and
    one that disagrees flips to x0 with probability ``(abar_j - abar_i) / (1 - abar_i)``, the
    least random member (DDIM's eta = 0 counterpart). Linear in x0, so the predicted probability
    enters exactly as the expectation over x0.
    """
    s = (1 - a_j) / (1 - a_i)
    return (s * x_i + (a_j - s * a_i) * x0_prob).clamp(0, 1)


def learned_logvar(v: Tensor, beta: Tensor, beta_tilde: Tensor) -> Tensor:
    """Improved-DDPM variance: ``(v + 1)/2 log beta + (1 - v)/2 log beta_tilde``, ``v`` in [-1, 1].

    ``beta_tilde`` is clipped from below by ``beta_tilde`` of the next step where it is zero
    (the last step), as improved DDPM does.
    """
    frac = (v + 1) / 2
    return frac * beta.log() + (1 - frac) * beta_tilde.clamp_min(1e-20).log()


def checkpoint_image_size(path: str) -> int | None:
    """The image side a checkpoint was trained on (``None`` if it does not say)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    size = (ckpt.get("medical") or {}).get("image_size") if isinstance(ckpt, dict) else None
    return int(size) if size else None




class BernoulliWalk:
    """The Bernoulli branch, walked in lock-step with a core sampler's network evaluations.

    :meth:`at` is called before each evaluation at time ``t``: the walk moves from the step of
    the previous evaluation ``i`` to ``j = round(t N)`` (clamped to 1..N) with the previous
    prediction of ``P(x0 = 1)``: ``"posterior"`` draws ``x_j ~ p(x_j | x_i)``, the exact
    skip-step reverse kernel of the core's Bernoulli process; ``"ddim"`` draws from
    :func:`bernoulli_ddim_prob`. Evaluations at the same step (a corrector, guidance, a second
    stage of a higher-order solver) see the same Bernoulli state. :meth:`observe` records each
    prediction; ``prob`` is the last one (the Bernoulli branch's clean-mask estimate).

    Args:
        process: the Bernoulli process.
        kind: ``"posterior"`` or ``"ddim"``.
        generator: random generator of the draws (the sampler's).
    """

    def __init__(self, process: Bernoulli, kind: str = "posterior",
                 generator: torch.Generator | None = None) -> None:
        if kind not in BERNOULLI_SAMPLERS:
            raise ValueError(f"bernoulli: unknown Bernoulli sampler {kind!r}; expected one of "
                             f"{list(BERNOULLI_SAMPLERS)}")
        self.process, self.kind, self.generator = process, kind, generator
        self.x: Tensor | None = None
        self.prob: Tensor | None = None
        self.step: int | None = None
        self.visited: list[int] = []

    def _rand(self, like: Tensor) -> Tensor:
        gdev = self.generator.device if self.generator is not None else like.device
        return torch.rand(like.shape, generator=self.generator, device=gdev,
                          dtype=like.dtype).to(like.device)

    def at(self, t: Tensor, like: Tensor) -> Tensor:
        """The Bernoulli state at the evaluation time ``t`` (``like``: the Gaussian state)."""
        n = self.process.num_steps
        # nearest integer step; the 1e-3 absorbs float32 times such as 0.51 * 50 = 25.4999
        j = min(max(int(math.floor(float(t.reshape(-1)[0]) * n + 0.5 + 1e-3)), 1), n)
        if self.x is None or self.x.shape != like.shape:
            self.x = (self._rand(like) < 0.5).to(like.dtype)  # the prior Bern(1/2)
        elif self.step is not None and j < self.step and self.prob is not None:
            b = like.shape[0]
            ii = torch.full((b,), self.step, device=like.device)
            jj = torch.full((b,), j, device=like.device)
            if self.kind == "posterior":
                p = self.process.reverse_prob(self.x, self.prob, ii, jj)
            else:
                abar = self.process.abar.to(like.device, like.dtype)
                p = bernoulli_ddim_prob(self.x, self.prob, abar[self.step], abar[j])
            self.x = (self._rand(like) < p).to(like.dtype)
        if j != self.step:
            self.visited.append(j)
        self.step = j
        return self.x

    def observe(self, prob: Tensor) -> None:
        """Record the network's ``P(x0 = 1 | x)`` at the current step."""
        self.prob = prob.clamp(0.0, 1.0)


class ClipX0(Guidance):
    """Clip the Gaussian branch's predicted clean mask to [-1, 1], keeping the network's noise.

    A prediction hook of the core's guidance interface (so every core sampler applies it):
    DDIM then moves along the network's own noise prediction with the clipped ``x0``, as Song
    et al.'s DDIM and guided diffusion's ``clip_denoised`` do. The mask lives in [-1, 1], and an
    unclipped ``x0 = (x - sigma eps) / alpha`` amplifies the noise error by ``1 / alpha`` at
    large ``t``.

    Args:
        key: the Gaussian branch's state key.
    """

    def __init__(self, key: str = "mask") -> None:
        self.key = key

    def predict(self, model: Any, x: dict[str, Tensor], t: Tensor) -> Any:
        """The raw prediction with ``x0[key]`` clipped."""
        x0, eps = model.raw_predict(x, t)
        x0 = dict(x0)
        x0[self.key] = x0[self.key].clamp(-1.0, 1.0)
        return x0, eps


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
        lambda_vlb: weight of the Gaussian VLB term (trains the learned variance).
        learn_sigma: the Gaussian branch learns its reverse variance (paper: yes).
        lr: Adam learning rate.
        ema_decay: EMA decay (0: no EMA).
        dual_sampler: the default core sampler of the Gaussian branch (any name
            :func:`domaindiff.samplers.get_sampler` knows: ``ddim``, ``ddpm``/``ancestral``,
            ``dpm_solver``, ``heun``, ...; an unknown name is an error).
        bernoulli_sampler: how the Bernoulli branch walks: ``"posterior"`` (the exact
            skip-step reverse chain) or ``"ddim"`` (:func:`bernoulli_ddim_prob`).
        sampling_steps: default network evaluations per sample.
        num_ensemble: default samples fused per image.
        num_val_samples: images segmented at each validation epoch (first batch) for the logged
            ``val/dice`` and ``val/iou`` (torchmetrics means, synced under DDP; 0: none).
        noise: ``"dual"`` (Echo-DND), or the single-noise ablations ``"gaussian"`` and
            ``"bernoulli"`` (only that branch is trained and fused).
        restrict_to_sector: post-processing never keeps pixels outside the imaging sector
            (:func:`~domaindiff_medical.postprocess.sector_mask` of the image).
        clip_x0: clip the Gaussian branch's predicted clean mask to [-1, 1] at every
            evaluation (:class:`ClipX0`, composed before any user guidance).
        seed: noise seed.
        parametrization: what the Gaussian branch's output is read as and trained on:
            ``"eps"`` (the paper's), ``"v"`` (``sqrt(abar) eps - sqrt(1 - abar) x0``) or
            ``"x0"``; the loss's MSE is against that target (:meth:`gaussian_target`). A
            distilled student may read its output differently from its teacher (``domaindiff
            distill --student-parametrization x0|v``).
    """

    def __init__(self, base_channels: int = 16, levels: int = 3, temb_dim: int = 64,
                 num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 lambda_bce: float = 1.0, lambda_kl: float = 0.01, lambda_cal: float = 1.0,
                 lambda_vlb: float = 1.0, learn_sigma: bool = True, lr: float = 2e-4,
                 ema_decay: float = 0.999, dual_sampler: str = "ddim",
                 bernoulli_sampler: str = "posterior",
                 sampling_steps: int = 25, num_ensemble: int = 5, num_val_samples: int = 0,
                 noise: str = "dual", restrict_to_sector: bool = True, clip_x0: bool = True,
                 seed: int = 0, parametrization: str = "eps") -> None:
        self.save_hyperparameters()
        if bernoulli_sampler not in BERNOULLI_SAMPLERS:
            raise ValueError(f"bernoulli_sampler must be one of {list(BERNOULLI_SAMPLERS)}, got "
                             f"{bernoulli_sampler!r}")
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {list(NOISES)}, got {noise!r}")
        if isinstance(num_ensemble, bool) or not isinstance(num_ensemble, int) or num_ensemble < 1:
            raise ValueError(f"num_ensemble must be a positive integer, got {num_ensemble!r}")
        net = EchoDNDNet(base_channels, levels, temb_dim, learn_sigma)
        gauss = DiscreteDDPM("linear", num_steps, beta_start, beta_end)
        super().__init__(net, {"mask": gauss}, parametrization=parametrization, lr=lr,
                         ema_decay=ema_decay, sampler=dual_sampler,
                         sampling_steps=sampling_steps, num_val_samples=num_val_samples,
                         seed=seed)
        self.bern = Bernoulli(num_steps, beta_start, beta_end)
        self.num_steps = num_steps
        self.dual_sampler, self.num_ensemble = dual_sampler, num_ensemble
        self.bernoulli_sampler, self.noise = bernoulli_sampler, noise
        self.restrict_to_sector, self.clip_x0 = restrict_to_sector, clip_x0
        self.lambdas = (lambda_bce, lambda_kl, lambda_cal, lambda_vlb)
        self.learn_sigma = learn_sigma
        self._walk_settings: tuple[str, torch.Generator | None] | None = None
        self.last_walk: BernoulliWalk | None = None

    # ----------------------------------------------------------------------------- data hooks
    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        if not isinstance(batch, dict) or "image" not in batch or "mask" not in batch:
            raise TypeError("EchoDND expects batches {'image': (B,1,H,W), 'mask': (B,1,H,W)}")
        self.image_size = int(batch["image"].shape[-1])
        return {"image": batch["image"], "mask": batch["mask"]}

    def distill_state(self, batch: Any) -> dict[str, Tensor]:
        """The clean state ``domaindiff distill`` diffuses: the image and ``2 m - 1``.

        The Gaussian branch diffuses ``2 m - 1`` (not the 0/1 mask); the Bernoulli branch's state
        is drawn at each sample's time by :meth:`distill_walk`'s walk from ``m = (x + 1) / 2``.

        Raises:
            TypeError: the batch is not ``{'image', 'mask'}``.
            ValueError: the mask is not 0/1.
        """
        state = self.batch_to_state(batch)
        m = state["mask"]
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("distill: batch['mask'] must hold 0/1 values (the Bernoulli branch "
                             "diffuses the binary mask)")
        return {"image": state["image"], "mask": 2 * m - 1}

    def distill_walk(self) -> Any:
        """The Bernoulli branch as the core's walked state (:mod:`domaindiff.distill.walk`).

        Progressive distillation then distils both branches' joint walk: the student's Gaussian
        prediction and its ``P(m = 1)`` are trained so that one step of the student's walk
        matches two of the teacher's (:class:`~domaindiff_medical.distill.EchoWalk`).
        """
        from .distill import EchoWalk

        return EchoWalk(self.bern, self.bernoulli_sampler, ClipX0() if self.clip_x0 else None)

    def distilled_hparams(self, hparams: dict[str, Any], method: Any) -> dict[str, Any]:
        """A student's hyper-parameters: its sampler is the Gaussian branch's ``dual_sampler``."""
        return {**hparams, "dual_sampler": method.sampler,
                "sampling_steps": int(method.student_steps)}

    def configure_metrics(self) -> Any:
        """Validation Dice and IoU (MONAI per image, averaged by torchmetrics)."""
        from torchmetrics import MeanMetric, MetricCollection
        return MetricCollection({"val/dice": MeanMetric(), "val/iou": MeanMetric()})

    def update_metrics(self, metrics: Any, samples: dict[str, Tensor], batch: Any) -> None:
        """Score the post-processed masks against the batch's masks."""
        from .metrics import segmentation_metrics
        n = samples["mask"].shape[0]
        seg = segmentation_metrics(samples["mask"].cpu(), batch["mask"][:n].cpu())
        metrics["val/dice"].update(seg["dice"].to(self.device))
        metrics["val/iou"].update(seg["iou"].to(self.device))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the image side seen in training, so evaluation can default to it."""
        super().on_save_checkpoint(checkpoint)
        if getattr(self, "image_size", None):
            checkpoint["medical"] = {"image_size": self.image_size}

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is None or not isinstance(batch, dict) or "image" not in batch:
            raise ValueError("EchoDND samples masks for images: pass a batch holding 'image'")
        img = batch["image"][:n]
        return {"image": img, "mask": torch.zeros_like(img)}

    def _abar(self, i: Tensor, like: Tensor) -> Tensor:
        return self.bern.abar.to(like.device, like.dtype)[i.long()].view(-1, 1, 1, 1)

    # ----------------------------------------------------------------------------- training
    def gaussian_vlb(self, x_i: Tensor, x0: Tensor, eps_hat: Tensor, v: Tensor,
                     i: Tensor) -> Tensor:
        """Per-image Gaussian VLB term ``L_{i-1}`` (nats per pixel) with the mean stop-gradiented.

        ``KL(q(x_{i-1} | x_i, x0) || p(x_{i-1} | x_i))`` for ``i > 1`` and the decoder's
        ``-log p(x0 | x_1)`` for ``i = 1``; only the variance ``v`` receives gradients.
        """
        a_i, a_j = self._abar(i, x_i), self._abar(i - 1, x_i)
        c0, ci, beta, beta_t = gaussian_step(a_i, a_j)
        x0_hat = (x_i - (1 - a_i).sqrt() * eps_hat.detach()) / a_i.sqrt()
        mean_p = c0 * x0_hat + ci * x_i
        # beta_tilde_1 = 0: clip to beta_tilde_2 (improved DDPM's posterior_log_variance_clipped)
        a2, a1 = self.bern.abar[2].to(x_i), self.bern.abar[1].to(x_i)
        bt2 = (1 - a1) / (1 - a2) * (1 - a2 / a1)
        first = (i == 1).view(-1, 1, 1, 1)
        logvar_p = learned_logvar(v, beta, torch.where(first, bt2, beta_t))
        kl = gaussian_kl(c0 * x0 + ci * x_i, beta_t.clamp_min(1e-20).log(), mean_p, logvar_p)
        nll = binary_decoder_nll(x0, mean_p, logvar_p)
        return torch.where(first, nll, kl).flatten(1).mean(1)

    def gaussian_target(self, pred: Tensor, xg: Tensor, x0g: Tensor, eps: Tensor,
                        abar: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian branch's regression target in its parametrization, and its noise estimate.

        ``eps``: the noise; ``v``: ``sqrt(abar) eps - sqrt(1 - abar) x0``; ``x0``: the clean
        ``2 m - 1``. The noise estimate ``eps_hat`` (for the VLB's mean) is the prediction
        converted exactly at ``x_i = xg``.

        Raises:
            ValueError: another parametrization (``score``, ``velocity``).
        """
        a, s = abar.sqrt(), (1 - abar).sqrt()
        if self.parametrization == "eps":
            return eps, pred
        if self.parametrization == "v":  # VP: a^2 + s^2 = 1
            return a * eps - s * x0g, s * xg + a * pred
        if self.parametrization == "x0":
            return x0g, (xg - a * pred) / s
        raise ValueError(f"EchoDND trains parametrization 'eps', 'v' or 'x0', got "
                         f"{self.parametrization!r}")

    def loss_terms(self, state: dict[str, Tensor], net: nn.Module | None = None,
                   i: Tensor | None = None) -> dict[str, Tensor]:
        """The paper's loss terms at random (or given) integer steps ``i`` in 1..N.

        Returns:
            ``mse`` (the Gaussian branch's target: noise, v or x0), ``bce`` (Bernoulli x0),
            ``kl`` (Bernoulli VLB, nats/pixel), ``cal`` (calibration map MSE) and, with
            ``learn_sigma``, ``vlb`` (Gaussian VLB, bits/pixel times ``N / 1000``).
        """
        net = self.network if net is None else net
        image, m = state["image"], state["mask"]
        b = m.shape[0]
        g = self.generator
        if i is None:
            i = torch.randint(1, self.num_steps + 1, (b,), generator=g, device=g.device)
        i = torch.as_tensor(i).to(m.device)
        a = self._abar(i, m)
        eps = torch.randn(m.shape, generator=g, device=g.device).to(m)
        x0g = 2 * m - 1
        xg = a.sqrt() * x0g + (1 - a).sqrt() * eps
        xb = self.bern.q_sample(m, i, generator=g)
        out = net(image, xg, xb, i.float() / self.num_steps)
        q = self.bern.posterior_prob(xb, m, i, i - 1)
        p = self.bern.reverse_prob(xb, out.prob, i, i - 1)
        target, eps_hat = self.gaussian_target(out.eps, xg, x0g, eps, a)
        terms = {"mse": F.mse_loss(out.eps, target),
                 "bce": F.binary_cross_entropy_with_logits(out.logit, m),
                 "kl": bernoulli_kl(q, p).mean(),
                 "cal": F.mse_loss(out.calib, m)}
        if out.var is not None:
            vlb = self.gaussian_vlb(xg, x0g, eps_hat, out.var, i) / math.log(2.0)
            terms["vlb"] = vlb.mean() * self.num_steps / 1000.0
        return terms

    def loss(self, state: dict[str, Tensor], net: nn.Module | None = None) -> Tensor:
        """Echo-DND loss: MSE(eps, or v / x0) + VLB (learned variance) + BCE + KL + calibration.

        The ablations train one branch: ``noise="gaussian"`` MSE + VLB + calibration,
        ``noise="bernoulli"`` BCE + KL + calibration.
        """
        terms = self.loss_terms(state, net)
        lb, lk, lc, lv = self.lambdas
        total = lc * terms["cal"]
        if self.noise in ("dual", "gaussian"):
            total = total + terms["mse"] + (lv * terms["vlb"] if "vlb" in terms else 0.0)
        if self.noise in ("dual", "bernoulli"):
            total = total + lb * terms["bce"] + lk * terms["kl"]
        return total

    # ----------------------------------------------------------------------------- sampling
    def denoiser(self, use_ema: bool = True) -> Any:
        """The core's denoiser view of the network, with a fresh :class:`BernoulliWalk` beside it.

        The walk (kept in ``last_walk``) draws from the generator the current :meth:`sample`
        call was given.
        """
        kind, gen = self._walk_settings or (self.bernoulli_sampler, None)
        self.last_walk = BernoulliWalk(self.bern, kind, gen)
        return super().denoiser(use_ema)

    def denoise(self, net: nn.Module, state: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        """One network call for both branches: the Gaussian noise prediction for the sampler.

        The Bernoulli state comes from (and its prediction goes to) ``last_walk``; in
        distillation it is the state's ``"bern"`` entry, and ``P(m = 1)`` is returned under it.
        """
        if BERN_KEY in state:  # distillation: the walked Bernoulli state is in the state
            out = net(state["image"], state["mask"], state[BERN_KEY], t)
            return {"mask": out.eps, BERN_KEY: out.prob}
        walk = self.last_walk
        if walk is None:
            raise RuntimeError("EchoDND.denoise needs a Bernoulli walk: sample through "
                               "EchoDND.sample or EchoDND.denoiser()")
        xg = state["mask"]
        out = net(state["image"], xg, walk.at(t, xg), t)
        walk.observe(out.prob)
        return {"mask": out.eps}

    def _fuse(self, gauss: Tensor, bern: Tensor) -> Tensor:
        if self.noise == "gaussian":
            return gauss
        if self.noise == "bernoulli":
            return bern
        return (gauss + bern) / 2

    @torch.no_grad()
    def dual_sample(self, image: Tensor, steps: int | None = None, sampler: str | None = None,
                    generator: torch.Generator | None = None, progress: bool = False,
                    use_ema: bool = True, bernoulli: str | None = None, guidance: Any = None,
                    **options: Any) -> dict[str, Tensor]:
        """One joint reverse walk of both branches for each image, with a core sampler.

        Args:
            image: ``(B, 1, H, W)`` conditioning images.
            steps: network evaluations (default ``sampling_steps``).
            sampler: a core sampler name for the Gaussian branch (default ``dual_sampler``).
            generator: random generator (both branches draw from it).
            progress: show the sampler's progress bar.
            use_ema: use the EMA weights (the raw weights otherwise).
            bernoulli: the Bernoulli walk (``posterior`` | ``ddim``; default ``bernoulli_sampler``).
            guidance: a core guidance object for the Gaussian branch (state key ``"mask"``).
            **options: the sampler's options (``eta``, ``order``, ...).

        Returns:
            ``{"prob": fused, "gauss": Gaussian-branch x0 in [0, 1], "bern": Bernoulli x0 prob}``.
        """
        kind = bernoulli or self.bernoulli_sampler
        if kind not in BERNOULLI_SAMPLERS:
            raise ValueError(f"bernoulli: unknown Bernoulli sampler {kind!r}; expected one of "
                             f"{list(BERNOULLI_SAMPLERS)}")
        get_sampler(sampler or self.default_sampler)  # an unknown name names the valid ones
        if self.clip_x0:
            guidance = ClipX0() if guidance is None else Compose(ClipX0(), guidance)
        self._walk_settings = (kind, generator)
        try:
            out = super().sample(template={"image": image, "mask": torch.zeros_like(image)},
                                 sampler=sampler, steps=steps, guidance=guidance,
                                 generator=generator, progress=progress, use_ema=use_ema,
                                 **options)
        finally:
            self._walk_settings = None
        walk = self.last_walk
        assert walk is not None and walk.prob is not None
        gauss = (out["mask"].clamp(-1, 1) + 1) / 2
        return {"prob": self._fuse(gauss, walk.prob), "gauss": gauss, "bern": walk.prob}

    @torch.no_grad()
    def segment(self, image: Tensor, num_samples: int | None = None, steps: int | None = None,
                sampler: str | None = None, generator: torch.Generator | None = None,
                progress: bool = False, threshold: float = 0.5, bernoulli: str | None = None,
                use_ema: bool = True, **options: Any) -> dict[str, Tensor]:
        """Ensemble segmentation: fused probability, per-pixel variance and post-processed mask.

        The ``num_samples`` members are one batched walk (``last_nfe`` counts its evaluations).

        Returns:
            ``prob`` (mean of the samples), ``var`` (per-pixel variance across samples),
            ``mask`` (threshold inside the sector, best-supported component, opening),
            ``samples`` (K, B, 1, H, W).
        """
        k = self.num_ensemble if num_samples is None else num_samples
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"num_samples: expected a positive ensemble size, got {k!r}")
        rep = image.repeat(k, 1, 1, 1)
        out = self.dual_sample(rep, steps, sampler, generator, progress, use_ema=use_ema,
                               bernoulli=bernoulli, **options)["prob"]
        samples = out.view(k, *image.shape)
        mean = samples.mean(0)
        var = samples.var(0, unbiased=False)
        sector = sector_mask(image) if self.restrict_to_sector else None
        return {"prob": mean, "var": var, "mask": postprocess(mean, threshold, sector=sector),
                "samples": samples}

    @torch.no_grad()
    def sample(self, n: int | None = None, *, template: dict | None = None,
               sampler: str | None = None, steps: int | None = None, guidance: Any = None,
               generator: torch.Generator | None = None, progress: bool = False,
               use_ema: bool = True, batch: Any = None, **options: Any) -> dict[str, Tensor]:
        """Segment the template's (or batch's) images with an ensemble.

        Options beyond the core's: ``num_samples`` (ensemble size, default ``num_ensemble``),
        ``bernoulli`` (the Bernoulli walk) and ``threshold``; the rest go to the sampler.

        Returns:
            ``{"image", "mask" (post-processed), "prob", "var", "samples" (B, K, 1, H, W)}``.
        """
        if template is None:
            template = self.sample_template(n or len(batch["image"]), batch)
        out = self.segment(template["image"], options.pop("num_samples", None), steps, sampler,
                           generator, progress, options.pop("threshold", 0.5),
                           options.pop("bernoulli", None), use_ema, guidance=guidance,
                           **options)
        return {"image": template["image"], "mask": out["mask"], "prob": out["prob"],
                "var": out["var"], "samples": out["samples"].transpose(0, 1)}
