"""EGTN, the equivariant geometric trajectory network of GeoTDM, and its learnable prior.

Shapes: coordinates ``x`` ``(B, N, T, 3)``, invariant features ``h`` ``(B, N, T, H)``, node mask
``(B, N)``. Each EGTN layer is an EGNN layer inside every frame (full graph over real nodes)
followed by temporal attention inside every node with relative-time embeddings; both update the
coordinates only along differences of coordinates, so the network is E(3)-equivariant
(rotations, reflections, translations) and permutation-equivariant over nodes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from domaindiff.nn import sinusoidal_embedding

PRIORS = ("learnable", "velocity", "last", "com", "none")
PRIOR_INITS = ("velocity", "last")
SPATIAL = ("egnn", "e3nn", "plain")
TEMPORAL = ("attention", "fixed", "absolute")


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, o))


def _coord_head(h: int) -> nn.Sequential:
    """A scalar gate for coordinate updates, initialised small (as EGNN) for stable starts."""
    head = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 1, bias=False))
    nn.init.xavier_uniform_(head[-1].weight, gain=0.001)
    return head


class SpatialEGNN(nn.Module):
    """EGNN layer applied to every frame: ``x_i += mean_j phi_x(m_ij) x_ij / (|x_ij| + 1)``.

    Args:
        hidden: feature width.
        edge_dim: width of the edge attributes ``e_ij``.
    """

    def __init__(self, hidden: int, edge_dim: int = 0) -> None:
        super().__init__()
        # first edge linear on [h_i, h_j, |x_ij|^2, e_ij], split per input (no (N, N, 2H) concat)
        self.e_i, self.e_j = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False)
        self.e_rest = nn.Linear(1 + edge_dim, hidden, bias=False)
        self.phi_e = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.phi_x = _coord_head(hidden)
        self.phi_h = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(),
                                   nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, x: Tensor, mask: Tensor, edge: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Update ``(h, x)``; ``edge`` is ``(B, N, N, E)`` (shared by all frames) or None."""
        n = x.shape[1]
        hf, xf = h.transpose(1, 2), x.transpose(1, 2)  # (B, T, N, .)
        diff = xf[:, :, :, None] - xf[:, :, None, :]  # x_i - x_j: (B, T, N, N, 3)
        d2 = (diff**2).sum(-1, keepdim=True)
        rest = d2 if edge is None else torch.cat(
            [d2, edge[:, None].expand(-1, hf.shape[1], -1, -1, -1)], -1)
        adj = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(n, dtype=x.dtype,
                                                                   device=x.device))
        adj = adj[:, None, :, :, None]  # (B, 1, N, N, 1)
        pre = self.e_i(hf)[:, :, :, None] + self.e_j(hf)[:, :, None, :] + self.e_rest(rest)
        m = self.phi_e(pre) * adj
        deg = adj.sum(3).clamp_min(1.0)
        dx = (self.phi_x(m) * diff / (torch.sqrt(d2 + 1e-8) + 1.0) * adj).sum(3) / deg
        hf = hf + self.phi_h(torch.cat([hf, m.sum(3) / deg], -1))
        return hf.transpose(1, 2), (xf + dx).transpose(1, 2)


