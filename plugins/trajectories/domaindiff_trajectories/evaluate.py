"""Evaluation of a GeoTDM checkpoint (the core's EvalApp): the paper's tables for any sampler.

- N-body / MD17 forecasting: ADE/FDE averaged over K samples (what GeoTDM reports) and minimum
  over K, next to constant velocity (``dataset=nbody`` or ``dataset=md17``).
- ETH-UCY: minADE/minFDE of 20 by k-means over 60 samples (``dataset=eth_ucy``).
- Unconditional checkpoints: marginal, classification and prediction scores of generated
  trajectories against the test split (MD17: the marginal is over bond lengths).

    domaindiff eval trajectories ckpt=run.ckpt sampler=ancestral steps=1000 k=5
    domaindiff eval trajectories ckpt=run.ckpt --multirun sampler=ancestral,ddim steps=50,1000
    domaindiff eval trajectories ckpt=md17.ckpt dataset=md17 md17.molecule=aspirin
    domaindiff eval trajectories ckpt=eth.ckpt dataset=eth_ucy eth_ucy.scene=hotel steps=100
    domaindiff eval trajectories ckpt=uncond.ckpt num_items=500     # task read from the ckpt

Writes into ``out_dir``, for ``<stem>`` = ``<sampler>_<steps>``: ``samples_<stem>.pt`` (the
sampled trajectories, ``x``: (items, K, N, T, D) forecasts or (items, N, T, D) generated),
``forecasts_<stem>.png`` (observed, truth and every sample; start / end markers) or
``trajectories_<stem>.png`` (unconditional: test data beside generated), for K > 1
``ade_vs_k_<stem>.png`` (avg and min over the first j samples), then ``metrics_<stem>.json``;
last ``ade_vs_nfe.png``, ADE/FDE against NFE over the forecasting runs of this checkpoint and
dataset in ``out_dir`` (a ``--multirun`` sweep), once there are two NFE.

:class:`TrajectoriesEval` is a :class:`domaindiff.evaluation.EvalApp`: the core checks the
shared settings, loads the checkpoint (weights only unless ``trust_checkpoint``), draws the
batches with a seeded generator, counts the NFE and writes the files; this module fills in the
test split, the protocols and the pictures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Subset

from domaindiff.cli import check_counts
from domaindiff.evaluation import EvalApp
from domaindiff_trajectories.data import ETHUCY, MD17, NBody
from domaindiff_trajectories.metrics import (
    ade_fde,
    bond_columns,
    bond_pairs,
    classification_score,
    constant_velocity,
    coordinate_columns,
    kmeans_min_of,
    marginal_score,
    prediction_score,
)
from domaindiff_trajectories.plots import (
    plot_ade_vs_k,
    plot_ade_vs_nfe,
    plot_forecasts,
    plot_unconditional,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TrajectoriesEval", "check_fits", "evaluate", "forecast_metrics", "main",
           "plot_forecasts", "test_split"]

CONF = Path(__file__).parent / "conf" / "eval.yaml"
DATASETS = {"nbody": NBody, "md17": MD17, "eth_ucy": ETHUCY}
PROTOCOLS = ("auto", "avg_k", "kmeans")
#: the keys :func:`forecast_metrics` returns
FORECAST_KEYS = ("ade_avg", "fde_avg", "ade_min", "fde_min", "cv_ade", "cv_fde", "items", "nfe",
                 "nfe_per_trajectory", "seconds")


def _nfe_fields(total: int, k: int) -> dict[str, float]:
    """``nfe`` (per generated trajectory) and ``nfe_per_trajectory`` (all ``k`` of an item).

    ``total`` is the core's count (``model.last_nfe``, the most over the batches) of the ``k``
    batched sampling calls that generate ``k`` trajectories per item.
    """
    per = total / k
    return {"nfe": int(per) if per == int(per) else per, "nfe_per_trajectory": total}


def _centred(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's real trajectories minus their centre of mass (padded nodes zero)."""
    w = batch["mask"][:, :, None, None]
    com = (batch["x"] * w).sum((1, 2), keepdim=True) / (w.sum((1, 2), keepdim=True)
                                                        * batch["x"].shape[2])
    return (batch["x"] - com) * w


def test_split(cfg: Mapping[str, Any]):
    """The test split of ``cfg.dataset`` built from the settings under ``cfg.<dataset>``.

    ETH-UCY's test positions are divided by its ``traj_scale`` (see :class:`ETHUCY`);
    :func:`evaluate` multiplies the displacement errors back.
    """
    name = str(cfg["dataset"])
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown {name!r}; choose one of {sorted(DATASETS)}")
    data = DATASETS[name](**dict(cfg[name]))
    if name == "nbody":
        return data.dataset("test")
    data.setup("test")
    return data.test_set


