"""TSDiff (unconditional, self-guided) and TSDiff-Cond as DiffusionModules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from domaindiff.guidance import Guidance
from domaindiff.losses import sample_time, weight
from domaindiff.module import DiffusionModule, ema_with_warmup
from domaindiff.parametrization import check, from_x0_eps
from domaindiff.processes import DiscreteDDPM, bcast
from domaindiff_timeseries.networks import TSDiffBackbone


class TSDiff(DiffusionModule):
    """Unconditional diffusion over context + horizon windows (TSDiff, Kollovieh et al. 2023).

    The state holds ``x`` ``(B, L, D)`` (the mean-scaled window, diffused) and ``past``
    ``(B, max_lag, D)`` (the clean scaled history feeding the lag channels, passed through).

    Missing values: a batch's ``observed`` mask ``(B, L, D)`` (0 at missing steps, whose input
    values are placeholders) is kept in the state; the denoising loss averages the squared error
    over the observed positions of each window only (:meth:`loss`), and with
    ``missing_indicator`` the network also reads the masks of the window and of its lags.

    Context, horizon, lags, channels and covariates are set once, in the data: left ``None`` here
    they are read from the :class:`~domaindiff_timeseries.data.TimeSeriesData` the trainer runs
    with (:meth:`link_data`, called by Lightning's ``setup``); given here too, they must match
    the data's (a mismatch is an error naming both values). Used without a trainer, ``None``
    means 1 channel, no lags, no covariates (the lengths are then needed for sampling).

    Args:
        dim: channels ``D`` (``None``: the data's).
        context_length: context steps (``None``: the data's).
        prediction_length: horizon steps (``None``: the data's).
        lags: lag channels (``None``: the data's).
        hidden: residual channels.
        num_blocks: residual blocks.
        emb_dim: step-embedding size.
        d_state: S4 state size.
        num_steps: DDPM steps ``T`` (paper 100).
        beta_start: first beta (paper 1e-4).
        beta_end: last beta (paper 0.1).
        lr: Adam learning rate (paper 1e-3).
        ema_decay: EMA decay.
        sampler: default sampler.
        sampling_steps: default NFE.
        seed: noise seed.
        covariates: dynamic covariate channels ``C`` (``None``: the data's ``num_covariates``),
            read from the batch's ``covariates`` ``(B, L, C)`` as extra input channels of the
            denoiser.
        missing_indicator: give the denoiser the observed masks of its value and lag channels
            (so a missing step's placeholder is never read as a value).
        parametrization: what the network predicts (``eps`` as TSDiff; a distilled few-step
            student may predict ``v`` or ``x0``: ``domaindiff distill --student-parametrization``).
            TSDiff's DDPM guidance rule and refinement read an ``eps`` prediction.
    """

    conditional = False
    #: what :meth:`link_data` reads from the data
    LINKED = ("context_length", "prediction_length", "lags", "dim", "covariates")

    def __init__(self, dim: int | None = None, context_length: int | None = None,
                 prediction_length: int | None = None, lags: list[int] | None = None,
                 hidden: int = 64, num_blocks: int = 3, emb_dim: int = 128, d_state: int = 64,
                 num_steps: int = 100, beta_start: float = 1e-4, beta_end: float = 0.1,
                 lr: float = 1e-3, ema_decay: float = 0.999, sampler: str = "ancestral",
                 sampling_steps: int = 100, seed: int = 0, covariates: int | None = None,
                 missing_indicator: bool = True, parametrization: str = "eps") -> None:
        self.save_hyperparameters()
        if covariates is not None and covariates < 0:
            raise ValueError(f"covariates must be >= 0, got {covariates}")
        self.covariates = int(covariates or 0)
        for name, v in (("context_length", context_length),
                        ("prediction_length", prediction_length)):
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (context_length and prediction_length "
                                 f"must be >= 1), got {v}")
        self.dim = 1 if dim is None else int(dim)
        self.context_length, self.prediction_length = context_length, prediction_length
        self.lags = sorted(int(x) for x in (lags or []))
        net = TSDiffBackbone(self.dim, self.lags, hidden, num_blocks, emb_dim, d_state, num_steps,
                             conditional=self.conditional, covariates=self.covariates,
                             missing_indicator=missing_indicator)
        proc = DiscreteDDPM(schedule="linear", num_steps=num_steps, beta_start=beta_start,
                            beta_end=beta_end)
        super().__init__(net, {"x": proc}, parametrization=parametrization, lr=lr,
                         ema_decay=ema_decay,
                         sampler=sampler, sampling_steps=sampling_steps, seed=seed)

    # -- settings shared with the data --------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Read (or check) the lengths, lags, channels and covariates of the trainer's data."""
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and all(hasattr(type(dm), a) for a in
                                  ("context_length", "prediction_length", "lags")):
            self.link_data(dm)

    def link_data(self, dm: Any) -> None:
        """Take the settings left ``None`` from ``dm``; refuse a given one that differs.

        Raises:
            ValueError: naming the setting, the model's value and the data's.
        """
        theirs = {"context_length": int(dm.context_length),
                  "prediction_length": int(dm.prediction_length),
                  "lags": sorted(int(x) for x in dm.lags), "dim": int(dm.dim),
                  "covariates": int(getattr(dm, "num_covariates", 0) or 0)}
        source = getattr(dm, "source", type(dm).__name__)
        hp = self.hparams
        for key in self.LINKED:
            mine = hp.get(key)
            if mine is None:
                continue
            mine = sorted(int(x) for x in mine) if key == "lags" else int(mine)
            if mine != theirs[key]:
                raise ValueError(f"{key}: the model has {mine} but the data ({source}) has "
                                 f"{theirs[key]}; set it once, in the data (leave the model's "
                                 f"{key} unset and it is read from the data)")
        arch = (self.dim, self.lags, self.covariates)
        self.context_length = theirs["context_length"]
        self.prediction_length = theirs["prediction_length"]
        self.dim, self.lags, self.covariates = theirs["dim"], theirs["lags"], \
            theirs["covariates"]
        for key in self.LINKED:
            hp[key] = theirs[key]  # the checkpoint records the values trained with
        if (self.dim, self.lags, self.covariates) != arch:
            self._rebuild_network(bool(hp.get("missing_indicator", True)))

    def _rebuild_network(self, missing_indicator: bool) -> None:
        """A fresh network (and EMA copy) for the current channels, lags and covariates."""
        hp = self.hparams
        self.network = TSDiffBackbone(self.dim, self.lags, hp["hidden"], hp["num_blocks"],
                                      hp["emb_dim"], hp["d_state"], hp["num_steps"],
                                      conditional=self.conditional, covariates=self.covariates,
                                      missing_indicator=missing_indicator).to(self.device)
        if self.ema_network is not None:
            self.ema_network = AveragedModel(self.network, use_buffers=True,
                                             multi_avg_fn=ema_with_warmup(self.ema_decay))
            self.ema_network.requires_grad_(False)

    @property
    def length(self) -> int:
        """Window length ``context + prediction``."""
        if self.context_length is None or self.prediction_length is None:
            raise ValueError("context_length / prediction_length are unknown: give them to the "
                             "model or train it with a TimeSeriesData (it reads them there)")
        return self.context_length + self.prediction_length

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights; a checkpoint from before ``missing_indicator`` loads without it.

        Such a checkpoint has no ``missing_indicator`` hyper-parameter (so the default, True, is
        built) and an input layer without the mask channels: the network is rebuilt without them.
        """
        w = state_dict.get("network.inp.weight")
        net = self.network
        if w is not None and getattr(net, "missing_indicator", False):
            plain = net.inp.in_features - self.dim * (1 + len(self.lags))
            if w.dim() == 2 and w.shape[1] == plain:
                self._without_missing_indicator()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _without_missing_indicator(self) -> None:
        self._rebuild_network(False)
        self.hparams["missing_indicator"] = False

    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        state = {"x": batch["x"].float()}
        state["past"] = batch["past"].float() if self.lags else \
            batch["x"].new_zeros(batch["x"].shape[0], 0, self.dim)
        if self.covariates:
            cov = batch.get("covariates") if isinstance(batch, dict) else None
            if cov is None or cov.shape[-1] != self.covariates:
                got = None if cov is None else cov.shape[-1]
                raise ValueError(f"the model reads {self.covariates} covariate channels; the "
                                 f"batch has {got} (set the data's covariates=...)")
            state["covariates"] = cov.float()
        if isinstance(batch, dict):
            for key in ("observed", "past_observed"):
                if batch.get(key) is not None:
                    state[key] = batch[key].float()
        return state

    def loss(self, state: dict[str, Tensor], net: torch.nn.Module | None = None) -> Tensor:
        """Denoising loss over the observed positions of each window only.

        Without unobserved positions it is the core's loss; otherwise the squared error of each
        window is averaged over its observed entries (the same noise and times are drawn), so a
        missing step's placeholder is never a training target.
        """
        obs = state.get("observed")
        if obs is None or bool((obs > 0).all()):
            return super().loss(state, net)
        net = self.network if net is None else net
        proc, kind = self.processes["x"], check(self.parametrization)
        x0 = state["x"]
        t = sample_time(x0.shape[0], proc, self.time_sampler, self.generator, x0.device).to(x0)
        eps = proc.space.noise(x0, state, self.generator)
        noisy = {**state, "x": proc.q_sample(x0, t, eps)}
        err = (self.denoise(net, noisy, t)["x"] - from_x0_eps(x0, eps, kind, t, proc)) ** 2
        mask = obs.to(err)
        per = (err * mask).flatten(1).sum(1)
        if self.reduction == "mean":
            per = per / mask.flatten(1).sum(1).clamp_min(1.0)
        w = weight(self.weighting, kind, t, proc)
        return (bcast(w, per) * per).mean()

    def distill_guidance(self, kind: str = "quantile", scale: float = 4.0, rule: str = "ddpm",
                         levels: int = 16, safe: bool = True, gradient: str = "network",
                         x0_steps: int = 0) -> Callable[..., Guidance]:
        """The guidance of a guided coupling (``domaindiff distill --teacher-guidance``).

        The core's ``reflow-stochastic`` calls the returned factory on every batch of its first
        round: each training window is forecast from its own context, exactly as
        :func:`~domaindiff_timeseries.forecast.forecast` guides this model (the observation is
        the window's scaled context, times its ``observed`` mask; the horizon is free), so the
        coupling pairs a prior draw with the *guided* forecast from it. For TSDiff-Q each window
        gets a quantile level drawn uniformly from ``forecast``'s ``levels``-sample grid
        ``(k + 1) / (levels + 1)`` (from the batch's generator): the coupling's marginal per
        context is the mixture over levels, i.e. the TSDiff-Q forecast distribution of
        ``levels`` samples. The student must read the context (``--student-class TSDiffCond``).

        Args:
            kind: ``quantile`` (TSDiff-Q) or ``mse`` (TSDiff-MS).
            scale: guidance scale ``s``.
            rule: ``ddpm`` (TSDiff's DDPM rule, :class:`~domaindiff_timeseries.forecast.
                DDPMSelfGuidance`; the teacher sampler must be ``ancestral``) or ``prediction``
                (:class:`~domaindiff_timeseries.forecast.PredictionSelfGuidance`, any sampler).
            levels: samples per window of the TSDiff-Q grid the levels are drawn from.
            safe: overshoot-safe guidance steps (as ``forecast``'s default).
            gradient: ``prediction`` rule: ``network`` or ``x0``.
            x0_steps: ``prediction`` rule: guidance steps on the prediction per evaluation.

        Raises:
            ValueError: naming the bad option.
        """
        from domaindiff_timeseries.forecast import (
            DDPMSelfGuidance,
            PredictionSelfGuidance,
            guidance_energy,
            quantile_levels,
        )

        if kind not in ("quantile", "mse"):
            raise ValueError(f"teacher_guidance.kind: use 'quantile' or 'mse', got {kind!r}")
        if rule not in ("ddpm", "prediction"):
            raise ValueError(f"teacher_guidance.rule: use 'ddpm' or 'prediction', got {rule!r}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"teacher_guidance.levels must be a positive integer, got "
                             f"{levels!r}")
        if not float(scale) > 0:
            raise ValueError(f"teacher_guidance.scale must be > 0, got {scale!r}")
        if rule == "ddpm" and (x0_steps or gradient != "network"):
            raise ValueError("teacher_guidance: x0_steps / gradient apply to rule='prediction' "
                             "only (the DDPM rule guides the state)")
        c, proc = self.context_length, self.processes["x"]
        if c is None:
            raise ValueError("teacher_guidance: the teacher has no context_length")
        grid = quantile_levels(levels)

        def factory(teacher: Any, state: dict[str, Tensor],
                    generator: torch.Generator | None) -> Guidance:
            x = state["x"]
            mask = torch.zeros_like(x)
            mask[:, :c] = 1.0
            if state.get("observed") is not None:
                mask = mask * state["observed"].to(x)
            q = None
            if kind == "quantile":
                dev = generator.device if generator is not None else x.device
                idx = torch.randint(levels, (x.shape[0],), generator=generator, device=dev)
                q = grid[idx.cpu()].to(x)
            energy = guidance_energy(x * mask, mask, kind, q)
            if rule == "ddpm":
                if getattr(teacher, "parametrization", "eps") != "eps":
                    raise ValueError("teacher_guidance: TSDiff's DDPM rule reads an eps "
                                     "prediction; this teacher predicts "
                                     f"{teacher.parametrization!r} (use rule='prediction')")
                return DDPMSelfGuidance(teacher, proc, energy, float(scale), safe=safe)
            return PredictionSelfGuidance(energy, float(scale), gradient=gradient, safe=safe,
                                          x0_steps=x0_steps)

        return factory

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is not None:
            state = self.batch_to_state(batch)
            state.pop("observed", None)  # a sampled window holds no placeholders
            return {k: v[:n] for k, v in state.items()}
        if self.covariates:
            raise ValueError("a model with covariates samples from a batch holding them")
        past = torch.zeros(n, max(self.lags, default=0), self.dim, device=self.device)
        return {"x": torch.zeros(n, self.length, self.dim, device=self.device), "past": past}


class TSDiffCond(TSDiff):
    """TSDiff-Cond: the same backbone conditioned on the observed context and its mask.

    Trained on forecasting directly: ``cond`` holds the context values (horizon zeroed) and the
    observation mask (1 on the observed context); the whole window is denoised. Multivariate
    series (``dim > 1``) and dynamic covariates (``covariates > 0``, known over context and
    horizon) enter as extra input channels next to the condition.
    """

    conditional = True

    def batch_to_state(self, batch: Any) -> dict[str, Tensor]:
        state = super().batch_to_state(batch)
        x = state["x"]
        mask = torch.zeros_like(x)
        mask[:, : self.context_length] = 1.0
        if "observed" in batch:
            mask = mask * batch["observed"].to(x)
        state["cond"] = torch.cat([x * mask, mask], -1)
        return state

    def load_teacher_network(self, state_dict: dict[str, Tensor], teacher: Any = None) -> None:
        """Initialise the network from an unconditional TSDiff network's weights.

        Every weight is the teacher's; the input layer's condition columns (observed context
        and mask, ``2 D`` of them) start at zero, so the student begins as the unconditional
        teacher and learns to read the condition (a guided coupling's student,
        ``domaindiff distill --student-class TSDiffCond``). A conditional network's weights load
        as they are.

        Raises:
            ValueError: naming the first weight whose shape does not fit.
        """
        net = self.network
        mine = net.state_dict()
        w = state_dict.get("inp.weight")
        if w is not None and w.shape == mine["inp.weight"].shape:
            net.load_state_dict(state_dict)
            return
        at = net.dim * (1 + len(net.lags)) * (2 if net.missing_indicator else 1)
        width = 2 * net.dim
        out = {}
        for key, value in mine.items():
            theirs = state_dict.get(key)
            if theirs is None:
                raise ValueError(f"the teacher's network has no weight {key!r}")
            if key == "inp.weight" and theirs.dim() == 2 \
                    and theirs.shape[1] == value.shape[1] - width \
                    and theirs.shape[0] == value.shape[0]:
                zeros = theirs.new_zeros(theirs.shape[0], width)
                theirs = torch.cat([theirs[:, :at], zeros, theirs[:, at:]], 1)
            if theirs.shape != value.shape:
                raise ValueError(f"weight {key!r}: the teacher's is {tuple(theirs.shape)}, "
                                 f"this network's {tuple(value.shape)}")
            out[key] = theirs
        net.load_state_dict(out)

    def sample_template(self, n: int, batch: Any = None) -> dict[str, Tensor]:
        if batch is None:
            raise ValueError("TSDiffCond samples forecasts: give a batch holding the context")
        return super().sample_template(n, batch)
