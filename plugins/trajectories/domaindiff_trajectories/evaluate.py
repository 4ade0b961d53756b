"""Evaluation of a GeoTDM checkpoint (a Hydra app): the paper's tables for any sampler and steps.

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

Writes ``<out_dir>/metrics_<sampler>_<steps>.json`` and ``<kind>_<sampler>_<steps>.png``.
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

from domaindiff.cli import check_counts, report_errors
from domaindiff.data import atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff_trajectories.data import ETHUCY, MD17, NBody
from domaindiff_trajectories.metrics import (
    ade_fde,
    ade_fde_k,
    bond_columns,
    bond_pairs,
    classification_score,
    constant_velocity,
    coordinate_columns,
    kmeans_min_of,
    marginal_score,
    prediction_score,
)
from domaindiff_trajectories.plots import plot_forecasts, plot_unconditional

DATASETS = {"nbody": NBody, "md17": MD17, "eth_ucy": ETHUCY}


def _nfe_fields(total: int, k: int) -> dict[str, float]:
    """``nfe`` (per generated trajectory) and ``nfe_per_trajectory`` (all ``k`` of an item).

    ``total`` is the core's count (``model.last_nfe``, the most over the batches) of the ``k``
    batched sampling calls that generate ``k`` trajectories per item.
    """
    per = total / k
    return {"nfe": int(per) if per == int(per) else per, "nfe_per_trajectory": total}


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
        nfe = max(nfe, model.last_nfe)
        res = ade_fde_k(samples, batch["x"], batch["mask"])
        cv_ade, cv_fde = ade_fde(constant_velocity(batch["cond"], batch["x"].shape[2]),
                                 batch["x"], batch["mask"])
        res["cv_ade"], res["cv_fde"] = cv_ade, cv_fde
        for key, v in res.items():
            sums[key] = sums.get(key, 0.0) + float(v.sum())
        count += len(batch["x"])
        if first is None:
            first = {"cond": batch["cond"], "x": batch["x"], "samples": samples,
                     "mask": batch["mask"]}
    out = {key: v / max(count, 1) for key, v in sums.items()}
    out.update(items=count, **_nfe_fields(nfe, k), seconds=seconds)
    return out, first


def kmeans_metrics(model, loader: DataLoader, sampler: str, steps: int, samples: int = 60,
                   clusters: int = 20, generator: torch.Generator | None = None,
                   progress: bool = True) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """ETH-UCY protocol: ``samples`` forecasts per scene, k-means to ``clusters``, min over them.

    Returns:
        minADE/minFDE (averaged over scenes), constant velocity, and the first batch for plots.
    """
    sums = {"min_ade": 0.0, "min_fde": 0.0, "cv_ade": 0.0, "cv_fde": 0.0}
    count, first, seconds, nfe = 0, None, 0.0, 0
    for batch in tqdm(loader, desc=f"{sampler} x{steps}", disable=not progress):
        t0 = time.perf_counter()
        out = model.forecast(batch, k=samples, sampler=sampler, steps=steps, generator=generator)
        seconds += time.perf_counter() - t0
        nfe = max(nfe, model.last_nfe)
        cv_ade, cv_fde = ade_fde(constant_velocity(batch["cond"], batch["x"].shape[2]),
                                 batch["x"], batch["mask"])
        sums["cv_ade"] += float(cv_ade.sum())
        sums["cv_fde"] += float(cv_fde.sum())
        for i in range(len(batch["x"])):
            real = batch["mask"][i].bool()
            a, f = kmeans_min_of(out[:, i][:, real].numpy(), batch["x"][i][real].numpy(),
                                 clusters)
            sums["min_ade"] += a
            sums["min_fde"] += f
        count += len(batch["x"])
        if first is None:
            first = {"cond": batch["cond"], "x": batch["x"], "samples": out[:clusters],
                     "mask": batch["mask"]}
    res = {k: v / max(count, 1) for k, v in sums.items()}
    res.update(items=count, **_nfe_fields(nfe, samples), seconds=seconds)
    return res, first


def unconditional_metrics(model, loader: DataLoader, sampler: str, steps: int, scores: DictConfig,
                          bonds: bool = False, generator: torch.Generator | None = None,
                          progress: bool = True
                          ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Generate one trajectory per test trajectory and score the set (GeoTDM's table).

    Args:
        model: an unconditional GeoTDM.
        loader: the test split (its ``x`` frames are the real trajectories, centred).
        sampler: sampler name.
        steps: network evaluations.
        scores: ``bins``, ``bond_cutoff``, ``epochs``, ``hidden``, ``layers``, ``lr``,
            ``batch_size``, ``seed`` of the scores.
        bonds: marginal over bond lengths (MD17) instead of coordinates (N-body).
        generator: noise generator.
        progress: progress bar.

    Returns:
        ``marginal`` (lower is better), ``classification`` (higher is better, ln 2 at best),
        ``prediction`` (lower is better) and the real/generated sets for plots.
    """
    reals, fakes, hs, masks, seconds, nfe = [], [], [], [], 0.0, 0
    for batch in tqdm(loader, desc=f"{sampler} x{steps}", disable=not progress):
        t0 = time.perf_counter()
        out = model.sample(len(batch["x"]), batch=batch, sampler=sampler, steps=steps,
                           generator=generator)["x"]
        seconds += time.perf_counter() - t0
        nfe = max(nfe, model.last_nfe)
        m = batch["mask"]
        w = m[:, :, None, None]
        com = (batch["x"] * w).sum((1, 2), keepdim=True) / (w.sum((1, 2), keepdim=True)
                                                            * batch["x"].shape[2])
        reals.append((batch["x"] - com) * w)
        fakes.append(out.cpu() * w)
        hs.append(batch["h"])
        masks.append(m)
    real, fake, h, mask = (torch.cat(v) for v in (reals, fakes, hs, masks))
    if bonds:
        pairs = bond_pairs(real[0, :, 0], float(scores.bond_cutoff))
        marg = marginal_score(bond_columns(real, pairs), bond_columns(fake, pairs),
                              int(scores.bins))
    else:
        marg = marginal_score(coordinate_columns(real, mask), coordinate_columns(fake, mask),
                              int(scores.bins))
    opts = {k: scores[k] for k in ("epochs", "hidden", "layers", "lr", "batch_size", "seed")}
    both_h, both_m = torch.cat([h, h]), torch.cat([mask, mask])
    res = {"marginal": marg,
           "classification": classification_score(real, fake, both_h, both_m, **opts),
           "prediction": prediction_score(fake, real, both_h, both_m, **opts),
           "items": len(real), **_nfe_fields(nfe, 1), "seconds": seconds,
           "finite": bool(torch.isfinite(fake).all())}
    return res, {"real": real, "fake": fake}


