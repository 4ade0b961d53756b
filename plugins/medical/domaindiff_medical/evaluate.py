"""Evaluate an Echo-DND checkpoint: ``domaindiff eval medical ckpt=... steps=25 num_samples=5``.

The core's :class:`~domaindiff.evaluation.EvalApp` (Hydra, weights-only checkpoint loading,
seeded batches, NFE count, atomic JSON) with the medical hooks: the test split of
``synthetic``, ``camus`` or ``echonet`` (only that split is read), an ensemble of
``num_samples`` members per image, and in ``out_dir``:

* ``metrics_<sampler>_<steps>.json``: means of Dice, IoU, HD95, ASSD (in mm where the files
  give the spacing), their per-image spread (std, 5th / 50th / 95th percentile), calibration
  (the ensemble's expected Dice error against the real one, ECE of the pixel probabilities),
  GED and the variance/error correlations;
* ``per_image_<sampler>_<steps>.csv``: one row per image (index, Dice, IoU, HD95, ASSD, expected
  and real Dice error, variance, GED, spacing);
* ``overlays_<sampler>_<steps>.png``: the worst images by Dice, ground-truth and predicted
  contours on the same image and the uncertainty map with a colourbar.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domaindiff.evaluation import EvalApp

from .metrics import ensemble_metrics, expected_calibration_error, segmentation_metrics
from .plots import overlay_title, write_overlays

DATA_NAMES = ("synthetic", "shifted", "camus", "echonet")


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan


def spread(x: torch.Tensor) -> dict[str, float]:
    """Per-image spread of a metric: std and the 5th, 50th and 95th percentiles (NaNs dropped)."""
    v = x[torch.isfinite(x)].double().numpy()
    if not len(v):
        return {"std": math.nan, "p05": math.nan, "p50": math.nan, "p95": math.nan}
    q = np.percentile(v, [5, 50, 95])
    return {"std": float(v.std()), "p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}


def expected_dice_error(samples: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
    """The ensemble's own estimate of its Dice error: ``1 - mean_k Dice(sample_k, fused)``.

    Args:
        samples: ``(K, B, 1, H, W)`` sample probabilities (thresholded at 0.5).
        fused: ``(B, 1, H, W)`` fused 0/1 mask.

    Returns:
        ``(B,)``; 0 when every sample agrees with the fused mask (two empty masks agree).
    """
    b = (samples > 0.5).float().flatten(2)
    f = (fused > 0.5).float().flatten(1)
    inter = (b * f).sum(-1)
    total = b.sum(-1) + f.sum(-1)
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return 1 - dice.mean(0)


def uncertainty_correlation(variance: torch.Tensor, error: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman correlation between per-image ensemble variance and Dice error.

    A calibrated ensemble is most uncertain on the images it segments worst: both are positive.
    NaN when fewer than two images or either quantity is constant.
    """
    from scipy import stats
    v, e = variance.double().numpy(), error.double().numpy()
    ok = np.isfinite(v) & np.isfinite(e)
    v, e = v[ok], e[ok]
    if len(v) < 2 or v.std() == 0 or e.std() == 0:
        return {"pearson": math.nan, "spearman": math.nan}
    return {"pearson": float(stats.pearsonr(v, e)[0]), "spearman": float(stats.spearmanr(v, e)[0])}


def per_image_rows(samples: torch.Tensor, fused_mask: torch.Tensor, prob: torch.Tensor,
                   target: torch.Tensor, spacing: Any) -> dict[str, torch.Tensor]:
    """Per-image metrics of one batch.

    Args:
        samples: ``(K, B, 1, H, W)`` ensemble member probabilities.
        fused_mask: ``(B, 1, H, W)`` post-processed mask.
        prob: ``(B, 1, H, W)`` fused probability.
        target: ``(B, 1, H, W)`` ground truth.
        spacing: per-image ``(B, 2)`` (row, col) spacing, or one value for all.

    Returns:
        ``(B,)`` tensors: dice, iou, hd95, assd, expected_error, dice_error, variance, ged.
    """
    seg = segmentation_metrics(fused_mask, target, spacing)
    ens = ensemble_metrics(samples, target)
    exp = expected_dice_error(samples, fused_mask)
    return {**seg, "dice_error": 1 - seg["dice"], "expected_error": exp,
            "variance": ens["variance"], "ged": ens["ged"]}


