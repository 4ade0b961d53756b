"""Echo-DND's Bernoulli branch as a walked state for ``domaindiff distill`` (progressive).

:class:`EchoWalk` is what :meth:`EchoDND.distill_walk <domaindiff_medical.EchoDND.distill_walk>`
returns (the core's :class:`~domaindiff.distill.walk.Walk`): the Bernoulli mask under the state
key ``"bern"``, drawn at each training sample's own time from ``q(y_i | m)``
(:meth:`~domaindiff.processes.Bernoulli.q_sample`, with ``m = (x + 1) / 2`` from the Gaussian
branch's clean ``x = 2 m - 1``), and moved between the teacher's evaluations by the same kernel as
the sampler's :class:`~domaindiff_medical.model.BernoulliWalk`: the exact skip-step reverse
kernel ``p(y_j | y_i)`` (``posterior``) or its DDIM analogue (``ddim``), both affine in the
predicted ``P(m = 1)``. Times map to integer steps as the sampler's walk maps them
(``round(t N)``, clamped to ``1..N``; ``t = 0`` is the clean end, step 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from domaindiff.distill.walk import Walk
from domaindiff.processes import Bernoulli

#: the state key of the Bernoulli branch during distillation
BERN_KEY = "bern"


def walk_steps(t: Tensor, num_steps: int) -> Tensor:
    """Integer steps of per-sample times: ``round(t N)`` in ``1..N``, 0 where ``t = 0``.

    The rounding is :class:`~domaindiff_medical.model.BernoulliWalk`'s (``+ 1e-3`` absorbs float32
    times such as ``0.51 * 50 = 25.4999``).
    """
    i = torch.floor(t.to(torch.float64) * num_steps + 0.5 + 1e-3).long().clamp(1, num_steps)
    return torch.where(t == 0, torch.zeros_like(i), i)


class EchoWalk(Walk):
    """The Bernoulli branch of an Echo-DND teacher, for progressive distillation.

    Args:
        process: the model's Bernoulli process.
        kind: the Bernoulli walk, ``"posterior"`` or ``"ddim"`` (the model's ``bernoulli_sampler``).
        guidance: the teacher's prediction hook (:class:`~domaindiff_medical.model.ClipX0` when
            the model clips its clean estimate), as its sampler applies it.
    """

    keys = (BERN_KEY,)

    def __init__(self, process: Bernoulli, kind: str = "posterior", guidance: object = None
                 ) -> None:
        from .model import BERNOULLI_SAMPLERS

        if kind not in BERNOULLI_SAMPLERS:
            raise ValueError(f"bernoulli_sampler: unknown {kind!r}; expected one of "
                             f"{list(BERNOULLI_SAMPLERS)}")
        self.process, self.kind, self.teacher_guidance = process, kind, guidance

    def forward(self, state: dict[str, Tensor], t: Tensor,
                generator: torch.Generator | None) -> dict[str, Tensor]:
        m = (state["mask"] + 1) / 2
        return {BERN_KEY: self.process.q_sample(m, walk_steps(t, self.process.num_steps).to(m.device),
                                                generator=generator)}

    def transition(self, y: dict[str, Tensor], pred: dict[str, Tensor], t: Tensor,
                   s: Tensor) -> dict[str, Tensor]:
        from .model import bernoulli_ddim_prob

        x, p = y[BERN_KEY], pred[BERN_KEY]
        n = self.process.num_steps
        i, j = walk_steps(t, n).to(x.device), walk_steps(s, n).to(x.device)
        moves = (j < i).view(-1, *([1] * (x.dim() - 1)))
        ii = torch.where(j < i, i, torch.full_like(i, 1))  # same step: kept, any valid i > j
        jj = torch.where(j < i, j, torch.zeros_like(j))
        if self.kind == "posterior":
            prob = self.process.reverse_prob(x, p, ii, jj)
        else:
            abar = self.process.abar.to(x.device, x.dtype)
            shape = (-1, *([1] * (x.dim() - 1)))
            prob = bernoulli_ddim_prob(x, p, abar[ii].view(shape), abar[jj].view(shape))
        return {BERN_KEY: torch.where(moves, prob, x)}
