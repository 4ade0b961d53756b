"""Importing GDSS checkpoints: safe reading, strict conversion, roundtrip, refusals.

Each test writes a tiny fake GDSS ``.pth`` in the released files' structure: a ``torch.save`` zip of
a dict with ``model_config`` (an ``easydict.EasyDict``, here a stand-in class registered as module
``easydict`` only while saving), ``params_x`` / ``params_adj``, GDSS-named state dicts (dense GCN
``weight`` as in x out, ``linears``, ``gnn_q/k/v``) and EMA shadows, with its storages' location
rewritten to ``cuda:0`` as in the released files.
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from domaindiff.module import load_checkpoint
from domaindiff_graphs import commands
from domaindiff_graphs.gdss_import import (
    GDSSImportError,
    convert,
    gcn_reference,
    import_gdss,
    random_inputs,
    read_gdss_checkpoint,
    reference_outputs,
)
from domaindiff_graphs.model import GraphDiffusion
from tests.catalogue import BadInput, assert_refused, cli_message, raised

SIZES = {"max_nodes": 6, "max_feat": 3, "depth": 2, "nhid": 8, "num_layers": 2,
         "num_linears": 2, "c_init": 2, "c_hid": 4, "c_final": 2, "adim": 8, "num_heads": 2}


def _fake_easydict() -> type:
    """A stand-in for ``easydict.EasyDict``: a dict that mirrors its items as attributes."""
    class EasyDict(dict):
        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                setattr(self, k, v)

        def __setattr__(self, name, value):
            value = EasyDict(value) if isinstance(value, dict) else value
            super().__setattr__(name, value)
            super().__setitem__(name, value)

    EasyDict.__module__ = "easydict"
    EasyDict.__qualname__ = "EasyDict"
    return EasyDict


def _gdss_names(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The plugin's weights under ``prefix`` renamed the GDSS way (the inverse of the import).

    Ordered as GDSS's parameters are: a dense GCN's ``weight`` (in x out) before its ``bias``
    (PyG registers ``lin`` as a submodule, so its state dict lists the bias first).
    """
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix) or key.endswith(".lin.weight"):
            continue
        name = key[len(prefix):]
        lin = key[: -len("bias")] + "lin.weight"
        if name.endswith(".bias") and lin in state:
            out[_rename_back(name[: -len("bias")] + "weight")] = state[lin].t().clone()
        out[_rename_back(name)] = value.clone()
    return out


def _rename_back(key: str) -> str:
    key = re.sub(r"\.(q|k|v)\.", r".gnn_\1.", key)
    return re.sub(r"(final|mlp|multi_channel)\.layers\.", r"\1.linears.", key)


def _config(use_ema: bool) -> dict:
    return {
        "data": {"data": "community_small", "test_split": 0.2, "max_node_num": 6,
                 "max_feat_num": 3, "batch_size": 4, "init": "deg"},
        "sde": {"x": {"type": "VP", "beta_min": 0.1, "beta_max": 1.0, "num_scales": 1000},
                "adj": {"type": "VE", "beta_min": 0.2, "beta_max": 1.0, "num_scales": 1000}},
        "model": {"x": "ScoreNetworkX", "adj": "ScoreNetworkA"},
        "train": {"lr": 0.01, "lr_schedule": True, "ema": 0.999, "weight_decay": 1e-4,
                  "grad_norm": 1.0, "lr_decay": 0.999, "eps": 1e-5},
        "sampler": {"predictor": "Euler", "corrector": "Langevin", "snr": 0.05,
                    "scale_eps": 0.7, "n_steps": 1},
        "sample": {"use_ema": use_ema, "noise_removal": True, "probability_flow": False,
                   "eps": 1e-4, "seed": 11},
    }