def summarise(per: Mapping[str, torch.Tensor], prob: torch.Tensor,
              target: torch.Tensor) -> dict[str, float]:
    """Means, per-image spread and calibration of per-image metrics (see :func:`per_image_rows`).

    ``calibration_gap`` is ``mean(expected Dice error) - mean(real Dice error)`` (negative: the
    ensemble thinks it is better than it is); ``calibration_mae`` the per-image mean absolute
    difference; ``ece`` the expected calibration error of the fused pixel probabilities.
    """
    out: dict[str, float] = {}
    for key in ("dice", "iou", "hd95", "assd"):
        out[key] = _nanmean(per[key])
        out.update({f"{key}_{k}": v for k, v in spread(per[key]).items()})
    exp, err = per["expected_error"], per["dice_error"]
    corr_var = uncertainty_correlation(per["variance"], err)
    corr_exp = uncertainty_correlation(exp, err)
    out.update({
        "variance": _nanmean(per["variance"]), "ged": _nanmean(per["ged"]),
        "ece": float(expected_calibration_error(prob, target)),
        "expected_dice_error": _nanmean(exp), "real_dice_error": _nanmean(err),
        "calibration_gap": _nanmean(exp) - _nanmean(err),
        "calibration_mae": _nanmean((exp - err).abs()),
        "corr_variance_dice_error": corr_var["pearson"],
        "spearman_variance_dice_error": corr_var["spearman"],
        "corr_expected_dice_error": corr_exp["pearson"],
        "spearman_expected_dice_error": corr_exp["spearman"],
    })
    return out


