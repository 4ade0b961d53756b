"""benchmarks/distill_graphs_grid.py: the few-step grids cut from a flow's grid, and their error.

The search scores each grid by its ``distilled`` ODE's distance to the flow's full-grid ODE from
the same draws: the full grid itself is at distance 0, coarser grids are not, and the grids are
the subsets of the flow's times that start at ``T``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from domaindiff_graphs import GraphDiffusion

ROOT = Path(__file__).resolve().parents[2]


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(
        "distill_graphs_grid", ROOT / "benchmarks" / "distill_graphs_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_subset_grids_are_every_subset_from_zero():
    grids = _script().subset_grids(16, 4)
    assert len(grids) == math.comb(15, 3) == len(set(grids))
    assert all(g[0] == 0 and list(g) == sorted(set(g)) and g[-1] < 16 for g in grids)
    assert (0, 4, 8, 12) in grids and (0, 13, 14, 15) in grids
    assert _script().subset_grids(4, 1) == [(0,)]
    with pytest.raises(ValueError, match="steps must be in"):
        _script().subset_grids(4, 5)


def test_grid_times_ends_at_zero():
    fine = [1.0, 0.75, 0.5, 0.25, 0.0]
    assert _script().grid_times(fine, (0, 2, 3)) == [1.0, 0.5, 0.25, 0.0]


def test_the_full_grid_has_no_error_and_coarser_grids_do():
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=4, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    model.set_node_counts([3, 5, 8, 6])
    bench = _script()
    err = bench.ode_errors(model, 4, [(0, 1, 2, 3), (0, 2), (0, 1, 3)], 6, 0)
    assert err[0] == 0.0
    assert err[1] > 0 and err[2] > 0
    assert bench.ode_errors(model, 4, [(0, 2)], 6, 0) == [err[1]]  # same draws, same error


@pytest.mark.parametrize("args, message", [
    (["--steps", "17"], "must be in [1, --flow-steps 16]"),
    (["--grid", "0", "8", "12"], "need 4 increasing indices"),
    (["--grid", "2", "8", "12", "14"], "need 4 increasing indices"),
    ([], "no such checkpoint"),
])
def test_main_refuses(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        _script().main(["--gdss-dir", str(tmp_path), "--flow", str(tmp_path / "f.ckpt"),
                        "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json"), *args])
    assert message in capsys.readouterr().err
