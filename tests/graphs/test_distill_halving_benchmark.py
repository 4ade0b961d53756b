"""benchmarks/distill_graphs_halving.py: one halving round on a tiny graph model, and its refusals.

The round is the real ``domaindiff distill --method reflow-stochastic`` command line with the
method rebuilt as ``straighten=False`` on the teacher's ``distilled`` ODE: the student it writes
has half the teacher's steps on its own grid, and its coupling's teacher sampler is ``distilled``.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch

from domaindiff_graphs import GraphDiffusion

ROOT = Path(__file__).resolve().parents[2]


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "distill_graphs_halving", ROOT / "benchmarks" / "distill_graphs_halving.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _teacher(path: Path) -> Path:
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def test_one_round_writes_a_half_step_student_on_the_distilled_coupling(tmp_path):
    bench = _script()
    pkl = tmp_path / "g.pkl"
    rng = torch.Generator().manual_seed(0)
    graphs = [nx.cycle_graph(int(n)) for n in torch.randint(3, 8, (12,), generator=rng)]
    pkl.write_bytes(pickle.dumps(graphs))
    data = ["--data", "domaindiff_graphs.GraphFile", "--data.path", str(pkl),
            "--data.max_nodes=8", "--data.batch_size=4"]
    out = bench.halve(data, _teacher(tmp_path / "t.ckpt"), tmp_path / "w", 4, 2, 2e-4, 1)
    assert out["method"]["student_steps"] == 2
    assert out["method"]["teacher_sampler"] == "distilled"
    assert out["method"]["teacher_steps"] == 4 and out["method"]["straighten"] is False
    (label, (steps, path, step)), = out["students"].items()
    assert (label, steps, step) == ("halved2@2", 2, 2)
    meta = torch.load(path, weights_only=True)["domaindiff"]["distilled"]
    assert meta["student_steps"] == 2 and len(meta["times"]) == 3


def test_odd_teacher_steps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="teacher_steps must be even"):
        _script().halve([], tmp_path / "t.ckpt", tmp_path, 3, 1, 1e-4, 1)


@pytest.mark.parametrize("args, message", [
    (["--flow-steps", "12", "--final-steps", "8"], "does not halve to --final-steps 8"),
    (["--flow-steps", "16", "--final-steps", "3"], "does not halve to --final-steps 3"),
])
def test_main_refuses_steps_that_do_not_halve(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        _script().main(["--gdss-dir", str(tmp_path), "--flow", str(tmp_path / "f.ckpt"),
                        "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), *args])
    assert message in capsys.readouterr().err


def test_main_refuses_a_missing_flow(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main(["--gdss-dir", str(tmp_path), "--flow", str(tmp_path / "f.ckpt"),
                        "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json")])
    assert "no such checkpoint" in capsys.readouterr().err


def _graphs(tmp_path: Path) -> list[str]:
    pkl = tmp_path / "g.pkl"
    rng = torch.Generator().manual_seed(0)
    graphs = [nx.cycle_graph(int(n)) for n in torch.randint(3, 8, (12,), generator=rng)]
    pkl.write_bytes(pickle.dumps(graphs))
    return ["--data", "domaindiff_graphs.GraphFile", "--data.path", str(pkl),
            "--data.max_nodes=8", "--data.batch_size=4"]


def test_a_jump_on_its_own_grid_with_a_pool_trains_at_the_grid_times(tmp_path):
    bench = _script()
    out = bench.halve(_graphs(tmp_path), _teacher(tmp_path / "t.ckpt"), tmp_path / "w", 6, 3,
                      2e-4, 1, student_steps=2, pool=8, grid=[1.0, 0.25, 0.0])
    assert out["method"]["student_steps"] == 2 and out["method"]["teacher_steps"] == 6
    assert out["method"]["pool"] == 8 and out["method"]["straighten"] is False
    (label, (steps, path, step)), = out["students"].items()
    assert (label, steps, step) == ("jump2@3", 2, 3)
    meta = torch.load(path, weights_only=True)["domaindiff"]["distilled"]
    assert meta["times"] == [1.0, 0.25, 0.0]


def test_grid_reflow_draws_its_training_times_from_the_grid():
    from domaindiff.distill.base import pick

    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    method = _script().grid_reflow(model.processes, 2, 4, 5, grid=[1.0, 0.3, 0.0])
    assert method.student_times() == [1.0, 0.3, 0.0]
    assert method.flow_grid == [1.0, 0.3, 0.0]
    ref = torch.zeros(64)
    j = method.batch_index(64, len(method.flow_grid) - 1, ref, torch.Generator().manual_seed(0))
    vals = pick(method.flow_grid, j, ref).tolist()
    assert all(min(abs(v - 1.0), abs(v - 0.3)) < 1e-6 for v in vals)
    assert any(abs(v - 0.3) < 1e-6 for v in vals) and any(abs(v - 1.0) < 1e-6 for v in vals)


@pytest.mark.parametrize("grid, message", [
    ([1.0, 0.5, 0.25, 0.0], "does not match timesteps"),
    ([0.9, 0.5, 0.0], "from T=1.0 to 0"),
    ([1.0, 0.5, 0.1], "from T=1.0 to 0"),
    ([1.0, 1.2, 0.0], "strictly decreasing"),
])
def test_grid_reflow_refuses_a_bad_grid(grid, message):
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    with pytest.raises(ValueError, match=message):
        _script().grid_reflow(model.processes, 2, 4, 5, grid=grid)


def test_a_student_not_below_its_teacher_is_refused(tmp_path):
    with pytest.raises(ValueError, match="student_steps must be in"):
        _script().halve([], tmp_path / "t.ckpt", tmp_path, 4, 1, 1e-4, 1, student_steps=4)


@pytest.mark.parametrize("args, message", [
    (["--grid-index", "0", "8", "12", "14"], "--grid-index needs --jump"),
    (["--jump", "--grid-index", "0", "8", "12"], "need 4 increasing indices"),
    (["--jump", "--grid-index", "1", "8", "12", "14"], "need 4 increasing indices"),
    (["--jump", "--grid-index", "0", "8", "8", "14"], "need 4 increasing indices"),
    (["--jump", "--grid-index", "0", "8", "12", "16"], "need 4 increasing indices"),
    (["--jump", "--final-steps", "16"], "must be below --flow-steps 16"),
])
def test_main_refuses_bad_jump_options(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        _script().main(["--gdss-dir", str(tmp_path), "--flow", str(tmp_path / "f.ckpt"),
                        "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), *args])
    assert message in capsys.readouterr().err


def test_trajectory_distill_targets_land_on_the_teachers_trajectory(tmp_path):
    """At its initial weights (the teacher's) the student's steps on the teacher's own grid
    already land on the teacher's next states: loss 0; a coarser grid's steps do not."""
    bench = _script()
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    model.set_node_counts([3, 5, 8, 6])
    batch = model.sample_template(6, generator=torch.Generator().manual_seed(1))
    den = model.denoiser(False)
    same = bench.TrajectoryDistill(model.processes, [0, 1, 2, 3], 4, 5)
    loss = same.loss(den, den, batch, torch.Generator().manual_seed(2), 0)
    assert float(loss) < 1e-8
    coarse = bench.TrajectoryDistill(model.processes, [0, 2], 4, 5)
    assert coarse.times == [1.0, pytest.approx(0.5, abs=1e-4), 0.0]
    assert float(coarse.loss(den, den, batch, torch.Generator().manual_seed(2), 0)) > 1e-6


def test_trajectory_pool_fills_then_reuses_its_states():
    bench = _script()
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    model.set_node_counts([3, 5, 8, 6])
    den = model.denoiser(False)
    method = bench.TrajectoryDistill(model.processes, [0, 2], 4, 5, pool=8)
    for seed in range(3):
        batch = model.sample_template(6, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(method.loss(den, den, batch, torch.Generator().manual_seed(seed),
                                          seed))
    assert all(len(v) == 8 for v in method.kept.values())
    assert {"x#0", "x#1", "x#2", "adj#0", "adj#2", "mask"} <= set(method.kept)


@pytest.mark.parametrize("index", [[1, 2], [0, 2, 2], [0, 4], []])
def test_trajectory_distill_refuses_a_bad_index(index):
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    with pytest.raises(ValueError, match="index must be increasing"):
        _script().TrajectoryDistill(model.processes, index, 4, 5)


def test_a_trajectory_jump_writes_a_student_on_its_grid(tmp_path):
    out = _script().halve(_graphs(tmp_path), _teacher(tmp_path / "t.ckpt"), tmp_path / "w", 6, 3,
                          2e-4, 1, student_steps=2, pool=8, grid=None, trajectory=True)
    assert out["method"]["method_variant"] == "trajectory"
    assert out["method"]["grid_index"] == [0, 3] and out["method"]["pool"] == 8
    (label, (steps, path, step)), = out["students"].items()
    assert (label, steps, step) == ("jump2@3", 2, 3)
