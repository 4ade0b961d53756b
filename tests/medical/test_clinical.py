"""Real data handled as clinicians' tools do: the sector, the files' spacing, test-only splits."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from domaindiff_medical.data import (
    CAMUS,
    EchoNetDynamic,
    SplitSourceWarning,
    load_camus,
    read_camus,
    resample_pair,
)
from domaindiff_medical.metrics import expected_calibration_error, segmentation_metrics
from domaindiff_medical.postprocess import postprocess, sector_mask

from .formats import write_camus, write_echonet


def _fan(size=32):
    """An image whose echo fills a fan (apex at the top centre), zero outside it."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    depth = np.hypot(yy + 2, xx - size / 2)
    angle = np.arctan2(xx - size / 2, yy + 2)
    fan = (np.abs(angle) < 0.6) & (depth < size - 2)
    img = np.where(fan, 0.3 + 0.5 * np.random.default_rng(0).random((size, size)), 0.0)
    img[12:20, 13:19] = 0.03  # a dark blood pool inside the fan (not outside it)
    return torch.tensor(img, dtype=torch.float32)[None, None], fan


def test_sector_mask_is_the_fan_with_its_dark_pools():
    img, fan = _fan()
    sector = sector_mask(img)[0, 0].numpy()
    assert sector[15, 16]  # the blood pool is inside
    assert (sector == fan).mean() > 0.97 and not sector[0, 0] and not sector[31, 0]


def test_a_bigger_blob_outside_the_sector_is_never_kept():
    """The crafted failure of the largest-component rule: a false positive in the black corner,
    larger than the ventricle, won over the ventricle (Dice 0)."""
    img, fan = _fan()
    prob = torch.zeros(1, 1, 32, 32)
    prob[0, 0, 12:20, 13:19] = 0.8          # the ventricle, inside the fan (48 px)
    prob[0, 0, 0:10, 0:7] = 0.9              # an artefact outside the fan (70 px)
    assert not fan[0:10, 0:7].any()
    old = postprocess(prob)                  # no sector: the artefact wins
    assert old[0, 0, 0:10, 0:7].all() and not old[0, 0, 12:20, 13:19].any()
    new = postprocess(prob, sector=sector_mask(img))[0, 0]
    want = torch.zeros(32, 32)
    want[12:20, 13:19] = 1
    assert torch.equal(new, want)


def test_the_kept_component_is_the_one_the_ensemble_supports_most():
    prob = torch.zeros(1, 1, 24, 24)
    prob[0, 0, 2:10, 2:10] = 0.55   # 64 px where barely half the members agree: mass 35.2
    prob[0, 0, 14:21, 14:21] = 1.0  # 49 px where every member agrees: mass 49
    m = postprocess(prob, opening=0)[0, 0]
    assert m[14:21, 14:21].all() and not m[2:10, 2:10].any()


def test_camus_spacing_is_read_from_mhd_and_nifti_and_images_keep_their_aspect(tmp_path):
    import nibabel as nib
    arr = np.zeros((20, 10), np.uint8)
    img = sitk.GetImageFromArray(arr[None])
    img.SetSpacing((0.3, 0.15, 1.0))  # (x = column, y = row, z)
    sitk.WriteImage(img, str(tmp_path / "a.mhd"))
    assert read_camus(tmp_path / "a.mhd")[1] == pytest.approx((0.15, 0.3))
    nib.save(nib.Nifti1Image(arr.T[..., None], np.diag([0.3, 0.15, 1.0, 1.0])),
             str(tmp_path / "a.nii.gz"))
    got, spacing = read_camus(tmp_path / "a.nii.gz")
    assert got.shape == (20, 10) and spacing == pytest.approx((0.15, 0.3))
    # 20 rows x 0.15 mm = 3 mm tall, 10 cols x 0.3 mm = 3 mm wide: square on a 12 px canvas
    lab = np.zeros((20, 10), np.uint8)
    lab[:10] = 1  # the top half (1.5 mm)
    out, out_lab, sp = resample_pair(np.ones((20, 10)), lab, 12, (0.15, 0.3))
    assert sp == pytest.approx((0.25, 0.25)) and out_lab[:6].all() and not out_lab[6:].any()
    out, out_lab, sp = resample_pair(np.ones((10, 20)), np.ones((10, 20)), 20, (1.0, 1.0))
    assert out_lab[5:15].all() and not out_lab[:5].any() and not out_lab[15:].any()  # padded


def _write_spaced(root, patients, spacing, fmt="mhd"):
    write_camus(root, fmt, patients, np.random.default_rng(0))
    for f in root.rglob("*.mhd"):  # give every file a CAMUS-like anisotropic spacing
        im = sitk.ReadImage(str(f))
        im.SetSpacing((spacing[1], spacing[0], 1.0))
        sitk.WriteImage(im, str(f))


