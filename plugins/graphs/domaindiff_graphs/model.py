"""GraphDiffusion: GDSS as a DiffusionModule (a system of SDEs over node features and adjacency)."""

from __future__ import annotations

import math
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
from domaindiff_graphs.priors import check_prior, data_moments, moment_matched_start

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
        prior: where sampling starts by default: ``"standard"`` (each process's N(0, sigma_T^2 I))
            or ``"moment_matched"`` (a Gaussian with the training graphs' marginal mean and std at
            ``T``, see :mod:`domaindiff_graphs.priors`; the moments are estimated at fit start or
            by :meth:`set_prior_moments` and stored in the checkpoint).
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
                 num_val_samples: int = 0, seed: int = 0, prior: str = "standard") -> None:
        self.save_hyperparameters()
        self.prior = check_prior(prior)
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
        # data moments of the training graphs' entries (NaN: not estimated yet), see priors.py
        for name, size in _MOMENT_BUFFERS.items():
            self.register_buffer(f"prior_{name}", torch.full((size or max_feat,), math.nan,
                                                             dtype=torch.float64))
        self.register_load_state_dict_pre_hook(_fill_missing_moments)

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
        if dm is not None and getattr(dm, "train_data", None) and self.prior_moments is None:
            self.set_prior_moments(dm.train_data)

    @property
    def prior_moments(self) -> dict[str, Tensor] | None:
        """The training graphs' entry moments (``x_mean``, ``x_var``, ``adj_mean``, ``adj_var``).

        None until :meth:`set_prior_moments` (or fit start) has estimated them.
        """
        out = {k: getattr(self, f"prior_{k}") for k in _MOMENT_BUFFERS}
        return None if any(torch.isnan(v).any() for v in out.values()) else out

    def set_prior_moments(self, graphs: Any) -> dict[str, Tensor]:
        """Estimate and store the data moments the ``"moment_matched"`` prior starts from.

        Args:
            graphs: the training graphs: a list of PyG ``Data`` (as the DataModules hold them),
                networkx graphs (one-hot degree features, as GDSS), dense states, or a dict of
                ready moments (``x_mean``, ``x_var`` of size ``max_feat``; ``adj_mean``,
                ``adj_var``).

        Returns:
            The stored moments.

        Raises:
            ValueError: for an empty list, a moment of the wrong size, or items of other types.
        """
        if isinstance(graphs, dict) and "x_mean" in graphs:
            moments = {k: torch.as_tensor(graphs[k], dtype=torch.float64).reshape(-1)
                       for k in _MOMENT_BUFFERS}
        else:
            moments = data_moments(_dense_chunks(list(graphs), self.max_nodes, self.max_feat))
        for k, size in _MOMENT_BUFFERS.items():
            want = size or self.max_feat
            v = moments[k]
            if v.numel() != want or not torch.isfinite(v).all() or (k.endswith("var")
                                                                    and (v < 0).any()):
                raise ValueError(f"set_prior_moments: {k} must be {want} finite value(s)"
                                 f"{' >= 0' if k.endswith('var') else ''}, got {v.tolist()}")
            getattr(self, f"prior_{k}").copy_(v.reshape(want))
        return dict(self.prior_moments or {})

    def prior_start(self, template: State, generator: torch.Generator | None = None,
                    prior: str = "moment_matched") -> State:
        """``template`` with X and A drawn from the named start distribution at ``T``.

        Raises:
            ValueError: for an unknown name.
            RuntimeError: for ``"moment_matched"`` before the moments were estimated.
        """
        prior = check_prior(prior)
        if prior == "standard":
            return {**template, **{k: p.prior_sample(template[k], template, generator)
                                   for k, p in self.processes.items()}}
        moments = self.prior_moments
        if moments is None:
            raise RuntimeError("GraphDiffusion: prior='moment_matched' needs the training graphs' "
                               "moments: fit on a graph DataModule, call "
                               "set_prior_moments(train_graphs), or import a GDSS checkpoint with "
                               "--graphs")
        return moment_matched_start(self.processes, template, moments, generator)

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

        ``prior`` (an option) picks the start: ``True`` / ``False`` as for every sampler (draw
        ``x_T`` from the process prior / take the template's values), or a name of
        :data:`~domaindiff_graphs.priors.PRIORS` (default: the ``prior`` hyper-parameter);
        ``"moment_matched"`` draws the template's X and A from the moment-matched Gaussian.

        Without guidance, a template of only ``x``, ``adj`` and ``mask`` is sampled padded to its
        largest graph instead of ``max_nodes`` (``trim_padding``): the networks' outputs on real
        nodes do not depend on the padding (tested), and a batch of 30-node graphs then costs
        what 30 nodes cost, not 125. The result is padded back to ``max_nodes``.
        """
        if sampler is None or sampler == self.default_sampler:
            options = {**self.sampler_options, **options}
        if template is None and n is not None and batch is None:
            template = self.sample_template(n, generator=generator)
        if template is None and batch is not None and n is not None:
            template = self.sample_template(n, batch)
        start = options.pop("prior", None)
        if start is None or isinstance(start, str):
            start = check_prior(self.prior if start is None else start, "sample: prior")
        trim = options.pop("trim_padding", True) and guidance is None \
            and template is not None and set(template) == {"x", "adj", "mask"}
        full = None
        if trim:
            full = template["mask"].shape[-1]
            k = max(int(template["mask"].sum(-1).max().item()), 1)
            template = {"x": template["x"][:, :k], "adj": template["adj"][:, :k, :k],
                        "mask": template["mask"][:, :k]}
        if start == "moment_matched":
            template = self.prior_start(template, generator, "moment_matched")
            start = False
        elif start == "standard":
            start = None
        out = super().sample(n, template=template, sampler=sampler, steps=steps,
                             guidance=guidance, generator=generator, progress=progress,
                             use_ema=self.sample_ema if use_ema is None else use_ema,
                             batch=batch, **({} if start is None else {"prior": start}),
                             **options)
        if full is not None and isinstance(out, dict):
            out = _pad_state(out, full)
        return out

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


#: moment buffers (``prior_<name>``) and their sizes (0: ``max_feat``)
_MOMENT_BUFFERS = {"x_mean": 0, "x_var": 0, "adj_mean": 1, "adj_var": 1}


def _fill_missing_moments(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before the moment buffers existed load with the moments unset."""
    for name in _MOMENT_BUFFERS:
        key = f"{prefix}prior_{name}"
        if key not in state_dict and f"{prefix}node_count_hist" in state_dict:
            state_dict[key] = getattr(module, f"prior_{name}").clone()


def _dense_chunks(items: list, max_nodes: int, max_feat: int, chunk: int = 512):
    """Dense states of ``items`` (PyG ``Data``, networkx graphs or dense states), in chunks."""
    from torch_geometric.data import Batch, Data

    from domaindiff_graphs.data import graph_to_data

    if not items:
        raise ValueError("set_prior_moments: no training graphs given")
    for i in range(0, len(items), chunk):
        part = items[i:i + chunk]
        if all(isinstance(d, dict) for d in part):
            yield from part
            continue
        if all(isinstance(d, nx.Graph) for d in part):
            part = [graph_to_data(g, max_feat) for g in part]
        if not all(isinstance(d, Data) for d in part):
            kinds = sorted({type(d).__name__ for d in part})
            raise ValueError(f"set_prior_moments: expected PyG Data, networkx graphs or dense "
                             f"states, got {', '.join(kinds)}")
        yield to_dense_state(Batch.from_data_list(part), max_nodes)


def _pad_state(state: State, n: int) -> State:
    """``x`` / ``adj`` / ``mask`` zero-padded back to ``n`` nodes."""
    k = state["mask"].shape[-1]
    if k == n:
        return state
    pad = n - k
    out = dict(state)
    out["x"] = torch.nn.functional.pad(state["x"], (0, 0, 0, pad))
    out["adj"] = torch.nn.functional.pad(state["adj"], (0, pad, 0, pad))
    out["mask"] = torch.nn.functional.pad(state["mask"], (0, pad))
    return out


def graphs_from_batch(batch: Any, max_nodes: int) -> list[nx.Graph]:
    """Data graphs of a PyG batch (for metrics)."""
    st = to_dense_state(batch, max_nodes)
    return dense_to_graphs(st["adj"], st["mask"], drop_isolated=False)


MODELS = [GraphDiffusion]