def write_fake_gdss(path: Path, use_ema: bool = True, seed: int = 0) -> dict:
    """Write a fake GDSS checkpoint at ``path``; returns its raw GDSS-named weights and shadows."""
    torch.manual_seed(seed)
    hp = {k: SIZES[k] for k in ("max_nodes", "max_feat", "depth", "nhid", "num_layers",
                                "num_linears", "c_init", "c_hid", "c_final", "adim", "num_heads")}
    net = GraphDiffusion(**hp).network.state_dict()
    x_sd, adj_sd = _gdss_names(net, "net_x."), _gdss_names(net, "net_adj.")
    ema_x = [v + 0.5 for v in x_sd.values()]
    ema_adj = [v - 0.5 for v in adj_sd.values()]
    easydict = _fake_easydict()
    module = types.ModuleType("easydict")
    module.EasyDict = easydict
    old = sys.modules.get("easydict")
    sys.modules["easydict"] = module
    try:
        obj = {"model_config": easydict(_config(use_ema)),
               "params_x": {"model_type": "ScoreNetworkX", "max_feat_num": 3, "depth": 2,
                            "nhid": 8},
               "params_adj": {"model_type": "ScoreNetworkA", "max_feat_num": 3,
                              "max_node_num": 6, "nhid": 8, "num_layers": 2, "num_linears": 2,
                              "c_init": 2, "c_hid": 4, "c_final": 2, "adim": 8,
                              "num_heads": 2, "conv": "GCN"},
               "x_state_dict": x_sd, "adj_state_dict": adj_sd,
               "ema_x": {"decay": 0.999, "num_updates": 7, "shadow_params": ema_x},
               "ema_adj": {"decay": 0.999, "num_updates": 7, "shadow_params": ema_adj}}
        buf = io.BytesIO()
        torch.save(obj, buf)
    finally:
        if old is None:
            sys.modules.pop("easydict", None)
        else:
            sys.modules["easydict"] = old
    _rezip(buf.getvalue(), path, lambda pkl: pkl.replace(b"X\x03\x00\x00\x00cpu",
                                                         b"X\x06\x00\x00\x00cuda:0"))
    return {"x": x_sd, "adj": adj_sd, "ema_x": ema_x, "ema_adj": ema_adj}


def _rezip(data: bytes, path: Path, edit) -> None:
    """Copy a torch zip archive, passing its ``data.pkl`` through ``edit``."""
    src = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            body = src.read(name)
            dst.writestr(name, edit(body) if name.endswith("/data.pkl") else body)


def _evil(path: Path, marker: Path) -> None:
    """A torch-style zip whose pickle calls ``os.system('touch MARKER')``."""
    cmd = f"touch {marker}".encode()
    pkl = (b"\x80\x02cos\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R.")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/version", "3\n")


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("gdss") / "gdss_fake.pth"
    return path, write_fake_gdss(path)


def test_reader_maps_cuda_storages_to_cpu_and_easydict_to_dict(fake):
    path, raw = fake
    assert b"cuda:0" in zipfile.ZipFile(path).read("archive/data.pkl")
    ckpt = read_gdss_checkpoint(path)
    assert type(ckpt["model_config"]) is dict and type(ckpt["model_config"]["sde"]["x"]) is dict
    assert ckpt["model_config"]["sampler"]["snr"] == 0.05
    assert "easydict" not in sys.modules
    w = ckpt["x_state_dict"]["layers.0.weight"]
    assert w.device.type == "cpu" and torch.equal(w, raw["x"]["layers.0.weight"])
    assert all(torch.equal(a, b) for a, b in zip(ckpt["ema_adj"]["shadow_params"],
                                                 raw["ema_adj"], strict=True))


