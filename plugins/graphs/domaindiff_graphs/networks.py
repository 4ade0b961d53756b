"""GDSS score networks on dense per-batch tensors.

- :class:`ScoreNetworkX`: ``depth`` dense GCN layers (tanh), all layer outputs concatenated with
  the input, then a 3-layer ELU MLP; :class:`ScoreNetworkXGMH` uses graph multi-head attention
  layers instead of the GCN layers.
- :class:`ScoreNetworkA`: powers of A (``c_init`` channels) as input, ``num_layers`` graph
  multi-head attention layers (Q, K, V from dense GCNs, attention ``tanh(QK^T / sqrt(d))``
  averaged over heads and symmetrised), channels ``c_init -> c_hid -> c_final``, a final MLP over
  all channels, masked diagonal.
- :class:`GDSSNetwork` holds both and returns their raw outputs for ``{"x", "adj"}``.

As in the paper the networks are not time-conditioned; ``time_cond=True`` adds the time as an
extra node feature channel (an option beyond the paper).

Speed (same function, measured in ``tests/graphs/test_networks.py`` against the direct form and
against GDSS's formulas): for an exactly symmetric input adjacency, which every sampler state is,
every adjacency channel stays symmetric, so the per-pair channel MLPs (each layer's and the
final one, most of the cost: ELU over ``N^2 x 2 fdim`` values) run once per unordered node pair
on the packed upper triangle (:class:`_Packing`), in a channels-first layout that needs no
permute copies; the three dense GCNs of each channel share one normalised adjacency and one
matmul (PyG's ``DenseGCNConv`` normalises per call), batched over all channels. A non-symmetric
input takes the direct form (``fast=False`` forces it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.dense import DenseGCNConv


def mask_x(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the features of padded nodes."""
    return x if mask is None else x * mask[..., None]


def mask_adj(adj: Tensor, mask: Tensor | None) -> Tensor:
    """Zero rows and columns of padded nodes (``adj`` is (B, N, N) or (B, C, N, N))."""
    if mask is None:
        return adj
    m = mask[:, :, None] * mask[:, None, :]
    return adj * (m[:, None] if adj.dim() == 4 else m)


class _Packing:
    """Index maps between (..., N, N) symmetric matrices and their packed upper triangle (..., M).

    ``up`` / ``low`` are the flat positions of ``(i, j)`` and ``(j, i)`` for ``i <= j``;
    ``offdiag`` is 0 on the packed diagonal entries, 1 elsewhere.
    """

    _cache: dict[tuple[int, str], tuple[Tensor, Tensor, Tensor]] = {}

    def __init__(self, n: int, device: torch.device, dtype: torch.dtype,
                 mask: Tensor | None) -> None:
        key = (n, str(device))
        if key not in self._cache:
            i, j = torch.triu_indices(n, n, device=device)
            self._cache[key] = (i * n + j, j * n + i, (i != j))
        self.n = n
        self.up, self.low, off = self._cache[key]
        self.offdiag = off.to(dtype)
        self.mask = None if mask is None else self.pack(mask[:, :, None] * mask[:, None, :])[:, None]

    def _take(self, a: Tensor, idx: Tensor) -> Tensor:
        flat = a.reshape(*a.shape[:-2], self.n * self.n)
        return torch.gather(flat, -1, idx.expand(*flat.shape[:-1], -1))

    def pack(self, a: Tensor) -> Tensor:
        """(..., N, N) -> (..., M): the upper triangle (diagonal included)."""
        return self._take(a, self.up)

    def pack_sym(self, a: Tensor) -> Tensor:
        """``0.5 (a + a^T)`` packed, without forming the transpose."""
        return 0.5 * (self._take(a, self.up) + self._take(a, self.low))

    def unpack(self, v: Tensor) -> Tensor:
        """(B, C, M) -> the symmetric (B, C, N, N)."""
        out = v.new_empty(*v.shape[:-1], self.n * self.n)
        out.index_copy_(-1, self.up, v)
        out.index_copy_(-1, self.low, v)
        return out.reshape(*v.shape[:-1], self.n, self.n)

    def apply_mask(self, v: Tensor) -> Tensor:
        return v if self.mask is None else v * self.mask


