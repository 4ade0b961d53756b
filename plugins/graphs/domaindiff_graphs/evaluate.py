"""Evaluation of a graph checkpoint (the core's EvalApp): GDSS's tables for any dataset and sampler.

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

:class:`GraphsEval` is a :class:`domaindiff.evaluation.EvalApp`: the core checks the shared
settings, loads the checkpoint (weights only unless ``trust_checkpoint``), samples in batches
with a seeded generator, counts the NFE and writes the files; this module fills in the dataset,
the GDSS metrics, the graph6 / SMILES files and the picture. :func:`evaluate_model` is the same
evaluation in memory (a loaded model and a DataModule; nothing written).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch

from domaindiff.cli import check_counts
from domaindiff.data import atomic_save, atomic_write_text
from domaindiff.evaluation import EvalApp
from domaindiff.plotting import pyplot
from domaindiff_graphs import data as D
from domaindiff_graphs.metrics import graph_metrics, molecule_metrics
from domaindiff_graphs.user_data import UserGraphs, UserMolecules

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CONF = Path(__file__).parent / "conf" / "eval.yaml"
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
    """Sample in batches (the app's loop); returns the dense samples, seconds and NFE.

    The NFE is the core's count (``model.last_nfe``, network calls of one batched sampling
    call), the largest over the batches (they differ only for adaptive ODE solvers).
    """
    app = GraphsEval("graphs")
    cfg = app.settings({"sampler": sampler, "steps": steps, "num_samples": num_samples,
                        "batch_size": batch_size, "seed": seed, "use_ema": use_ema,
                        "sampler_options": dict(options or {}), "data": None})
    parts, _, nfes, seconds = app.draw(model, cfg, None, torch.Generator().manual_seed(seed))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, seconds, max(nfes)


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


def plot_graphs(graphs: list[nx.Graph], title: str, max_plots: int = 16,
                test_graphs: list[nx.Graph] | None = None, cols: int = 4) -> Figure:
    """A grid of graph drawings (unsaved): a top row of test graphs, generated graphs below.

    Each panel's title says which it is (``test 2`` / ``generated 5``) with its node and edge
    counts; test graphs are drawn in blue, generated ones in orange, said by a legend.
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
    _legend(fig, [("test graph", "tab:blue")] * bool(test_graphs) + [("generated", "tab:orange")])
    if test_graphs:
        title = f"{title}\ntop row: test graphs, below: generated"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def _legend(fig: Figure, entries: list[tuple[str, str]]) -> None:
    """A figure legend at the bottom: node colour -> which graphs."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=c, ms=6) for _, c in entries]
    fig.legend(handles, [label for label, _ in entries], loc="lower center",
               ncol=len(entries), fontsize=8, frameon=False)


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


def plot_molecules(mols: list, max_plots: int = 16, test_mols: list | None = None,
                   title: str = "", cols: int = 4) -> Figure:
    """A grid of RDKit drawings (unsaved), each with its SMILES underneath.

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
        heading += "\ntop row: test molecules (blue titles), below: generated"
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


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