def test_convert_loads_strictly_with_sampler_defaults_and_ema(fake):
    path, raw = fake
    model = convert(read_gdss_checkpoint(path), path)
    hp = model.hparams
    assert hp["sde_x"] == {"type": "VP", "beta_min": 0.1, "beta_max": 1.0}
    assert hp["sde_adj"]["type"] == "VE" and hp["sde_adj"]["beta_min"] == 0.2
    assert hp["sampler"] == "gdss_pc" and hp["sampling_steps"] == 2000  # Euler + Langevin
    assert hp["sampler_options"]["predictor"] == "euler"
    assert hp["sampler_options"]["snr"] == 0.05 and hp["sampler_options"]["eps"] == 1e-4
    assert model.sample_ema is True
    # the dense GCN weight (in x out) is transposed into PyG's lin.weight (out x in)
    gcn = model.network.net_x.layers[0]
    assert torch.equal(gcn.lin.weight, raw["x"]["layers.0.weight"].t())
    assert torch.equal(model.network.net_adj.layers[1].attn[0].q.bias,
                       raw["adj"]["layers.1.attn.0.gnn_q.bias"])
    # EMA shadows, mapped by parameter order, sit in the EMA network
    ema = model.ema_network.module
    first_x = next(iter(raw["x"]))
    assert first_x == "layers.0.weight"
    assert torch.equal(ema.net_x.layers[0].lin.weight, raw["ema_x"][0].t())
    assert torch.equal(ema.net_adj.final.layers[-1].bias, raw["ema_adj"][-1])
    assert int(model.ema_network.n_averaged) == 7


def test_gcn_layer_matches_hand_computation_from_raw_weights(fake):
    path, raw = fake
    model = convert(read_gdss_checkpoint(path), path)
    inp = random_inputs(model, batch=2, seed=3)
    with torch.no_grad():
        ours = model.network.net_x.layers[0](inp["x"], inp["adj"])
    hand = gcn_reference(inp["x"], inp["adj"], raw["x"]["layers.0.weight"],
                         raw["x"]["layers.0.bias"])
    torch.testing.assert_close(ours, hand, rtol=1e-6, atol=1e-6)


def test_networks_match_gdss_forward_on_raw_and_ema_weights(fake):
    path, _ = fake
    ckpt = read_gdss_checkpoint(path)
    model = convert(ckpt, path)
    inp = random_inputs(model, batch=2, seed=5)
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        for net, which in ((model.network, "raw"), (model.ema_network.module, "ema")):
            ours = net(inp, t)
            ref = reference_outputs(ckpt, inp["x"], inp["adj"], inp["mask"], which)
            for k in ("x", "adj"):
                torch.testing.assert_close(ours[k], ref[k], rtol=1e-5, atol=1e-5)
                assert ref[k].abs().max() > 0.01  # not a trivially zero comparison


def test_import_writes_a_weights_only_checkpoint_with_identical_outputs(fake, tmp_path):
    path, _ = fake
    out = tmp_path / "sub.ckpt"
    model = import_gdss(path, out, node_counts=[3, 4, 6, 6])
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["domaindiff"]["class_path"] == "domaindiff_graphs.model.GraphDiffusion"
    assert ckpt["gdss_import"]["config"]["sampler"]["predictor"] == "Euler"
    back = load_checkpoint(out)
    assert back.sampler_options == model.sampler_options and back.sample_ema
    assert back.node_count_hist.tolist() == model.node_count_hist.tolist()
    inp = random_inputs(model)
    t = torch.full((3,), 0.4)
    with torch.no_grad():
        for a, b in ((model.network, back.network),
                     (model.ema_network.module, back.ema_network.module)):
            oa, ob = a(inp, t), b(inp, t)
            assert all(torch.equal(oa[k], ob[k]) for k in oa)
        raw_out = model.network(inp, t)["adj"]
        ema_out = model.ema_network.module(inp, t)["adj"]
    assert not torch.equal(raw_out, ema_out)  # the EMA really is a different set of weights
    samples = back.sample(2, steps=4, generator=torch.Generator().manual_seed(0))
    assert samples["adj"].shape == (2, 6, 6) and back.last_nfe == 4


def test_raw_weights_when_config_does_not_use_ema(tmp_path):
    path = tmp_path / "noema.pth"
    write_fake_gdss(path, use_ema=False)
    model = convert(read_gdss_checkpoint(path), path)
    assert model.sample_ema is False and model.hparams["sample_ema"] is False


