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
        chans = [adjc]
        for layer in self.layers:
            x, adjc = layer(x, adjc, mask)
            chans.append(adjc)
        out = self.final(torch.cat(chans, dim=1).permute(0, 2, 3, 1)).squeeze(-1)
        n = out.shape[-1]
        out = out * (1 - torch.eye(n, device=out.device, dtype=out.dtype))
        return mask_adj(out, mask)


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
