"""ToyDiffusion: the DiffusionModule of the toy plugin."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection

from domaindiff.module import DiffusionModule
from domaindiff.processes import make_process
from domaindiff.toy.metrics import SampleCount, SampleDistance
from domaindiff.toy.networks import MLPDenoiser


class ToyDiffusion(DiffusionModule):
    """Diffusion on vectors (Gaussian mixtures) with an MLP denoiser.

    Args:
        dim: data dimension.
        hidden: MLP width.
        depth: residual blocks.
        process: process name (``vp``, ``subvp``, ``ve``, ``ddpm``, ``edm``, ``interpolant``).
        process_kwargs: settings of the process (e.g. ``{"beta_max": 20.0}``).
        parametrization: what the network predicts.
        weighting: loss weighting.
        time_sampler: training-time sampler.
        lr: learning rate.
        ema_decay: EMA decay.
        sampler: default sampler.
        sampling_steps: default NFE.
        num_val_samples: samples drawn per validation for the energy distance.
        seed: noise seed.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, process: str = "vp",
                 process_kwargs: dict[str, Any] | None = None, parametrization: str = "eps",
                 weighting: str = "uniform", time_sampler: str = "uniform", lr: float = 2e-3,
                 ema_decay: float = 0.995, sampler: str = "dpm_solver_pp_2m",
                 sampling_steps: int = 20, num_val_samples: int = 512, seed: int = 0) -> None:
        self.save_hyperparameters()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        proc = make_process(process, **(process_kwargs or {}))
        super().__init__(MLPDenoiser(dim, hidden, depth), {"x": proc},
                         parametrization=parametrization, weighting=weighting,
                         time_sampler=time_sampler, lr=lr, ema_decay=ema_decay, sampler=sampler,
                         sampling_steps=sampling_steps, num_val_samples=num_val_samples,
                         seed=seed)

    def sample_template(self, n: int, batch: Any = None) -> dict[str, torch.Tensor]:
        return {"x": torch.zeros(n, self.dim, device=self.device)}

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"energy_distance": SampleDistance(), "n_samples": SampleCount()},
                                prefix="val/")

    def update_metrics(self, metrics, samples, batch) -> None:
        ref = self.batch_to_state(batch)["x"]
        n = min(len(ref), len(samples["x"]))
        metrics.update(samples["x"][:n], ref[:n])