def test_cli_import_gdss(fake, tmp_path, capsys):
    path, _ = fake
    out = tmp_path / "cli.ckpt"
    assert commands.main(["import-gdss", str(path), str(out)]) == 0
    assert "gdss_pc 2000 NFE" in capsys.readouterr().out
    assert load_checkpoint(out).hparams["max_nodes"] == 6


def test_os_system_pickle_is_refused_and_nothing_runs(tmp_path):
    path, marker = tmp_path / "evil.pth", tmp_path / "ran"
    _evil(path, marker)
    msg = raised(GDSSImportError, lambda: read_gdss_checkpoint(path))
    assert str(path) in msg and "os.system" in msg
    assert not marker.exists()


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.pth"
    write_fake_gdss(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _wrong_network(tmp_path: Path) -> dict:
    """A checkpoint whose params_adj says 3 layers but whose weights have 2."""
    path = tmp_path / "wrong.pth"
    write_fake_gdss(path)
    ckpt = read_gdss_checkpoint(path)
    ckpt["params_adj"]["num_layers"] = 3
    return ckpt


def _check_cli(args_fn):
    def check(tmp_path: Path) -> str:
        return cli_message(["graphs", *args_fn(tmp_path)])
    return check


def _evil_args(tmp_path: Path) -> list[str]:
    _evil(tmp_path / "evil.pth", tmp_path / "ran")
    return ["import-gdss", str(tmp_path / "evil.pth"), str(tmp_path / "out.ckpt")]


CATALOGUE = [
    BadInput("graphs-gdss-os-system", "domaindiff graphs import-gdss evil.pth out.ckpt",
             r"evil\.pth: refusing to unpickle global os\.system",
             _check_cli(_evil_args), max_lines=1),
    BadInput("graphs-gdss-truncated", "domaindiff graphs import-gdss cut.pth out.ckpt",
             r"cut\.pth: not a torch\.save zip archive \(truncated",
             _check_cli(lambda p: ["import-gdss", str(_truncated(p)), str(p / "o.ckpt")]),
             max_lines=1),
    BadInput("graphs-gdss-missing", "domaindiff graphs import-gdss nope.pth out.ckpt",
             r"nope\.pth: no such GDSS checkpoint file",
             _check_cli(lambda p: ["import-gdss", str(p / "nope.pth"), str(p / "o.ckpt")]),
             max_lines=1),
    BadInput("graphs-gdss-wrong-sizes", "convert(ckpt with params_adj.num_layers=3, 'wrong.pth')",
             r"wrong\.pth: x_state_dict/adj_state_dict do not fit the plugin's network",
             lambda p: raised(GDSSImportError, lambda: convert(_wrong_network(p),
                                                               p / "wrong.pth"))),
    BadInput("graphs-gdss-no-sampler", "convert(ckpt without config.sampler, 'qm9.pth')",
             r"qm9\.pth: the checkpoint's config has no 'sampler' section; pass a GDSS sampling "
             r"config \(--sample-config",
             lambda p: raised(GDSSImportError, lambda: convert(
                 _without_sampler(p), p / "qm9.pth"))),
]


def _without_sampler(tmp_path: Path) -> dict:
    path = tmp_path / "q.pth"
    write_fake_gdss(path)
    ckpt = read_gdss_checkpoint(path)
    del ckpt["model_config"]["sampler"]
    return ckpt


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)
    assert not (tmp_path / "ran").exists() and not (tmp_path / "o.ckpt").exists()


def test_truncated_file_is_named_and_writes_nothing(tmp_path):
    path = _truncated(tmp_path)
    out = tmp_path / "o.ckpt"
    msg = raised(GDSSImportError, lambda: import_gdss(path, out))
    assert str(path) in msg and "truncated" in msg
    assert not out.exists()


