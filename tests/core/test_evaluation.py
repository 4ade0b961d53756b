"""The evaluation-app base, the generic ``domaindiff eval <plugin>``, and the demos' fit helper.

A fake third-party plugin (a DiffusionModule subclass and a DataModule, no ``evaluate`` module)
is written under tmp_path and registered through a tmp dist-info, as tests/core/test_startup.py
does; its checkpoint is written directly (no fit) so the tests stay fast.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from domaindiff import plugins
from domaindiff.demo_utils import fit_args, fit_config
from domaindiff.evaluation import EvalApp
from tests.catalogue import run_cli

MODEL = '''\
    import torch
    from torch import nn
    from torchmetrics import MeanMetric, MetricCollection

    from domaindiff.module import DiffusionModule
    from domaindiff.processes import make_process


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, state, t):
            return {"x": self.lin(torch.cat([state["x"], t[:, None]], -1))}


    class FakeDiffusion(DiffusionModule):
        def __init__(self, sampling_steps: int = 4):
            self.save_hyperparameters()
            super().__init__(Net(), {"x": make_process("vp")}, sampler="ddim",
                             sampling_steps=sampling_steps, ema_decay=0.0)

        def sample_template(self, n, batch=None):
            return {"x": torch.zeros(n, 2)}

        def configure_metrics(self):
            return MetricCollection({"mean_abs": MeanMetric()}, prefix="val/")

        def update_metrics(self, metrics, samples, batch):
            metrics.update(samples["x"].abs().mean(-1))
'''

DATA = '''\
    import lightning as L
    import torch
    from torch.utils.data import DataLoader


    class FakeData(L.LightningDataModule):
        def __init__(self, n_val: int = 20, batch_size: int = 8):
            super().__init__()
            self.n_val, self.batch_size = n_val, batch_size

        def setup(self, stage=None):
            self.val = torch.randn(self.n_val, 2, generator=torch.Generator().manual_seed(0))

        def val_dataloader(self):
            return DataLoader(self.val, batch_size=self.batch_size)
'''


def _call(args):
    """Run the command in this process; returns (exit code, stdout, stderr)."""
    res = run_cli(args)
    return res.returncode, res.stdout, res.stderr


@pytest.fixture
def fakeplugin(tmp_path, monkeypatch):
    """An installed third-party plugin ``fakeplugin`` and a checkpoint of its model."""
    tag = tmp_path.name.replace("-", "_")
    pkg = f"fakeplugin_{tag}"
    root = tmp_path / "site"
    files = {"__init__.py": f"from {pkg}.model import FakeDiffusion\n"
                            f"from {pkg}.data import FakeData\n"
                            "MODELS = [FakeDiffusion]\nDATAMODULES = [FakeData]\n",
             "model.py": MODEL, "data.py": DATA}
    for rel, text in files.items():
        path = root / pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    info = root / f"{pkg}-0.1.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 0.1\n")
    info.joinpath("entry_points.txt").write_text(f"[{plugins.GROUP}]\nfakeplugin = {pkg}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(plugins, "_CACHE", None)
    model_mod = __import__(f"{pkg}.model", fromlist=["FakeDiffusion"])
    torch.manual_seed(0)
    model = model_mod.FakeDiffusion(sampling_steps=3)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "domaindiff": {"class_path": f"{pkg}.model.FakeDiffusion",
                               "train_batches": 0}}, ckpt)
    (run / "config.yaml").write_text(f"data:\n  class_path: {pkg}.data.FakeData\n"
                                     "  init_args: {n_val: 20, batch_size: 8}\n")
    yield SimpleNamespace(pkg=pkg, ckpt=ckpt, out=tmp_path / "out")
    for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
        del sys.modules[mod]


def test_eval_of_a_plugin_without_script_scores_with_its_metrics(fakeplugin):
    code, out, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}", "sampler=ddim",
                            "steps=3", "num_samples=12", f"out_dir={fakeplugin.out}"])
    assert code == 0, err[-2000:]
    res = json.loads((fakeplugin.out / "metrics_ddim_3.json").read_text())
    # the datamodule the run's config.yaml names gives validation batches of 8: 8 + 4 samples
    assert res["nfe"] == 3 and res["batches"] == 2 and res["nfe_total"] == 6
    assert res["num_samples"] == 12 and res["plugin"] == "fakeplugin"
    samples = torch.load(fakeplugin.out / "samples_ddim_3.pt", weights_only=True)
    assert samples["x"].shape == (12, 2)
    assert res["val/mean_abs"] == pytest.approx(float(samples["x"].abs().mean()), rel=1e-5)
    assert (fakeplugin.out / "samples_ddim_3.png").stat().st_size > 1000
    assert res["files"] == ["samples_ddim_3.pt", "samples_ddim_3.png"]


def test_batch_size_splits_the_data_batches(fakeplugin):
    code, _, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}", "num_samples=18",
                          "batch_size=5", f"out_dir={fakeplugin.out}"])
    assert code == 0, err[-2000:]
    res = json.loads((fakeplugin.out / "metrics_ddim_3.json").read_text())
    # data batches of 8, 8, 4: pieces 5 + 3, 5 + 3, 2 (18 in all)
    assert res["batches"] == 5 and res["nfe_total"] == 15
    samples = torch.load(fakeplugin.out / "samples_ddim_3.pt", weights_only=True)
    assert samples["x"].shape == (18, 2)


def test_eval_without_data_writes_samples_and_nfe_only(fakeplugin):
    code, _, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}", "data=none",
                          "num_samples=7", "batch_size=3", f"out_dir={fakeplugin.out}"])
    assert code == 0, err[-2000:]
    res = json.loads((fakeplugin.out / "metrics_ddim_3.json").read_text())  # the model's defaults
    assert res["nfe"] == 3 and res["batches"] == 3 and not any(k.startswith("val/") for k in res)
    assert torch.load(fakeplugin.out / "samples_ddim_3.pt", weights_only=True)["x"].shape == (7, 2)


def test_eval_multirun_sweeps_steps(fakeplugin):
    code, _, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}", "data=none",
                          "num_samples=4", f"out_dir={fakeplugin.out}", "--multirun",
                          "steps=2,3"])
    assert code == 0, err[-2000:]
    for steps in (2, 3):
        res = json.loads((fakeplugin.out / f"metrics_ddim_{steps}.json").read_text())
        assert res["steps"] == res["nfe"] == steps


def test_same_seed_same_samples(fakeplugin):
    draws = []
    for i in range(2):
        out = fakeplugin.out / str(i)
        code, _, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}", "num_samples=4",
                              "seed=5", f"out_dir={out}"])
        assert code == 0, err[-2000:]
        draws.append(torch.load(out / "samples_ddim_3.pt", weights_only=True)["x"])
    assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("args, expect", [
    (["steps=0"], "steps=0: expected a positive integer"),
    (["num_samples=-1"], "num_samples=-1: expected a positive integer"),
    (["sampler=ddimm"], "ddimm"),
    (["num_samples=40"], "num_samples=40: the validation data holds only 20 examples"),
    (["data=os.system"], "data='os.system': expected the class path of a DataModule"),
])
def test_bad_settings_are_one_line(fakeplugin, args, expect):
    code, out, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}",
                            f"out_dir={fakeplugin.out}", *args])
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert not list(fakeplugin.out.glob("metrics_*.json"))


def test_a_script_with_a_missing_dependency_is_not_replaced(fakeplugin):
    script = Path(sys.modules[fakeplugin.pkg].__file__).parent / "evaluate.py"
    script.write_text("import nosuchmodule_for_eval\n")
    code, _, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}",
                          f"out_dir={fakeplugin.out}"])
    assert code == 2 and "nosuchmodule_for_eval" in err and len(err.strip().splitlines()) == 1
    assert not fakeplugin.out.exists()


def test_missing_ckpt_is_named(fakeplugin):
    code, _, err = _call(["eval", "fakeplugin", f"out_dir={fakeplugin.out}"])
    assert code == 2 and "ckpt" in err and "Traceback" not in err, err


def test_untrusted_pickle_is_refused(fakeplugin, tmp_path):
    bad = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "obj": SimpleNamespace(a=1)}, bad)
    code, _, err = _call(["eval", "fakeplugin", f"ckpt={bad}", f"out_dir={fakeplugin.out}"])
    assert code == 2 and "trust" in err and len(err.strip().splitlines()) == 1, err


def test_a_subclass_fills_in_score_and_plot(fakeplugin):
    class MeanEval(EvalApp):
        def score(self, model, samples, metrics, cfg):
            return {"mean_x": float(samples["x"].mean())}

        def plot(self, model, samples, references, cfg, title):
            return None

    res = MeanEval("fakeplugin").run({"ckpt": str(fakeplugin.ckpt), "num_samples": 5,
                                      "data": "none", "out_dir": str(fakeplugin.out)})
    written = json.loads((fakeplugin.out / "metrics_ddim_3.json").read_text())
    assert written == res and "mean_x" in res and res["nfe"] == 3
    assert not (fakeplugin.out / "samples_ddim_3.png").exists()


def test_a_plugin_config_extends_the_base_settings(fakeplugin, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "eval.yaml").write_text("defaults: [domaindiff_eval_base, _self_]\n"
                                    "num_samples: 3\ndata: none\nlabel: mine\n")
    seen = {}

    class LabelEval(EvalApp):
        def score(self, model, samples, metrics, cfg):
            seen["label"] = cfg["label"]
            return {}

    main_fn = LabelEval("fakeplugin").hydra_main(conf, "eval")
    monkeypatch.setattr(sys, "argv", ["eval", f"ckpt={fakeplugin.ckpt}", "steps=2",
                                      f"out_dir={fakeplugin.out}"])
    main_fn()
    res = json.loads((fakeplugin.out / "metrics_ddim_2.json").read_text())
    assert res["num_samples"] == 3 and res["nfe"] == 2 and seen["label"] == "mine"


def test_hooks_set_the_count_file_names_samples_and_pictures(fakeplugin):
    from domaindiff.plotting import pyplot

    seen = {}

    class MineEval(EvalApp):
        dpi = 40

        def prepare(self, model, cfg):
            seen["prepared"] = type(model).__name__

        def count(self, model, cfg):
            assert seen["prepared"] == "FakeDiffusion"  # prepare runs first
            return 6 if cfg["num_samples"] is None else int(cfg["num_samples"])

        def stem(self, cfg, result):
            return f"mine_{result['sampler']}_{result['nfe']}"

        def title(self, cfg, result):
            return super().title(cfg, result) + ", run A"

        def save(self, model, samples, cfg, out, stem):
            path = out / f"samples_{stem}.txt"
            path.write_text("".join(f"{float(v):.6f}\n" for v in samples["x"][:, 0]))
            return [path]

        def plot(self, model, samples, references, cfg, title):
            seen["title"] = title
            figs = {}
            for name in ("first", "second"):
                fig, ax = pyplot().subplots()
                ax.plot(samples["x"][:, 0].numpy())
                figs[name] = fig
            return {**figs, "skipped": None}

    res = MineEval("fakeplugin").run({"ckpt": str(fakeplugin.ckpt), "num_samples": None,
                                      "data": "none", "out_dir": str(fakeplugin.out)})
    out = fakeplugin.out
    assert res["num_samples"] == 6 and res["nfe"] == 3
    assert res["files"] == ["samples_mine_ddim_3.txt", "first_mine_ddim_3.png",
                            "second_mine_ddim_3.png"]
    assert json.loads((out / "metrics_mine_ddim_3.json").read_text()) == res
    assert len((out / "samples_mine_ddim_3.txt").read_text().splitlines()) == 6
    for name in res["files"][1:]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "samples_mine_ddim_3.pt").exists()  # save() replaced the default
    assert not list(out.glob("skipped_*")) and not list(out.glob(".*"))
    assert seen["title"] == "fakeplugin: last.ckpt, ddim, 3 steps (3 NFE), 6 samples, run A"


def test_default_run_lists_its_files_and_times_the_sampling(fakeplugin):
    res = EvalApp("fakeplugin").run({"ckpt": str(fakeplugin.ckpt), "num_samples": 4,
                                     "data": "none", "out_dir": str(fakeplugin.out)})
    assert res["files"] == ["samples_ddim_3.pt", "samples_ddim_3.png"]
    assert 0 < res["seconds"] and res["seconds_per_sample"] == pytest.approx(res["seconds"] / 4)


def test_evaluate_in_memory_writes_nothing(fakeplugin):
    from domaindiff.checkpoint import load_checkpoint

    model = load_checkpoint(str(fakeplugin.ckpt))
    app = EvalApp("fakeplugin")
    cfg = app.settings({"ckpt": str(fakeplugin.ckpt), "num_samples": 5, "data": "none",
                        "out_dir": str(fakeplugin.out), "steps": 2})
    res, samples, refs = app.evaluate(model, cfg)
    assert res["nfe"] == 2 and res["steps"] == 2 and res["sampler"] == "ddim"
    assert samples["x"].shape == (5, 2) and refs == []
    assert not fakeplugin.out.exists()


@pytest.mark.parametrize("args, expect", [
    (["num_samples=null", "data=none"], "num_samples=None: expected a positive integer"),
    (["threads=0"], "threads=0: expected a positive integer or null"),
])
def test_counts_the_base_refuses(fakeplugin, args, expect):
    code, out, err = _call(["eval", "fakeplugin", f"ckpt={fakeplugin.ckpt}",
                            f"out_dir={fakeplugin.out}", *args])
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert not list(fakeplugin.out.glob("metrics_*.json"))


# --------------------------------------------------------------------------- demo fit helper

def test_fit_args_put_overrides_last():
    args = fit_args("toy:demo", "out/x", ["--trainer.max_epochs=2",
                                          "--trainer.logger.save_dir=elsewhere"])
    assert args[:3] == ["fit", "--config", "toy:demo"]
    assert "--trainer.logger=lightning.pytorch.loggers.CSVLogger" in args
    assert "--trainer.default_root_dir=out/x" in args
    # a demo-line override of the demo's own settings comes after them, so it wins
    assert args.index("--trainer.logger.save_dir=elsewhere") > \
        args.index("--trainer.logger.save_dir=out/x")


def test_fit_config_returns_the_fitted_checkpoint(monkeypatch, tmp_path):
    best = tmp_path / "best.ckpt"
    best.write_bytes(b"x")
    cb = ModelCheckpoint(dirpath=tmp_path)
    cb.best_model_path = str(best)
    seen = {}

    def fake_cli(argv):
        seen["argv"] = argv
        return SimpleNamespace(trainer=SimpleNamespace(callbacks=[cb]))

    monkeypatch.setattr("domaindiff.cli.lightning_cli", fake_cli)
    cli, ckpt = fit_config(Path("conf/demo.yaml"), tmp_path, ["--trainer.max_epochs=1"])
    assert ckpt == str(best) and seen["argv"] == fit_args("conf/demo.yaml", tmp_path,
                                                          ["--trainer.max_epochs=1"])
    cb.best_model_path = ""
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit_config("conf/demo.yaml", tmp_path)
