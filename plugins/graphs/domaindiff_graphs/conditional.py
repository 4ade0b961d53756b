"""Conditional generation by inpainting: complete a scaffold, generate graphs of a given size.

The scaffold (a fixed subgraph, or a fixed set of atoms and bonds) occupies the first ``k`` nodes;
its node features and all adjacency entries among its nodes (edges and non-edges) are known and
replaced after every step by the forward-noised observation, exactly at the end (core
:class:`~domaindiff.guidance.Inpainting`). Everything touching the other nodes is generated.
Works with every sampler, S4 included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from domaindiff.guidance import Inpainting


def scaffold_guidance(x: Tensor, adj: Tensor, template: dict[str, Tensor]) -> Inpainting:
    """Inpainting that fixes a ``k``-node scaffold (``x`` (k, F), ``adj`` (k, k)) in every graph.

    Raises:
        ValueError: the scaffold does not fit the template's sizes or feature width.
    """
    b, n, f = template["x"].shape
    k = adj.shape[0]
    if adj.shape != (k, k) or x.shape != (k, f):
        raise ValueError(f"scaffold: need x (k, {f}) and adj (k, k); got {tuple(x.shape)}, "
                         f"{tuple(adj.shape)}")
    sizes = template["mask"].sum(-1)
    if (sizes < k).any():
        raise ValueError(f"scaffold has {k} nodes but a requested graph has {int(sizes.min())}")
    obs_x = torch.zeros_like(template["x"])
    obs_x[:, :k] = x.to(obs_x)
    obs_a = torch.zeros_like(template["adj"])
    obs_a[:, :k, :k] = adj.to(obs_a)
    known_x = torch.zeros_like(obs_x)
    known_x[:, :k] = 1.0
    known_a = torch.zeros_like(obs_a)
    known_a[:, :k, :k] = 1.0
    return Inpainting({"x": obs_x, "adj": obs_a}, {"x": known_x, "adj": known_a})


def complete_scaffold(model, x: Tensor, adj: Tensor, sizes: Sequence[int], *,
                      sampler: str | None = None, steps: int | None = None,
                      generator: torch.Generator | None = None, **options) -> dict[str, Tensor]:
    """Sample graphs of the requested ``sizes`` that contain the given scaffold on nodes ``0..k-1``.

    Args:
        model: a trained :class:`~domaindiff_graphs.model.GraphDiffusion`.
        x: scaffold node features (k, F) (one-hot degree / atom type).
        adj: scaffold adjacency (k, k) (0/1 or bond orders).
        sizes: number of nodes of each generated graph (>= k).
        sampler: sampler name (default: the model's).
        steps: network evaluations.
        generator: random generator.
        **options: sampler options.
    """
    template = model.template_for_sizes(list(sizes))
    guidance = scaffold_guidance(x.to(model.device), adj.to(model.device), template)
    return model.sample(template=template, sampler=sampler, steps=steps, guidance=guidance,
                        generator=generator, **options)