def test_camus_hd95_in_mm_from_the_files_spacing(tmp_path):
    root = tmp_path / "camus"
    _write_spaced(root, [f"patient{k:04d}" for k in range(1, 5)], (0.154, 0.308))
    images, masks, spacing = load_camus(root, "test", size=24, views=["2CH"], phases=["ED"])
    # 24 rows x 0.154 = 3.70 mm tall, 16 cols x 0.308 = 4.93 mm wide: 4.93 / 24 mm per pixel
    assert spacing[0].tolist() == pytest.approx([16 * 0.308 / 24] * 2, rel=1e-5)
    shifted = torch.roll(torch.as_tensor(masks), 1, dims=-1)  # one pixel to the right
    hd = segmentation_metrics(shifted, torch.as_tensor(masks), torch.as_tensor(spacing))["hd95"]
    assert float(hd[0]) == pytest.approx(spacing[0, 1], rel=1e-4)  # one pixel, in mm


def test_a_camus_test_only_folder_needs_no_train_or_val_files(tmp_path):
    root = tmp_path / "camus"
    write_camus(root, "nii", [f"patient{k:04d}" for k in range(1, 5)], np.random.default_rng(0))
    for name in ("training", "validation"):
        (root / "database_split" / f"subgroup_{name}.txt").unlink()
    assert len(CAMUS(root=str(root), size=16).dataset("test")) == 4
    with pytest.raises(FileNotFoundError, match="subgroup_training.txt"):
        CAMUS(root=str(root), size=16).dataset("train")


def test_the_2019_release_layout_is_its_published_split(tmp_path):
    """training/ (450 patients) and testing/ (50), no split files; the two folders reuse the
    same patient names, so each split reads its own folder only."""
    root = tmp_path / "CAMUS"
    for folder, n in (("training", 3), ("testing", 2)):
        write_camus(root / folder, "mhd", [f"patient{k:04d}" for k in range(1, n + 1)],
                    np.random.default_rng(len(folder)))
        for f in (root / folder / "database_split").iterdir():
            f.unlink()
        (root / folder / "database_split").rmdir()
    dm = CAMUS(root=str(root), size=16)
    assert len(dm.dataset("test")) == 2 * 4 and len(dm.dataset("train")) == 3 * 4
    one = read_camus(root / "testing" / "patient0001" / "patient0001_2CH_ED.mhd")[0]
    two = read_camus(root / "training" / "patient0001" / "patient0001_2CH_ED.mhd")[0]
    assert not np.array_equal(one, two)
    got = load_camus(root, "test", size=24, views=["2CH"], phases=["ED"])[0][0, 0]
    want = resample_pair(one, np.zeros_like(one), 24, (1.0, 1.0))[0]
    assert np.allclose(got, want)  # the testing/ patient, not the training/ one
    with pytest.raises(FileNotFoundError, match="no validation split"):
        dm.dataset("val")


def test_a_folder_of_patients_without_any_split_file_is_the_test_split_with_a_warning(tmp_path):
    root = tmp_path / "camus"
    write_camus(root, "mhd", ["patient0007", "patient0009"], np.random.default_rng(0))
    for f in (root / "database_split").iterdir():
        f.unlink()
    with pytest.warns(SplitSourceWarning, match="all 2 patient folders"):
        assert len(CAMUS(root=str(root), size=16).dataset("test")) == 8


def test_echonet_test_only_without_the_other_splits_videos(tmp_path):
    root = tmp_path / "EchoNet-Dynamic"
    write_echonet(root, np.random.default_rng(1), size=16)
    for name in ("0X0000", "0X0001", "0X0002"):  # the TRAIN and VAL videos are absent
        (root / "Videos" / f"{name}.avi").unlink()
    dm = EchoNetDynamic(root=str(root), size=16)
    assert len(dm.dataset("test")) == 2
    with pytest.raises(FileNotFoundError, match="TRAIN videos"):
        dm.dataset("train")


def test_our_metrics_match_monai_per_image_with_per_axis_spacing():
    from monai.metrics import (
        CalibrationErrorMetric,
        DiceMetric,
        HausdorffDistanceMetric,
        SurfaceDistanceMetric,
    )
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(3, 1, 20, 20, generator=g) > 0.4).float()
    target = torch.zeros(3, 1, 20, 20)
    target[:, :, 5:15, 4:12] = 1
    spacing = torch.tensor([[0.5, 0.25], [1.0, 1.0], [0.3, 0.9]])
    ours = segmentation_metrics(pred, target, spacing)
    for b in range(3):
        sp = spacing[b].tolist()
        p, t = pred[b:b + 1], target[b:b + 1]
        assert float(ours["dice"][b]) == pytest.approx(float(DiceMetric()(p, t)))
        hd = HausdorffDistanceMetric(percentile=95)(p, t, spacing=sp)
        assert float(ours["hd95"][b]) == pytest.approx(float(hd), rel=1e-5)
        assd = SurfaceDistanceMetric(symmetric=True)(p, t, spacing=sp)
        assert float(ours["assd"][b]) == pytest.approx(float(assd), rel=1e-5)
    prob = torch.rand(1, 1, 20, 20, generator=g) * 0.98 + 0.01
    monai_ece = CalibrationErrorMetric(num_bins=20)(prob, target[:1])
    assert float(expected_calibration_error(prob, target[:1], 20)) == pytest.approx(
        float(monai_ece), abs=1e-5)
