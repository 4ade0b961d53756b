"""Loaders on files written in the real formats, and the synthetic generator."""

import numpy as np
import pytest
import torch

from domaindiff_medical.data import (
    CAMUS,
    EchoNetDynamic,
    SyntheticEcho,
    echonet_mask,
    load_camus,
    read_avi_frames,
    read_camus_image,
    synthetic_echo,
)

from .formats import write_camus, write_echonet


def test_synthetic_deterministic_and_labels():
    a, la = synthetic_echo(3, 64)
    b, lb = synthetic_echo(3, 64)
    c, _ = synthetic_echo(4, 64)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert set(np.unique(la)) <= {0, 1, 2, 3} and {1, 2} <= set(np.unique(la))
    assert 0 <= a.min() and a.max() <= 1
    # blood pool darker than myocardium; outside the fan is black
    assert a[la == 1].mean() < a[la == 2].mean()
    assert a[0, 0] == 0 and a[0, -1] == 0
    # single connected cavity
    from scipy import ndimage
    assert ndimage.label(la == 1)[1] == 1


def test_synthetic_datamodule_caches(tmp_path):
    dm = SyntheticEcho(num_train=4, num_val=2, num_test=2, size=32, batch_size=2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32) and batch["mask"].shape == (2, 1, 32, 32)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    dm.setup("fit")
    dm.dataset("test")
    entries = sorted((tmp_path / "data" / "medical").glob("synthetic_*"))
    assert len(entries) == 3 and all((e / "MANIFEST.json").is_file() for e in entries)
    tr, te = dm.dataset("train").images, dm.dataset("test").images
    assert not torch.equal(tr[:2], te[:2])
    with pytest.raises(ValueError, match="num_val"):
        SyntheticEcho(num_val=0)


@pytest.mark.parametrize("fmt", ["mhd", "nii"])
def test_camus_roundtrip(tmp_path, fmt):
    rng = np.random.default_rng(0)
    root = tmp_path / "camus"
    patients = [f"patient{k:04d}" for k in range(1, 5)]
    truth = write_camus(root, fmt, patients, rng)
    ext = ".mhd" if fmt == "mhd" else ".nii.gz"
    img, lab = truth["patient0001_2CH_ED"]
    assert np.array_equal(read_camus_image(root / "patient0001" / f"patient0001_2CH_ED{ext}"), img)
    got = read_camus_image(root / "patient0001" / f"patient0001_2CH_ED_gt{ext}")
    assert np.array_equal(got, lab)
    images, masks, spacing = load_camus(root, "train", size=24, views=["2CH"], phases=["ED"])
    assert images.shape == (2, 1, 24, 24) and spacing.tolist() == [[1.0, 1.0]] * 2
    # mask is label 1 only (resized nearest from 24x16 to 24x24): rows 4..11
    assert masks[0, 0, 4:12].any(1).all() and not masks[0, 0, 12:].any()
    dm = CAMUS(root=str(root), size=16, batch_size=2)
    assert len(dm.dataset("train")) == 8 and len(dm.dataset("val")) == 4
    assert len(dm.dataset("test")) == 4


def test_camus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="subgroup_training.txt"):
        load_camus(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_camus(tmp_path, "bogus")
    bad = tmp_path / "x.png"
    bad.write_bytes(b"0")
    with pytest.raises(ValueError, match="x.png"):
        read_camus_image(bad)


def test_echonet_mask_rectangle():
    # long axis then three chords across columns 2..6, rows 2..5
    x1, y1 = [4, 2, 2, 2], [1, 2, 4, 5]
    x2, y2 = [4, 6, 6, 6], [6, 2, 4, 5]
    m = echonet_mask(x1, y1, x2, y2, 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[2:6, 2:7] = True
    assert np.array_equal(m, expected)


def test_echonet_roundtrip(tmp_path):
    root = tmp_path / "EchoNet-Dynamic"
    frames = write_echonet(root, np.random.default_rng(1))
    name = sorted(frames)[0]
    assert np.array_equal(read_avi_frames(root / "Videos" / f"{name}.avi"), frames[name])
    dm = EchoNetDynamic(root=str(root), size=16, batch_size=4)
    tr = dm.dataset("train")
    assert len(tr) == 4 and len(dm.dataset("val")) == 2 and len(dm.dataset("test")) == 2
    m = tr.masks[0, 0].numpy()
    expected = np.zeros((16, 16), bool)
    expected[4:13, 4:12] = True
    assert np.array_equal(m.astype(bool), expected)
    with pytest.raises(FileNotFoundError, match="FileList.csv"):
        EchoNetDynamic(root=str(tmp_path / "nowhere")).dataset("train")


def test_synthetic_cache_damage_is_rebuilt_not_trusted(tmp_path):
    dm = SyntheticEcho(num_train=3, num_val=1, num_test=1, size=16, batch_size=2, generator="simple")
    first = dm.dataset("train").images.clone()
    npz = next((tmp_path / "data" / "medical").glob("synthetic_train_*")) / "arrays.npz"
    npz.write_bytes(npz.read_bytes()[:100])  # a damaged cache file
    again = SyntheticEcho(num_train=3, num_val=1, num_test=1, size=16, batch_size=2, generator="simple")
    with pytest.warns(UserWarning, match=r"arrays\.npz has size 100 .*rebuilding"):
        images = again.dataset("train").images
    assert torch.equal(images, first)


def test_a_missing_licensed_dataset_names_the_manual_step(tmp_path):
    """CAMUS and EchoNet cannot be downloaded for the user: the error says where they come from."""
    from domaindiff_medical.data import CAMUS, EchoNetDynamic

    with pytest.raises(FileNotFoundError, match=r"subgroup_training\.txt not found under .*"
                                                r"registration .*pass its folder as root"):
        CAMUS(root=str(tmp_path), size=16).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"FileList\.csv; EchoNet-Dynamic is distributed"):
        EchoNetDynamic(root=str(tmp_path), size=16).setup("fit")
