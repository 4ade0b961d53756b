"""The guided coupling on a coupling pool (``--coupling-pool``, ``--straighten-iterations``).

``benchmarks/timeseries_distill.py --guided-coupling --pool N --straighten-iterations M`` passes
both to ``domaindiff distill``; the measured rows are in the plugin README.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from tests.timeseries.test_distill import tiny_distill_args, tiny_tsdiff_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("timeseries_distill_bench",
                                                  ROOT / "benchmarks" / "timeseries_distill.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_benchmark_passes_pool_and_straightening_length_to_distill():
    ns = argparse.Namespace(teacher_sampler="ancestral", teacher_steps=100, batch_size=16,
                            pool=1200, straighten_iterations=800)
    flags = _bench().distill_flags(ns)
    assert flags[flags.index("--coupling-pool") + 1] == "1200"
    assert flags[flags.index("--straighten-iterations") + 1] == "800"
    assert "--data.init_args.batch_size=16" in flags
    none = _bench().distill_flags(argparse.Namespace(teacher_sampler=None, teacher_steps=None,
                                                     batch_size=None, pool=None,
                                                     straighten_iterations=None))
    assert none == []


def test_a_pooled_guided_coupling_keeps_each_pairs_context_and_round_lengths(tmp_path):
    """A guided coupling on a pool of 8 (batches of 4: two guided teacher runs), 5 round-1 steps
    and 2 straightening steps: the student records both lengths and the pool; the pool keeps the
    TSDiff-Cond condition of each pair (the context it was forecast from), and its guided ``x0``
    lies closer to that context than the prior draw does."""
    from tests.catalogue import run_cli

    series = tiny_tsdiff_checkpoint(tmp_path)
    root = tmp_path / "run"
    root.mkdir()
    res = run_cli(["distill", "--ckpt", str(tmp_path / "ts.ckpt"), "--method",
                   "reflow-stochastic", "--teacher-sampler", "ancestral", "--teacher-steps", "10",
                   "--teacher-guidance={kind: quantile, scale: 4, levels: 4}",
                   "--student-class", "TSDiffCond", "--student-steps", "4",
                   "--iterations", "5", "--coupling-pool", "8", "--straighten-iterations", "2",
                   "--student-parametrization", "v",
                   *tiny_distill_args(series, root)],
                  cwd=root)
    assert res.returncode == 0, res.stderr[-3000:]
    student = torch.load(root / "student.ckpt", weights_only=True)
    meta = student["domaindiff"]["distilled"]
    assert meta["guided_coupling"] and meta["pool"] == 8
    assert meta["flow_iterations"] == 5 and meta["straighten_iterations"] == 2
    assert student["global_step"] == 7
    last = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    pool = last["distillation"]["method_state"]["pool"]
    x, cond = pool["state"]["x"], pool["state"]["cond"]
    assert x.shape[0] == cond.shape[0] == pool["x0"]["x"].shape[0] == 8
    c = 24
    # each pair's condition is its own window's context (and mask): it went with its pair
    assert torch.equal(cond[:, :c, :1], x[:, :c]) and torch.all(cond[:, c:] == 0)
    assert torch.all(cond[:, :c, 1:] == 1)
    # the kept x0 is the guided forecast of that context: nearer to it than the prior draw
    # (both in the model's scaled space)
    near = (pool["x0"]["x"][:, :c] - x[:, :c]).abs().mean()
    far = (pool["start"]["x"][:, :c] - x[:, :c]).abs().mean()
    assert near < far
