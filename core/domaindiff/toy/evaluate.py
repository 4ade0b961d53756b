"""Evaluation of a toy checkpoint (a Hydra app): sample distance and exact likelihood.

    domaindiff eval toy ckpt=run.ckpt sampler=heun steps=20
    domaindiff eval toy ckpt=run.ckpt --multirun sampler=ddim,heun,dpm_solver_pp_2m steps=10,20,50

Writes ``<out_dir>/metrics_<sampler>_<steps>.json`` and a scatter plot PNG next to it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig

from domaindiff.cli import check_counts, report_errors
from domaindiff.data import atomic_write_text
from domaindiff.likelihood import log_likelihood
from domaindiff.module import load_checkpoint
from domaindiff.plotting import pyplot, save_figure
from domaindiff.samplers import get_sampler
from domaindiff.toy.data import make_mixture
from domaindiff.toy.metrics import energy_distance, sliced_wasserstein

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def check_config(cfg: DictConfig) -> None:
    """Refuse bad settings before any work: the counts and the sampler name.

    Raises:
        ValueError: naming the setting and what was expected.
    """
    check_counts(cfg, positive=("steps", "num_samples"), nonnegative=("nll_samples", "seed"))
    get_sampler(str(cfg.sampler))


def plot_samples(data: torch.Tensor, samples: torch.Tensor, path: Path, title: str) -> Figure:
    """Data samples (left) beside generated ones (right), first two coordinates; a PNG.

    Both panels share their limits and are square, so shapes compare directly.

    Args:
        data: (n, dim) samples of the exact mixture.
        samples: (m, dim) generated samples.
        path: the PNG to write (atomically, through :func:`~domaindiff.plotting.save_figure`).
        title: what and which run (checkpoint, sampler, steps).

    Returns:
        the (saved, closed) figure.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.8), sharex=True, sharey=True)
    for ax, pts, color, name in ((axes[0], data, "C0", "data (exact mixture)"),
                                 (axes[1], samples, "C1", "generated")):
        ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, color=color, label=f"{name}, n={len(pts)}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("x1")
        ax.set_box_aspect(1)
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
    axes[0].set_ylabel("x2")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.11, top=0.88, wspace=0.1)
    save_figure(fig, path)
    return fig


def evaluate(cfg: DictConfig) -> dict:
    """Sample from the checkpoint, compare with exact mixture samples, write JSON and PNG."""
    check_config(cfg)
    model = load_checkpoint(cfg.ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
    hp = dict(model.hparams)
    # the training data's mixture is recorded by the demo config; default ring8
    mixture = make_mixture(str(cfg.get("mixture", "ring8")), int(hp.get("dim", 2)),
                           int(cfg.get("mixture_seed", 0)))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    t0 = time.perf_counter()
    samples = model.sample(int(cfg.num_samples), sampler=cfg.sampler, steps=int(cfg.steps),
                           generator=gen, progress=True)["x"]
    seconds = time.perf_counter() - t0
    nfe = model.last_nfe  # network evaluations of the (single-batch) sampling call
    ref = mixture.sample(int(cfg.num_samples), gen)
    result = {
        "sampler": cfg.sampler, "steps": int(cfg.steps), "nfe": nfe,
        "num_samples": int(cfg.num_samples),
        "energy_distance": float(energy_distance(samples, ref)),
        "sliced_w2": float(sliced_wasserstein(samples, ref, generator=gen)),
        "seconds": seconds,
    }
    if int(cfg.nll_samples) > 0:
        x = mixture.sample(int(cfg.nll_samples), gen)
        ll = log_likelihood(model.denoiser(), model.processes, x, exact=True)
        result["nll_model"] = float(-ll["logp"].mean())
        result["nll_true"] = float(-mixture.log_prob(x).mean())
        result["bpd_model"] = float(ll["bpd"].mean())
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.sampler}_{int(cfg.steps)}"
    atomic_write_text(out / f"metrics_{stem}.json", json.dumps(result, indent=2))
    if samples.shape[1] >= 2:
        plot_samples(ref, samples, out / f"samples_{stem}.png",
                     f"{Path(str(cfg.ckpt)).name}: {cfg.sampler}, {int(cfg.steps)} steps "
                     f"({nfe} NFE); energy distance {result['energy_distance']:.4f}")
    print(json.dumps(result, indent=2))
    return result


@hydra.main(version_base=None, config_path="conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``domaindiff eval toy ...``); a bad setting ends it with one line."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
