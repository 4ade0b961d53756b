"""A fixed pool of couplings, drawn once and reused (rectified flow's classical training set).

Rectified flow (Liu et al. 2022) is trained on a fixed set of couplings -- a prior draw and the
teacher's sample from it -- drawn once and reused over many epochs. A method that draws a fresh
coupling at every optimizer step pays a whole teacher-sampler run per step; with a
:class:`CouplingPool` it pays ``ceil(N / B)`` of them and then trains as long as it likes:

1. *filling*: while fewer than ``size`` pairs are kept, each step draws its coupling as before
   (from its batch and its batch's generator) and :meth:`CouplingPool.keep` stores the batch's
   clean state -- every entry that is a tensor with the batch's leading size, so masks, node
   counts and conditions go with their pair -- beside ``start`` and ``x0``; the step that fills
   the pool trains on the part it keeps only, so every target is a pool pair;
2. *reuse*: every later step trains on ``B`` pairs :meth:`CouplingPool.draw` picks uniformly,
   with replacement, with the batch's generator (``B`` the batch's size; the batch's own data are
   not used beyond its non-batched entries).

The pool is plain tensors (:meth:`CouplingPool.state_dict`, on the CPU), stored in the resumable
state of the distillation (``last.ckpt``), so a resumed run repeats the uninterrupted one bitwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from domaindiff.samplers.base import State

#: the parts of one pair
PARTS = ("state", "start", "x0")


def _batched(d: Mapping[str, Any], b: int) -> list[str]:
    """The keys of ``d`` holding a tensor with leading size ``b``."""
    return [k for k, v in d.items() if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == b]


class CouplingPool:
    """Up to ``size`` coupling pairs ``(state, start, x0)``, kept in order and drawn uniformly.

    Args:
        size: the number of pairs to keep (a positive integer).
        components: the diffused components (the keys of ``start`` and ``x0``).

    Raises:
        ValueError: a bad ``size``.
    """

    def __init__(self, size: int, components: Iterable[str]) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"pool must be a positive integer, got {size!r}")
        self.size = size
        self.components = tuple(components)
        self.pairs: dict[str, dict[str, Tensor]] | None = None

    def __len__(self) -> int:
        if self.pairs is None:
            return 0
        return next(iter(self.pairs["x0"].values())).shape[0]

    @property
    def full(self) -> bool:
        """Whether ``size`` pairs are kept."""
        return len(self) >= self.size

    def keep(self, x: State, start: State, x0: State) -> tuple[State, State, State]:
        """Add a batch's pairs, up to ``size``; returns the kept part ``(x, start, x0)``.

        Raises:
            ValueError: the batch's batched entries or their per-sample shapes differ from the
                pool's (batches must be padded alike to share a pool), naming the entry.
        """
        b = next(iter(x0[k] for k in self.components)).shape[0]
        n = min(b, self.size - len(self))
        new = {"state": {k: x[k][:n].detach() for k in _batched(x, b)},
               "start": {k: start[k][:n].detach() for k in self.components},
               "x0": {k: x0[k][:n].detach() for k in self.components}}
        if self.pairs is None:
            self.pairs = new
        else:
            for part in PARTS:
                kept, tensors = self.pairs[part], new[part]
                if set(kept) != set(tensors):
                    raise ValueError(f"coupling pool: this batch's {part} has the batched entries "
                                     f"{sorted(tensors)}, the pool's {sorted(kept)}")
                for k, v in tensors.items():
                    if v.shape[1:] != kept[k].shape[1:]:
                        raise ValueError(f"coupling pool: {part} entry {k!r} has shape "
                                         f"{tuple(v.shape[1:])} per sample, the pool's "
                                         f"{tuple(kept[k].shape[1:])} (batches must be padded "
                                         "alike to share a pool)")
                    kept[k] = torch.cat([kept[k], v.to(kept[k].device)])
        sliced = {k: v[:n] if k in new["state"] else v for k, v in x.items()}
        return sliced, {**sliced, **new["start"]}, dict(new["x0"])

    def draw(self, x: State, index: Tensor) -> tuple[State, State, State]:
        """The pairs at ``index`` as ``(x, start, x0)`` on the device of ``x``'s components.

        Entries of ``x`` the pool does not hold (not batched) are kept.
        """
        if self.pairs is None:
            raise ValueError("coupling pool: drawn from before any pair was kept")
        dev = next(iter(x[k] for k in self.components)).device
        take = {part: {k: v.index_select(0, index.to(v.device)).to(dev)
                       for k, v in tensors.items()}
                for part, tensors in self.pairs.items()}
        state = {**x, **take["state"]}
        return state, {**state, **take["start"]}, take["x0"]

    def state_dict(self) -> dict[str, Any]:
        """The kept pairs on the CPU (empty before the first)."""
        if self.pairs is None:
            return {}
        return {part: {k: v.detach().cpu() for k, v in tensors.items()}
                for part, tensors in self.pairs.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s pairs.

        Raises:
            ValueError: missing parts, or more pairs than ``size``.
        """
        if not state:
            self.pairs = None
            return
        if set(state) != set(PARTS):
            raise ValueError(f"checkpoint: the coupling pool has the parts {sorted(state)}, "
                             f"expected {list(PARTS)}")
        self.pairs = {part: dict(state[part]) for part in PARTS}
        if len(self) > self.size:
            raise ValueError(f"checkpoint: its coupling pool holds {len(self)} pairs, more than "
                             f"this run's pool={self.size}")
