"""Few-step TSDiff students from the core's distillation: they build, keep the condition, forecast.

The measured student rows are in the plugin README (``benchmarks/timeseries_distill.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from domaindiff.distill.lightning import build_student
from domaindiff.distill.reflow import Reflow
from domaindiff_timeseries.data import make_window
from domaindiff_timeseries.forecast import forecast
from domaindiff_timeseries.model import TSDiff, TSDiffCond
from tests.catalogue import raised

C, H = 24, 6
TINY = {"dim": 1, "context_length": C, "prediction_length": H, "lags": [12], "hidden": 8,
        "num_blocks": 1, "emb_dim": 8, "d_state": 4, "num_steps": 10}




def tiny_distill_args(series: Path, root: Path) -> list[str]:
    """``domaindiff distill``'s data and trainer arguments for the tiny series, student in root."""
    return ["--data", "domaindiff_timeseries.TimeSeriesData", "--data.dataset=file",
            f"--data.path={series}", "--data.freq=h", "--data.context_length=24",
            "--data.prediction_length=8", "--data.lags=[8]", "--data.batch_size=4",
            "--data.batches_per_epoch=4", "--data.num_test_windows=2",
            "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={root}", "--out", str(root / "student.ckpt")]

def tiny_tsdiff_checkpoint(tmp_path: Path) -> Path:
    """A seeded, untrained 8-wide TSDiff saved as ``tmp_path/ts.ckpt``, and a sine series file.

    Returns:
        The series file (``tmp_path/series.jsonl``: one period-8 sine of 300 steps).
    """
    from domaindiff_timeseries.data import write_jsonl

    t = np.arange(300)
    series = tmp_path / "series.jsonl"
    write_jsonl([10 + np.sin(2 * math.pi * t / 8)], series)
    torch.manual_seed(0)
    model = TSDiff(dim=1, context_length=24, prediction_length=8, lags=[8], hidden=8,
                   num_blocks=1, emb_dim=16, d_state=4, num_steps=10)
    raw = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(raw)
    torch.save(raw, tmp_path / "ts.ckpt")
    return series

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


# --- the guided coupling: TSDiff-Q's guided sampler into a TSDiff-Cond student ---------------

def _perturbed_teacher(seed: int = 0) -> TSDiff:
    """A tiny TSDiff whose network is not the zero-initialised head (predictions vary)."""
    torch.manual_seed(seed)
    teacher = TSDiff(**TINY)
    with torch.no_grad():
        for p in teacher.network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    teacher.ema_network.module.load_state_dict(teacher.network.state_dict())
    return teacher


def _cond_state(student: TSDiffCond, n: int = 4) -> dict:
    w = _windows(n)
    batch = {k: torch.as_tensor(np.stack([x[k] for x in w])) for k in ("x", "past", "observed")}
    return student.batch_to_state(batch)


def test_a_tsdiff_cond_student_starts_as_the_unconditional_teacher():
    """--student-class TSDiffCond: every weight is the teacher's, the condition's input columns
    start at zero, so the student's first prediction is the teacher's (with the condition in the
    state); its EMA copy too."""
    teacher = _perturbed_teacher()
    student = build_student(teacher, "v", TSDiffCond)
    assert type(student) is TSDiffCond and student.parametrization == "v"
    state = _cond_state(student)
    t = torch.full((4,), 0.4)
    with torch.no_grad():
        ref = teacher.denoiser()(state, t)["x"]  # eps
        for use_ema in (False, True):
            eps = build_student(teacher, None, TSDiffCond).denoiser(use_ema)(state, t)["x"]
            torch.testing.assert_close(eps, ref)
    net = student.network
    at = net.dim * (1 + len(net.lags)) * 2  # values, lags, their observed masks
    assert bool((net.inp.weight[:, at: at + 2] == 0).all())
    cond = TSDiffCond(**TINY)  # a conditional network's weights load as they are
    build_student(cond, None, TSDiffCond)
    other = TSDiff(**{**TINY, "hidden": 6}).network.state_dict()
    msg = raised(ValueError, lambda: student.load_teacher_network(other))
    assert msg == "weight 'inp.weight': the teacher's is (6, 4), this network's (8, 6)", msg


