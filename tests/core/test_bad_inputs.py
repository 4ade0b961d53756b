"""Bad inputs to the core (checkpoints, LightningCLI settings, ``sample``, ``eval toy``, env).

Each ``check`` writes its tiny bad file(s) into ``tmp_path`` and runs the real command in this
process (:func:`cli_message`) or the real loader; the message must be one short line that names
the file, setting or option and what was expected.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import lightning as L
import pytest
import torch

from domaindiff.checkpoint import CheckpointError, load_checkpoint
from domaindiff.toy.data import GaussianMixtureData
from domaindiff.toy.model import ToyDiffusion
from tests.catalogue import BadInput, assert_refused, cli_message, raised

TOY_FIT = str(Path(__file__).parents[1] / "conf" / "toy_fit.yaml")
_KEEP = tempfile.TemporaryDirectory(prefix="domaindiff-bad-inputs-")


@functools.cache
def _toy_ckpt() -> Path:
    """A real Lightning checkpoint of a tiny toy model (one training step), made once."""
    root = Path(_KEEP.name)
    model = ToyDiffusion(hidden=8, depth=1, sampler="ddim", sampling_steps=3, num_val_samples=0)
    data = GaussianMixtureData(num_train=16, num_val=8, batch_size=8)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=root, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(root / "toy.ckpt")
    return root / "toy.ckpt"


def _save(tmp: Path, name: str, obj: object) -> Path:
    torch.save(obj, tmp / name)
    return tmp / name


def _hostile(tmp: Path) -> Path:
    """Loads with weights_only=True; names os.system with a shell command as its argument."""
    return _save(tmp, "evil.ckpt", {"state_dict": {}, "hyper_parameters": {"command": "touch PWNED"},
                                    "domaindiff": {"class_path": "os.system"}})


def _refused_and_harmless(tmp: Path, args: list[str]) -> str:
    msg = cli_message(args, cwd=tmp)
    assert not (tmp / "PWNED").exists(), "the checkpoint ran its shell command"
    return msg


def _edited(tmp: Path, name: str, change) -> Path:
    raw = torch.load(_toy_ckpt(), weights_only=True)
    change(raw)
    return _save(tmp, name, raw)


def _truncated(tmp: Path) -> Path:
    data = _toy_ckpt().read_bytes()
    (tmp / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    return tmp / "trunc.ckpt"


def _load(path: Path) -> str:
    return raised(CheckpointError, lambda: load_checkpoint(path))


def _fit(tmp: Path, *extra: str) -> str:
    return cli_message(["fit", "--config", TOY_FIT, *extra], cwd=tmp)


def _sample(tmp: Path, *extra: str) -> str:
    return cli_message(["sample", "--ckpt", str(_toy_ckpt()), "--n", "4", "--no-progress",
                        "--out", str(tmp / "s.pt"), *extra], cwd=tmp)


def _eval(tmp: Path, *extra: str) -> str:
    return cli_message(["eval", "toy", f"out_dir={tmp}", *extra], cwd=tmp)


def _threads(tmp: Path) -> str:
    old = os.environ.get("DOMAINDIFF_THREADS")
    os.environ["DOMAINDIFF_THREADS"] = "two"
    try:
        return cli_message(["plugins"], cwd=tmp)
    finally:
        if old is None:
            del os.environ["DOMAINDIFF_THREADS"]
        else:
            os.environ["DOMAINDIFF_THREADS"] = old


def _out_dir(tmp: Path) -> str:
    (tmp / "results").mkdir()
    return cli_message(["sample", "--ckpt", str(_toy_ckpt()), "--out", str(tmp / "results")],
                       cwd=tmp)


CATALOGUE: list[BadInput] = [
    BadInput("core-ckpt-os-system-sample", "domaindiff sample --ckpt evil.ckpt",
             r"checkpoint .*evil\.ckpt: refusing class 'os\.system'",
             lambda t: _refused_and_harmless(t, ["sample", "--ckpt", str(_hostile(t))]), 1),
    BadInput("core-ckpt-os-system-trusted", "domaindiff sample --ckpt evil.ckpt --trust-checkpoint",
             r"evil\.ckpt: refusing class 'os\.system'",
             lambda t: _refused_and_harmless(t, ["sample", "--ckpt", str(_hostile(t)),
                                                 "--trust-checkpoint"]), 1),
    BadInput("core-ckpt-os-system-eval", "domaindiff eval toy ckpt=evil.ckpt",
             r"evil\.ckpt: refusing class 'os\.system'",
             lambda t: _refused_and_harmless(t, ["eval", "toy", f"ckpt={_hostile(t)}",
                                                 f"out_dir={t}"]), 1),
    BadInput("core-ckpt-not-a-diffusion-module",
             "load_checkpoint('linear.ckpt')  # class_path torch.nn.Linear",
             r"linear\.ckpt: refusing class 'torch\.nn\.Linear': only DiffusionModule subclasses",
             lambda t: _load(_edited(t, "linear.ckpt", lambda r: r["domaindiff"].update(
                 class_path="torch.nn.Linear"))), 1),
    BadInput("core-ckpt-truncated", "domaindiff sample --ckpt trunc.ckpt  # half the file",
             r"trunc\.ckpt is not a readable torch file \(corrupt, truncated",
             lambda t: cli_message(["sample", "--ckpt", str(_truncated(t))], cwd=t), 1),
    BadInput("core-ckpt-garbage", "load_checkpoint('junk.ckpt')  # not a torch file",
             r"junk\.ckpt is not a readable torch file",
             lambda t: (t / "junk.ckpt").write_bytes(b"not a checkpoint at all")
             and _load(t / "junk.ckpt"), 1),
    BadInput("core-ckpt-directory", "domaindiff sample --ckpt lightning_logs/version_0/checkpoints",
             r"checkpoints is a directory, expected a \.ckpt file; it holds last\.ckpt",
             lambda t: (t / "checkpoints").mkdir() or (t / "checkpoints/last.ckpt").touch()
             or cli_message(["sample", "--ckpt", str(t / "checkpoints")], cwd=t), 1),
    BadInput("core-ckpt-missing-eval", "domaindiff eval toy ckpt=missing.ckpt",
             r"checkpoint missing\.ckpt: no such file",
             lambda t: _eval(t, "ckpt=missing.ckpt"), 1),
    BadInput("core-ckpt-pickled-object", "domaindiff sample --ckpt obj.ckpt  # holds a Path",
             r"obj\.ckpt holds a pickled Python object \(pathlib\.PosixPath\).*--trust-checkpoint",
             lambda t: cli_message(["sample", "--ckpt", str(_edited(
                 t, "obj.ckpt", lambda r: r.update(extra=Path("/"))))], cwd=t), 1),
    BadInput("core-ckpt-no-hyper-parameters", "load_checkpoint('nohp.ckpt')  # empty hparams",
             r"nohp\.ckpt: no hyper_parameters, but domaindiff\.toy\.model\.ToyDiffusion takes "
             r"arguments .*refusing to rebuild it with its defaults",
             lambda t: _load(_edited(t, "nohp.ckpt", lambda r: r.update(hyper_parameters={}))), 1),
    BadInput("core-ckpt-hparams-do-not-fit", "load_checkpoint('badhp.ckpt')  # dim=0",
             r"badhp\.ckpt: hyper_parameters do not fit domaindiff\.toy\.model\.ToyDiffusion",
             lambda t: _load(_edited(t, "badhp.ckpt", lambda r: r["hyper_parameters"].update(
                 dim=0))), 1),
    BadInput("core-fit-sampler-typo",
             "domaindiff fit --config tests/conf/toy_fit.yaml --model.init_args.sampler ddimm",
             r"^(Seed set to 0\n)?error: domaindiff\.toy\.ToyDiffusion: unknown sampler 'ddimm'; "
             r"available: \[.*'ddim'",
             lambda t: _fit(t, "--model.init_args.sampler", "ddimm"), 2),
    BadInput("core-fit-process-typo",
             "domaindiff fit --config tests/conf/toy_fit.yaml --model.init_args.process vpp",
             r"error: domaindiff\.toy\.ToyDiffusion: unknown process 'vpp'; choose one of",
             lambda t: _fit(t, "--model.init_args.process", "vpp"), 2),
    BadInput("core-fit-mixture-typo",
             "domaindiff fit --config tests/conf/toy_fit.yaml --data.init_args.mixture ring9",
             r"error: domaindiff\.toy\.GaussianMixtureData: mixture: unknown 'ring9'; choose one",
             lambda t: _fit(t, "--data.init_args.mixture", "ring9"), 2),
    BadInput("core-fit-parametrization-typo",
             "domaindiff fit --config tests/conf/toy_fit.yaml "
             "--model.init_args.parametrization epss",
             r"error: .*unknown parametrization 'epss'; choose one of \('eps'",
             lambda t: _fit(t, "--model.init_args.parametrization", "epss"), 2),
    BadInput("core-fit-batch-size-0",
             "domaindiff fit --config tests/conf/toy_fit.yaml --data.init_args.batch_size 0",
             r"error: domaindiff\.toy\.GaussianMixtureData: batch_size must be >= 1, got 0",
             lambda t: _fit(t, "--data.init_args.batch_size", "0"), 2),
    BadInput("core-fit-ema-decay-above-1",
             "domaindiff fit --config tests/conf/toy_fit.yaml --model.init_args.ema_decay 1.5",
             r"error: .*ema_decay must be in \[0, 1\) \(0 disables EMA\), got 1\.5",
             lambda t: _fit(t, "--model.init_args.ema_decay", "1.5"), 2),
    BadInput("core-fit-unknown-setting",
             "domaindiff fit --config tests/conf/toy_fit.yaml --model.init_args.hiddden 3",
             r"error: --model \(domaindiff\.toy\.ToyDiffusion\): Option 'hiddden' is not accepted",
             lambda t: _fit(t, "--model.init_args.hiddden", "3"), 2),
    BadInput("core-fit-wrong-type",
             "domaindiff fit --config tests/conf/toy_fit.yaml --trainer.max_epochs abc",
             r"error: --trainer\.max_epochs: Expected a <class 'int'>\. Got value: abc",
             lambda t: _fit(t, "--trainer.max_epochs", "abc"), 2),
    BadInput("core-fit-ckpt-path-missing",
             "domaindiff fit --config tests/conf/toy_fit.yaml --ckpt_path missing.ckpt",
             r"^error: checkpoint missing\.ckpt: no such file$",
             lambda t: _fit(t, "--ckpt_path", "missing.ckpt"), 2),
    BadInput("core-fit-ckpt-path-names-os-system",
             "domaindiff fit --config tests/conf/toy_fit.yaml --ckpt_path evil.ckpt  "
             "# hyper_parameters._class_path: os.system",
             r"evil\.ckpt: refusing class 'os\.system'",
             lambda t: _fit(t, "--ckpt_path", str(_edited(
                 t, "evil.ckpt", lambda r: r["hyper_parameters"].update(_class_path="os.system")))),
             2),
    BadInput("core-fit-ckpt-path-changed-argument",
             "domaindiff fit --config tests/conf/toy_fit.yaml --ckpt_path toy.ckpt  "
             "# toy.ckpt was trained with hidden=8, the config says 32",
             r"^error: model\.init_args\.hidden=32 \(from --config\): the checkpoint "
             r".*toy\.ckpt was started with 8; .*a run from --ckpt_path keeps the model arguments",
             lambda t: _fit(t, "--ckpt_path", str(_toy_ckpt())), 2),
    BadInput("core-fit-ckpt-path-remote",
             "domaindiff fit --config tests/conf/toy_fit.yaml --ckpt_path https://host/x.ckpt",
             r"https://host/x\.ckpt: remote checkpoints are refused",
             lambda t: _fit(t, "--ckpt_path", "https://host/x.ckpt"), 2),
    BadInput("core-eval-steps-0", "domaindiff eval toy ckpt=toy.ckpt steps=0",
             r"^error: steps=0: expected a positive integer or null$",
             lambda t: _eval(t, f"ckpt={_toy_ckpt()}", "steps=0"), 1),
    BadInput("core-eval-sampler-typo", "domaindiff eval toy ckpt=toy.ckpt sampler=ddimm",
             r"^error: unknown sampler 'ddimm'; available: ",
             lambda t: _eval(t, f"ckpt={_toy_ckpt()}", "sampler=ddimm"), 1),
    BadInput("core-eval-no-ckpt", "domaindiff eval toy",
             r"^error: ckpt: required, e\.g\. ckpt=", lambda t: _eval(t), 1),
    BadInput("core-sample-out-is-a-directory", "domaindiff sample --ckpt toy.ckpt --out results/",
             r"--out .*results: is a directory; give a file name, e.g\. .*results/samples\.pt",
             _out_dir, 1),
    BadInput("core-sample-option-not-a-number",
             "domaindiff sample --ckpt toy.ckpt --sampler ddim --option eta=abc",
             r"--option eta=abc: sampler 'ddim' expects a number for 'eta'",
             lambda t: _sample(t, "--sampler", "ddim", "--option", "eta=abc"), 1),
    BadInput("core-sample-option-typo", "domaindiff sample --ckpt toy.ckpt --option typo=1",
             r"--option typo: sampler 'ddim' has no option 'typo'; accepted: eta, schedule",
             lambda t: _sample(t, "--option", "typo=1"), 1),
    BadInput("core-sample-option-int", "domaindiff sample --ckpt toy.ckpt --sampler dpm_solver "
             "--option order=2.5",
             r"--option order=2\.5: sampler 'dpm_solver' expects an integer for 'order'",
             lambda t: _sample(t, "--sampler", "dpm_solver", "--option", "order=2.5"), 1),
    BadInput("core-sample-n-0", "domaindiff sample --ckpt toy.ckpt --n 0",
             r"^error: --n must be >= 1, got 0$", lambda t: _sample(t, "--n", "0"), 1),
    BadInput("core-sample-sampler-typo", "domaindiff sample --ckpt toy.ckpt --sampler ddimm",
             r"^error: unknown sampler 'ddimm'",
             lambda t: _sample(t, "--sampler", "ddimm"), 1),
    BadInput("core-threads-not-a-number", "DOMAINDIFF_THREADS=two domaindiff plugins",
             r"^error: DOMAINDIFF_THREADS must be a positive integer, got 'two'$", _threads, 1),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)