def _is_symmetric(adj: Tensor) -> bool:
    return bool(torch.equal(adj, adj.transpose(-1, -2)))


def gcn_norm(adj: Tensor) -> Tensor:
    """``D^-1/2 (A with unit diagonal) D^-1/2`` over the last two dims, as ``DenseGCNConv``."""
    a = adj.clone()
    a.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    d = a.sum(dim=-1).clamp(min=1).pow(-0.5)
    return d.unsqueeze(-1) * a * d.unsqueeze(-2)


def _mlp_channels_first(mlp: nn.Module, v: Tensor) -> Tensor:
    """``mlp`` applied over dim -2 of (B, C, M) (each column one input vector)."""
    return mlp(v.transpose(-1, -2)).transpose(-1, -2)


def pow_tensor(adj: Tensor, c: int) -> Tensor:
    """``[A, A^2, ..., A^c]`` stacked as channels (B, c, N, N)."""
    out, cur = [adj], adj
    for _ in range(c - 1):
        cur = cur @ adj
        out.append(cur)
    return torch.stack(out, dim=1)


class MLP(nn.Module):
    """A plain MLP with ``num_layers`` linear layers (>= 1) and an activation in between."""

    def __init__(self, num_layers: int, in_dim: int, hidden: int, out_dim: int,
                 act=F.elu) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        for i, lin in enumerate(self.layers):
            x = lin(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x


class GCN(DenseGCNConv):
    """PyG's :class:`DenseGCNConv` (self loops, symmetric normalisation), GDSS's GCN layer."""


class GraphAttention(nn.Module):
    """Graph multi-head attention (Baek et al. 2021), as GDSS uses it.

    Returns the value features ``V = GCN(x, A)`` and the head-averaged symmetric attention
    ``tanh(Q K^T / sqrt(out_dim))`` with ``Q, K = GCN(x, A)`` (or MLPs with ``conv="MLP"``).
    """

    def __init__(self, in_dim: int, attn_dim: int, out_dim: int, num_heads: int = 4,
                 conv: str = "GCN") -> None:
        super().__init__()
        if attn_dim % num_heads:
            raise ValueError(f"attn_dim={attn_dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.attn_dim, self.out_dim, self.conv = num_heads, attn_dim, out_dim, conv
        if conv == "GCN":
            self.q, self.k = GCN(in_dim, attn_dim), GCN(in_dim, attn_dim)
        elif conv == "MLP":
            self.q = MLP(2, in_dim, 2 * attn_dim, attn_dim, act=torch.tanh)
            self.k = MLP(2, in_dim, 2 * attn_dim, attn_dim, act=torch.tanh)
        else:
            raise ValueError(f"conv: unknown {conv!r}; use 'GCN' or 'MLP'")
        self.v = GCN(in_dim, out_dim)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.conv == "GCN":
            q, k = self.q(x, adj), self.k(x, adj)
        else:
            q, k = self.q(x), self.k(x)
        v = self.v(x, adj)
        b, n, _ = q.shape
        h = self.num_heads
        qh = q.reshape(b, n, h, -1).permute(0, 2, 1, 3)
        kh = k.reshape(b, n, h, -1).permute(0, 2, 1, 3)
        att = torch.tanh(qh @ kh.transpose(-1, -2) / math.sqrt(self.out_dim)).mean(dim=1)
        return v, 0.5 * (att + att.transpose(-1, -2))

    def head_mean(self, q: Tensor, k: Tensor) -> Tensor:
        """``tanh(Q K^T / sqrt(out_dim))`` averaged over heads, not yet symmetrised.

        The scale is applied to Q (N x d values) instead of the N x N products.
        """
        b, n, _ = q.shape
        q = q / math.sqrt(self.out_dim)
        qh = q.reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        kh = k.reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        return torch.tanh(qh @ kh.transpose(-1, -2)).mean(dim=1)


class AttentionLayer(nn.Module):
    """One GMH layer over ``c_in`` adjacency channels: new node features and ``c_out`` channels."""

    def __init__(self, num_linears: int, in_dim: int, attn_dim: int, out_dim: int, c_in: int,
                 c_out: int, num_heads: int = 4, conv: str = "GCN") -> None:
        super().__init__()
        self.attn = nn.ModuleList(GraphAttention(in_dim, attn_dim, out_dim, num_heads, conv)
                                  for _ in range(c_in))
        hidden = 2 * max(c_in, c_out)
        self.mlp = MLP(num_linears, 2 * c_in, hidden, c_out)
        self.multi_channel = MLP(2, c_in * out_dim, hidden, out_dim)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        xs, atts = [], []
        for c, layer in enumerate(self.attn):
            v, a = layer(x, adj[:, c], mask)
            xs.append(v)
            atts.append(a)
        x_out = torch.tanh(mask_x(self.multi_channel(torch.cat(xs, dim=-1)), mask))
        feats = torch.cat([torch.stack(atts, dim=-1), adj.permute(0, 2, 3, 1)], dim=-1)
        a = self.mlp(feats).permute(0, 3, 1, 2)
        a = a + a.transpose(-1, -2)
        return x_out, mask_adj(a, mask)

    def forward_packed(self, x: Tensor, adj: Tensor, packed: Tensor, mask: Tensor | None,
                       pk: _Packing) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` for symmetric channels ``adj`` (B, C, N, N), ``packed`` = their triangle.

        Returns the node features, the new channels (B, c_out, N, N) and their packed triangle.
        """
        an = gcn_norm(adj)  # one normalisation per channel for Q, K and V
        gcn = self.attn[0].conv == "GCN"
        lins = [m for layer in self.attn for m in ((layer.q, layer.k, layer.v) if gcn
                                                   else (layer.v,))]
        per = 3 if gcn else 1
        w = torch.stack([torch.cat([lins[c * per + j].lin.weight for j in range(per)], 0)
                         for c in range(len(self.attn))])  # (C, O, F)
        bias = torch.stack([torch.cat([lins[c * per + j].bias for j in range(per)], 0)
                            for c in range(len(self.attn))])  # (C, O)
        h = torch.matmul(an, torch.matmul(x[:, None], w.transpose(1, 2))) + bias[:, None]
        atts, vs = [], []
        for c, layer in enumerate(self.attn):
            if gcn:
                q, k, v = h[:, c].split([layer.attn_dim, layer.attn_dim, layer.out_dim], -1)
            else:
                q, k, v = layer.q(x), layer.k(x), h[:, c]
            atts.append(layer.head_mean(q, k))
            vs.append(v)
        x_out = torch.tanh(mask_x(self.multi_channel(torch.cat(vs, dim=-1)), mask))
        feats = torch.cat([pk.pack_sym(torch.stack(atts, 1)), packed], 1)  # (B, 2C, M)
        a = pk.apply_mask(2.0 * _mlp_channels_first(self.mlp, feats))
        return x_out, pk.unpack(a), a


class ScoreNetworkX(nn.Module):
    """GDSS's node-feature score network: dense GCN stack + MLP.

    Args:
        max_feat: node feature size F (+1 input channel with ``time_cond``).
        depth: GCN layers.
        nhid: hidden width.
        time_cond: add the time as an input channel.
    """

    def __init__(self, max_feat: int, depth: int = 3, nhid: int = 32,
                 time_cond: bool = False) -> None:
        super().__init__()
        f_in = max_feat + int(time_cond)
        self.time_cond = time_cond
        self.layers = nn.ModuleList(GCN(f_in if i == 0 else nhid, nhid) for i in range(depth))
        fdim = f_in + depth * nhid
        self.final = MLP(3, fdim, 2 * fdim, max_feat)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None, t: Tensor | None = None
                ) -> Tensor:
        if self.time_cond:
            x = torch.cat([x, mask_x(t[:, None, None].expand(*x.shape[:2], 1), mask)], dim=-1)
        hs = [x]
        for layer in self.layers:
            x = torch.tanh(layer(x, adj))
            hs.append(x)
        return mask_x(self.final(torch.cat(hs, dim=-1)), mask)


class ScoreNetworkXGMH(nn.Module):
    """Node-feature score network with graph multi-head attention layers (GDSS ``X_GMH``)."""

    def __init__(self, max_feat: int, depth: int = 2, nhid: int = 16, num_linears: int = 3,
                 c_init: int = 2, c_hid: int = 8, c_final: int = 4, adim: int = 16,
                 num_heads: int = 4, conv: str = "GCN", time_cond: bool = False) -> None:
        super().__init__()
        f_in = max_feat + int(time_cond)
        self.time_cond, self.c_init = time_cond, c_init
        self.fast = True  # packed form for symmetric inputs (module docstring); False: direct
        layers = []
        for i in range(depth):
            c_in = c_init if i == 0 else c_hid
            c_out = c_final if i == depth - 1 else c_hid
            layers.append(AttentionLayer(num_linears, f_in if i == 0 else nhid,
                                         nhid if i == 0 else adim, nhid, c_in, c_out, num_heads,
                                         conv))
        self.layers = nn.ModuleList(layers)
        fdim = f_in + depth * nhid
        self.final = MLP(3, fdim, 2 * fdim, max_feat)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None, t: Tensor | None = None
                ) -> Tensor:
        if self.time_cond:
            x = torch.cat([x, mask_x(t[:, None, None].expand(*x.shape[:2], 1), mask)], dim=-1)
        adjc = pow_tensor(adj, self.c_init)
        hs = [x]
        if self.fast and _is_symmetric(adj):
            pk = _Packing(adj.shape[-1], adj.device, adj.dtype, mask)
            packed = pk.pack(adjc)
            for layer in self.layers:
                x, adjc, packed = layer.forward_packed(x, adjc, packed, mask, pk)
                x = torch.tanh(x)
                hs.append(x)
            return mask_x(self.final(torch.cat(hs, dim=-1)), mask)
        for layer in self.layers:
            x, adjc = layer(x, adjc, mask)
            x = torch.tanh(x)
            hs.append(x)
        return mask_x(self.final(torch.cat(hs, dim=-1)), mask)


class ScoreNetworkA(nn.Module):
    """GDSS's adjacency score network (graph multi-head attention over powers of A).

    Args:
        max_feat: node feature size F.
        nhid: GCN width inside the attention.
        num_layers: attention layers.
        num_linears: linear layers of each layer's channel MLP.
        c_init: powers of A used as input channels.
        c_hid: hidden channels.
        c_final: channels of the last layer.
        adim: attention width.
        num_heads: attention heads.
        conv: "GCN" or "MLP" for Q and K.
        time_cond: add the time as a node feature channel.
    """

    def __init__(self, max_feat: int, nhid: int = 32, num_layers: int = 5, num_linears: int = 2,
                 c_init: int = 2, c_hid: int = 8, c_final: int = 4, adim: int = 32,
                 num_heads: int = 4, conv: str = "GCN", time_cond: bool = False) -> None:
        super().__init__()
        f_in = max_feat + int(time_cond)
        self.time_cond, self.c_init = time_cond, c_init
        self.fast = True  # packed form for symmetric inputs (module docstring); False: direct
        layers = []
        for i in range(num_layers):
            c_in = c_init if i == 0 else c_hid
            c_out = c_final if i == num_layers - 1 else c_hid
            layers.append(AttentionLayer(num_linears, f_in if i == 0 else nhid,
                                         nhid if i == 0 else adim, nhid, c_in, c_out, num_heads,
                                         conv))
        self.layers = nn.ModuleList(layers)
        fdim = c_hid * (num_layers - 1) + c_final + c_init
        self.final = MLP(3, fdim, 2 * fdim, 1)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor | None, t: Tensor | None = None
                ) -> Tensor:
        if self.time_cond:
            x = torch.cat([x, mask_x(t[:, None, None].expand(*x.shape[:2], 1), mask)], dim=-1)
        adjc = pow_tensor(adj, self.c_init)
        if self.fast and _is_symmetric(adj):
            return self._forward_packed(x, adj, adjc, mask)
        chans = [adjc]
        for layer in self.layers:
            x, adjc = layer(x, adjc, mask)
            chans.append(adjc)
        out = self.final(torch.cat(chans, dim=1).permute(0, 2, 3, 1)).squeeze(-1)
        n = out.shape[-1]
        out = out * (1 - torch.eye(n, device=out.device, dtype=out.dtype))
        return mask_adj(out, mask)

    def _forward_packed(self, x: Tensor, adj: Tensor, adjc: Tensor, mask: Tensor | None
                        ) -> Tensor:
        """:meth:`forward` on the packed triangle (``adj`` exactly symmetric)."""
        pk = _Packing(adj.shape[-1], adj.device, adj.dtype, mask)
        packed = pk.pack(adjc)
        chans = [packed]
        for layer in self.layers:
            x, adjc, packed = layer.forward_packed(x, adjc, packed, mask, pk)
            chans.append(packed)
        out = _mlp_channels_first(self.final, torch.cat(chans, 1)) * pk.offdiag
        return pk.unpack(pk.apply_mask(out))[:, 0]


class GDSSNetwork(nn.Module):
    """ScoreNetworkX (or its GMH variant) and ScoreNetworkA behind one ``net(state, t)`` call.

    Returns the raw network outputs ``{"x": (B, N, F), "adj": (B, N, N)}``; the model turns them
    into noise predictions according to each component's SDE (VP: ``eps = out``; VE: the output
    is the score).

    Args:
        max_feat: node feature size.
        x_net: "gcn" (ScoreNetworkX) or "gmh" (ScoreNetworkX_GMH).
        depth: layers of the X network.
        nhid: hidden width.
        num_layers: attention layers of the A network.
        num_linears: linear layers in each attention layer's MLP.
        c_init: powers of A.
        c_hid: hidden channels.
        c_final: last-layer channels.
        adim: attention width.
        num_heads: attention heads.
        conv: "GCN" or "MLP".
        time_cond: time as an extra node feature (beyond the paper).
        mask_key: state key of the node flags.
    """

    def __init__(self, max_feat: int, x_net: str = "gcn", depth: int = 3, nhid: int = 32,
                 num_layers: int = 5, num_linears: int = 2, c_init: int = 2, c_hid: int = 8,
                 c_final: int = 4, adim: int = 32, num_heads: int = 4, conv: str = "GCN",
                 time_cond: bool = False, mask_key: str = "mask") -> None:
        super().__init__()
        if x_net == "gcn":
            self.net_x = ScoreNetworkX(max_feat, depth, nhid, time_cond)
        elif x_net == "gmh":
            self.net_x = ScoreNetworkXGMH(max_feat, depth, nhid, num_linears, c_init, c_hid,
                                          c_final, adim, num_heads, conv, time_cond)
        else:
            raise ValueError(f"x_net: unknown {x_net!r}; use 'gcn' or 'gmh'")
        self.net_adj = ScoreNetworkA(max_feat, nhid, num_layers, num_linears, c_init, c_hid,
                                     c_final, adim, num_heads, conv, time_cond)
        self.mask_key = mask_key

    def forward(self, state: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        x, adj = state["x"], state["adj"]
        mask = state.get(self.mask_key)
        if mask is not None:
            mask = mask.to(x.dtype)
        return {"x": self.net_x(x, adj, mask, t), "adj": self.net_adj(x, adj, mask, t)}
