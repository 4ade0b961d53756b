"""Where noise lives: the linear subspace each component of a state is constrained to.

A *space* knows how to project an arbitrary tensor onto its subspace (masking padded nodes,
symmetrising an adjacency matrix, removing a centre of mass), how to draw standard Gaussian noise
in it, and how many free dimensions it has. Every process, loss and sampler in the core routes
noise and updates through the space of its component, so the invariants hold through training and
sampling.

Norms and dimensions are counted in the space's *free coordinates*, the coordinates in which its
noise is standard normal: for a symmetric adjacency these are the upper-triangle entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

State = Mapping[str, Tensor]


def _batch_sum(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal like ``x``; a generator on another device draws there and is moved."""
    if generator is not None and generator.device != x.device:
        return torch.randn(x.shape, generator=generator, device=generator.device,
                           dtype=x.dtype).to(x.device)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class Space:
    """The unconstrained space R^d (base class).

    Subclasses override :meth:`project`, :meth:`noise` and the counting methods.
    """

    mask_key: str | None = None

    def project(self, x: Tensor, state: State | None = None) -> Tensor:
        """Orthogonally project ``x`` onto the space."""
        return x

    def noise(self, like: Tensor, state: State | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        """Standard Gaussian noise in the space's free coordinates, shaped like ``like``."""
        return self.project(_randn_like(like, generator), state)

    def sq_norm(self, x: Tensor, state: State | None = None) -> Tensor:
        """Squared norm per batch element in free coordinates, shape ``(B,)``."""
        return _batch_sum(self.project(x, state) ** 2)

    def dim(self, x: Tensor, state: State | None = None) -> Tensor:
        """Number of free dimensions per batch element, shape ``(B,)``."""
        n = x[0].numel()
        return torch.full((x.shape[0],), float(n), device=x.device, dtype=x.dtype)

    def mean(self, x: Tensor, state: State | None = None) -> Tensor:
        """Mean over free dimensions per batch element (used for ``reduction='mean'``)."""
        return self.sq_norm(x, state) / self.dim(x, state).clamp_min(1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Plain(Space):
    """R^d with no constraint."""


def _node_mask(state: State | None, key: str | None, x: Tensor) -> Tensor | None:
    if key is None or state is None or key not in state:
        return None
    return state[key].to(dtype=x.dtype, device=x.device)


def _expand_mask(mask: Tensor, x: Tensor, node_dim: int) -> Tensor:
    """Reshape a ``(B, N)`` mask so it broadcasts against ``x`` along ``node_dim``."""
    shape = [1] * x.dim()
    shape[0] = mask.shape[0]
    shape[node_dim] = mask.shape[1]
    return mask.reshape(shape)


class NodeMasked(Space):
    """Per-node tensors ``(B, N, ...)`` that are zero on padded nodes.

    Args:
        mask_key: state key holding the ``(B, N)`` node mask (1 = real node).
        node_dim: dimension of ``x`` indexing nodes.
    """

    def __init__(self, mask_key: str = "mask", node_dim: int = 1) -> None:
        self.mask_key = mask_key
        self.node_dim = node_dim

    def _mask(self, x: Tensor, state: State | None) -> Tensor | None:
        mask = _node_mask(state, self.mask_key, x)
        return None if mask is None else _expand_mask(mask, x, self.node_dim)

    def project(self, x: Tensor, state: State | None = None) -> Tensor:
        mask = self._mask(x, state)
        return x if mask is None else x * mask

    def dim(self, x: Tensor, state: State | None = None) -> Tensor:
        mask = self._mask(x, state)
        if mask is None:
            return super().dim(x, state)
        return _batch_sum(torch.ones_like(x) * mask)

    def __repr__(self) -> str:
        return f"NodeMasked(mask_key={self.mask_key!r}, node_dim={self.node_dim})"


class SymmetricAdjacency(Space):
    """Symmetric ``(B, N, N)`` matrices with an empty diagonal and masked rows and columns.

    Noise is drawn on the strict upper triangle and mirrored (as GDSS does), so each edge has one
    standard-normal free coordinate; norms and dimensions count the upper triangle only.

    Args:
        mask_key: state key holding the ``(B, N)`` node mask.
    """

    def __init__(self, mask_key: str = "mask") -> None:
        self.mask_key = mask_key

    def _mask(self, x: Tensor, state: State | None) -> Tensor:
        n = x.shape[-1]
        off_diag = 1.0 - torch.eye(n, device=x.device, dtype=x.dtype)
        mask = _node_mask(state, self.mask_key, x)
        if mask is None:
            return off_diag.expand_as(x)
        return mask[:, :, None] * mask[:, None, :] * off_diag

    def project(self, x: Tensor, state: State | None = None) -> Tensor:
        return 0.5 * (x + x.transpose(-1, -2)) * self._mask(x, state)

    def noise(self, like: Tensor, state: State | None = None,
              generator: torch.Generator | None = None) -> Tensor:
        z = torch.triu(_randn_like(like, generator), diagonal=1)
        return (z + z.transpose(-1, -2)) * self._mask(like, state)

    def sq_norm(self, x: Tensor, state: State | None = None) -> Tensor:
        return 0.5 * _batch_sum(self.project(x, state) ** 2)

    def dim(self, x: Tensor, state: State | None = None) -> Tensor:
        return 0.5 * _batch_sum(self._mask(x, state))

    def __repr__(self) -> str:
        return f"SymmetricAdjacency(mask_key={self.mask_key!r})"


class ZeroCoM(Space):
    """Coordinates whose centre of mass is zero (translation-invariant diffusion).

    ``x`` has the spatial dimension last, e.g. ``(B, N, 3)`` or ``(B, N, T, 3)``. The centre of
    mass is taken over ``com_dims`` (nodes, or nodes and frames) counting only real nodes.

    Args:
        mask_key: state key of the ``(B, N)`` node mask (absent: all nodes real).
        node_dim: dimension of ``x`` indexing nodes.
        com_dims: dimensions averaged to form the centre of mass.
    """

    def __init__(self, mask_key: str = "mask", node_dim: int = 1,
                 com_dims: Sequence[int] = (1,)) -> None:
        self.mask_key = mask_key
        self.node_dim = node_dim
        self.com_dims = tuple(com_dims)

    def _mask(self, x: Tensor, state: State | None) -> Tensor:
        mask = _node_mask(state, self.mask_key, x)
        if mask is None:
            return torch.ones_like(x[..., :1])
        return _expand_mask(mask, x[..., :1], self.node_dim)

    def project(self, x: Tensor, state: State | None = None) -> Tensor:
        mask = self._mask(x, state)
        x = x * mask
        count = (mask * torch.ones_like(x[..., :1])).sum(dim=self.com_dims, keepdim=True)
        com = x.sum(dim=self.com_dims, keepdim=True) / count.clamp_min(1.0)
        return (x - com) * mask

    def dim(self, x: Tensor, state: State | None = None) -> Tensor:
        mask = self._mask(x, state) * torch.ones_like(x)
        total = _batch_sum(mask)
        # one spatial vector of constraints per group over which the centre is taken
        groups = x[..., 0]
        for d in sorted(self.com_dims, reverse=True):
            groups = groups.select(d, 0)
        return total - x.shape[-1] * groups[0].numel()

    def __repr__(self) -> str:
        return f"ZeroCoM(mask_key={self.mask_key!r}, node_dim={self.node_dim}, " \
               f"com_dims={self.com_dims})"
