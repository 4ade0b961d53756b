"""Evaluation of a GeoTDM checkpoint (a Hydra app): ADE/FDE over K samples vs constant velocity.

    domaindiff eval trajectories ckpt=run.ckpt sampler=ancestral steps=1000 k=5
    domaindiff eval trajectories ckpt=run.ckpt --multirun sampler=ancestral,ddim steps=50,1000

Writes ``<out_dir>/metrics_<sampler>_<steps>.json`` and ``forecasts_<sampler>_<steps>.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from domaindiff.data import atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff_trajectories.data import NBody
from domaindiff_trajectories.metrics import ade_fde, ade_fde_k, constant_velocity


def forecast_metrics(model, loader: DataLoader, sampler: str, steps: int, k: int,
                     generator: torch.Generator | None = None, progress: bool = True
                     ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """ADE/FDE (avg and min over ``k``) of a forecasting model and of constant velocity.

    Returns:
        the metrics and the first batch's ``cond``, ``x`` and ``samples`` (for plots).
    """
    sums: dict[str, float] = {}
    count, first, nfe, seconds = 0, None, 0, 0.0
    for batch in tqdm(loader, desc=f"{sampler} x{steps}", disable=not progress):
        t0 = time.perf_counter()
        samples = model.forecast(batch, k=k, sampler=sampler, steps=steps, generator=generator)
        seconds += time.perf_counter() - t0
        nfe += k * steps
        res = ade_fde_k(samples, batch["x"], batch["mask"])
        cv_ade, cv_fde = ade_fde(constant_velocity(batch["cond"], batch["x"].shape[2]),
                                 batch["x"], batch["mask"])
        res["cv_ade"], res["cv_fde"] = cv_ade, cv_fde
        for key, v in res.items():
            sums[key] = sums.get(key, 0.0) + float(v.sum())
        count += len(batch["x"])
        if first is None:
            first = {"cond": batch["cond"], "x": batch["x"], "samples": samples}
    out = {key: v / max(count, 1) for key, v in sums.items()}
    out.update(items=count, nfe_per_trajectory=k * steps, seconds=seconds)
    return out, first


def plot_forecasts(first: dict[str, torch.Tensor], path: Path, n: int = 4, title: str = "") -> None:
    """Draw ``n`` forecasts (x-y projection): condition, truth and every sample; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(first["x"]))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        cond, x, s = first["cond"][i], first["x"][i], first["samples"][:, i]
        for j in range(x.shape[0]):
            c = f"C{j % 10}"
            ax.plot(cond[j, :, 0], cond[j, :, 1], color=c, lw=1.5)
            ax.plot(x[j, :, 0], x[j, :, 1], color=c, lw=1.5, ls="--")
            for smp in s:
                ax.plot(smp[j, :, 0], smp[j, :, 1], color=c, lw=0.6, alpha=0.5)
        ax.set_title(f"item {i}", fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title or "solid: observed, dashed: truth, thin: samples", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    tmp.replace(path)


def evaluate(cfg: DictConfig) -> dict:
    """Forecast the test split with the checkpoint; write metrics JSON and a PNG."""
    model = load_checkpoint(cfg.ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
    if model.task != "forecast":
        raise ValueError(f"checkpoint {cfg.ckpt} is an unconditional model; this script "
                         "evaluates forecasting")
    data = NBody(**OmegaConf.to_container(cfg.data, resolve=True))
    test = data.dataset("test")
    test = Subset(test, range(min(int(cfg.num_items), len(test))))
    loader = DataLoader(test, batch_size=int(cfg.batch_size))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    metrics, first = forecast_metrics(model, loader, str(cfg.sampler), int(cfg.steps),
                                      int(cfg.k), gen)
    result = {"sampler": str(cfg.sampler), "steps": int(cfg.steps), "k": int(cfg.k),
              "system": str(cfg.data.system), **metrics}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.sampler}_{int(cfg.steps)}"
    atomic_write_text(out / f"metrics_{stem}.json", json.dumps(result, indent=2))
    if int(cfg.plots) > 0:
        plot_forecasts(first, out / f"forecasts_{stem}.png", int(cfg.plots),
                       f"{cfg.sampler} {int(cfg.steps)} NFE: ADE {result['ade_avg']:.3f} "
                       f"FDE {result['fde_avg']:.3f} (avg of {int(cfg.k)})")
    print(json.dumps(result, indent=2))
    return result


@hydra.main(version_base=None, config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``domaindiff eval trajectories ...``)."""
    evaluate(cfg)