class SpatialPlain(nn.Module):
    """The non-equivariant ablation of :class:`SpatialEGNN` (GeoTDM's "w/o equivariance" row).

    The same message passing, but the edge MLP also reads the raw difference vector ``x_i - x_j``,
    the node MLP reads the absolute position ``x_i``, and each node moves by a free 3-vector
    ``W m_i`` instead of along differences: neither rotation- nor translation-equivariant.

    Args:
        hidden: feature width.
        edge_dim: width of the edge attributes ``e_ij``.
        dim: spatial dimension.
    """

    def __init__(self, hidden: int, edge_dim: int = 0, dim: int = 3) -> None:
        super().__init__()
        self.e_i, self.e_j = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden, bias=False)
        self.e_rest = nn.Linear(1 + edge_dim + dim, hidden, bias=False)
        self.phi_e = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.phi_h = nn.Sequential(nn.Linear(2 * hidden + dim, hidden), nn.SiLU(),
                                   nn.Linear(hidden, hidden))
        self.phi_x = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.xavier_uniform_(self.phi_x[-1].weight, gain=0.001)
        self.dim = dim

    def forward(self, h: Tensor, x: Tensor, mask: Tensor, edge: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Update ``(h, x)``; same signature as :class:`SpatialEGNN`."""
        n = x.shape[1]
        hf, xf = h.transpose(1, 2), x.transpose(1, 2)
        pad = self.dim - xf.shape[-1]  # 2-D data: pad the inputs to the layer's width
        xp = torch.nn.functional.pad(xf, (0, pad)) if pad > 0 else xf
        diff = xp[:, :, :, None] - xp[:, :, None, :]
        d2 = (diff**2).sum(-1, keepdim=True)
        parts = [d2, diff] if edge is None else [
            d2, edge[:, None].expand(-1, hf.shape[1], -1, -1, -1), diff]
        adj = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(n, dtype=x.dtype,
                                                                   device=x.device))
        adj = adj[:, None, :, :, None]
        pre = self.e_i(hf)[:, :, :, None] + self.e_j(hf)[:, :, None, :] + \
            self.e_rest(torch.cat(parts, -1))
        m = self.phi_e(pre) * adj
        agg = m.sum(3) / adj.sum(3).clamp_min(1.0)
        dx = self.phi_x(agg)[..., :xf.shape[-1]]
        hf = hf + self.phi_h(torch.cat([hf, agg, xp], -1))
        return hf.transpose(1, 2), (xf + dx).transpose(1, 2)


class E3nnSpatial(nn.Module):
    """e3nn alternative to :class:`SpatialEGNN`: spherical harmonics and a tensor product.

    For each edge, the spherical harmonics ``Y^{0,1}(x_ij)`` are multiplied with the sender's
    scalars by a ``FullyConnectedTensorProduct`` whose weights come from an MLP of the invariants
    ``[h_i, h_j, |x_ij|^2, e_ij]``; the output (``hidden x 0e + 1 x 1o``) is averaged over
    neighbours: the scalars update ``h`` through a SiLU gate, the vector moves ``x``.

    Args:
        hidden: feature width.
        edge_dim: width of the edge attributes.
    """

    def __init__(self, hidden: int, edge_dim: int = 0) -> None:
        super().__init__()
        from e3nn import o3

        self.o3 = o3
        self.hidden = hidden
        self.tp = o3.FullyConnectedTensorProduct(f"{hidden}x0e", "1x0e+1x1o",
                                                 f"{hidden}x0e+1x1o", shared_weights=False)
        self.radial = nn.Sequential(nn.Linear(2 * hidden + 1 + edge_dim, hidden), nn.SiLU(),
                                    nn.Linear(hidden, self.tp.weight_numel))
        with torch.no_grad():  # small initial coordinate moves, as the EGNN heads
            self.radial[-1].weight.mul_(0.1)
        self.gate = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, x: Tensor, mask: Tensor, edge: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Update ``(h, x)``; same signature as :class:`SpatialEGNN`."""
        n = x.shape[1]
        hf, xf = h.transpose(1, 2), x.transpose(1, 2)
        diff = xf[:, :, :, None] - xf[:, :, None, :]
        d2 = (diff**2).sum(-1, keepdim=True)
        adj = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(n, dtype=x.dtype,
                                                                   device=x.device))
        adj = adj[:, None, :, :, None]
        # non-edges (self pairs, padding) get a dummy direction so the harmonics stay finite
        dummy = torch.zeros_like(diff)
        dummy[..., 0] = 1.0
        safe = diff + (1 - adj) * dummy
        sh = self.o3.spherical_harmonics([0, 1], safe, normalize=True, normalization="component")
        feats = [hf[:, :, :, None].expand(-1, -1, -1, n, -1),
                 hf[:, :, None, :].expand(-1, -1, n, -1, -1), d2]
        if edge is not None:
            feats.append(edge[:, None].expand(-1, hf.shape[1], -1, -1, -1))
        w = self.radial(torch.cat(feats, -1))
        sender = hf[:, :, None, :].expand(-1, -1, n, -1, -1)
        out = self.tp(sender, sh, w) * adj
        agg = out.sum(3) / adj.sum(3).clamp_min(1.0)
        hf = hf + self.gate(agg[..., :self.hidden])
        xf = xf - agg[..., self.hidden:]  # sh(x_i - x_j) convention: move along -sum
        return hf.transpose(1, 2), xf.transpose(1, 2)