def _by_hand(guided, state: dict, seed: int, levels: int):
    """The guided coupling's draws redone by hand, in its order: the generator after them, the
    prior draw and the quantile energy at each window's drawn level on its own context."""
    from domaindiff_timeseries.forecast import guidance_energy, quantile_levels

    gen = torch.Generator().manual_seed(seed)
    start = guided.start(state, gen)
    n = state["x"].shape[0]
    q = quantile_levels(levels)[torch.randint(levels, (n,), generator=gen)]
    mask = torch.zeros_like(state["x"])
    mask[:, :C] = 1.0
    return gen, start, guidance_energy(state["x"] * mask, mask, "quantile", q)


def _context_error(sample: dict, state: dict) -> float:
    return float((sample["x"][:, :C] - state["x"][:, :C]).abs().mean())


def test_the_guided_coupling_is_the_teachers_guided_ddpm_forecast():
    """Round 1's coupling is the teacher's DDPM with TSDiff's self-guidance on each window's own
    context: exactly ``sample_ancestral`` with ``DDPMSelfGuidance`` (quantile energy at the level
    drawn from forecast's grid) from the same prior draw and noise; it differs from the unguided
    coupling and sits much closer to the observed context."""
    from domaindiff.distill.stochastic import StochasticReflow
    from domaindiff.samplers import get_sampler
    from domaindiff_timeseries.forecast import DDPMSelfGuidance

    teacher = _perturbed_teacher(1)
    student = build_student(teacher, "v", TSDiffCond)
    state = _cond_state(student, 6)
    den = teacher.denoiser()
    factory = teacher.distill_guidance(kind="quantile", scale=4.0, levels=16)
    guided = StochasticReflow(teacher.processes, 4, 10, 2, teacher_guidance=factory)
    plain = StochasticReflow(teacher.processes, 4, 10, 2)
    start, x0 = guided.coupling(den, state, torch.Generator().manual_seed(7), 0)

    gen, start2, energy = _by_hand(guided, state, 7, 16)  # the same draws in the same order
    guide = DDPMSelfGuidance(den, teacher.processes["x"], energy, 4.0)
    ref = get_sampler("ancestral")(den, teacher.processes, start2, 10, prior=False,
                                   generator=gen, guidance=guide)
    torch.testing.assert_close(start["x"], start2["x"])
    torch.testing.assert_close(x0["x"], ref["x"])

    _, free = plain.coupling(den, state, torch.Generator().manual_seed(7), 0)
    err = _context_error(x0, state), _context_error(free, state)
    assert err[0] < 0.7 * err[1], err
    assert guided.describe()["guided_coupling"] and not plain.describe()["guided_coupling"]
    loss = guided.loss(student.denoiser(use_ema=False), den, state,
                       torch.Generator().manual_seed(0), 0)
    assert torch.isfinite(loss)


def test_the_prediction_rule_coupling_is_the_fast_guided_forecast():
    """With ``rule="prediction"`` the coupling is the fast guided teacher row's sampler:
    ``sde_dpm_solver_pp_2m`` with :class:`PredictionSelfGuidance` (network gradient, scale 32,
    4 guidance steps on the prediction per evaluation) from the same prior draw and noise; the
    guidance pulls the context towards the observation."""
    from domaindiff.distill.stochastic import StochasticReflow
    from domaindiff.samplers import get_sampler
    from domaindiff_timeseries.forecast import PredictionSelfGuidance

    teacher = _perturbed_teacher(2)
    student = build_student(teacher, "v", TSDiffCond)
    state = _cond_state(student, 5)
    den = teacher.denoiser()
    factory = teacher.distill_guidance(kind="quantile", scale=32.0, levels=8, rule="prediction",
                                       x0_steps=4)
    guided = StochasticReflow(teacher.processes, 4, 6, 2, teacher_sampler="sde_dpm_solver_pp_2m",
                              teacher_guidance=factory)
    plain = StochasticReflow(teacher.processes, 4, 6, 2, teacher_sampler="sde_dpm_solver_pp_2m")
    start, x0 = guided.coupling(den, state, torch.Generator().manual_seed(3), 0)

    gen, start2, energy = _by_hand(guided, state, 3, 8)
    guide = PredictionSelfGuidance(energy, 32.0, x0_steps=4)
    ref = get_sampler("sde_dpm_solver_pp_2m")(den, teacher.processes, start2, 6, prior=False,
                                              generator=gen, guidance=guide)
    torch.testing.assert_close(start["x"], start2["x"])
    torch.testing.assert_close(x0["x"], ref["x"])
    _, free = plain.coupling(den, state, torch.Generator().manual_seed(3), 0)
    err = _context_error(x0, state), _context_error(free, state)
    assert err[0] < 0.7 * err[1], err


