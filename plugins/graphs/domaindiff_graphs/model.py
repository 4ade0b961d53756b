"""GraphDiffusion: GDSS as a DiffusionModule (a system of SDEs over node features and adjacency)."""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch
from torch import Tensor
from torchmetrics import MetricCollection

from domaindiff.module import DiffusionModule
from domaindiff.processes import VE, VP, GaussianProcess, SubVP, bcast
from domaindiff.spaces import NodeMasked, SymmetricAdjacency
from domaindiff_graphs import solvers  # noqa: F401  (registers "s4" and "gdss_pc")
from domaindiff_graphs.data import dense_to_graphs, to_dense_state
from domaindiff_graphs.metrics import ClusteringMMD, DegreeMMD, MoleculeValidity
from domaindiff_graphs.networks import GDSSNetwork

State = dict[str, Tensor]


def make_sde(cfg: dict[str, Any], space, t_min: float) -> GaussianProcess:
    """A GDSS SDE config ``{"type": "VP"|"VE"|"subVP", "beta_min", "beta_max"}`` as a process.

    As in GDSS, a VE SDE reads ``beta_min`` / ``beta_max`` as ``sigma_min`` / ``sigma_max``.
    """
    kind = str(cfg.get("type", "VP")).lower()
    lo, hi = float(cfg.get("beta_min", 0.1)), float(cfg.get("beta_max", 1.0))
    if kind == "vp":
        return VP(lo, hi, t_min=t_min, space=space)
    if kind == "subvp":
        return SubVP(lo, hi, t_min=t_min, space=space)
    if kind == "ve":
        return VE(lo, hi, t_min=t_min, space=space)
    raise ValueError(f"sde type: unknown {cfg.get('type')!r}; use 'VP', 'VE' or 'subVP'")


