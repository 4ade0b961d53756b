"""``domaindiff eval graphs`` through the CLI: the core's EvalApp with the graphs hooks.

Checkpoints are written directly from untrained small models (no fit), so the tests stay fast;
what is checked is the app's plumbing: the files it names, their formats, the picture, errors.
"""

from __future__ import annotations

import json

import networkx as nx
import pytest
import torch

from domaindiff_graphs import GraphDiffusion
from tests.catalogue import cli_message, run_cli

SMALL = dict(depth=1, nhid=8, num_layers=2, adim=8, num_heads=2, num_linears=2)
PNG = b"\x89PNG\r\n\x1a\n"


def _ckpt(path, **kw):
    torch.manual_seed(0)
    model = GraphDiffusion(**{"max_nodes": 20, "max_feat": 10, "sampling_steps": 6, **SMALL,
                              **kw})
    ckpt = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def _eval(*args):
    res = run_cli(["eval", "graphs", *args])
    return res.returncode, res.stdout, res.stderr


def test_cli_writes_graph6_pyg_png_and_json_last(tmp_path):
    ckpt = _ckpt(tmp_path / "g.ckpt")
    out = tmp_path / "ev"
    code, _, err = _eval(f"ckpt={ckpt}", "sampler=dpm_solver", "steps=2", "num_samples=5",
                         "batch_size=3", "orbit=false", f"out_dir={out}")
    assert code == 0, err[-2000:]
    stem = "samples_community_small_dpm_solver_2"
    res = json.loads((out / "metrics_community_small_dpm_solver_2.json").read_text())
    assert res["files"] == [f"{stem}.g6", f"{stem}.pt", f"{stem}.png"]
    # 5 samples in sampling calls of 3 + 2, each 2 network evaluations
    assert res["num_samples"] == 5 and res["batches"] == 2 and res["nfe"] == 2
    assert res["nfe_total"] == 4 and res["dataset"] == "community_small"
    assert {"degree_mmd", "clustering_mmd", "seconds_per_graph"} <= set(res)
    graphs = [nx.from_graph6_bytes(line) for line in (out / f"{stem}.g6").read_bytes().split()]
    saved = torch.load(out / f"{stem}.pt", weights_only=True)
    assert len(graphs) == len(saved["num_nodes"]) == 5
    assert [g.number_of_nodes() for g in graphs] == saved["num_nodes"]
    assert (out / f"{stem}.png").read_bytes()[:8] == PNG
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_same_seed_same_graphs_and_save_samples_false(tmp_path):
    ckpt = _ckpt(tmp_path / "g.ckpt")
    common = [f"ckpt={ckpt}", "sampler=ddim", "steps=2", "num_samples=4", "orbit=false",
              "seed=3"]
    for name in ("a", "b"):
        code, _, err = _eval(*common, f"out_dir={tmp_path / name}")
        assert code == 0, err[-2000:]
    g6 = [(tmp_path / n / "samples_community_small_ddim_2.g6").read_bytes() for n in "ab"]
    assert g6[0] == g6[1]
    code, _, err = _eval(*common, "save_samples=false", f"out_dir={tmp_path / 'c'}")
    assert code == 0, err[-2000:]
    res = json.loads((tmp_path / "c" / "metrics_community_small_ddim_2.json").read_text())
    assert res["files"] == ["samples_community_small_ddim_2.png"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_file()) == [
        "metrics_community_small_ddim_2.json", "samples_community_small_ddim_2.png"]


def test_cli_on_your_own_molecules_writes_smiles_that_parse(tmp_path):
    from rdkit import Chem

    smiles = ["c1ccccc1O", "CCO", "OCC=O", "C1CC1", "NCC#N", "CCN", "O=C1CCCCC1", "CC(N)C=O"]
    csv = tmp_path / "mols.csv"
    csv.write_text("smi\n" + "\n".join(smiles) + "\n")
    ckpt = _ckpt(tmp_path / "m.ckpt", molecule="C,N,O", max_feat=3, max_nodes=7)
    out = tmp_path / "ev"
    code, _, err = _eval(f"ckpt={ckpt}", "dataset=user_molecules", f"+data_args.path={csv}",
                         "+data_args.smiles_col=smi", "+data_args.test_split=0.25",
                         "sampler=ddim", "steps=2", "num_samples=6", "nspdk=false",
                         f"out_dir={out}")
    assert code == 0, err[-2000:]
    stem = "samples_user_molecules_ddim_2"
    res = json.loads((out / "metrics_user_molecules_ddim_2.json").read_text())
    assert res["files"] == [f"{stem}.csv", f"{stem}.txt", f"{stem}.png"]
    rows = (out / f"{stem}.csv").read_text().splitlines()
    assert rows[0] == "index,smiles" and [r.split(",")[0] for r in rows[1:]] == \
        [str(k) for k in range(6)]
    valid = (out / f"{stem}.txt").read_text().splitlines()
    assert all(Chem.MolFromSmiles(s) is not None for s in valid)
    assert res["validity"] == pytest.approx(len(valid) / 6)


@pytest.mark.parametrize("args, expect", [
    (["dataset=nosuch"], "dataset: unknown 'nosuch'"),
    (["nll_probe=normal"], "nll_probe: unknown Hutchinson probe 'normal'"),
    (["num_plots=0"], "num_plots=0: expected a positive integer"),
    (["num_samples=0"], "num_samples=0: expected a positive integer or null"),
])
def test_bad_settings_are_one_line_before_any_work(tmp_path, args, expect):
    err = cli_message(["eval", "graphs", f"ckpt={_ckpt(tmp_path / 'g.ckpt')}",
                       f"out_dir={tmp_path / 'ev'}", *args])
    assert err.strip() == err.strip().splitlines()[0] and expect in err, err
    assert not list((tmp_path / "ev").glob("*.*"))  # Hydra's run folder only


def test_graph_picture_has_test_beside_generated_with_title_and_legend():
    from domaindiff_graphs.evaluate import plot_graphs

    test = [nx.cycle_graph(5), nx.path_graph(4)]
    generated = [nx.star_graph(3), nx.complete_graph(4), nx.path_graph(6)]
    fig = plot_graphs(generated, "grid graphs from run.ckpt: s4, 100 NFE", max_plots=8,
                      test_graphs=test, cols=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["test 1: 5 nodes, 5 edges", "test 2: 4 nodes, 3 edges",
                      "generated 1: 4 nodes, 3 edges", "generated 2: 4 nodes, 6 edges",
                      "generated 3: 6 nodes, 5 edges"]
    assert "run.ckpt" in fig._suptitle.get_text() and "top row: test graphs" in \
        fig._suptitle.get_text()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["test graph", "generated"]