def test_torn_pickle_inside_a_valid_zip_is_named(tmp_path):
    src = tmp_path / "ok.pth"
    write_fake_gdss(src)
    path = tmp_path / "torn.pth"
    _rezip(src.read_bytes(), path, lambda pkl: pkl[: len(pkl) // 2])
    msg = raised(GDSSImportError, lambda: read_gdss_checkpoint(path))
    assert str(path) in msg and "truncated or corrupt" in msg


def test_refuses_any_other_global(tmp_path):
    path = tmp_path / "builtin_eval.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(eval, protocol=4))
    msg = raised(GDSSImportError, lambda: read_gdss_checkpoint(path))
    assert "builtins.eval" in msg and str(path) in msg


def test_cli_node_counts_from_graph_list_and_sample_config(tmp_path, capsys):
    import networkx as nx
    import yaml

    src = tmp_path / "q.pth"
    write_fake_gdss(src)
    graphs = [nx.path_graph(n) for n in (2, 2, 3, 4, 5, 6, 6, 6, 5, 4)]
    pkl = tmp_path / "fake.pkl"
    pkl.write_bytes(pickle.dumps(graphs))
    conf = tmp_path / "sample.yaml"
    conf.write_text(yaml.safe_dump({
        "sampler": {"predictor": "S4", "corrector": "None", "snr": 0.2, "scale_eps": 0.9,
                    "n_steps": 1},
        "sample": {"use_ema": False, "noise_removal": True, "probability_flow": False,
                   "eps": 1e-3, "seed": 1}}))
    out = tmp_path / "m.ckpt"
    assert commands.main(["import-gdss", str(src), str(out), "--graphs", str(pkl),
                          "--sample-config", str(conf)]) == 0
    assert "node counts and prior moments (prior='moment_matched') from 8 training graphs" in \
        capsys.readouterr().out
    back = load_checkpoint(out)
    # the moment-matched prior's edge density: paths P_n have n - 1 edges on n (n - 1) / 2 pairs
    train = (3, 4, 5, 6, 6, 6, 5, 4)
    p = sum(2 * (n - 1) for n in train) / sum(n * (n - 1) for n in train)
    assert back.prior_adj_mean.item() == pytest.approx(p, abs=1e-12)
    assert back.prior_adj_var.item() == pytest.approx(p * (1 - p), abs=1e-12)
    # GDSS's split: the first 20% (2 graphs) are the test set, sizes come from the other 8
    assert back.node_count_hist.tolist() == [0, 0, 0, 1, 2, 2, 3]
    assert back.hparams["sampler"] == "s4" and back.hparams["sampling_steps"] == 1000
    assert back.sampler_options["snr"] == 0.2 and back.sample_ema is False


def test_storage_record_of_the_wrong_size_is_named(tmp_path):
    src = tmp_path / "ok.pth"
    write_fake_gdss(src)
    path = tmp_path / "short_record.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for name in zin.namelist():
            body = zin.read(name)
            if "/data/" in name and not name.endswith(".pkl"):
                body = body[:-4]
            zout.writestr(name, body)
    msg = raised(GDSSImportError, lambda: read_gdss_checkpoint(path))
    assert str(path) in msg and re.search(r"storage record \S+ holds \d+ bytes, expected", msg)


@pytest.mark.skipif(not __import__("os").environ.get("DOMAINDIFF_GDSS_DIR"),
                    reason="set DOMAINDIFF_GDSS_DIR to a copy of GDSS's files")
def test_released_grid_checkpoint_packed_path_equals_direct_and_gdss_formulas():
    """On the released grid weights (361 nodes): the packed fast path changes no output."""
    import os

    src = Path(os.environ["DOMAINDIFF_GDSS_DIR"]) / "checkpoints" / "grid" / "gdss_grid.pth"
    ckpt = read_gdss_checkpoint(src)
    model = convert(ckpt, src)
    net = model.ema_network.module
    inp = random_inputs(model, batch=1, seed=1)
    t = torch.full((1,), 0.3)
    with torch.no_grad():
        fast = net(inp, t)
        net.net_adj.fast = False
        direct = net(inp, t)
        ref = reference_outputs(ckpt, inp["x"], inp["adj"], inp["mask"], "ema")
    for k in ("x", "adj"):
        torch.testing.assert_close(fast[k], direct[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast[k], ref[k], rtol=1e-5, atol=1e-5)
