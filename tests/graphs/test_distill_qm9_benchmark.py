"""benchmarks/distill_graphs_qm9.py's smallest path: a tiny molecule teacher on RDKit's NCI set.

One run of the real script (teacher rows, a one-round progressive distillation through
``domaindiff distill``, the student row, the results JSON); and its once-computed test side of
NSPDK / FCD equals :func:`~domaindiff_graphs.metrics.molecule_metrics` on the same molecules.
"""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from domaindiff_graphs import GraphDiffusion
from domaindiff_graphs.data import QM9
from domaindiff_graphs.metrics import fcd_available, molecule_metrics
from domaindiff_graphs.mol import decode_molecules

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(depth=1, nhid=8, num_layers=2, adim=8, num_heads=2, num_linears=2)

pytestmark = pytest.mark.skipif(not fcd_available(), reason="fcd_torch is not installed")


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("distill_graphs_qm9",
                                                  ROOT / "benchmarks" / "distill_graphs_qm9.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def nci():
    dm = QM9(source="nci", max_train=64)
    dm.setup()
    return dm


def _teacher(path: Path, dm) -> Path:
    torch.manual_seed(0)
    model = GraphDiffusion(max_nodes=9, max_feat=4, molecule="qm9", sampling_steps=4,
                           sde_x={"type": "VE", "beta_min": 0.1, "beta_max": 1.0},
                           sde_adj={"type": "VE", "beta_min": 0.1, "beta_max": 1.0},
                           sampler="gdss_pc", sampler_options={"snr": 0.2, "scale_eps": 0.7,
                                                               "eps": 1e-4}, **SMALL)
    model.set_node_counts([int(d.num_nodes) for d in dm.train_data])
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def test_reference_equals_molecule_metrics(nci, tmp_path):
    bench = _script()
    from domaindiff.checkpoint import load_checkpoint

    model = load_checkpoint(_teacher(tmp_path / "t.ckpt", nci))
    s = model.sample(12, sampler="ddim", steps=2, generator=torch.Generator().manual_seed(0))
    test_graphs, test_smiles = nci.test_graphs()[:20], nci.test_smiles()[:20]
    train = nci.train_smiles()
    ours = bench.metrics(model, s, train, bench.Reference(test_graphs, test_smiles))
    mols, valid = decode_molecules(s["x"], s["adj"], s["mask"], model.atom_types)
    theirs = molecule_metrics(mols, valid, train, test_graphs, test_smiles)
    assert set(theirs) <= set(ours)
    for k, v in theirs.items():
        assert math.isclose(ours[k], v, rel_tol=1e-6, abs_tol=1e-9), k


def test_smallest_run_writes_teacher_and_student_rows(nci, tmp_path):
    bench = _script()
    out = tmp_path / "res.json"
    code = bench.main(["--teacher", str(_teacher(tmp_path / "t.ckpt", nci)), "--source", "nci",
                       "--max-train", "64", "--test-subset", "16", "--work", str(tmp_path / "w"),
                       "--iterations", "2", "--teacher-steps", "2", "--batch-size", "8", "--snapshots", "1",
                       "--num-samples", "6", "--sample-batch", "4", "--teacher-nfe", "2",
                       "--out", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    rows = {r["config"]: r for r in res["rows"]}
    assert {"teacher/s4rule2", "teacher/ddim2/standard", "teacher/ddim1/standard"} <= set(rows)
    students = [r for r in res["rows"] if r["role"] == "student"]
    # one round 2 -> 1, snapshotted at its end (optimizer step 2)
    assert [(r["student_steps"], r["optimizer_steps"]) for r in students] == [(1, 2)]
    assert res["distill"]["optimizer_steps"] == 2
    for r in res["rows"]:
        assert r["num_samples"] == 6 and 0.0 <= r["validity_wo_correction"] <= 1.0
        assert r["seconds_per_mol"] > 0
    # a rerun keeps the measured rows and distils nothing again
    assert bench.main(["--teacher", str(tmp_path / "t.ckpt"), "--source", "nci",
                       "--max-train", "64", "--test-subset", "16", "--work",
                       str(tmp_path / "w"), "--iterations", "2", "--teacher-steps", "2",
                       "--num-samples", "6", "--teacher-nfe", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == res["rows"]


def test_pooled_stochastic_run_and_cache(nci, tmp_path, monkeypatch):
    """--pool / --straighten-iterations / --flow-at reach the distillation; rows at 16 / 4 / 1 NFE;
    the split cache and the test-side cache are made once and read back equal."""
    bench = _script()
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    teacher = _teacher(tmp_path / "t.ckpt", nci)
    cache = tmp_path / "split.pkl"
    out = tmp_path / "res.json"
    common = ["--teacher", str(teacher), "--source", "nci", "--max-train", "64",
              "--test-subset", "16", "--work", str(tmp_path / "w"), "--num-samples", "6",
              "--sample-batch", "6", "--teacher-nfe", "2", "--teacher-steps", "2",
              "--cache", str(cache)]
    assert bench.main([*common, "--no-progressive", "--stochastic",
                       "--stochastic-iterations", "4", "--pool", "8", "--stochastic-batch", "4",
                       "--straighten-iterations", "2", "--flow-at", "2", "--flow-steps", "2",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert "distill" not in res  # --no-progressive
    d = res["distill_stochastic"]
    assert d["optimizer_steps"] == 6 and d["pool"] == 8 and d["straighten_iterations"] == 2
    assert "qm9_split_cache.CachedQM9" in " ".join(d["argv"])
    steps = {r["config"]: (r["nfe"], r["optimizer_steps"]) for r in res["rows"]
             if r["role"] == "student"}
    assert steps == {"student/flow2@2": (2, 2), "student/flow2@4": (2, 4),
                     "student/reflow-stochastic4@6": (4, 6),
                     "student/reflow-stochastic4@6/nfe1": (1, 6)}
    assert list(res["goal"]) == ["student/reflow-stochastic4@6"]  # the 4-NFE row only
    assert all(r["cpu_seconds_per_mol"] > 0 for r in res["rows"])
    assert cache.exists() and list(tmp_path.glob("split.pkl.reference16.npz"))
    # the cached split is the loaded one, and the cached test side gives the same metrics
    cached = bench.CachedQM9(source="nci", max_train=64, cache=str(cache))
    cached.load_items()
    assert cached.test_smiles() == nci.test_smiles() and cached.train_smiles() == nci.train_smiles()
    fresh = bench.Reference(nci.test_graphs()[:16], nci.test_smiles()[:16])
    import numpy as np

    with np.load(next(tmp_path.glob("split.pkl.reference16.npz"))) as z:
        # EDeN's features hash with Python's per-process string hash: NSPDK's side is not cached
        assert "x_sum" not in z.files and "mu" in z.files
        back = bench.Reference(nci.test_graphs()[:16], [], stats={k: z[k] for k in z.files})
    g = nci.test_graphs()[16:24]
    assert math.isclose(back.nspdk(g), fresh.nspdk(g), rel_tol=1e-9)
    sm = nci.test_smiles()[16:24]
    assert math.isclose(back.fcd(sm), fresh.fcd(sm), rel_tol=1e-6)


def test_split_cache_refuses_other_inputs(tmp_path):
    bench = _script()
    cache = tmp_path / "split.pkl"
    bench.CachedQM9(source="nci", max_train=8, cache=str(cache)).load_items()
    with pytest.raises(ValueError, match="max_train"):
        bench.CachedQM9(source="nci", max_train=9, cache=str(cache)).load_items()


def test_reference_cache_keeps_nspdk_only_under_a_fixed_hash_seed(nci, tmp_path, monkeypatch):
    bench = _script()
    graphs, smiles = nci.test_graphs()[:8], nci.test_smiles()[:8]
    dm = bench.CachedQM9(source="nci", max_train=64, cache=str(tmp_path / "split.pkl"))
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    first = bench.reference(graphs, smiles, tmp_path / "split.pkl", dm, 8)
    import numpy as np

    with np.load(tmp_path / "split.pkl.reference8.npz") as z:
        assert {"x_sum", "kxx", "n", "mu", "cov"} <= set(z.files)
    # read back: NSPDK's side is not recomputed (no test graphs are given)
    again = bench.reference([], smiles, tmp_path / "split.pkl", dm, 8)
    assert again.kxx == first.kxx and np.array_equal(again.x_sum, first.x_sum)
    monkeypatch.setenv("PYTHONHASHSEED", "1")  # another seed: recomputed (EDeN refuses no graphs)
    with pytest.raises(Exception, match="no graphs"):
        bench.reference([], smiles, tmp_path / "split.pkl", dm, 8)
