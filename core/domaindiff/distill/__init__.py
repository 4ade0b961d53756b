"""Few-step students distilled from any DiffusionModule.

Methods (each written once, on structured states: noise is drawn, predictions projected and errors
measured in each component's space, and the batch's pass-through entries -- masks, conditions --
reach teacher and student unchanged):

- ``progressive``: progressive distillation (Salimans & Ho 2022): rounds that halve the number of
  deterministic (DDIM) steps, the student of one round being the teacher of the next;
- ``consistency``: consistency distillation (Song et al. 2023), one teacher DDIM step per pair of
  adjacent grid times;
- ``consistency-training``: consistency training (Song et al. 2023), no teacher evaluations;
- ``reflow``: rectified-flow reflow / 2-rectified flow (Liu et al. 2022): the student regresses the
  teacher's deterministic noise-to-data coupling;
- ``reflow-stochastic``: reflow on the teacher's *stochastic* sampler's coupling (a rectified flow
  keeps any coupling's marginal), then straightened by a deterministic reflow of that flow
  (:mod:`domaindiff.distill.stochastic`).

The student is an ordinary checkpoint of the teacher's class (:func:`~domaindiff.distill.lightning.
write_student`) that samples with the ``distilled`` sampler (progressive, reflow) or the
``consistency`` sampler on the grid of :func:`~domaindiff.distill.sampling.distilled_times`.
``domaindiff distill`` (:mod:`domaindiff.distill.command`) runs a distillation with Lightning.

This package's ``__init__`` imports nothing heavy (the samplers registry imports
:mod:`domaindiff.distill.sampling`).
"""

METHODS = ("progressive", "consistency", "consistency-training", "reflow", "reflow-stochastic")

__all__ = ["METHODS"]
