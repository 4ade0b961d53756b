"""benchmarks/graphs_gdss_released.py: a killed run resumes from its batch cache draw for draw.

The grid's stored sampler runs for hours on a CPU; ``--batch-cache DIR`` keeps every finished
batch (its graphs and the generator's state after it), so a rerun continues where the killed one
stopped and samples exactly the graphs the uninterrupted run samples.
"""

from __future__ import annotations

import importlib.util
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
        "graphs_gdss_released", ROOT / "benchmarks" / "graphs_gdss_released.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Killed(RuntimeError):
    pass


def _model() -> GraphDiffusion:
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=8, max_feat=10, sampling_steps=3, depth=1, nhid=8,
                           num_layers=2, adim=8, num_heads=2)
    model.set_node_counts([3, 5, 8, 6, 4])
    return model


def _edges(graphs) -> list:
    return [(g.number_of_nodes(), sorted(map(sorted, g.edges()))) for g in graphs]


def test_a_killed_run_resumes_after_its_last_batch_draw_for_draw(tmp_path, monkeypatch):
    bench = _script()
    test = [nx.cycle_graph(4), nx.path_graph(5), nx.complete_graph(3)]
    seen: dict[str, list] = {}
    real = bench.graph_metrics

    def metrics(ref, graphs, **kw):
        seen["graphs"] = _edges(graphs)
        return real(ref, graphs, **kw)

    monkeypatch.setattr(bench, "graph_metrics", metrics)
    opts = {"snr": 0.1, "scale_eps": 0.7}
    args = ("s4", 3, opts, range(2, 3), 6, 2)
    full = bench.run_config(_model(), test, *args)
    uninterrupted = seen.pop("graphs")
    assert len(uninterrupted) == 6
    assert sum(len(e) for _, e in uninterrupted) > 0  # not all empty: the comparison has teeth

    model = _model()
    calls = {"n": 0}
    sample = model.sample

    def dies_on_third(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Killed
        return sample(*a, **kw)

    monkeypatch.setattr(model, "sample", dies_on_third)
    with pytest.raises(_Killed):
        bench.run_config(model, test, *args, cache=tmp_path, dataset="tiny")
    kept = list(tmp_path.glob("tiny_2_*.pt"))
    assert len(kept) == 1
    assert len(torch.load(kept[0], weights_only=True)["graphs"]) == 4  # two batches of 2
    calls["n"] = -10  # the resumed run samples only the third batch
    resumed = bench.run_config(model, test, *args, cache=tmp_path, dataset="tiny")
    assert calls["n"] == -9
    assert seen.pop("graphs") == uninterrupted
    for k in bench.METRICS:
        assert resumed[k] == full[k]

    # other settings under the same file name are refused by name, the file left as it was
    before = kept[0].read_bytes()
    other = bench.BatchCache(tmp_path, {"dataset": "tiny", "seed": 2, "nfe": 4})
    other.path = kept[0]
    with pytest.raises(SystemExit, match="made by other settings"):
        other.load()
    assert kept[0].read_bytes() == before
    kept[0].write_bytes(b"torn")
    with pytest.raises(SystemExit, match="unreadable"):
        bench.run_config(model, test, *args, cache=tmp_path, dataset="tiny")
