"""Evaluation of a graph checkpoint (a Hydra app): GDSS's tables for any dataset and sampler.

    domaindiff eval graphs ckpt=run.ckpt dataset=community_small sampler=s4 steps=1000
    domaindiff eval graphs ckpt=run.ckpt --multirun sampler=s4,gdss_pc,dpm_solver steps=50,1000

Samples ``num_samples`` graphs (default: as many as the test set, as GDSS), computes degree /
clustering / orbit MMD (generic graphs) or validity w/o correction, validity, uniqueness,
novelty, NSPDK MMD and FCD (molecules), optionally the probability-flow log-likelihood of test
graphs, and writes into ``out_dir``, for ``<stem>`` = ``<dataset>_<sampler>_<steps>``:

* ``samples_<stem>.g6`` (graph6, one generated graph per line) and ``samples_<stem>.pt``
  (``{"edge_index": [...], "num_nodes": [...]}``, PyG convention, loads with
  ``weights_only=True``), or for molecules ``samples_<stem>.csv`` (``index,smiles`` for every
  sample, empty where decoding failed) and ``samples_<stem>.txt`` (the valid SMILES);
* ``samples_<stem>.png``: a top row of test graphs / molecules, generated ones below, each panel
  titled ``test k`` / ``generated k`` (molecules with their SMILES underneath);
* ``metrics_<stem>.json`` last, listing those files under ``files``.

Every file is written atomically. Your own data: ``dataset=user_graphs
+data_args.path=my_graphs.g6`` or ``dataset=user_molecules +data_args.path=mols.csv``.
"""

from __future__ import annotations

import csv
import io
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
from domaindiff.data import atomic_save, atomic_write_text
from domaindiff.module import load_checkpoint
from domaindiff.plotting import pyplot, save_figure
from domaindiff.samplers import get_sampler
from domaindiff_graphs import data as D
from domaindiff_graphs.metrics import graph_metrics, molecule_metrics
from domaindiff_graphs.user_data import UserGraphs, UserMolecules

DATASETS = {"community_small": D.CommunitySmall, "ego_small": D.EgoSmall, "grid": D.Grid,
            "enzymes": D.Enzymes, "qm9": D.QM9, "zinc250k": D.ZINC250k,
            "user_graphs": UserGraphs, "user_molecules": UserMolecules}


def make_datamodule(name: str, args: dict[str, Any] | None = None) -> D.GraphDataModule:
    """The DataModule of a dataset name (``community_small``, ``qm9``, ...)."""
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"dataset: unknown {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[key](**(args or {}))