def test_bad_guided_coupling_settings_are_refused_by_name():
    from domaindiff.distill.reflow import make_method

    teacher = TSDiff(**TINY)
    for opts, expected in (({"kind": "max"}, "teacher_guidance.kind"),
                           ({"rule": "dpm"}, "teacher_guidance.rule"),
                           ({"levels": 0}, "teacher_guidance.levels"),
                           ({"scale": 0}, "teacher_guidance.scale"),
                           ({"x0_steps": 2}, "x0_steps / gradient apply to rule='prediction'")):
        assert expected in raised(ValueError, lambda o=opts: teacher.distill_guidance(**o))
    msg = raised(ValueError, lambda: make_method("reflow", teacher.processes, 1,
                                                 teacher_guidance=teacher.distill_guidance()))
    assert "teacher_guidance (a guided coupling) applies to reflow-stochastic only" in msg


def test_the_guided_student_from_the_cli_resumes_forecasts_in_4_steps_and_evaluates(tmp_path):
    """`domaindiff distill --method reflow-stochastic --teacher-guidance {...} --student-class
    TSDiffCond` on a TSDiff checkpoint writes a TSDiff-Cond student (both rounds; the round-2
    teacher is the promoted student, of the student's class, also after a resume inside round 2:
    the resumed run equals the uninterrupted one bitwise) that `domaindiff eval timeseries ...
    steps=4` uses."""
    import json
    import math

    from domaindiff.checkpoint import load_checkpoint
    from tests.catalogue import run_cli

    series = tiny_tsdiff_checkpoint(tmp_path)

    def distill(root, *extra: str) -> None:
        root.mkdir(exist_ok=True)
        res = run_cli(["distill", "--ckpt", str(tmp_path / "ts.ckpt"), "--method",
                       "reflow-stochastic", "--teacher-sampler", "ancestral",
                       "--teacher-steps", "10",
                       "--teacher-guidance={kind: quantile, scale: 4, levels: 4}",
                       "--student-class", "TSDiffCond", "--student-steps", "4",
                       "--iterations", "2", "--student-parametrization", "v",
                       *tiny_distill_args(series, root),
                       *extra], cwd=root)
        assert res.returncode == 0, res.stderr[-3000:]

    full, run = tmp_path / "full", tmp_path / "run"
    distill(full)
    distill(run, "--trainer.max_steps=3")  # stopped inside round 2
    distill(run, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    out = full / "student.ckpt"
    a = torch.load(out, weights_only=True)
    b = torch.load(run / "student.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    student = load_checkpoint(out)
    assert type(student) is TSDiffCond and student.default_sampler == "distilled"
    meta = a["domaindiff"]["distilled"]
    assert meta["guided_coupling"] and meta["rounds"] == 2 and meta["iterations"] == 4
    res = run_cli(["eval", "timeseries", f"ckpt={out}", f"cond_ckpt={out}", "dataset=file",
                   f"path={series}", "freq=h", "num_test_windows=2", "sampler=distilled",
                   "steps=4", "num_samples=3", "methods=[tsdiff_cond]",
                   f"out_dir={tmp_path / 'ev'}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    written = json.loads((tmp_path / "ev" / "metrics_distilled_4.json").read_text())
    row = written["forecasting"]["tsdiff_cond"]
    assert written["steps"] == 4 and row["nfe"] == 4 and math.isfinite(row["CRPS"])