class GraphsEval(EvalApp):
    """``domaindiff eval graphs`` on the core's app (see the module).

    Settings beyond the core's (``conf/eval.yaml``): ``dataset`` (and its ``data_args``),
    ``use_ema``, ``orbit``, ``nspdk``, ``fcd``, ``nll_graphs``, ``nll_exact``, ``nll_probe``,
    ``nll_tol``, ``save_samples`` and ``num_plots``; ``num_samples`` null: as many as the test set.
    """

    dpi = 90

    def __init__(self, plugin: str = "graphs", datamodule: D.GraphDataModule | None = None
                 ) -> None:
        super().__init__(plugin)
        self.config_file = CONF  # its defaults also for evaluate(cfg) and evaluate_model
        self.given = datamodule  # evaluate_model: a DataModule instead of cfg.dataset

    def check(self, cfg: Mapping[str, Any]) -> None:
        """The core's checks, then this app's (each named)."""
        from domaindiff.likelihood import PROBES

        super().check(cfg)
        check_counts(cfg, positive=("num_plots",), nonnegative=("nll_graphs",))
        if str(cfg.get("dataset")).lower() not in DATASETS:
            raise ValueError(f"dataset: unknown {cfg.get('dataset')!r}; choose one of "
                             f"{sorted(DATASETS)}")
        probe = str(cfg["nll_probe"])
        if probe not in PROBES:
            raise ValueError(f"nll_probe: unknown Hutchinson probe {probe!r}; choose one of "
                             f"{PROBES}")

    def prepare(self, model, cfg: Mapping[str, Any]) -> None:
        """The dataset; refuse a model that does not fit it; node counts and prior moments."""
        torch.manual_seed(int(cfg["seed"]))
        dm = self.given or make_datamodule(str(cfg["dataset"]), dict(cfg.get("data_args") or {}))
        dm.setup()
        check_model_fits(model, dm)
        if model.node_count_hist.sum() == 0:
            model.set_node_counts(dm.node_counts())
        self.start = (cfg.get("sampler_options") or {}).get("prior", model.prior)
        self.moments_from_data = self.start == "moment_matched" and model.prior_moments is None
        if self.moments_from_data:  # a checkpoint written before the moments were stored
            model.set_prior_moments(dm.train_data)
        self.dm = dm

    def count(self, model, cfg: Mapping[str, Any]) -> int:
        """``num_samples``, or as many as the test set (GDSS)."""
        return int(cfg.get("num_samples") or len(self.dm.test_data))

    def reference_batches(self, model, cfg: Mapping[str, Any]) -> None:
        """None: graph sizes come from the model's node-count histogram, not data batches."""
        return None

    def sample(self, model, cfg: Mapping[str, Any], n: int, batch: Any,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` graphs; the checkpoint's default sampler gets its stored ``sampler_options``."""
        return model.sample(n, sampler=cfg.get("sampler"), steps=cfg.get("steps"),
                            generator=generator, progress=sys.stderr.isatty(),
                            use_ema=cfg.get("use_ema"),
                            **dict(cfg.get("sampler_options") or {}))

    def metrics(self, model, cfg: Mapping[str, Any]) -> None:
        """None: :meth:`score` computes GDSS's metrics on all samples at once."""
        return None

    def score(self, model, samples: dict[str, torch.Tensor], metrics: Any,
              cfg: Mapping[str, Any]) -> dict[str, Any]:
        """Decode; MMDs (graphs) or validity, NSPDK, FCD, ... (molecules); optional NLL."""
        dm = self.dm
        res: dict[str, Any] = {"prior": str(self.start)}
        if self.moments_from_data:
            res["prior_moments_from"] = f"{type(dm).__name__} training split"
        if dm.is_molecule:
            from domaindiff_graphs.mol import decode_molecules

            mols, valid_wo = decode_molecules(samples["x"], samples["adj"], samples["mask"],
                                              dm.atom_types)
            res.update(molecule_metrics(mols, valid_wo, dm.train_smiles(),
                                        dm.test_graphs() if cfg["nspdk"] else None,
                                        dm.test_smiles() if cfg["fcd"] else None))
            self.decoded: list = mols
        else:
            decoded = model.decode(samples)
            if getattr(dm, "keep_isolated", False):  # your graphs have isolated nodes: keep them
                decoded = D.dense_to_graphs(samples["adj"], samples["mask"], drop_isolated=False)
            res.update(graph_metrics(dm.test_graphs(), decoded, orbit=bool(cfg["orbit"])))
            self.decoded = decoded
        if int(cfg["nll_graphs"]) > 0:
            res.update(self._likelihood(model, cfg))
        return res

    def _likelihood(self, model, cfg: Mapping[str, Any]) -> dict[str, Any]:
        from domaindiff_graphs.likelihood import graph_log_likelihood

        n, exact = int(cfg["nll_graphs"]), bool(cfg["nll_exact"])
        probe, tol = str(cfg["nll_probe"]), float(cfg["nll_tol"])
        batch = next(iter(torch.utils.data.DataLoader(self.dm.test_data[:n], batch_size=n,
                                                      collate_fn=D.Batch.from_data_list)))
        ll = graph_log_likelihood(model, batch, exact=exact, rtol=tol, atol=tol, probe=probe)
        return {"nll_divergence": "exact" if exact else f"hutchinson ({probe})",
                "nll_nats": float(-ll["logp"].mean()), "nll_bpd": float(ll["bpd"].mean())}

    def evaluate(self, model, cfg: Mapping[str, Any], generator: torch.Generator | None = None
                 ) -> tuple[dict[str, Any], dict, list]:
        """The core's evaluation plus GDSS's timing fields; returns the decoded graphs third."""
        res, samples, _ = super().evaluate(model, cfg, generator)
        res.update(dataset=str(cfg.get("dataset", type(self.dm).__name__)),
                   sampling_seconds=res["seconds"], seconds_per_graph=res["seconds_per_sample"])
        return res, samples, self.decoded

    def stem(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """``<dataset>_<sampler>_<nfe>``."""
        return f"{cfg['dataset']}_{result['sampler']}_{result['nfe']}"

    def title(self, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
        """What (dataset, graphs or molecules) and which run (checkpoint, sampler, NFE)."""
        what = "molecules" if self.dm.is_molecule else "graphs"
        return (f"{cfg['dataset']} {what} from {Path(str(cfg['ckpt'])).name}: "
                f"{result['sampler']}, {result['nfe']} NFE, {result['num_samples']} samples")

    def save(self, model, samples: dict[str, torch.Tensor], cfg: Mapping[str, Any], out: Path,
             stem: str) -> list[Path]:
        """graph6 + PyG lists (graphs) or SMILES CSV + text (molecules), if ``save_samples``."""
        if not cfg["save_samples"]:
            return []
        save = save_molecules if self.dm.is_molecule else save_graphs
        return save(self.decoded, out / f"samples_{stem}")

    def plot(self, model, samples: dict[str, torch.Tensor], references: list[Any],
             cfg: Mapping[str, Any], title: str) -> Figure:
        """Test graphs / molecules (top row) beside generated ones (``samples_<stem>.png``)."""
        num = int(cfg["num_plots"])
        if self.dm.is_molecule:
            return plot_molecules(self.decoded, max_plots=num, test_mols=self.dm.test_items,
                                  title=title)
        return plot_graphs(self.decoded, title, max_plots=num, test_graphs=self.dm.test_graphs())


def evaluate_model(model, dm: D.GraphDataModule, *, sampler: str | None = None,
                   steps: int | None = None, num_samples: int | None = None, seed: int = 0,
                   batch_size: int = 256, orbit: bool = True, nspdk: bool = True,
                   fcd: bool = True, sampler_options: dict | None = None,
                   use_ema: bool | None = None, nll_graphs: int = 0,
                   nll_exact: bool = False, nll_tol: float = 1e-5,
                   nll_probe: str = "rademacher") -> tuple[dict[str, Any], dict, list]:
    """Sample from a model and compute the dataset's GDSS metrics (:class:`GraphsEval`, in memory).

    Returns:
        The metrics dict, the dense samples and the decoded graphs / molecules.
    """
    app = GraphsEval("graphs", datamodule=dm)
    cfg = app.settings({"sampler": sampler, "steps": steps, "num_samples": num_samples,
                        "seed": seed, "batch_size": batch_size, "orbit": orbit, "nspdk": nspdk,
                        "fcd": fcd, "sampler_options": dict(sampler_options or {}),
                        "use_ema": use_ema, "nll_graphs": nll_graphs, "nll_exact": nll_exact,
                        "nll_tol": nll_tol, "nll_probe": nll_probe, "data": None,
                        "dataset": type(dm).__name__})
    return app.evaluate(model, cfg)


APP = GraphsEval("graphs")
#: Hydra entry point (``domaindiff eval graphs ...``)
main = APP.hydra_main(CONF.parent, "eval")
#: the same from Python: settings (a dict or DictConfig) -> the metrics JSON's content
evaluate = APP.run


if __name__ == "__main__":
    main()
