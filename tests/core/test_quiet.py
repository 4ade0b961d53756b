"""domaindiff.quiet: third-party notices are hidden, warnings about the user's data still show."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from domaindiff.quiet import NOISY_WARNINGS, TIP_LOGGERS, quiet_third_party

TOY_CONF = Path(__file__).resolve().parents[2] / "core" / "domaindiff" / "toy" / "conf" / "demo.yaml"

# the texts as the libraries print them (lightning 2.6, torch 2.13, MONAI 1.6, GluonTS 0.17)
SAMPLES = [
    ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
     "treespec.is_leaf()` instead.", FutureWarning, "lightning.pytorch.utilities._pytree"),
    ("Starting from v1.9.0, `tensorboardX` has been removed as a dependency of the "
     "`lightning.pytorch` package, due to potential conflicts with other packages in the ML "
     "ecosystem.", UserWarning, "lightning.pytorch.trainer.connectors.logger_connector."
     "logger_connector"),
    ("monai.metrics.utils get_mask_edges:always_return_as_numpy: Argument "
     "`always_return_as_numpy` has been deprecated since version 1.5.0.", FutureWarning,
     "monai.utils.deprecate_utils"),
    ("Using `json`-module for json-handling. Consider installing one of `orjson`, `ujson` to "
     "speed up serialization and deserialization.", UserWarning, "gluonts.json"),
    ("Using a non-tuple sequence for multidimensional indexing is deprecated and will be changed "
     "in pytorch 2.9; use x[tuple(seq)] instead of x[seq].", UserWarning, "gluonts.torch.util"),
]


def _warn_from(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module,
                           registry={})


@pytest.mark.parametrize("message,category,module", SAMPLES, ids=lambda v: str(v)[:24])
def test_each_notice_is_hidden_only_where_its_library_issues_it(message, category, module):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert quiet_third_party(force=True)
        _warn_from(message, category, module)
        assert rec == [], f"not filtered: {message[:60]}"
        # the same text raised by domaindiff's own code is not hidden: no blanket ignore
        _warn_from(message, category, "domaindiff.data")
        assert len(rec) == 1


def test_every_filter_has_a_sample_and_none_is_blanket():
    assert len(NOISY_WARNINGS) == len(SAMPLES)
    for notice in NOISY_WARNINGS:
        assert notice.message.strip(".*") and notice.module, notice
        assert notice.category is not Warning, notice


def test_explicit_warnings_option_wins(monkeypatch):
    monkeypatch.setattr("sys.warnoptions", ["default"])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert not quiet_third_party()
        _warn_from(*SAMPLES[0])
        assert len(rec) == 1


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_toy_fit_shows_no_third_party_notice_but_user_data_warnings(tmp_path):
    """A real (tiny) toy fit with the default logger: no tip, LeafSpec or tensorboard notice."""
    from lightning.pytorch.trainer.connectors.logger_connector import logger_connector

    from domaindiff.cli import lightning_cli
    from domaindiff.data import CacheWarning, build_cache_entry

    logger_connector.warning_cache.clear()  # Lightning warns once per process otherwise
    handler = _Records()
    logs = [logging.getLogger(name) for name in TIP_LOGGERS[:2]]
    for log in logs:
        log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            quiet_third_party(force=True)
            lightning_cli(["fit", "--config", str(TOY_CONF), "--trainer.max_epochs=1",
                           "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                           "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]",
                           "--model.init_args.num_val_samples=8", "--model.init_args.hidden=8",
                           "--data.init_args.num_train=64", "--data.init_args.num_val=32",
                           "--data.init_args.batch_size=32", f"--trainer.default_root_dir={tmp_path}"])
            entry = tmp_path / "entry"
            entry.mkdir()  # a cache entry without its manifest: the user's cache is broken
            build_cache_entry(entry, lambda d: (d / "x.txt").write_text("1"))
    finally:
        for log in logs:
            log.removeHandler(handler)
    texts = [str(w.message) for w in rec]
    noisy = [t for t in texts if any(s[0][:40] in t for s in SAMPLES)]
    assert noisy == [], noisy
    assert not [m for m in handler.messages if "Tip:" in m], handler.messages
    assert any("max_epochs=1" in m for m in handler.messages), handler.messages  # progress kept
    assert any(issubclass(w.category, CacheWarning) for w in rec), texts


def test_domaindiff_command_installs_the_filters(capsys):
    from domaindiff.cli import main

    with warnings.catch_warnings():
        warnings.resetwarnings()
        assert main(["--help"]) == 0
        patterns = [f[1].pattern for f in warnings.filters if f[0] == "ignore" and f[1]]
    assert all(n.message in patterns for n in NOISY_WARNINGS), patterns
    assert logging.getLogger(TIP_LOGGERS[0]).filters
