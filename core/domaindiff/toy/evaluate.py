"""Evaluation of a toy checkpoint (the core's EvalApp): sample distance and exact likelihood.

    domaindiff eval toy ckpt=run.ckpt sampler=heun steps=20
    domaindiff eval toy ckpt=run.ckpt --multirun sampler=ddim,heun,dpm_solver_pp_2m steps=10,20,50

Writes into ``out_dir``, for ``<stem>`` = ``<sampler>_<steps>``: ``samples_<stem>.pt``,
``samples_<stem>.png`` (exact-mixture samples beside generated ones) and last
``metrics_<stem>.json``. :class:`ToyEval` is the smallest filled-in
:class:`~domaindiff.evaluation.EvalApp`: the mixture in :meth:`~ToyEval.prepare`, the scores in
:meth:`~ToyEval.score`, the picture in :meth:`~ToyEval.plot`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from domaindiff.cli import check_counts
from domaindiff.evaluation import EvalApp
from domaindiff.likelihood import log_likelihood
from domaindiff.plotting import pyplot, save_figure
from domaindiff.toy.data import make_mixture
from domaindiff.toy.metrics import energy_distance, sliced_wasserstein

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONF = Path(__file__).parent / "conf" / "eval.yaml"


def plot_samples(data: torch.Tensor, samples: torch.Tensor, path: Path | None,
                 title: str) -> Figure:
    """Data samples (left) beside generated ones (right), first two coordinates; a PNG.

    Both panels share their limits and are square, so shapes compare directly.

    Args:
        data: (n, dim) samples of the exact mixture.
        samples: (m, dim) generated samples.
        path: the PNG to write (atomically, through :func:`~domaindiff.plotting.save_figure`);
            None: return the figure unsaved, open.
        title: what and which run (checkpoint, sampler, steps).

    Returns:
        the figure (saved and closed when ``path`` is given).
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
    if path is not None:
        save_figure(fig, path)
    return fig


class ToyEval(EvalApp):
    """``domaindiff eval toy``: generated samples against the exact mixture (see the module).

    Settings beyond the core's (``conf/eval.yaml``): ``mixture`` and ``mixture_seed`` (the
    training data's mixture) and ``nll_samples``.
    """

    def __init__(self, plugin: str = "toy") -> None:
        super().__init__(plugin)
        self.config_file = CONF

    def check(self, cfg: Mapping[str, Any]) -> None:
        """The core's checks and ``nll_samples``."""
        super().check(cfg)
        check_counts(cfg, nonnegative=("nll_samples",))

    def prepare(self, model, cfg: Mapping[str, Any]) -> None:
        """The exact mixture of the model's dimension."""
        self.mixture = make_mixture(str(cfg["mixture"]), int(dict(model.hparams).get("dim", 2)),
                                    int(cfg["mixture_seed"]))

    def reference_batches(self, model, cfg: Mapping[str, Any]) -> None:
        """None: the reference is the exact mixture, drawn in :meth:`score`."""
        return None

    def sample(self, model, cfg: Mapping[str, Any], n: int, batch: Any,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` samples (a progress bar where stderr is a terminal)."""
        return model.sample(n, sampler=cfg["sampler"], steps=cfg["steps"], generator=generator,
                            progress=sys.stderr.isatty(), **dict(cfg.get("sampler_options") or {}))

    def metrics(self, model, cfg: Mapping[str, Any]) -> None:
        """None: :meth:`score` compares all samples at once."""
        return None

    def evaluate(self, model, cfg: Mapping[str, Any], generator: torch.Generator | None = None
                 ) -> tuple[dict[str, Any], dict, list]:
        """The core's evaluation; the mixture's samples continue the same generator."""
        self.gen = generator or torch.Generator().manual_seed(int(cfg["seed"]))
        return super().evaluate(model, cfg, self.gen)

    def score(self, model, samples: dict[str, torch.Tensor], metrics: Any,
              cfg: Mapping[str, Any]) -> dict[str, float]:
        """Energy distance and sliced W2 to as many mixture samples; exact NLL if asked."""
        x = samples["x"]
        self.ref = self.mixture.sample(len(x), self.gen)
        res = {"energy_distance": float(energy_distance(x, self.ref)),
               "sliced_w2": float(sliced_wasserstein(x, self.ref, generator=self.gen))}
        if int(cfg["nll_samples"]) > 0:
            test = self.mixture.sample(int(cfg["nll_samples"]), self.gen)
            ll = log_likelihood(model.denoiser(), model.processes, test, exact=True)
            res.update(nll_model=float(-ll["logp"].mean()),
                       nll_true=float(-self.mixture.log_prob(test).mean()),
                       bpd_model=float(ll["bpd"].mean()))
        return res

    def title(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """The core's title and the energy distance."""
        return f"{super().title(cfg, result)}; energy distance {result['energy_distance']:.4f}"

    def plot(self, model, samples: dict[str, torch.Tensor], references: list[Any],
             cfg: Mapping[str, Any], title: str) -> Figure | None:
        """Mixture samples beside generated ones (first two coordinates)."""
        if samples["x"].shape[1] < 2:
            return None
        return plot_samples(self.ref, samples["x"], None, title)


APP = ToyEval("toy")
#: Hydra entry point (``domaindiff eval toy ...``); a bad setting ends it with one line
main = APP.hydra_main(CONF.parent, "eval")
#: the same from Python: settings (a dict or DictConfig) -> the metrics JSON's content
evaluate = APP.run


if __name__ == "__main__":
    main()