class TemporalAttention(nn.Module):
    """Attention over frames inside each node, with relative-time embeddings on keys and values.

    ``x_t += sum_s a_ts (phi_x(v_s) + g(t - s)) (x_t - x_s)`` (unnormalised, as GeoTDM: the
    network must be able to output ``x_t - x_ref``, a linear function of the frames) and
    ``h_t += W_o sum_s a_ts (v_s + r_v(t - s))``, with logits ``q_t . (k_s + r_k(t - s))``.

    ``mode`` selects the paper's ablations of this layer (Han et al., Table 6); every mode moves
    coordinates only along ``x_t - x_s`` with invariant weights, so all stay E(3)-equivariant:

    * ``attention`` (the paper): the weights above, shift-invariant (frame indices enter only
      through ``t - s``, the relative temporal embedding of the paper's Figure 4).
    * ``fixed`` ("no attention"): ``a_ts = softmax_s(w(t - s))``, a learnable weight per frame
      offset shared by every node, trajectory and noise level (a normalised temporal
      convolution spanning all frames); no queries or keys, so the weights do not depend on the
      features. Still shift-invariant.
    * ``absolute`` ("no shift invariance"): the attention of ``attention`` with the relative
      terms ``r_k``, ``r_v``, ``g`` removed and an absolute frame embedding ``p(t)`` added to the
      features before queries, keys and values (a transformer's absolute positional encoding), so
      the layer depends on the frame indices themselves, not only on their differences.

    Args:
        hidden: feature width.
        time_dim: width of the sinusoidal (relative or absolute) time embedding.
        mode: ``attention``, ``fixed`` or ``absolute`` (see above).
    """

    def __init__(self, hidden: int, time_dim: int = 32, mode: str = "attention") -> None:
        super().__init__()
        if mode not in TEMPORAL:
            raise ValueError(f"temporal: unknown {mode!r}; choose one of {TEMPORAL}")
        self.mode = mode
        # module creation order of mode 'attention' is the one of every earlier run (seeded
        # initial weights reproduce)
        if mode == "fixed":
            self.v = nn.Linear(hidden, hidden)
            self.rel_a = nn.Linear(time_dim, 1)  # one logit per offset t - s
        else:
            self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        if mode == "attention":
            self.rel_k = nn.Linear(time_dim, hidden)
        if mode == "absolute":
            self.pos = nn.Linear(time_dim, hidden)  # absolute frame embedding p(t)
        else:
            self.rel_v = nn.Linear(time_dim, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.phi_x = _coord_head(hidden)
        if mode != "absolute":
            self.rel_x = _coord_head(time_dim)
        self.ff = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.SiLU(),
                                nn.Linear(2 * hidden, hidden))
        self.time_dim = time_dim

    def _frames(self, h: Tensor, frames: Tensor | None) -> Tensor:
        if frames is None:
            return torch.arange(h.shape[2], dtype=h.dtype, device=h.device)
        if frames.shape != (h.shape[2],):
            raise ValueError(f"frames: expected shape ({h.shape[2]},), got {tuple(frames.shape)}")
        return frames.to(h.dtype)

    def weights(self, h: Tensor, frames: Tensor | None = None) -> Tensor:
        """The attention weights ``a_ts``, ``(B, N, T, T)`` (``fixed``: ``(T, T)``)."""
        return self._weights(h, self._frames(h, frames))[0]

    def _weights(self, h: Tensor, idx: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """``(a, rel, v)``: weights, relative-time embedding (None if absolute), values."""
        if self.mode == "absolute":
            hp = h + self.pos(sinusoidal_embedding(idx, self.time_dim, dtype=None))
            q, k, v = self.q(hp), self.k(hp), self.v(hp)
            return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h.shape[-1]), -1), None, v
        rel = sinusoidal_embedding(idx[:, None] - idx[None, :], self.time_dim, dtype=None)  # t - s
        if self.mode == "fixed":
            return torch.softmax(self.rel_a(rel)[..., 0], -1), rel, self.v(h)
        rk = self.rel_k(rel)  # (T, T, H)
        q, k, v = self.q(h), self.k(h), self.v(h)
        # logits_ts = q_t . (k_s + rk_ts), without materialising (B, N, T, T, H)
        logits = (q @ k.transpose(-1, -2) + torch.einsum("bnth,tsh->bnts", q, rk)) \
            / math.sqrt(h.shape[-1])
        return torch.softmax(logits, -1), rel, v  # a: (B, N, T, T)

    def forward(self, h: Tensor, x: Tensor, mask: Tensor, frames: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Update ``(h, x)`` of ``(B, N, T, .)`` tensors.

        ``frames``: the frame indices ``(T,)`` (default ``0 .. T-1``); the ``attention`` and
        ``fixed`` modes depend only on their differences.
        """
        a, rel, v = self._weights(h, self._frames(h, frames))
        if a.dim() == 2:  # fixed: the same (T, T) weights for every node
            a = a.expand(*h.shape[:2], -1, -1)
        if rel is None:
            h = h + self.out(a @ v)
            gate = a * self.phi_x(v)[..., 0][:, :, None, :]
        else:
            h = h + self.out(a @ v + torch.einsum("bnts,tsh->bnth", a, self.rel_v(rel)))
            gate = a * (self.phi_x(v)[..., 0][:, :, None, :] + self.rel_x(rel)[..., 0])
        x = x + gate.sum(-1, keepdim=True) * x - gate @ x  # sum_s gate_ts (x_t - x_s)
        h = h + self.ff(h)
        m = mask[:, :, None, None]
        return h * m, x * m


class EGTN(nn.Module):
    """Stack of (spatial EGNN, temporal attention) layers.

    Args:
        in_features: invariant per-node-per-frame input width.
        hidden: feature width.
        layers: number of (spatial, temporal) blocks.
        edge_dim: edge-attribute width (0: none).
        time_dim: relative-time embedding width.
        spatial: ``egnn`` (as the paper), ``e3nn`` (:class:`E3nnSpatial`) or ``plain`` (the
            non-equivariant ablation :class:`SpatialPlain`).
        temporal: temporal layer mode, ``attention`` (the paper), ``fixed`` (no attention) or
            ``absolute`` (no shift invariance); see :class:`TemporalAttention`.
    """

    def __init__(self, in_features: int, hidden: int = 128, layers: int = 6, edge_dim: int = 0,
                 time_dim: int = 32, spatial: str = "egnn", temporal: str = "attention") -> None:
        super().__init__()
        if spatial not in SPATIAL:
            raise ValueError(f"spatial: unknown {spatial!r}; choose one of {SPATIAL}")
        layer = {"egnn": SpatialEGNN, "e3nn": E3nnSpatial, "plain": SpatialPlain}[spatial]
        self.embed = nn.Linear(in_features, hidden)
        self.spatial = nn.ModuleList(layer(hidden, edge_dim) for _ in range(layers))
        if temporal not in TEMPORAL:
            raise ValueError(f"temporal: unknown {temporal!r}; choose one of {TEMPORAL}")
        self.temporal = nn.ModuleList(TemporalAttention(hidden, time_dim, temporal)
                                      for _ in range(layers))

    def forward(self, feats: Tensor, x: Tensor, mask: Tensor, edge: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Return updated ``(h, x)``; ``feats`` is ``(B, N, T, in_features)``."""
        h = self.embed(feats)
        for sp, tp in zip(self.spatial, self.temporal, strict=True):
            h, x = sp(h, x, mask, edge)
            h, x = tp(h, x, mask)
        return h, x


class GeoTDMNetwork(nn.Module):
    """GeoTDM denoiser: EGTN on [condition frames, noisy frames] predicting the noise.

    The state holds ``x`` (the diffused residual ``x - x_ref`` for forecasting, the centred
    trajectory for unconditional generation), ``h`` node features ``(B, N, F)``, ``mask`` and,
    when forecasting, ``cond`` ``(B, N, T_cond, 3)``.

    Args:
        node_features: width of ``h``.
        hidden: EGTN width (paper 128).
        layers: EGTN blocks (paper 6).
        time_dim: diffusion-step embedding width (paper 32).
        conditional: forecasting (True) or unconditional generation.
        prior: ``learnable`` (weights over condition frames summing to one), ``velocity``
            (constant-velocity extrapolation of the last two condition frames, fixed), ``last``
            (last condition frame), ``com`` (centre of mass of the condition) or ``none`` (zero).
        prior_layers: EGTN blocks of the learnable prior.
        prior_init: what the learnable prior equals at initialisation: ``velocity`` (weights
            ``1 + k`` on the last and ``-k`` on the second-to-last frame for the k-th predicted
            frame: constant-velocity extrapolation, still summing to one) or ``last`` (the
            reference code's start, the last frame).
        scale: the diffused variable is ``(x - x_ref) / scale`` (unconditional: ``x / scale``),
            so that it has roughly unit variance; the network sees and predicts in these units.
        predict: ``eps`` (the paper: the EGTN's coordinate displacement of the noisy frames is the
            noise) or ``x0`` (the EGTN's output frames, minus ``x_ref``, are the clean residual).
        pred_frames: frames to generate (needed by the learnable prior's weight head).
        num_steps: diffusion steps ``N``; the network embeds ``t * N``.
        spatial: spatial layer, ``egnn`` or ``e3nn``.
        temporal: temporal layer of the denoiser's and the learnable prior's EGTN:
            ``attention`` (the paper), ``fixed`` (the "no attention" ablation) or ``absolute``
            (the "no shift invariance" ablation); see :class:`TemporalAttention`.
    """

    def __init__(self, node_features: int = 1, hidden: int = 128, layers: int = 6,
                 time_dim: int = 32, conditional: bool = True, prior: str = "learnable",
                 prior_layers: int = 2, pred_frames: int = 20, num_steps: int = 1000,
                 spatial: str = "egnn", prior_init: str = "velocity", scale: float = 1.0,
                 predict: str = "eps", temporal: str = "attention") -> None:
        super().__init__()
        if predict not in ("eps", "x0"):
            raise ValueError(f"predict: unknown {predict!r}; choose eps or x0")
        self.predict = predict
        if prior not in PRIORS:
            raise ValueError(f"prior: unknown {prior!r}; choose one of {PRIORS}")
        if prior_init not in PRIOR_INITS:
            raise ValueError(f"prior_init: unknown {prior_init!r}; choose one of {PRIOR_INITS}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = float(scale)
        self.conditional, self.prior, self.time_dim = conditional, prior, time_dim
        self.num_steps, self.pred_frames, self.node_features = num_steps, pred_frames, node_features
        edge_dim = node_features
        self.egtn = EGTN(node_features + time_dim + 1, hidden, layers, edge_dim, time_dim,
                         spatial, temporal)
        if conditional and prior == "learnable":
            self.prior_net = EGTN(node_features, hidden, prior_layers, edge_dim, time_dim,
                                  spatial, temporal)
            self.prior_head = nn.Linear(hidden, pred_frames)
            nn.init.zeros_(self.prior_head.weight)  # starts as a fixed extrapolation
            nn.init.zeros_(self.prior_head.bias)
            # the head's output at the second-to-last condition frame is -k (velocity start);
            # the bias is per predicted frame and shared by condition frames, so the
            # second-to-last frame gets its own learnable offset
            start = torch.zeros(pred_frames)
            if prior_init == "velocity":
                start = -torch.arange(1, pred_frames + 1, dtype=torch.float32)
            self.prior_offset = nn.Parameter(start)

    @staticmethod
    def _mask(state: dict[str, Tensor], x: Tensor) -> Tensor:
        m = state.get("mask")
        return torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if m is None \
            else m.to(x.dtype)

    @staticmethod
    def _edges(h: Tensor, state: dict[str, Tensor] | None = None) -> Tensor:
        """Edge attributes: the data's ``edge`` ``(B, N, N, E)`` if given, else ``h_i h_j``.

        N-body batches carry the generator's edges file (charged: ``q_i q_j``, the same as the
        product; springs: the spring constants, which the node features do not hold).
        """
        if state is not None and state.get("edge") is not None:
            return state["edge"].to(h.dtype)
        return h[:, :, None, :] * h[:, None, :, :]  # e.g. q_i q_j for charges

    def reference(self, state: dict[str, Tensor]) -> Tensor:
        """The geometric prior mean ``x_ref`` ``(B, N, T_pred, 3)`` from the condition frames."""
        cond = state["cond"]
        mask = self._mask(state, cond)
        b, n, tc, d = cond.shape
        shape = (b, n, self.pred_frames, d)
        if self.prior == "none":
            return cond.new_zeros(shape)
        if self.prior == "last":
            return cond[:, :, -1:].expand(shape) * mask[:, :, None, None]
        if self.prior == "velocity":
            k = torch.arange(1, self.pred_frames + 1, dtype=cond.dtype, device=cond.device)
            vel = cond[:, :, -1:] - cond[:, :, -2:-1] if tc >= 2 else torch.zeros_like(cond[:, :, -1:])
            return (cond[:, :, -1:] + k[None, None, :, None] * vel) * mask[:, :, None, None]
        if self.prior == "com":
            m = mask[:, :, None, None]
            com = (cond * m).sum((1, 2), keepdim=True) / (m.sum(1, keepdim=True) * tc)
            return com.expand(shape) * m
        h = state["h"].to(cond.dtype)
        feats = h[:, :, None].expand(-1, -1, tc, -1)
        hc, xc = self.prior_net(feats, cond, mask, self._edges(h, state))
        w = self.prior_head(hc)  # (B, N, T_cond, T_pred): invariant weights
        if tc >= 2:
            w = torch.cat([w[:, :, :-2], w[:, :, -2:-1] + self.prior_offset, w[:, :, -1:]], 2)
        w = torch.cat([w[:, :, :-1], 1 - w[:, :, :-1].sum(2, keepdim=True)], 2)
        return torch.einsum("bnsp,bnsd->bnpd", w, xc) * mask[:, :, None, None]

    def forward(self, state: dict[str, Tensor], t: Tensor, skip: Tensor | None = None
                ) -> dict[str, Tensor]:
        """Predict the noise (or clean residual) of ``state["x"]``, in units of ``scale``.

        ``skip`` (``(B,)``, optional) multiplies the noisy residual before it enters the EGTN.
        With x0 prediction the output is ``skip * x_t`` plus the EGTN's coordinate moves, so
        ``skip = alpha(t)`` makes the skip connection the linear posterior mean of a
        unit-variance residual (close to the prior at high noise, to ``x_t`` at low noise)
        instead of ``x_t``, whose noise the network would otherwise have to cancel.
        """
        x = state["x"]
        mask = self._mask(state, x)
        if skip is not None:
            x = x * skip.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        h = state["h"].to(x.dtype)
        temb = sinusoidal_embedding(t.to(x.dtype) * self.num_steps, self.time_dim, dtype=None)
        ref = self.reference(state) if self.conditional else None
        if self.conditional:
            cond = state["cond"].to(x.dtype)
            xin = torch.cat([cond, x * self.scale + ref], 2)
            tc = cond.shape[2]
        else:
            xin, tc = x * self.scale, 0
        b, n, tt, _ = xin.shape
        flag = torch.zeros(b, n, tt, 1, dtype=x.dtype, device=x.device)
        flag[:, :, :tc] = 1.0
        feats = torch.cat([h[:, :, None].expand(-1, -1, tt, -1),
                           temb[:, None, None].expand(-1, n, tt, -1), flag], -1)
        _, xout = self.egtn(feats, xin, mask, self._edges(h, state))
        if self.predict == "x0":
            out = xout[:, :, tc:] - ref if self.conditional else xout
        else:
            out = (xout - xin)[:, :, tc:]
        return {"x": out / self.scale * mask[:, :, None, None]}


class EGTNRegressor(nn.Module):
    """Deterministic equivariant forecaster: EGTN on [condition, last frame repeated].

    The regression baseline of the benchmark and the predictor of the prediction score.

    Args:
        node_features: width of ``h``.
        hidden: EGTN width.
        layers: EGTN blocks.
        pred_frames: frames predicted.
        time_dim: relative-time embedding width.
        spatial: spatial layer (see :class:`EGTN`).
    """

    def __init__(self, node_features: int, hidden: int, layers: int, pred_frames: int,
                 time_dim: int = 32, spatial: str = "egnn") -> None:
        super().__init__()
        self.egtn = EGTN(node_features + 1, hidden, layers, node_features, time_dim, spatial)
        self.pred_frames = pred_frames

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Predict ``(B, N, pred_frames, D)`` from ``cond``, ``h`` and ``mask``."""
        cond, h, mask = batch["cond"], batch["h"].to(batch["cond"].dtype), batch["mask"]
        tc = cond.shape[2]
        xin = torch.cat([cond, cond[:, :, -1:].expand(-1, -1, self.pred_frames, -1)], 2)
        flag = torch.zeros(*xin.shape[:3], 1, dtype=xin.dtype, device=xin.device)
        flag[:, :, :tc] = 1
        feats = torch.cat([h[:, :, None].expand(-1, -1, xin.shape[2], -1), flag], -1)
        _, x = self.egtn(feats, xin, mask.to(xin.dtype), GeoTDMNetwork._edges(h, batch))
        return x[:, :, tc:]
