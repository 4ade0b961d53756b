"""The names the uniform sampler signature is written in.

    sample_<name>(denoiser: Denoiser, process: Processes, shape_or_x_T: Start, steps, *,
                  guidance=None, callback: Callback | None = None, ...,
                  timesteps: Timesteps | None = None, **options) -> Sample

Every sampler module imports them from here in one line; :mod:`domaindiff.samplers.base` (what
the samplers share) re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from domaindiff.processes import GaussianProcess

#: a sampling state: named components (diffused ones and pass-through ones such as a node mask)
State = dict[str, Tensor]
#: ``denoiser(state, t) -> predictions`` (its ``parametrization`` says of what)
Denoiser = Callable[[State, Tensor], Any]
#: called after every step with ``{"i", "t", "x", "denoised", "nfe"}``
Callback = Callable[[dict[str, Any]], None]
#: a sampler's ``process`` argument: one process, or one per diffused key
Processes = GaussianProcess | Mapping[str, GaussianProcess]
#: a sampler's ``shape_or_x_T`` argument
Start = Sequence[int] | Tensor | Mapping[str, Tensor]
#: what a sampler returns: a tensor for a tensor/shape input with one process, else a state
Sample = Tensor | State
#: what a sampler's ``timesteps`` option accepts: a 1-D decreasing sequence of times
Timesteps = Sequence[float] | Tensor

__all__ = ["Callback", "Denoiser", "Processes", "Sample", "Start", "State", "Timesteps"]
