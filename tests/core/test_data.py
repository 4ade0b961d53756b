import os
from pathlib import Path

import numpy as np
import pytest
import torch

from domaindiff.data import (
    DatasetUnavailableError,
    DomainDataModule,
    atomic_save,
    atomic_savez,
    atomic_write,
    download,
    sha256sum,
)
from domaindiff.module import DiffusionModule
from domaindiff.toy import GaussianMixtureData, ToyDiffusion


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path / "cache"))

    class Mine(DomainDataModule):
        name = "mine"

    assert Mine().cache_dir == tmp_path / "cache" / "mine"
    assert Mine(root=str(tmp_path / "x")).cache_dir == tmp_path / "x"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temp file left
    atomic_save({"w": torch.ones(2)}, tmp_path / "t.pt")
    assert torch.load(tmp_path / "t.pt", weights_only=True)["w"].sum() == 2
    atomic_savez(tmp_path / "z.npz", a=np.arange(3))
    assert np.load(tmp_path / "z.npz")["a"].tolist() == [0, 1, 2]


def test_download_offline_names_url_and_manual_step(tmp_path):
    url = "http://127.0.0.1:9/nothing/here.zip"
    with pytest.raises(DatasetUnavailableError, match="127.0.0.1:9") as info:
        download(url, tmp_path / "here.zip", manual="put here.zip in the cache")
    assert "put here.zip in the cache" in str(info.value)
    assert not (tmp_path / "here.zip").exists()


def test_download_checks_existing_files(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("hello")
    assert download("http://127.0.0.1:9/f.txt", f, sha256=sha256sum(f)) == f
    with pytest.raises(DatasetUnavailableError, match="checksum"):
        download("http://127.0.0.1:9/f.txt", f, sha256="0" * 64)
    # a file:// URL exercises the real fetch path and the checksum of the payload
    src = tmp_path / "src.txt"
    src.write_text("payload")
    dest = tmp_path / "dest" / "copy.txt"
    download(src.as_uri(), dest, sha256=sha256sum(src))
    assert dest.read_text() == "payload"
    with pytest.raises(DatasetUnavailableError, match="checksum"):
        download(src.as_uri(), tmp_path / "bad.txt", sha256="1" * 64)
    assert not (tmp_path / "bad.txt").exists()


def test_bad_datamodule_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        GaussianMixtureData(batch_size=0)
    with pytest.raises(ValueError, match="mixture"):
        GaussianMixtureData(mixture="spiral")


def test_module_sample_and_ema(tmp_path):
    model = ToyDiffusion(hidden=16, depth=1, ema_decay=0.9)
    x = model.sample(5, sampler="heun", steps=5)["x"]
    assert x.shape == (5, 2)
    before = [p.clone() for p in model.ema_network.parameters()]
    for p in model.network.parameters():
        p.data.add_(1.0)
    model.update_ema()  # first update copies
    model.update_ema()  # then averages
    after = list(model.ema_network.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="unknown sampler"):
        ToyDiffusion(sampler="magic")
    with pytest.raises(ValueError, match="processes"):
        DiffusionModule(torch.nn.Linear(2, 2), {})
    model.save_samples({"x": x}, tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=True)["x"].shape == (5, 2)
    assert not any(Path(tmp_path).glob(".*tmp"))
    assert os.path.getsize(tmp_path / "s.pt") > 0


def test_export_writes_ema_weights(tmp_path):
    model = ToyDiffusion(hidden=16, depth=1)
    for p in model.network.parameters():
        p.data.zero_()
    model.export(tmp_path / "w.pt")
    raw = torch.load(tmp_path / "w.pt", weights_only=True)
    assert raw["class_path"].endswith("ToyDiffusion") and raw["hyper_parameters"]["hidden"] == 16
    ema = model.ema_network.module.state_dict()
    assert all(torch.equal(raw["network"][k], ema[k]) for k in ema)
    fresh = ToyDiffusion(**raw["hyper_parameters"])
    fresh.network.load_state_dict(raw["network"])