def check_fits(model, test, ckpt: str, dataset: str) -> None:
    """Refuse a checkpoint whose node-feature width does not match the dataset's ``h``.

    Raises:
        ValueError: naming the checkpoint, the dataset and both widths.
    """
    if len(test) == 0:
        raise ValueError(f"dataset {dataset!r}: the test split is empty")
    item = test[0]
    h = item.get("h") if isinstance(item, dict) else None
    want = model.hparams.get("node_features")
    if h is not None and want is not None and int(h.shape[-1]) != int(want):
        raise ValueError(f"ckpt {ckpt}: the model reads {want} node feature(s) but dataset "
                         f"{dataset!r} has {int(h.shape[-1])}; evaluate it on the data it was "
                         "trained on (or train with --model.init_args.node_features="
                         f"{int(h.shape[-1])})")


class TrajectoriesEval(EvalApp):
    """``domaindiff eval trajectories`` on the core's app (see the module).

    Settings beyond the core's (``conf/eval.yaml``): ``dataset`` and its section (``nbody``,
    ``md17``, ``eth_ucy``), ``protocol``, ``k``, ``num_items`` (the count: test trajectories,
    capped by the split), ``plots``, ``kmeans`` and ``scores``.
    """

    dpi = 90

    def __init__(self, plugin: str = "trajectories", loader: DataLoader | None = None) -> None:
        super().__init__(plugin)
        self.config_file = CONF  # its defaults also for evaluate(cfg) and forecast_metrics
        self.given = loader  # forecast_metrics: a loader instead of cfg's test split

    def check(self, cfg: Mapping[str, Any]) -> None:
        """The core's checks, then this app's (each named)."""
        super().check(cfg)
        check_counts(cfg, positive=("k", "num_items"), nonnegative=("plots",))
        if str(cfg.get("protocol")) not in PROTOCOLS:
            raise ValueError(f"protocol: unknown {cfg.get('protocol')!r}; use auto, avg_k, "
                             "kmeans")
        if str(cfg.get("dataset")) not in DATASETS:
            raise ValueError(f"dataset: unknown {cfg.get('dataset')!r}; choose one of "
                             f"{sorted(DATASETS)}")

    def prepare(self, model, cfg: Mapping[str, Any]) -> None:
        """The test split (refusing a checkpoint that does not fit it) and the protocol."""
        model.eval()
        self.loader = self.given
        if self.loader is None:
            test = test_split(cfg)
            check_fits(model, test, str(cfg["ckpt"]), str(cfg["dataset"]))
            test = Subset(test, range(min(int(cfg["num_items"]), len(test))))
            self.loader = DataLoader(test, batch_size=int(cfg["batch_size"] or 256))
        protocol = str(cfg["protocol"])
        if model.task == "unconditional":
            protocol = "unconditional"
        elif protocol == "auto":
            protocol = "kmeans" if cfg["dataset"] == "eth_ucy" else "avg_k"
        self.protocol = protocol
        self.k = {"avg_k": int(cfg["k"]), "kmeans": int(cfg["kmeans"]["samples"]),
                  "unconditional": 1}[protocol]
        self.sums: dict[str, float] = {}
        self.per_sample: dict[str, list[torch.Tensor]] = {"ade": [], "fde": []}
        self.sets: dict[str, list[torch.Tensor]] = {"real": [], "fake": [], "h": [], "mask": []}
        self.first: dict[str, torch.Tensor] | None = None
        self.kmeans = dict(cfg["kmeans"])
        self.nfe = 0

    def count(self, model, cfg: Mapping[str, Any]) -> int:
        """The test trajectories evaluated (``num_items``, capped by the split).

        A loader without a ``dataset`` (e.g. a list of batches given to :func:`forecast_metrics`)
        counts its batches' items.
        """
        dataset = getattr(self.loader, "dataset", None)
        if dataset is not None:
            return len(dataset)
        from domaindiff.evaluation import _batch_len

        return sum(_batch_len(model, batch) for batch in self.loader)

    def reference_batches(self, model, cfg: Mapping[str, Any]) -> Iterator[Any]:
        """The test split's batches."""
        return iter(self.loader)

    def sample(self, model, cfg: Mapping[str, Any], n: int, batch: Any,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``x``: ``(B, K, N, T, D)`` forecasts, or ``(B, N, T, D)`` generated trajectories."""
        kw = {"sampler": cfg["sampler"], "steps": cfg["steps"], "generator": generator,
              **dict(cfg.get("sampler_options") or {})}
        if self.protocol == "unconditional":
            return {"x": model.sample(n, batch=batch, **kw)["x"].cpu()}
        return {"x": model.forecast(batch, k=self.k, **kw).cpu().transpose(0, 1)}

    def metrics(self, model, cfg: Mapping[str, Any]) -> None:
        """None: :meth:`update` keeps this app's sums."""
        return None

    def update(self, model, metrics: Any, samples: dict[str, torch.Tensor], batch: Any) -> None:
        """Per-batch sums of the protocol's errors (or the real and generated sets)."""
        self.nfe = max(self.nfe, int(model.last_nfe))  # this batch's sampling call(s)
        out = samples["x"]
        if self.protocol == "unconditional":
            for key, v in (("real", _centred(batch)), ("fake", out * batch["mask"][:, :, None,
                                                                                None]),
                           ("h", batch["h"]), ("mask", batch["mask"])):
                self.sets[key].append(v)
            return
        out = out.transpose(0, 1)  # (K, B, N, T, D)
        cv = ade_fde(constant_velocity(batch["cond"], batch["x"].shape[2]), batch["x"],
                     batch["mask"])
        res = {"cv_ade": cv[0], "cv_fde": cv[1]}
        if self.protocol == "kmeans":
            mins = [kmeans_min_of(out[:, i][:, real].numpy(), batch["x"][i][real].numpy(),
                                  int(self.clusters))
                    for i, real in enumerate(batch["mask"].bool())]
            res["min_ade"] = torch.tensor([m[0] for m in mins])
            res["min_fde"] = torch.tensor([m[1] for m in mins])
        else:
            ade, fde = ade_fde(out, batch["x"], batch["mask"])  # (K, B)
            self.per_sample["ade"].append(ade)
            self.per_sample["fde"].append(fde)
            res.update(ade_avg=ade.mean(0), fde_avg=fde.mean(0), ade_min=ade.min(0).values,
                       fde_min=fde.min(0).values)
        for key, v in res.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(v.sum())
        if self.first is None:
            keep = self.clusters if self.protocol == "kmeans" else self.k
            self.first = {"cond": batch["cond"], "x": batch["x"], "samples": out[:keep],
                          "mask": batch["mask"]}

    @property
    def clusters(self) -> int:
        """k-means clusters of the ETH-UCY protocol."""
        return int(self.kmeans["clusters"])

    def evaluate(self, model, cfg: Mapping[str, Any], generator: torch.Generator | None = None
                 ) -> tuple[dict[str, Any], dict, list]:
        """The core's evaluation with this app's fields first (task, protocol, dataset, ...)."""
        res, samples, refs = super().evaluate(model, cfg, generator)
        head = {"task": model.task, "protocol": self.protocol, "dataset": cfg["dataset"],
                "data": cfg.get(str(cfg["dataset"])), "k": int(cfg["k"])}
        return {**head, **res}, samples, refs

    def score(self, model, samples: dict[str, torch.Tensor], metrics: Any,
              cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The protocol's table; ETH-UCY's errors back in metres (``traj_scale``)."""
        count = int(cfg["num_samples"])
        nfe = _nfe_fields(self.nfe, self.k)
        if self.protocol == "unconditional":
            return {**self._unconditional(cfg), "items": count, **nfe}
        res: dict[str, Any] = {k: v / max(count, 1) for k, v in self.sums.items()}
        res.update(items=count, **nfe)
        scale = self.scale(cfg)
        if scale != 1.0:  # back to metres, as the reference
            res = {k: v * scale if k.split("_")[-1] in ("ade", "fde", "avg", "min") else v
                   for k, v in res.items()}
            res["traj_scale"] = scale
        return res

    def scale(self, cfg: Mapping[str, Any]) -> float:
        """ETH-UCY's ``traj_scale`` (1 elsewhere and for unconditional scores)."""
        if cfg["dataset"] != "eth_ucy" or self.protocol == "unconditional":
            return 1.0
        return float(cfg["eth_ucy"].get("traj_scale", 1.0))

    def _unconditional(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """GeoTDM's marginal, classification and prediction scores of the generated set."""
        scores = cfg["scores"]
        real, fake, h, mask = (torch.cat(self.sets[k]) for k in ("real", "fake", "h", "mask"))
        self.first = {"real": real, "fake": fake}
        if cfg["dataset"] == "md17":
            pairs = bond_pairs(real[0, :, 0], float(scores["bond_cutoff"]))
            marg = marginal_score(bond_columns(real, pairs), bond_columns(fake, pairs),
                                  int(scores["bins"]))
        else:
            marg = marginal_score(coordinate_columns(real, mask), coordinate_columns(fake, mask),
                                  int(scores["bins"]))
        opts = {k: scores[k] for k in ("epochs", "hidden", "layers", "lr", "batch_size", "seed")}
        both_h, both_m = torch.cat([h, h]), torch.cat([mask, mask])
        return {"marginal": marg,
                "classification": classification_score(real, fake, both_h, both_m, **opts),
                "prediction": prediction_score(fake, real, both_h, both_m, **opts),
                "finite": bool(torch.isfinite(fake).all())}

    def title(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """Which run (checkpoint, dataset, sampler, NFE) and its table's numbers."""
        run = f"{Path(str(cfg['ckpt'])).name}, {cfg['dataset']}: {result['sampler']} " \
              f"{result['nfe']} NFE"
        if self.protocol == "unconditional":
            return (f"{run} (unconditional): marginal {result['marginal']:.4f} "
                    f"classification {result['classification']:.3f} "
                    f"prediction {result['prediction']:.4f}")
        if self.protocol == "kmeans":
            return (f"{run}: minADE {result['min_ade']:.3f} minFDE {result['min_fde']:.3f} "
                    f"({self.clusters} of {self.k})")
        return (f"{run}: ADE {result['ade_avg']:.3f} FDE {result['fde_avg']:.3f} (avg of "
                f"{self.k}), min of {self.k} {result['ade_min']:.3f} / {result['fde_min']:.3f}")

    def plot(self, model, samples: dict[str, torch.Tensor], references: list[Any],
             cfg: Mapping[str, Any], title: str) -> dict[str, Figure | None] | None:
        """Forecasts (or test beside generated trajectories), and ADE/FDE against K."""
        n = int(cfg["plots"])
        if n <= 0 or self.first is None:
            return None
        if self.protocol == "unconditional":
            return {"trajectories": plot_unconditional(self.first, None, n, title)}
        scale = self.scale(cfg)
        first = {k: v * scale if k != "mask" else v for k, v in self.first.items()}
        figs: dict[str, Figure | None] = {"forecasts": plot_forecasts(
            first, None, n, title, fit="truth" if cfg["dataset"] == "eth_ucy" else "samples")}
        if self.protocol == "avg_k" and self.k > 1:
            ade, fde = (torch.cat(self.per_sample[k], 1) * scale for k in ("ade", "fde"))
            cv = tuple(self.sums[k] * scale / ade.shape[1] for k in ("cv_ade", "cv_fde"))
            figs["ade_vs_k"] = plot_ade_vs_k(ade, fde, title, cv)  # type: ignore[arg-type]
        return figs

    def write(self, model, cfg: Mapping[str, Any], result: dict[str, Any], samples: dict,
              references: list[Any]) -> dict[str, Any]:
        """The core's files, then ``ade_vs_nfe.png`` over this out_dir's runs of the model."""
        result = super().write(model, cfg, result, samples, references)
        if self.protocol != "avg_k" or int(cfg["plots"]) <= 0:
            return result
        rows = []
        for path in sorted(Path(str(cfg["out_dir"])).glob("metrics_*.json")):
            try:
                row = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # another app's or a partial file: not this sweep's
            same = all(row.get(k) == result[k] for k in ("ckpt", "dataset", "protocol", "k"))
            if same and all(k in row for k in ("ade_avg", "ade_min", "fde_avg", "fde_min")):
                rows.append(row)
        if len({r["nfe"] for r in rows}) >= 2:
            from domaindiff.plotting import save_figure

            save_figure(plot_ade_vs_nfe(rows, f"{Path(str(cfg['ckpt'])).name}, "
                                              f"{cfg['dataset']}: ADE / FDE against NFE, "
                                              f"K = {self.k}, {result['items']} test "
                                              "trajectories"),
                        Path(str(cfg["out_dir"])) / "ade_vs_nfe.png", dpi=self.dpi)
        return result


def forecast_metrics(model, loader: DataLoader, sampler: str, steps: int, k: int,
                     generator: torch.Generator | None = None, progress: bool = True
                     ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """ADE/FDE (avg and min over ``k``) of a forecasting model and of constant velocity.

    The app's avg-over-K protocol on a loader, in memory (``progress``: the core's bar shows
    where stderr is a terminal).

    Returns:
        the metrics (:data:`FORECAST_KEYS`) and the first batch's ``cond``, ``x``, ``samples``
        (K, B, N, T, D) and ``mask`` (for plots).
    """
    app = TrajectoriesEval(loader=loader)
    cfg = app.settings({"sampler": sampler, "steps": steps, "k": k, "protocol": "avg_k",
                        "ckpt": None, "data": None})
    res, _, _ = app.evaluate(model, cfg, generator)
    return {key: res[key] for key in FORECAST_KEYS}, app.first  # type: ignore[return-value]


APP = TrajectoriesEval("trajectories")
#: Hydra entry point (``domaindiff eval trajectories ...``)
main = APP.hydra_main(CONF.parent, "eval")
#: the same from Python: settings (a dict or DictConfig) -> the metrics JSON's content
evaluate = APP.run


if __name__ == "__main__":
    main()