def evaluate_arrays(model: Any, images: torch.Tensor, masks: torch.Tensor,
                    spacing: Any = 1.0, *, sampler: str | None = None, steps: int | None = None,
                    num_samples: int = 5, batch_size: int = 8, seed: int = 0,
                    bernoulli: str | None = None, use_ema: bool = True, progress: bool = False
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Segment in-memory images with the model's ensemble and score them per image.

    The same scoring as the eval app (:func:`per_image_rows`, :func:`summarise`), for demos and
    benchmarks that hold their split in memory.

    Args:
        model: an :class:`~domaindiff_medical.EchoDND`.
        images: ``(N, 1, H, W)``.
        masks: ``(N, 1, H, W)``.
        spacing: one value, (row, col), or ``(N, 2)`` per-image spacing.
        sampler: core sampler name (default: the model's).
        steps: network evaluations per walk.
        num_samples: ensemble size.
        batch_size: images per sampling call.
        seed: generator seed.
        bernoulli: the Bernoulli walk (default: the model's).
        use_ema: sample with the EMA weights.
        progress: show a bar over batches.

    Returns:
        ``(summary, per_image)``; ``per_image`` also holds ``prob``, ``var`` and ``mask``.
    """
    from tqdm.auto import tqdm
    gen = torch.Generator(device=model.device).manual_seed(seed)
    sp = torch.as_tensor(spacing, dtype=torch.float32)
    sp = sp.repeat(2) if sp.ndim == 0 else sp
    sp = sp.expand(len(images), 2) if sp.ndim == 1 else sp
    rows: dict[str, list[torch.Tensor]] = {}
    nfe, t0 = 0, time.perf_counter()
    for s in tqdm(range(0, len(images), batch_size), desc="segment", disable=not progress):
        img = images[s:s + batch_size].to(model.device)
        out = model.segment(img, num_samples, steps, sampler, gen, bernoulli=bernoulli,
                            use_ema=use_ema)
        nfe = max(nfe, int(model.last_nfe))
        r = per_image_rows(out["samples"].cpu(), out["mask"].cpu(), out["prob"].cpu(),
                           masks[s:s + batch_size].cpu(), sp[s:s + batch_size])
        r.update(prob=out["prob"].cpu(), var=out["var"].cpu(), mask=out["mask"].cpu())
        for k, v in r.items():
            rows.setdefault(k, []).append(v)
    secs = time.perf_counter() - t0
    per = {k: torch.cat(v) for k, v in rows.items()}
    summary = summarise(per, per["prob"], masks.cpu())
    summary.update({"num_images": len(images), "sampler": sampler or model.default_sampler,
                    "steps": steps or model.sampling_steps, "num_samples": num_samples,
                    "nfe": nfe, "nfe_per_image": nfe * num_samples,
                    "seconds_per_image": secs / max(len(images), 1)})
    return summary, per


def _data_seed(cfg: Mapping[str, Any]) -> int:
    """The synthetic test split's seed: ``data_seed``, or ``seed`` when it is null."""
    value = cfg.get("data_seed")
    return int(cfg.get("seed", 0) if value is None else value)


def load_split(data: str, split: str, root: str | None, size: int | None, max_images: int,
               seed: int = 0, **synthetic: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                         str]:
    """Images, masks, per-image (row, col) spacing and its unit of one split.

    ``data`` is ``synthetic`` (the camus_like generator), ``shifted`` (the second generator),
    ``camus`` or ``echonet``; only ``split`` is read, so a test-only folder works.
    ``synthetic`` holds further :class:`~domaindiff_medical.data.SyntheticEcho` arguments
    (``generator``, ``corruption``, ``severity``).
    """
    from .data import CAMUS, EchoNetDynamic, SyntheticEcho
    if data in ("synthetic", "shifted"):
        args = dict(synthetic)
        if data == "shifted":
            args["generator"] = "shifted"
        dm = SyntheticEcho(num_train=1, num_val=max_images, num_test=max_images,
                           size=size or 64, root=root, seed=seed, **args)
    elif data == "camus":
        dm = CAMUS(root=root, size=size or 256)
    elif data == "echonet":
        dm = EchoNetDynamic(root=root, size=size or 112)
    else:
        raise ValueError(f"data must be one of {list(DATA_NAMES)}; got {data!r}")
    ds = dm.dataset(split)
    n = min(max_images, len(ds))
    return ds.images[:n], ds.masks[:n], ds.spacing[:n], ds.unit


def _spacing_override(value: Any, n: int) -> torch.Tensor | None:
    """``spacing=`` of the config: null (the data's), one number, or [row, col]."""
    if value is None:
        return None
    vals = [value] * 2 if isinstance(value, (int, float)) else list(value)
    ok = len(vals) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v) and v > 0 for v in vals)
    if not ok:
        raise ValueError(f"spacing={value!r}: expected null (the files' spacing), one positive "
                         "number or [row, col] positive numbers (mm per pixel)")
    return torch.tensor([[float(vals[0]), float(vals[1])]]).repeat(n, 1)


class MedicalEval(EvalApp):
    """``domaindiff eval medical``: ensemble segmentation of a test split, scored per image.

    Settings beyond the core's (``conf/eval.yaml``): ``data``, ``data_root``, ``split``,
    ``size`` (default: the checkpoint's training side), ``max_images``, ``num_samples`` (the
    ensemble size here), ``bernoulli``, ``threshold``, ``spacing``, ``num_overlays``,
    ``threads``, and for synthetic data ``generator``, ``corruption``, ``severity``.
    """

    dpi = 90

    def check(self, cfg: Mapping[str, Any]) -> None:
        """The core's checks plus the medical settings (each named when bad)."""
        from domaindiff.cli import check_counts

        from .model import BERNOULLI_SAMPLERS
        super().check(cfg)
        check_counts(cfg, positive=("max_images", "ensemble", "threads", "size"),
                     nonnegative=("num_overlays", "data_seed"),
                     optional=("threads", "size", "data_seed"))
        if cfg.get("data_seed") is not None and cfg.get("data") not in ("synthetic", "shifted"):
            raise ValueError(f"data_seed={cfg.get('data_seed')!r}: only the synthetic data "
                             f"(synthetic, shifted) are generated from a seed; data="
                             f"{cfg.get('data')!r} is read from files")
        if cfg.get("data") not in DATA_NAMES:
            raise ValueError(f"data={cfg.get('data')!r}: expected one of {list(DATA_NAMES)}")
        bern = cfg.get("bernoulli")
        if bern is not None and bern not in BERNOULLI_SAMPLERS:
            raise ValueError(f"bernoulli={bern!r}: expected one of {list(BERNOULLI_SAMPLERS)} "
                             "or null (the checkpoint's)")
        thr = cfg.get("threshold", 0.5)
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 < thr < 1:
            raise ValueError(f"threshold={thr!r}: expected a number in (0, 1)")
        _spacing_override(cfg.get("spacing"), 1)

    def run(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Load the split, then the core's driver (``num_samples`` images of it)."""
        from omegaconf import OmegaConf

        from .model import checkpoint_image_size
        if not isinstance(cfg, dict):
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        cfg = dict(cfg)
        cfg["ensemble"] = cfg.get("num_samples", 5)
        if cfg.get("ckpt") in (None, "", "???") or not Path(str(cfg["ckpt"])).is_file():
            return super().run(cfg)  # the core's message, before any work
        self.check({**cfg, "num_samples": 1})
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg["threads"]))
        size = cfg.get("size")
        if size is None:
            try:
                size = checkpoint_image_size(str(cfg["ckpt"]))
            except Exception:  # noqa: BLE001 - a checkpoint needing trust: the data default
                size = None
        synth = {k: cfg[k] for k in ("generator", "corruption", "severity")
                 if cfg.get(k) is not None}
        images, masks, spacing, unit = load_split(
            str(cfg["data"]), str(cfg.get("split", "test")), cfg.get("data_root"), size,
            int(cfg["max_images"]), _data_seed(cfg), **synth)
        override = _spacing_override(cfg.get("spacing"), len(images))
        if override is not None:
            spacing, unit = override, "mm"
        self._split = {"image": images, "mask": masks, "spacing": spacing}
        self._unit = unit
        self._rows: list[dict[str, torch.Tensor]] = []
        self._probs: list[torch.Tensor] = []
        cfg["num_samples"] = len(images)
        return super().run(cfg)

    def reference_batches(self, model: Any, cfg: Mapping[str, Any]) -> Iterator[Any]:
        """The loaded split in batches of ``batch_size`` (default 8)."""
        size = int(cfg.get("batch_size") or 8)
        n = len(self._split["image"])
        for s in range(0, n, size):
            yield {k: v[s:s + size] for k, v in self._split.items()}

    def sample(self, model: Any, cfg: Mapping[str, Any], n: int, batch: Any,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """An ensemble of ``ensemble`` members per image through the core's sampler."""
        opts = dict(cfg.get("sampler_options") or {})
        return model.sample(n, batch=batch, sampler=cfg.get("sampler"), steps=cfg.get("steps"),
                            generator=generator, num_samples=int(cfg["ensemble"]),
                            bernoulli=cfg.get("bernoulli"),
                            threshold=float(cfg.get("threshold", 0.5)), **opts)

    def metrics(self, model: Any, cfg: Mapping[str, Any]) -> None:
        """Per-image rows are kept by :meth:`update` instead of a metric collection."""
        return None

    def update(self, model: Any, metrics: Any, samples: dict[str, torch.Tensor],
               batch: Any) -> None:
        """Score one sampled batch per image (with each image's own spacing)."""
        n = samples["mask"].shape[0]
        members = samples["samples"].transpose(0, 1).cpu()
        rows = per_image_rows(members, samples["mask"].cpu(), samples["prob"].cpu(),
                              batch["mask"][:n].cpu(), batch["spacing"][:n].cpu())
        rows["spacing_row"] = batch["spacing"][:n, 0].cpu()
        rows["spacing_col"] = batch["spacing"][:n, 1].cpu()
        self._rows.append(rows)
        self._probs.append(samples["prob"].cpu())

    def score(self, model: Any, samples: dict[str, torch.Tensor], metrics: Any,
              cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Summary metrics; writes the per-image CSV next to the JSON."""
        from domaindiff.data import atomic_write_text
        per = {k: torch.cat([r[k] for r in self._rows]) for k in self._rows[0]}
        self._per = per
        n = len(per["dice"])
        prob = torch.cat(self._probs)
        out = summarise(per, prob, self._split["mask"][:n])
        path = Path(str(cfg["out_dir"])) / f"per_image_{cfg['sampler']}_{cfg['steps']}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        cols = ["dice", "iou", "hd95", "assd", "dice_error", "expected_error", "variance", "ged",
                "spacing_row", "spacing_col"]
        writer = csv.writer(buf)
        writer.writerow(["image", *cols])
        for i in range(n):
            writer.writerow([i, *(f"{float(per[c][i]):.6g}" for c in cols)])
        atomic_write_text(path, buf.getvalue())
        self._csv = path
        return {**out, "num_images": n, "num_samples": int(cfg["ensemble"]),
                "nfe_per_image": int(model.last_nfe) * int(cfg["ensemble"]),
                "distance_unit": self._unit, "data": str(cfg["data"]),
                "split": str(cfg.get("split", "test")),
                "bernoulli_sampler": cfg.get("bernoulli") or model.bernoulli_sampler,
                "per_image_csv": str(path)}

    def save(self, model: Any, samples: dict[str, torch.Tensor], cfg: Mapping[str, Any],
             out: Path, stem: str) -> list[Path]:
        """The samples (the core's ``samples_<stem>.pt``) and the per-image CSV :meth:`score` wrote."""
        return [*super().save(model, samples, cfg, out, stem), self._csv]

    def plot(self, model: Any, samples: dict[str, torch.Tensor], references: list[Any],
             cfg: Mapping[str, Any], title: str) -> dict[str, Any] | None:
        """The worst images by Dice, unsaved (the driver writes ``overlays_<stem>.png``)."""
        num = int(cfg.get("num_overlays", 4))
        if num <= 0:
            return None
        dice = self._per["dice"]
        order = torch.argsort(torch.nan_to_num(dice, nan=-1.0))[:num]
        fig = write_overlays(None, self._split["image"][order], self._split["mask"][order],
                             samples["mask"][order], samples["var"][order], len(order),
                             title=overlay_title(Path(str(cfg["ckpt"])).name, str(cfg["data"]),
                                                 str(cfg["sampler"]), int(cfg["steps"]),
                                                 int(cfg["ensemble"]), float(dice.nanmean())) +
                             "; worst images by Dice",
                             labels=[f"image {int(i)}: Dice {float(dice[i]):.3f}" for i in order])
        return {"overlays": fig}

APP = MedicalEval("medical")
main = APP.hydra_main(Path(__file__).parent / "conf", "eval")


def run(cfg: Any) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt`` as configured (see ``conf/eval.yaml``); returns the summary."""
    return MedicalEval("medical").run(cfg)


if __name__ == "__main__":
    main()
