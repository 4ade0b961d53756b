"""GeoTDM: the DiffusionModule of the trajectories plugin."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from domaindiff.losses import denoising_loss
from domaindiff.module import DiffusionModule
from domaindiff.processes import DiscreteDDPM
from domaindiff.spaces import NodeMasked, ZeroCoM
from domaindiff_trajectories.metrics import DisplacementError
from domaindiff_trajectories.networks import GeoTDMNetwork

TASKS = ("forecast", "unconditional")
#: ``skip_sigma_data`` of the alpha skip when none is given: over 3 training seeds (charged
#: 5-body, 800 steps; plugin README) 0.25 beat 1 (plain ``alpha``) with DDIM 10 and tied with DDIM 2
SKIP_SIGMA_DATA = 0.25


class GeoTDM(DiffusionModule):
    """Geometric trajectory diffusion (Han et al., 2024) with the EGTN denoiser.

    Forecasting diffuses the residual ``x - x_ref`` around the (learnable) geometric prior built
    from the condition frames; unconditional generation diffuses centred trajectories with noise
    whose centre of mass over nodes and frames is zero.

    Args:
        task: ``forecast`` or ``unconditional``.
        node_features: width of the node features ``h`` (1 for N-body charges).
        hidden: EGTN width (paper 128).
        layers: EGTN blocks (paper 6).
        time_dim: diffusion-step embedding width (paper 32).
        prior: ``learnable``, ``velocity``, ``last``, ``com`` or ``none`` (forecasting only).
        prior_layers: blocks of the prior's EGTN.
        prior_init: start of the learnable prior: ``velocity`` (constant-velocity
            extrapolation, default) or ``last`` (last frame, as the reference code).
        scale: diffusion runs on ``(x - x_ref) / scale`` (unconditional: ``x / scale``); about
            the residual's standard deviation gives unit-variance targets (charged N-body: 0.5).
        lr_gamma: ExponentialLR factor per epoch (None: constant).
        parametrization: what the network predicts: ``eps`` (paper) or ``x0`` (the clean
            residual; same loss family through the core's parametrization).
        spatial: spatial layer, ``egnn`` (paper) or ``e3nn`` (spherical harmonics + tensor
            products).
        temporal: temporal layer of every EGTN (denoiser and learnable prior): ``attention``
            (paper: attention with relative-time embeddings, shift-invariant), ``fixed`` (the
            paper's "no attention" ablation: softmax weights learnt per frame offset ``t - s``,
            independent of the features) or ``absolute`` (the "no shift invariance" ablation:
            absolute frame embeddings instead of the relative ones). All three are
            E(3)-equivariant.
        pred_frames: frames generated.
        num_steps: DDPM steps (paper 1000 for N-body and MD17, 100 for ETH-UCY).
        beta_start: first beta, before the ``1000 / num_steps`` scaling of the paper.
        beta_end: last beta, before the scaling.
        lr: Adam learning rate (paper 1e-4).
        weight_decay: Adam weight decay.
        ema_decay: EMA decay.
        sampler: default sampler (paper: ``ancestral``).
        sampling_steps: default NFE (paper: ``num_steps``).
        num_val_samples: trajectories forecast at each validation for ADE/FDE (0: none).
        x0_clip: bound on the norm of each node's implied clean vector while sampling (None:
            off, as the paper, which then diverges from untrained weights); the training loss never
            clips.
        x0_skip: with x0 prediction, ``identity`` (default) feeds the noisy residual ``x_t``
            to the EGTN, whose output frames are the prediction (skip connection ``x_t``);
            ``alpha`` feeds ``alpha(t) x_t`` instead (skip connection ``alpha(t) x_t``, the
            linear posterior mean for a unit-variance residual, as EDM's ``c_skip``), so at high
            noise the network starts from the prior rather than from pure noise.
        skip_sigma_data: with ``x0_skip='alpha'``, the standard deviation ``s`` assumed for the
            diffused residual: the skip factor is ``alpha s^2 / (alpha^2 s^2 + sigma^2)``, the
            linear posterior mean ``E[x_0 | x_t]`` of a residual of that spread (EDM's ``c_skip``
            in this process's units; ``1`` gives ``alpha``). Below 1 less of ``x_t``'s noise
            passes through the skip at intermediate noise. None: :data:`SKIP_SIGMA_DATA` (0.25)
            with the alpha skip, nothing without it; the value used is what the checkpoint's
            hyperparameters record.
        time_power: training times ``t = t_min + (T - t_min) u^(1 / p)`` with ``u`` uniform,
            density proportional to ``t^(p - 1)``: ``1`` (default) is the uniform sampler,
            ``p > 1`` puts more of the loss at high noise (``p = 2``: 3/4 of the draws above
            ``T / 2``), where few-step samplers evaluate the network.
        seed: noise seed.
    """

    def __init__(self, task: str = "forecast", node_features: int = 1, hidden: int = 128,
                 layers: int = 6, time_dim: int = 32, prior: str = "learnable",
                 prior_layers: int = 2, pred_frames: int = 20, num_steps: int = 1000,
                 spatial: str = "egnn", beta_start: float = 1e-4, beta_end: float = 0.02,
                 lr: float = 1e-4,
                 weight_decay: float = 0.0, ema_decay: float = 0.999,
                 sampler: str = "ancestral", sampling_steps: int = 1000,
                 num_val_samples: int = 0, x0_clip: float | None = 100.0,
                 prior_init: str = "velocity", scale: float = 1.0, lr_gamma: float | None = None,
                 parametrization: str = "eps", x0_skip: str = "identity",
                 skip_sigma_data: float | None = None, temporal: str = "attention",
                 time_power: float = 1.0, seed: int = 0) -> None:
        self.save_hyperparameters()
        self.x0_clip, self._sampling = x0_clip, False
        if task not in TASKS:
            raise ValueError(f"task: unknown {task!r}; choose one of {TASKS}")
        self.task = task
        if x0_skip not in ("identity", "alpha"):
            raise ValueError(f"x0_skip: unknown {x0_skip!r}; choose identity or alpha")
        if x0_skip == "alpha" and parametrization != "x0":
            raise ValueError("x0_skip='alpha' needs parametrization='x0'")
        if skip_sigma_data is None:
            skip_sigma_data = SKIP_SIGMA_DATA if x0_skip == "alpha" else 1.0
        if not skip_sigma_data > 0:
            raise ValueError(f"skip_sigma_data must be positive, got {skip_sigma_data}")
        if skip_sigma_data != 1.0 and x0_skip != "alpha":
            raise ValueError("skip_sigma_data needs x0_skip='alpha'")
        self.hparams["skip_sigma_data"] = float(skip_sigma_data)  # the value used, not None
        self.x0_skip, self.skip_sigma_data = x0_skip, float(skip_sigma_data)
        if not time_power > 0:
            raise ValueError(f"time_power must be positive, got {time_power}")
        self.time_power = float(time_power)
        beta_scale = 1000.0 / num_steps
        space = NodeMasked() if task == "forecast" else ZeroCoM(com_dims=(1, 2))
        process = DiscreteDDPM(schedule="linear", num_steps=num_steps,
                               beta_start=beta_start * beta_scale, beta_end=beta_end * beta_scale,
                               space=space)
        net = GeoTDMNetwork(node_features, hidden, layers, time_dim, task == "forecast", prior,
                            prior_layers, pred_frames, num_steps, spatial, prior_init, scale,
                            parametrization, temporal)
        self.scale = float(scale)
        super().__init__(net, {"x": process}, parametrization=parametrization, lr=lr,
                         weight_decay=weight_decay, ema_decay=ema_decay, sampler=sampler,
                         sampling_steps=sampling_steps, num_val_samples=num_val_samples,
                         lr_gamma=lr_gamma, seed=seed)

    @staticmethod
    def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
        """Hyperparameters of an older checkpoint as this version reads them.

        Checkpoints with ``x0_skip='alpha'`` written before ``skip_sigma_data`` existed were
        trained with the plain ``alpha`` skip: they get ``skip_sigma_data=1`` instead of
        today's default (:data:`SKIP_SIGMA_DATA`). ``domaindiff``'s checkpoint loader calls this.
        """
        if hparams.get("x0_skip") == "alpha" and "skip_sigma_data" not in hparams:
            return {**hparams, "skip_sigma_data": 1.0}
        return hparams

    # --- hooks ---------------------------------------------------------------------------------
    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        """Dict batch -> state: absolute target ``x``, ``cond``, ``h``, ``mask`` (and ``edge``)."""
        if not isinstance(batch, dict) or "x" not in batch or "h" not in batch:
            raise TypeError("GeoTDM expects dict batches with keys 'x', 'h' (and 'cond', 'mask')")
        state = {k: batch[k] for k in ("x", "h", "mask", "cond", "edge") if k in batch}
        if self.task == "forecast" and "cond" not in state:
            raise KeyError("forecasting needs the condition frames under key 'cond'")
        if self.task == "unconditional":
            state.pop("cond", None)
            state["x"] = self.processes["x"].space.project(state["x"], state) / self.scale
        return state

    def _residual(self, net: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.task != "forecast":
            return state
        state = dict(state)
        state["x"] = (state["x"] - net.reference(state)) / self.scale
        return state

    @torch.no_grad()
    def distill_state(self, batch: Any) -> dict[str, Tensor]:
        """The state the process diffuses, for ``domaindiff distill``: forecasts' residual.

        (``batch_to_state`` keeps the absolute target; the residual is taken around this
        model's current prior, as :meth:`loss` and :meth:`sample` do.)
        """
        return self._residual(self.network, self.batch_to_state(batch))

    def loss(self, state: dict[str, Tensor], net: nn.Module | None = None) -> Tensor:
        """Denoising loss on the residual ``x - x_ref`` (the prior is trained through it)."""
        net = self.network if net is None else net
        if self.time_power == 1.0:
            return super().loss(self._residual(net, state), net)
        res = self._residual(net, state)
        proc, gen = self.processes["x"], self.generator
        u = torch.rand(res["x"].shape[0], generator=gen, device=gen.device)
        t = proc.t_min + (proc.T - proc.t_min) * u.to(res["x"]) ** (1.0 / self.time_power)
        return denoising_loss(lambda s, tt: self.denoise(net, s, tt), self.processes, res,
                              parametrization=self.parametrization, weighting=self.weighting,
                              reduction=self.reduction, t=t, generator=gen)

    def skip_factor(self, t: Tensor) -> Tensor:
        """``alpha s^2 / (alpha^2 s^2 + sigma^2)`` at ``t`` (``alpha`` when ``s = 1``)."""
        proc = self.processes["x"]
        alpha = proc.alpha(t)
        if self.skip_sigma_data == 1.0:
            return alpha
        s2 = self.skip_sigma_data ** 2
        return alpha * s2 / (alpha * alpha * s2 + proc.sigma(t) ** 2)

    def denoise(self, net: nn.Module, state: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        """Network prediction (noise, or clean residual for ``x0``), projected to the space.

        While sampling with ``x0_clip``, the implied clean sample's per-node vectors are shrunk
        to norm <= ``x0_clip`` (equivariant; keeps sampling bounded even when untrained).
        """
        proc = self.processes["x"]
        skip = self.skip_factor(t) if self.x0_skip == "alpha" else None
        pred = proc.space.project(net(state, t, skip=skip)["x"], state)
        clip = self._sampling and self.x0_clip is not None and self.x0_clip > 0
        if self.parametrization == "x0":
            if clip:
                norm = pred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                pred = proc.space.project(pred * (self.x0_clip / norm).clamp(max=1.0), state)
            return {"x": pred}
        eps = pred
        if clip:
            xt = state["x"]
            a = proc.alpha(t).to(xt).view(-1, 1, 1, 1)
            s = proc.sigma(t).to(xt).view(-1, 1, 1, 1)
            x0 = (xt - s * eps) / a
            norm = x0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            x0 = x0 * (self.x0_clip / norm).clamp(max=1.0)
            eps = proc.space.project((xt - a * x0) / s, state)
        return {"x": eps}

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is None:
            raise ValueError("GeoTDM samples need a batch (node features, mask, condition)")
        state = self.batch_to_state(batch)
        state = {k: v[:n].to(self.device) for k, v in state.items()}
        state["x"] = torch.zeros_like(state["x"])
        return state

    @torch.no_grad()
    def sample(self, n: int | None = None, *, template: dict | None = None, **kwargs: Any
               ) -> dict[str, Tensor]:
        """Sample in data units.

        Forecasts are ``scale * residual + x_ref``, unconditional trajectories ``scale * x``.
        """
        if template is None and n is not None and kwargs.get("batch") is not None:
            template = self.sample_template(n, kwargs["batch"])
        self._sampling = True
        try:
            out = super().sample(n, template=template, **kwargs)
        finally:
            self._sampling = False
        out = dict(out)
        out["x"] = out["x"] * self.scale
        if self.task == "forecast":
            net = self.denoiser(kwargs.get("use_ema", True)).net
            out["x"] = out["x"] + net.reference(out)
        return out

    def forecast(self, batch: dict[str, Tensor], k: int = 5, **kwargs: Any) -> Tensor:
        """``k`` forecasts of every item of a batch: ``(k, B, N, T, 3)``.

        ``last_nfe`` is left at the network evaluations of all ``k`` sampling calls together.
        """
        template = self.sample_template(len(batch["x"]), batch)
        outs, nfe = [], 0
        for _ in range(k):
            outs.append(self.sample(template=template, **kwargs)["x"])
            nfe += self.last_nfe
        self.last_nfe = nfe
        return torch.stack(outs)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"ade": DisplacementError("ade"),
                                 "fde": DisplacementError("fde")}, prefix="val/")

    def update_metrics(self, metrics, samples: dict[str, Tensor], batch: Any) -> None:
        if self.task != "forecast":  # ADE/FDE compare a forecast with its truth
            return
        n = len(samples["x"])
        mask = batch.get("mask")
        metrics.update(samples["x"], batch["x"][:n].to(samples["x"]),
                       None if mask is None else mask[:n].to(samples["x"]))
