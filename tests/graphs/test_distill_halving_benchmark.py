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
