"""Evaluation of a graph checkpoint (a Hydra app): GDSS's tables for any dataset and sampler.

    domaindiff eval graphs ckpt=run.ckpt dataset=community_small sampler=s4 steps=1000
    domaindiff eval graphs ckpt=run.ckpt --multirun sampler=s4,gdss_pc,dpm_solver steps=50,1000

Samples ``num_samples`` graphs (default: as many as the test set, as GDSS), computes degree /
clustering / orbit MMD (generic graphs) or validity w/o correction, validity, uniqueness,
novelty, NSPDK MMD and FCD (molecules), optionally the probability-flow log-likelihood of test
graphs, and writes ``<out_dir>/metrics_<dataset>_<sampler>_<steps>.json`` and a PNG of samples.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import hydra
import networkx as nx
import torch
from omegaconf import DictConfig, OmegaConf

from domaindiff.cli import check_counts, report_errors
from domaindiff.data import atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff.samplers import get_sampler
from domaindiff_graphs import data as D
from domaindiff_graphs.metrics import graph_metrics, molecule_metrics

DATASETS = {"community_small": D.CommunitySmall, "ego_small": D.EgoSmall, "grid": D.Grid,
            "enzymes": D.Enzymes, "qm9": D.QM9, "zinc250k": D.ZINC250k}


def make_datamodule(name: str, args: dict[str, Any] | None = None) -> D.GraphDataModule:
    """The DataModule of a dataset name (``community_small``, ``qm9``, ...)."""
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"dataset: unknown {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[key](**(args or {}))


def sample_graphs(model, num_samples: int, sampler: str | None, steps: int | None,
                  batch_size: int, seed: int, options: dict[str, Any] | None = None,
                  use_ema: bool | None = None) -> tuple[dict[str, torch.Tensor], float, int]:
    """Sample in batches with a progress bar; returns the dense samples, seconds and NFE."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    outs = []
    t0 = time.perf_counter()
    for start in tqdm(range(0, num_samples, batch_size), desc="sampling batches"):
        n = min(batch_size, num_samples - start)
        outs.append(model.sample(n, sampler=sampler, steps=steps, generator=gen, progress=True,
                                 use_ema=use_ema, **(options or {})))
    nfe = int(steps or model.sampling_steps)
    seconds = time.perf_counter() - t0
    cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return cat, seconds, nfe


def plot_graphs(graphs: list[nx.Graph], path: Path, title: str, max_plots: int = 16) -> None:
    """Draw up to ``max_plots`` graphs in a grid and save a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = min(max_plots, len(graphs))
    cols = int(math.ceil(math.sqrt(k))) or 1
    rows = int(math.ceil(k / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, g in zip(axes.flat, graphs[:k]):
        nx.draw(g, pos=nx.spring_layout(g, seed=0), ax=ax, node_size=25, width=0.7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    tmp.replace(path)


def plot_molecules(mols: list, path: Path, max_plots: int = 16) -> None:
    """RDKit grid drawing of up to ``max_plots`` molecules, saved atomically as PNG."""
    from rdkit.Chem import Draw

    mols = [m for m in mols if m is not None][:max_plots]
    if not mols:
        return
    img = Draw.MolsToGridImage(mols, molsPerRow=4, subImgSize=(200, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(str(tmp), format="PNG")
    tmp.replace(path)


def evaluate_model(model, dm: D.GraphDataModule, *, sampler: str | None = None,
                   steps: int | None = None, num_samples: int | None = None, seed: int = 0,
                   batch_size: int = 256, orbit: bool = True, nspdk: bool = True,
                   fcd: bool = True, sampler_options: dict | None = None,
                   use_ema: bool | None = None, nll_graphs: int = 0,
                   nll_exact: bool = False, nll_tol: float = 1e-5
                   ) -> tuple[dict[str, Any], dict, list]:
    """Sample from a model and compute the dataset's GDSS metrics.

    Returns:
        The metrics dict, the dense samples and the decoded graphs / molecules.
    """
    dm.setup()
    if model.node_count_hist.sum() == 0:
        model.set_node_counts(dm.node_counts())
    n = int(num_samples or len(dm.test_data))
    samples, seconds, nfe = sample_graphs(model, n, sampler, steps, batch_size, seed,
                                          sampler_options, use_ema)
    res: dict[str, Any] = {"sampler": sampler or model.default_sampler, "nfe": nfe,
                           "num_samples": n, "sampling_seconds": seconds,
                           "seconds_per_graph": seconds / n}
    if dm.is_molecule:
        from domaindiff_graphs.mol import decode_molecules

        mols, valid_wo = decode_molecules(samples["x"], samples["adj"], samples["mask"],
                                          dm.atom_types)
        res.update(molecule_metrics(mols, valid_wo, dm.train_smiles(),
                                    dm.test_graphs() if nspdk else None,
                                    dm.test_smiles() if fcd else None))
        decoded = mols
    else:
        decoded = model.decode(samples)
        res.update(graph_metrics(dm.test_graphs(), decoded, orbit=orbit))
    if nll_graphs > 0:
        from domaindiff_graphs.likelihood import graph_log_likelihood

        batch = next(iter(torch.utils.data.DataLoader(dm.test_data[:nll_graphs],
                                                      batch_size=nll_graphs,
                                                      collate_fn=D.Batch.from_data_list)))
        ll = graph_log_likelihood(model, batch, exact=nll_exact, rtol=nll_tol, atol=nll_tol)
        res["nll_nats"] = float(-ll["logp"].mean())
        res["nll_bpd"] = float(ll["bpd"].mean())
    return res, samples, decoded


def _plain(value) -> dict:
    """A config node (or None) as a plain dict."""
    if value is None:
        return {}
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else dict(value)


def evaluate(cfg: DictConfig) -> dict:
    """Load the checkpoint, sample, compute metrics, write JSON and PNG into ``cfg.out_dir``."""
    check_counts(cfg, positive=("steps", "num_samples", "batch_size", "threads"),
                 nonnegative=("nll_graphs", "seed"), optional=("steps", "num_samples", "threads"))
    if cfg.get("sampler") is not None:
        get_sampler(str(cfg.sampler))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    model = load_checkpoint(cfg.ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
    torch.manual_seed(int(cfg.seed))
    dm = make_datamodule(str(cfg.dataset), _plain(cfg.get("data_args")))
    opts = _plain(cfg.get("sampler_options"))
    res, _, decoded = evaluate_model(
        model, dm, sampler=cfg.get("sampler"), steps=cfg.get("steps"),
        num_samples=cfg.get("num_samples"), seed=int(cfg.seed),
        batch_size=int(cfg.batch_size), orbit=bool(cfg.orbit), nspdk=bool(cfg.nspdk),
        fcd=bool(cfg.fcd), sampler_options=opts, use_ema=cfg.get("use_ema"),
        nll_graphs=int(cfg.nll_graphs), nll_exact=bool(cfg.nll_exact),
        nll_tol=float(cfg.get("nll_tol", 1e-5)))
    res["dataset"] = str(cfg.dataset)
    res["ckpt"] = str(cfg.ckpt)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.dataset}_{res['sampler']}_{res['nfe']}"
    atomic_write_text(out / f"metrics_{stem}.json", json.dumps(res, indent=2))
    if dm.is_molecule:
        plot_molecules(decoded, out / f"samples_{stem}.png")
    else:
        plot_graphs(decoded, out / f"samples_{stem}.png", f"{res['sampler']}, {res['nfe']} NFE")
    print(json.dumps(res, indent=2))
    return res


@hydra.main(version_base=None, config_path="conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``domaindiff eval graphs ...``)."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