class GraphDiffusion(DiffusionModule):
    """GDSS: score-based generation of graphs (and molecules) via a system of SDEs.

    The state is ``{"x": (B, N, F), "adj": (B, N, N), "mask": (B, N)}``; X diffuses in the
    node-masked space, A in the symmetric-adjacency space (upper-triangle noise mirrored, empty
    diagonal), each with its own SDE. The networks (ScoreNetworkX / ScoreNetworkA) give, as in
    GDSS, ``score = -out / sigma(t)`` for VP-family SDEs (so ``out`` is the noise prediction) and
    ``score = out`` for VE; both are turned into noise predictions so every core sampler applies.
    Loss: GDSS's ``sum (sigma * score + z)^2`` per component (sum over entries, mean over the batch),
    one time per graph shared by X and A.

    Args:
        max_nodes: padding size N.
        max_feat: node feature size F (molecules: number of atom types).
        molecule: None for generic graphs, or "qm9" / "zinc250k" (decoding and metrics).
        sde_x: SDE of X, e.g. ``{"type": "VP", "beta_min": 0.1, "beta_max": 1.0}``.
        sde_adj: SDE of A.
        x_net: "gcn" (ScoreNetworkX) or "gmh" (ScoreNetworkX_GMH).
        depth: X-network layers.
        nhid: hidden width.
        num_layers: A-network attention layers.
        num_linears: linear layers per attention layer MLP.
        c_init: powers of A as input channels.
        c_hid: hidden channels.
        c_final: final channels.
        adim: attention width.
        num_heads: attention heads.
        conv: "GCN" or "MLP" for the attention queries and keys.
        time_cond: time-conditioned networks (beyond the paper).
        lr: Adam learning rate (GDSS 0.01 generic / 0.005 molecules).
        weight_decay: Adam weight decay.
        ema_decay: EMA decay.
        lr_gamma: ExponentialLR factor per epoch.
        grad_norm: gradient-norm clip applied to each network separately (GDSS's two optimisers).
        t_min: training time lower bound (GDSS eps 1e-5).
        sampler: default sampler ("gdss_pc", "s4", or any core sampler).
        sampling_steps: default network evaluations.
        sampler_options: options of the default sampler (snr, scale_eps, predictor, eps, ...).
        sample_ema: sample with the EMA weights (GDSS: per dataset).
        num_val_samples: graphs sampled per validation epoch for the metrics (0: none).
        seed: noise seed.
    """

    def __init__(self, max_nodes: int = 20, max_feat: int = 10, molecule: str | None = None,
                 sde_x: dict | None = None, sde_adj: dict | None = None, x_net: str = "gcn",
                 depth: int = 3, nhid: int = 32, num_layers: int = 5, num_linears: int = 2,
                 c_init: int = 2, c_hid: int = 8, c_final: int = 4, adim: int = 32,
                 num_heads: int = 4, conv: str = "GCN", time_cond: bool = False,
                 lr: float = 0.01, weight_decay: float = 1e-4, ema_decay: float = 0.999,
                 lr_gamma: float | None = 0.999, grad_norm: float = 1.0, t_min: float = 1e-5,
                 sampler: str = "gdss_pc", sampling_steps: int = 2000,
                 sampler_options: dict | None = None, sample_ema: bool = False,
                 num_val_samples: int = 0, seed: int = 0) -> None:
        self.save_hyperparameters()
        if max_nodes < 2 or max_feat < 1:
            raise ValueError(f"max_nodes must be >= 2 and max_feat >= 1, got {max_nodes}, "
                             f"{max_feat}")
        self.max_nodes, self.max_feat = max_nodes, max_feat
        self.molecule = molecule
        if molecule:
            from domaindiff_graphs.mol import atom_types_for

            self.atom_types = atom_types_for(molecule)
        else:
            self.atom_types = None
        if self.atom_types is not None and len(self.atom_types) != max_feat:
            raise ValueError(f"max_feat={max_feat} but {molecule} has {len(self.atom_types)} "
                             "atom types")
        self.grad_norm = grad_norm
        self.sampler_options = dict(sampler_options or {})
        self.sample_ema = sample_ema
        procs = {"x": make_sde(sde_x or {"type": "VP"}, NodeMasked("mask"), t_min),
                 "adj": make_sde(sde_adj or {"type": "VP"}, SymmetricAdjacency("mask"), t_min)}
        net = GDSSNetwork(max_feat, x_net, depth, nhid, num_layers, num_linears, c_init, c_hid,
                          c_final, adim, num_heads, conv, time_cond)
        super().__init__(net, procs, parametrization="eps", weighting="uniform",
                         reduction="sum", lr=lr, weight_decay=weight_decay, ema_decay=ema_decay,
                         sampler=sampler, sampling_steps=sampling_steps,
                         num_val_samples=num_val_samples, lr_gamma=lr_gamma, seed=seed)
        # node-count distribution of the training graphs (sampling draws sizes from it)
        self.register_buffer("node_count_hist", torch.zeros(max_nodes + 1))

    # --- data ------------------------------------------------------------------------------------
    def batch_to_state(self, batch: Any) -> State:
        """A PyG batch (or a ready dense state) as ``{"x", "adj", "mask"}``."""
        if isinstance(batch, dict):
            return {k: v for k, v in batch.items()}
        return to_dense_state(batch, self.max_nodes)

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "node_counts") and self.node_count_hist.sum() == 0:
            self.set_node_counts(dm.node_counts())

    def set_node_counts(self, counts: list[int]) -> None:
        """Record the training graphs' node counts (the sampling size distribution)."""
        hist = torch.bincount(torch.as_tensor(counts, dtype=torch.long),
                              minlength=self.max_nodes + 1)
        if len(hist) > self.max_nodes + 1:
            raise ValueError(f"a graph has {len(hist) - 1} nodes > max_nodes={self.max_nodes}")
        self.node_count_hist.copy_(hist.to(self.node_count_hist))

    def template_for_sizes(self, sizes: list[int] | Tensor) -> State:
        """A sampling template whose graph ``i`` has ``sizes[i]`` nodes (graphs of requested size)."""
        sizes = torch.as_tensor(sizes, dtype=torch.long, device=self.device)
        if (sizes < 1).any() or (sizes > self.max_nodes).any():
            raise ValueError(f"sizes must lie in 1..max_nodes={self.max_nodes}, got "
                             f"{sizes.tolist()}")
        n = len(sizes)
        mask = (torch.arange(self.max_nodes, device=self.device)[None] < sizes[:, None]).float()
        return {"x": torch.zeros(n, self.max_nodes, self.max_feat, device=self.device),
                "adj": torch.zeros(n, self.max_nodes, self.max_nodes, device=self.device),
                "mask": mask}

    def sample_template(self, n: int, batch: Any = None,
                        generator: torch.Generator | None = None) -> State:
        """Template of ``n`` graphs: sizes from ``batch`` if given, else from the training sizes."""
        if batch is not None:
            mask = self.batch_to_state(batch)["mask"][:n]
            return self.template_for_sizes(mask.sum(-1).long())
        if self.node_count_hist.sum() == 0:
            raise RuntimeError("GraphDiffusion.sample_template: no node-count distribution; fit "
                               "on a graph DataModule first, call set_node_counts(), or pass "
                               "template=model.template_for_sizes(sizes)")
        gen = generator if generator is not None else self.generator
        probs = (self.node_count_hist / self.node_count_hist.sum()).to(gen.device)
        sizes = torch.multinomial(probs, n, replacement=True, generator=gen)
        return self.template_for_sizes(sizes)

    # --- network ---------------------------------------------------------------------------------
    def denoise(self, net, state: State, t: Tensor) -> State:
        """Raw GDSS outputs as noise predictions: VP family ``eps = out``; VE ``eps = -sigma out``."""
        out = net(state, t)
        res = {}
        for k, p in self.processes.items():
            o = out[k]
            res[k] = -bcast(p.sigma(t), o) * o if isinstance(p, VE) else o
        return res

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Clip X and A networks separately at ``grad_norm`` (GDSS has one optimiser each)."""
        clip = gradient_clip_val if gradient_clip_val else self.grad_norm
        if clip and clip > 0:
            for sub in (self.network.net_x, self.network.net_adj):
                torch.nn.utils.clip_grad_norm_(sub.parameters(), clip)

    # --- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int | None = None, *, template: State | None = None,
               sampler: str | None = None, steps: int | None = None, guidance: Any = None,
               generator: torch.Generator | None = None, progress: bool = False,
               use_ema: bool | None = None, batch: Any = None, **options: Any) -> State:
        """Sample graphs; the default sampler gets ``sampler_options`` (GDSS's snr, scale_eps, ...).

        ``use_ema`` defaults to ``sample_ema``. See :meth:`DiffusionModule.sample`.
        """
        if sampler is None or sampler == self.default_sampler:
            options = {**self.sampler_options, **options}
        if template is None and n is not None and batch is None:
            template = self.sample_template(n, generator=generator)
        return super().sample(n, template=template, sampler=sampler, steps=steps,
                              guidance=guidance, generator=generator, progress=progress,
                              use_ema=self.sample_ema if use_ema is None else use_ema,
                              batch=batch, **options)

    def decode(self, samples: State) -> list:
        """Sampled states as networkx graphs (generic) or RDKit molecules.

        Molecules are valency-corrected and reduced to their largest fragment (None if invalid).
        """
        if self.atom_types is None:
            return dense_to_graphs(samples["adj"], samples["mask"])
        from domaindiff_graphs.mol import decode_molecules

        mols, _ = decode_molecules(samples["x"], samples["adj"], samples["mask"],
                                   self.atom_types)
        return mols

    # --- metrics ---------------------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:
        if getattr(self, "atom_types", None) is not None:
            return MetricCollection({"validity_wo_correction": MoleculeValidity(
                self.atom_types)}, prefix="val/")
        return MetricCollection({"degree_mmd": DegreeMMD(), "clustering_mmd": ClusteringMMD()},
                                prefix="val/")

    def update_metrics(self, metrics, samples: State, batch: Any) -> None:
        if self.atom_types is not None:
            metrics["validity_wo_correction"].update(samples)
            return
        ref = self.batch_to_state(batch)
        gen_graphs = dense_to_graphs(samples["adj"], samples["mask"])
        ref_graphs = dense_to_graphs(ref["adj"], ref["mask"], drop_isolated=False)
        for m in metrics.values():
            m.update(gen_graphs, ref_graphs)


def graphs_from_batch(batch: Any, max_nodes: int) -> list[nx.Graph]:
    """Data graphs of a PyG batch (for metrics)."""
    st = to_dense_state(batch, max_nodes)
    return dense_to_graphs(st["adj"], st["mask"], drop_isolated=False)


MODELS = [GraphDiffusion]
