"""Shared checks for "a resumed run is the same run": fit, stop, resume, compare bitwise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


def fit(make_model: Callable[[], L.LightningModule], make_data: Callable[[], Any], root: Path,
        max_steps: int, ckpt_path: str | Path | None = None, every: int = 1,
        **trainer_kwargs: Any) -> L.Trainer:
    """Fit as the CLI does (global seed 0, deterministic, CPU), a step checkpoint every ``every``."""
    L.seed_everything(0, workers=True, verbose=False)
    model, data = make_model(), make_data()
    ckpt = ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=every,
                           save_top_k=-1)
    kwargs = {"limit_val_batches": 1, "num_sanity_val_steps": 0, **trainer_kwargs}
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, deterministic=True,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ckpt], **kwargs)
    trainer.fit(model, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return trainer


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix: obj}


def assert_bitwise_equal(a: L.Trainer, b: L.Trainer) -> None:
    """Weights (EMA included), optimizer state and noise-generator state are bitwise equal."""
    ma, mb = a.lightning_module, b.lightning_module
    assert a.global_step == b.global_step
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    assert any("ema_network" in k for k in sa) or getattr(ma, "ema_network", None) is None
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"weights differ after resume: {diff[:5]}"
    oa, ob = _flatten(a.optimizers[0].state_dict()), _flatten(b.optimizers[0].state_dict())
    assert oa.keys() == ob.keys()
    for k in oa:
        if torch.is_tensor(oa[k]):
            assert torch.equal(oa[k], ob[k]), f"optimizer state {k} differs after resume"
        else:
            assert oa[k] == ob[k], f"optimizer state {k} differs after resume"
    assert torch.equal(ma._gen.get_state(), mb._gen.get_state())
    assert ma._train_batches == mb._train_batches


def check_resume(make_model: Callable[[], L.LightningModule], make_data: Callable[[], Any],
                 tmp_path: Path, total: int = 6, resume_from: tuple[int, ...] = (3,),
                 **trainer_kwargs: Any) -> None:
    """Uninterrupted ``total`` steps == stopped at ``k`` and resumed from ``step=k.ckpt``."""
    full = fit(make_model, make_data, tmp_path / "full", total, **trainer_kwargs)
    for k in resume_from:
        ckpt = tmp_path / "full" / f"step={k}.ckpt"
        assert ckpt.is_file(), sorted(p.name for p in (tmp_path / "full").iterdir())
        raw = torch.load(ckpt, weights_only=True)
        if "ema_network.n_averaged" in raw["state_dict"]:  # the EMA update of step k is inside
            assert int(raw["state_dict"]["ema_network.n_averaged"]) == k
        resumed = fit(make_model, make_data, tmp_path / f"resumed{k}", total, ckpt_path=ckpt,
                      **trainer_kwargs)
        assert_bitwise_equal(full, resumed)
