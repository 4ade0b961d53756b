"""Few-step TSDiff students from the core's distillation: they build, keep the condition, forecast.

The measured student rows are in the plugin README (``benchmarks/timeseries_distill.py``).
"""

from __future__ import annotations

import numpy as np
import torch

from domaindiff.distill.lightning import build_student
from domaindiff.distill.reflow import Reflow
from domaindiff_timeseries.data import make_window
from domaindiff_timeseries.forecast import forecast
from domaindiff_timeseries.model import TSDiff, TSDiffCond

C, H = 24, 6
TINY = {"dim": 1, "context_length": C, "prediction_length": H, "lags": [12], "hidden": 8,
        "num_blocks": 1, "emb_dim": 8, "d_state": 4, "num_steps": 10}


def _windows(n: int = 3) -> list[dict]:
    t = np.arange(60, dtype=np.float32)
    out = []
    for k in range(n):
        y = (10 + k + np.sin(2 * np.pi * t / 12))[:, None].astype(np.float32)
        out.append(make_window(y, len(y), C, H, 12))
    return out


def test_a_tsdiff_student_predicts_v_and_forecasts_in_its_steps():
    torch.manual_seed(0)
    teacher = TSDiff(**TINY)
    student = build_student(teacher, "v")
    assert type(student) is TSDiff and student.parametrization == "v"
    assert student.hparams["parametrization"] == "v" and teacher.parametrization == "eps"
    for n in (1, 4):
        stats: dict = {}
        s = forecast(student, _windows(), 4, sampler="distilled", steps=n, progress=False,
                     stats=stats)
        assert s.shape == (3, 4, H, 1) and np.isfinite(s).all()
        assert stats["nfe"] == n  # quantile guidance on the prediction: no extra evaluation


def test_reflow_passes_the_condition_of_tsdiff_cond_to_teacher_and_student():
    """The condition (context values and mask) reaches every network call unchanged."""
    torch.manual_seed(0)
    teacher = TSDiffCond(**TINY)
    student = build_student(teacher, "v")
    w = _windows(4)
    batch = {k: torch.as_tensor(np.stack([x[k] for x in w])) for k in ("x", "past", "observed")}
    state = student.batch_to_state(batch)
    conds = []

    def seen(module, args):
        conds.append(args[0]["cond"].clone())

    hooks = [m.network.register_forward_pre_hook(seen) for m in (teacher, student)]
    method = Reflow(teacher.processes, student_steps=1, teacher_steps=3, iterations=1)
    loss = method.loss(student.denoiser(use_ema=False), teacher.denoiser(use_ema=False), state,
                       torch.Generator().manual_seed(0), 0)
    for h in hooks:
        h.remove()
    assert torch.isfinite(loss)
    assert len(conds) == 3 + 1  # three teacher evaluations, one student evaluation
    for c in conds:
        torch.testing.assert_close(c, state["cond"])
    # the condition holds the context (horizon zeroed) and its mask
    assert bool((state["cond"][:, C:, 0] == 0).all()) and bool((state["cond"][:, :C, 1] == 1).all())