def sample_graphs(model, num_samples: int, sampler: str | None, steps: int | None,
                  batch_size: int, seed: int, options: dict[str, Any] | None = None,
                  use_ema: bool | None = None) -> tuple[dict[str, torch.Tensor], float, int]:
    """Sample in batches with a progress bar; returns the dense samples, seconds and NFE.

    The NFE is the core's count (``model.last_nfe``, network calls of one batched sampling
    call), the largest over the batches (they differ only for adaptive ODE solvers).
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    outs = []
    nfe = 0
    t0 = time.perf_counter()
    for start in tqdm(range(0, num_samples, batch_size), desc="sampling batches"):
        n = min(batch_size, num_samples - start)
        outs.append(model.sample(n, sampler=sampler, steps=steps, generator=gen, progress=True,
                                 use_ema=use_ema, **(options or {})))
        nfe = max(nfe, int(model.last_nfe))
    seconds = time.perf_counter() - t0
    cat = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return cat, seconds, nfe


# --- saved samples -------------------------------------------------------------------------

#: ``format`` tag of the ``.pt`` file of generated graphs
SAMPLES_FORMAT = "domaindiff_graphs.samples/1"


def save_graphs(graphs: list[nx.Graph], stem: Path) -> list[Path]:
    """Write generated graphs as graph6 (``<stem>.g6``) and as edge_index lists (``<stem>.pt``).

    The graph6 file has one graph per line, nodes numbered as in the ``.pt`` file
    (``networkx.read_graph6`` reads it back). The ``.pt`` file is a dict of plain tensors that
    loads with ``torch.load(path, weights_only=True)``: ``edge_index`` (one ``(2, E)`` long
    tensor per graph, both directions of every edge, as PyG), ``num_nodes`` (ints) and
    ``format``; ``Data(edge_index=e, num_nodes=n)`` rebuilds PyG graphs. Both are written
    atomically.
    """
    graphs = [nx.convert_node_labels_to_integers(g) for g in graphs]
    g6 = "".join(nx.to_graph6_bytes(g, header=False).decode("ascii") for g in graphs)
    edge_index = []
    for g in graphs:
        e = [(u, v) for u, v in g.edges()]
        ei = torch.tensor(e + [(v, u) for u, v in e], dtype=torch.long).reshape(-1, 2).T
        edge_index.append(ei.contiguous())
    paths = [stem.with_suffix(".g6"), stem.with_suffix(".pt")]
    atomic_write_text(paths[0], g6)
    atomic_save({"format": SAMPLES_FORMAT, "edge_index": edge_index,
                 "num_nodes": [g.number_of_nodes() for g in graphs]}, paths[1])
    return paths


def save_molecules(mols: list, stem: Path) -> list[Path]:
    """Write generated molecules: ``<stem>.csv`` (every sample) and ``<stem>.txt`` (valid ones).

    The CSV has the columns ``index,smiles``, one row per sample in sampling order, an empty
    ``smiles`` where decoding failed; the text file has the canonical SMILES of the valid
    molecules, one per line. Both are written atomically.
    """
    from rdkit import Chem

    smiles = [Chem.MolToSmiles(m) if m is not None else "" for m in mols]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["index", "smiles"])
    writer.writerows([k, s] for k, s in enumerate(smiles))
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".txt")]
    atomic_write_text(paths[0], buf.getvalue())
    atomic_write_text(paths[1], "".join(f"{s}\n" for s in smiles if s))
    return paths


# --- pictures ---------------------------------------------------------------------------------


def _save_figure(fig, path: Path) -> None:
    save_figure(fig, path, dpi=90)


def _grid(rows: int, cols: int, cell: float = 2.6):
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def _panels(test: list, generated: list, cols: int, max_plots: int) -> list[tuple[str, object]]:
    """``(kind, item)`` cells: a first row of test items (when given), then generated ones."""
    cells: list[tuple[str, object]] = []
    if test:
        row = [("test", t) for t in test[:cols]]
        cells += row + [("", None)] * (cols - len(row))
    room = max_plots - len(cells)
    return cells + [("generated", g) for g in generated[:max(room, cols)]]


def plot_graphs(graphs: list[nx.Graph], path: Path, title: str, max_plots: int = 16,
                test_graphs: list[nx.Graph] | None = None, cols: int = 4) -> None:
    """Save a PNG grid (atomically): a top row of test graphs, generated graphs below.

    Each panel's title says which it is (``test 2`` / ``generated 5``) with its node and edge
    counts; test graphs are drawn in blue, generated ones in orange.
    """
    cells = _panels(list(test_graphs or []), graphs, cols, max_plots)
    rows = int(math.ceil(len(cells) / cols)) or 1
    fig, axes = _grid(rows, cols)
    count = {"test": 0, "generated": 0}
    for ax, (kind, g) in zip(axes.flat, cells):
        if g is None:
            continue
        count[kind] += 1
        n = g.number_of_nodes()
        nx.draw(g, pos=nx.spring_layout(g, seed=0), ax=ax, node_size=max(4.0, min(30.0, 900 / n)),
                width=0.6, node_color="tab:blue" if kind == "test" else "tab:orange")
        ax.set_title(f"{kind} {count[kind]}: {n} nodes, {g.number_of_edges()} edges", fontsize=8)
        ax.axis("off")
    if test_graphs:
        title = f"{title} - top row: test graphs (blue), below: generated (orange)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)


def _mol_picture(mol, size: int = 300):
    """An RDKit drawing of one molecule with its SMILES underneath, as an RGB array.

    The bond length is capped, so small molecules are not blown up to fill the panel; a long
    SMILES is wrapped over up to three lines.
    """
    import textwrap

    import numpy as np
    from PIL import Image
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    again = Chem.MolFromSmiles(Chem.MolToSmiles(mol))  # kekulized data items drawn aromatic
    mol = again if again is not None else mol
    lines = textwrap.wrap(Chem.MolToSmiles(mol), 26) or [""]
    legend = "\n".join(lines[:2] + (["..."] if len(lines) > 2 else []))
    drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
    opts = drawer.drawOptions()
    opts.fixedBondLength, opts.padding = 30, 0.08
    opts.legendFontSize, opts.legendFraction = 18, 0.18
    drawer.DrawMolecule(mol, legend=legend)
    drawer.FinishDrawing()
    return np.asarray(Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB"))


def plot_molecules(mols: list, path: Path, max_plots: int = 16, test_mols: list | None = None,
                   title: str = "", cols: int = 4) -> None:
    """Save a PNG grid of RDKit drawings (atomically), each with its SMILES underneath.

    A top row shows test molecules (when given), generated molecules follow in sampling order;
    a generated sample that did not decode is shown as ``invalid``.
    """
    cells = _panels(list(test_mols or []), mols, cols, max_plots)
    rows = int(math.ceil(len(cells) / cols)) or 1
    fig, axes = _grid(rows, cols, cell=2.9)
    count = {"test": 0, "generated": 0}
    for ax, (kind, m) in zip(axes.flat, cells):
        if not kind:
            continue
        count[kind] += 1
        ax.set_title(f"{kind} {count[kind]}", fontsize=9,
                     color="tab:blue" if kind == "test" else "black")
        if m is None:
            ax.text(0.5, 0.5, "invalid\n(did not decode)", ha="center", va="center",
                    fontsize=9, color="tab:red", transform=ax.transAxes)
            continue
        ax.imshow(_mol_picture(m))
    heading = title or "molecules"
    if test_mols:
        heading += " - top row: test molecules, below: generated"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)


def check_model_fits(model, dm: D.GraphDataModule) -> None:
    """Refuse a checkpoint whose model cannot take the dataset (decoding would be wrong).

    Raises:
        ValueError: the model's atom types (molecules), feature size or ``max_nodes`` do not fit
            the dataset's; both are named.
    """
    name = type(dm).__name__
    if dm.is_molecule:
        have = tuple(getattr(model, "atom_types", None) or ())
        if have != tuple(dm.atom_types):
            raise ValueError(f"ckpt: the model's atom types {list(have) or None} differ from "
                             f"{name}'s {list(dm.atom_types)}; expected a checkpoint trained on "
                             "this dataset (GraphDiffusion molecule=...)")
    elif getattr(model, "atom_types", None) is not None:
        raise ValueError(f"ckpt: the model generates molecules ({model.molecule}) but {name} "
                         "holds generic graphs; expected a generic-graph checkpoint")
    if int(model.max_feat) != int(dm.max_feat):
        raise ValueError(f"ckpt: the model has max_feat={model.max_feat} but {name} has "
                         f"{dm.max_feat} node features; expected them equal")
    if int(model.max_nodes) < int(dm.max_nodes):
        raise ValueError(f"ckpt: the model has max_nodes={model.max_nodes} but {name} needs "
                         f"{dm.max_nodes}; expected a model at least that large")


def evaluate_model(model, dm: D.GraphDataModule, *, sampler: str | None = None,
                   steps: int | None = None, num_samples: int | None = None, seed: int = 0,
                   batch_size: int = 256, orbit: bool = True, nspdk: bool = True,
                   fcd: bool = True, sampler_options: dict | None = None,
                   use_ema: bool | None = None, nll_graphs: int = 0,
                   nll_exact: bool = False, nll_tol: float = 1e-5,
                   nll_probe: str = "rademacher") -> tuple[dict[str, Any], dict, list]:
    """Sample from a model and compute the dataset's GDSS metrics.

    Returns:
        The metrics dict, the dense samples and the decoded graphs / molecules.
    """
    dm.setup()
    check_model_fits(model, dm)
    if model.node_count_hist.sum() == 0:
        model.set_node_counts(dm.node_counts())
    start = (sampler_options or {}).get("prior", model.prior)
    moments_from_data = start == "moment_matched" and model.prior_moments is None
    if moments_from_data:  # a checkpoint written before the moments were stored
        model.set_prior_moments(dm.train_data)
    n = int(num_samples or len(dm.test_data))
    samples, seconds, nfe = sample_graphs(model, n, sampler, steps, batch_size, seed,
                                          sampler_options, use_ema)
    res: dict[str, Any] = {"sampler": sampler or model.default_sampler, "nfe": nfe,
                           "num_samples": n, "sampling_seconds": seconds,
                           "seconds_per_graph": seconds / n, "prior": str(start)}
    if moments_from_data:
        res["prior_moments_from"] = f"{type(dm).__name__} training split"
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
        if getattr(dm, "keep_isolated", False):  # your graphs have isolated nodes: keep them too
            decoded = D.dense_to_graphs(samples["adj"], samples["mask"], drop_isolated=False)
        res.update(graph_metrics(dm.test_graphs(), decoded, orbit=orbit))
    if nll_graphs > 0:
        from domaindiff_graphs.likelihood import graph_log_likelihood

        batch = next(iter(torch.utils.data.DataLoader(dm.test_data[:nll_graphs],
                                                      batch_size=nll_graphs,
                                                      collate_fn=D.Batch.from_data_list)))
        ll = graph_log_likelihood(model, batch, exact=nll_exact, rtol=nll_tol, atol=nll_tol,
                                  probe=nll_probe)
        res["nll_divergence"] = "exact" if nll_exact else f"hutchinson ({nll_probe})"
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
    check_counts(cfg, positive=("steps", "num_samples", "batch_size", "threads", "num_plots"),
                 nonnegative=("nll_graphs", "seed"), optional=("steps", "num_samples", "threads"))
    if cfg.get("sampler") is not None:
        get_sampler(str(cfg.sampler))
    from domaindiff.likelihood import PROBES

    probe = str(cfg.get("nll_probe", "rademacher"))
    if probe not in PROBES:
        raise ValueError(f"nll_probe: unknown Hutchinson probe {probe!r}; choose one of {PROBES}")
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
        nll_tol=float(cfg.get("nll_tol", 1e-5)),
        nll_probe=str(cfg.get("nll_probe", "rademacher")))
    res["dataset"] = str(cfg.dataset)
    res["ckpt"] = str(cfg.ckpt)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.dataset}_{res['sampler']}_{res['nfe']}"
    written = write_outputs(dm, decoded, out / f"samples_{stem}",
                            f"{cfg.dataset}: {res['sampler']}, {res['nfe']} NFE",
                            save=bool(cfg.get("save_samples", True)),
                            num_plots=int(cfg.get("num_plots", 16)))
    res["files"] = [p.name for p in written]
    # the JSON comes last: when it exists, the samples and pictures it names are complete
    atomic_write_text(out / f"metrics_{stem}.json", json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


def write_outputs(dm: D.GraphDataModule, decoded: list, stem: Path, title: str,
                  save: bool = True, num_plots: int = 16) -> list[Path]:
    """Save the generated graphs / molecules (when ``save``) and the PNG beside test items.

    Returns:
        The files written: ``<stem>.g6`` and ``<stem>.pt`` (graphs) or ``<stem>.csv`` and
        ``<stem>.txt`` (molecules), then ``<stem>.png``.
    """
    png = stem.with_suffix(".png")
    if dm.is_molecule:
        written = save_molecules(decoded, stem) if save else []
        plot_molecules(decoded, png, max_plots=num_plots, test_mols=dm.test_items, title=title)
    else:
        written = save_graphs(decoded, stem) if save else []
        plot_graphs(decoded, png, title, max_plots=num_plots, test_graphs=dm.test_graphs())
    return [*written, png]


@hydra.main(version_base=None, config_path="conf", config_name="eval")
@report_errors
def main(cfg: DictConfig) -> None:
    """Hydra entry point (``domaindiff eval graphs ...``)."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