def test_split(cfg: DictConfig):
    """The test split of ``cfg.dataset`` built from the settings under ``cfg.<dataset>``.

    ETH-UCY's test positions are divided by its ``traj_scale`` (see :class:`ETHUCY`);
    :func:`evaluate` multiplies the displacement errors back.
    """
    name = str(cfg.dataset)
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown {name!r}; choose one of {sorted(DATASETS)}")
    kwargs = OmegaConf.to_container(cfg[name], resolve=True)
    data = DATASETS[name](**kwargs)
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


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate the checkpoint on the test split; write the metrics JSON and a PNG."""
    check_counts(cfg, positive=("steps", "k", "num_items", "batch_size"),
                 nonnegative=("plots", "seed"))
    model = load_checkpoint(cfg.ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
    model.eval()
    test = test_split(cfg)
    check_fits(model, test, str(cfg.ckpt), str(cfg.dataset))
    test = Subset(test, range(min(int(cfg.num_items), len(test))))
    loader = DataLoader(test, batch_size=int(cfg.batch_size))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    sampler, steps, dataset = str(cfg.sampler), int(cfg.steps), str(cfg.dataset)
    protocol = str(cfg.get("protocol", "auto"))
    if model.task == "unconditional":
        protocol = "unconditional"
    elif protocol == "auto":
        protocol = "kmeans" if dataset == "eth_ucy" else "avg_k"
    if protocol == "unconditional":
        metrics, first = unconditional_metrics(model, loader, sampler, steps, cfg.scores,
                                               bonds=dataset == "md17", generator=gen)
        kind = "trajectories"
    elif protocol == "kmeans":
        metrics, first = kmeans_metrics(model, loader, sampler, steps,
                                        int(cfg.kmeans.samples), int(cfg.kmeans.clusters), gen)
        kind = "forecasts"
    elif protocol == "avg_k":
        metrics, first = forecast_metrics(model, loader, sampler, steps, int(cfg.k), gen)
        kind = "forecasts"
    else:
        raise ValueError(f"protocol: unknown {protocol!r}; use auto, avg_k, kmeans")
    scale = float(cfg[dataset].get("traj_scale", 1.0)) if dataset == "eth_ucy" else 1.0
    if scale != 1.0 and protocol != "unconditional":  # back to metres, as the reference
        metrics = {k: v * scale if k.split("_")[-1] in ("ade", "fde", "avg", "min") else v
                   for k, v in metrics.items()}
        first = {k: v * scale if k != "mask" else v for k, v in first.items()}
        metrics["traj_scale"] = scale
    if protocol == "unconditional":
        title = (f"unconditional {sampler} {metrics['nfe']} NFE: marginal {metrics['marginal']:.4f} "
                 f"classification {metrics['classification']:.3f} "
                 f"prediction {metrics['prediction']:.4f}")
    elif protocol == "kmeans":
        title = (f"{sampler} {metrics['nfe']} NFE: minADE {metrics['min_ade']:.3f} minFDE "
                 f"{metrics['min_fde']:.3f} ({cfg.kmeans.clusters} of {cfg.kmeans.samples})")
    else:
        title = (f"{sampler} {metrics['nfe']} NFE: ADE {metrics['ade_avg']:.3f} "
                 f"FDE {metrics['fde_avg']:.3f} (avg of {int(cfg.k)})")
    result = {"task": model.task, "protocol": protocol, "dataset": dataset,
              "data": OmegaConf.to_container(cfg[dataset], resolve=True), "sampler": sampler,
              "steps": steps, "k": int(cfg.k), "ckpt": str(cfg.ckpt), **metrics}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{sampler}_{steps}"
    atomic_write_text(out / f"metrics_{stem}.json", json.dumps(result, indent=2))
    if int(cfg.plots) > 0:
        title = f"{Path(str(cfg.ckpt)).name}, {dataset}: {title}"
        if protocol == "unconditional":
            plot_unconditional(first, out / f"{kind}_{stem}.png", int(cfg.plots), title)
        else:
            plot_forecasts(first, out / f"{kind}_{stem}.png", int(cfg.plots), title,
                           fit="truth" if dataset == "eth_ucy" else "samples")
    print(json.dumps(result, indent=2))
    return result


@hydra.main(version_base=None, config_path="conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``domaindiff eval trajectories ...``)."""
    evaluate(cfg)
