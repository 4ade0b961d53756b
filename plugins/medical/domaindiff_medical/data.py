"""Echocardiography segmentation data: synthetic default, CAMUS (.mhd/.raw, .nii.gz), EchoNet-Dynamic.

Every dataset yields ``{"image": (1, H, W) float in [0, 1], "mask": (1, H, W) float 0/1}`` with
``mask = (label == 1)`` (the left-ventricle cavity, CAMUS label 1).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from domaindiff.data import DomainDataModule, atomic_savez

LV_LABEL = 1
CAMUS_VIEWS = ("2CH", "4CH")
CAMUS_PHASES = ("ED", "ES")
CAMUS_SPLITS = {"train": "training", "val": "validation", "test": "testing"}


# ------------------------------------------------------------------------------------ synthetic
def _irregular_ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float,
                       rng: np.random.Generator, roughness: float = 0.06) -> np.ndarray:
    """Boolean mask of an ellipse whose radius is perturbed by a few random Fourier modes."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    theta = np.arctan2(dy, dx)
    r = np.hypot(dy, dx)
    bump = np.ones_like(theta)
    for k in range(2, 6):
        bump += roughness * rng.normal() / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r <= bump


def synthetic_echo(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic apical echocardiogram and its CAMUS-style label map.

    A fan-shaped sector with its apex at the top centre, an elliptic LV cavity (label 1)
    inside a myocardium ring (label 2) and an atrium below (label 3), all with irregular
    borders; Rayleigh speckle and depth attenuation. Deterministic per ``seed``.

    Args:
        seed: random seed (same seed, same image).
        size: image side in pixels.

    Returns:
        ``(image, label)``: float32 ``(size, size)`` in [0, 1] and uint8 ``(size, size)``.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    rng = np.random.default_rng(seed)
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    apex_y, apex_x = -0.05 * h, w / 2
    depth = np.hypot(yy - apex_y, xx - apex_x) / h
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    half = np.deg2rad(rng.uniform(36, 44))
    sector = (np.abs(angle) <= half) & (depth <= 1.0)
    cy, cx = h * rng.uniform(0.40, 0.50), w * rng.uniform(0.45, 0.55)
    ry, rx = h * rng.uniform(0.20, 0.27), w * rng.uniform(0.09, 0.14)
    wall = rng.uniform(1.25, 1.45)
    cavity = _irregular_ellipse(h, w, cy, cx, ry, rx, rng)
    myo = _irregular_ellipse(h, w, cy, cx, ry * wall * 0.9, rx * wall, rng) & ~cavity
    atrium = _irregular_ellipse(h, w, cy + ry * 1.45, cx, ry * 0.45, rx * 0.95, rng)
    atrium &= ~(cavity | myo)
    label = np.zeros((h, w), np.uint8)
    label[atrium] = 3
    label[myo] = 2
    label[cavity] = LV_LABEL
    label[~sector] = 0
    # tissue reflectivity: bright myocardium, dark blood pools, mid-grey background tissue
    refl = np.full((h, w), rng.uniform(0.35, 0.5))
    refl[myo & sector] = rng.uniform(0.8, 1.0)
    refl[(cavity | atrium) & sector] = rng.uniform(0.05, 0.12)
    speckle = rng.rayleigh(scale=1.0, size=(h, w)) / np.sqrt(np.pi / 2)  # mean 1
    atten = np.exp(-rng.uniform(0.8, 1.4) * depth)
    img = refl * speckle * atten
    img = np.where(sector, img, 0.0)
    img = np.clip(img / max(np.quantile(img[sector], 0.99), 1e-6), 0, 1)
    return img.astype(np.float32), label


class SegmentationArrays(Dataset):
    """Images and LV masks held in memory as ``(N, 1, H, W)`` arrays."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        if images.shape != masks.shape or images.ndim != 4:
            raise ValueError(f"images {images.shape} and masks {masks.shape} must be equal (N,1,H,W)")
        self.images = torch.as_tensor(images, dtype=torch.float32)
        self.masks = torch.as_tensor(masks, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (bilinear, scaled to [0, 1]) and a label map (nearest) to ``size x size``."""
    img = torch.as_tensor(np.asarray(image, np.float32))[None, None]
    lab = torch.as_tensor(np.asarray(label, np.float32))[None, None]
    img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    lab = F.interpolate(lab, size=(size, size), mode="nearest")[0, 0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    return img.numpy(), lab.numpy().astype(np.uint8)


# ------------------------------------------------------------------------------------ CAMUS
def read_camus_image(path: str | Path) -> np.ndarray:
    """Read one CAMUS 2-D image or label as ``(H, W)``; ``.mhd`` via SimpleITK, ``.nii.gz`` via nibabel.

    SimpleITK gives ``(1, H, W)`` or ``(H, W)``; nibabel gives ``(W, H[, 1])`` and is transposed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CAMUS file not found: {path}")
    name = path.name
    if name.endswith(".mhd"):
        import SimpleITK as sitk
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    elif name.endswith(".nii.gz") or name.endswith(".nii"):
        import nibabel as nib
        arr = np.asarray(nib.load(str(path)).dataobj)
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
        return arr.T
    else:
        raise ValueError(f"{path}: unknown CAMUS format (expected .mhd or .nii.gz)")
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    return arr


def camus_split(root: str | Path, split: str) -> list[str]:
    """Patient names of a CAMUS split from ``subgroup_{training,validation,testing}.txt``."""
    if split not in CAMUS_SPLITS:
        raise ValueError(f"split must be one of {sorted(CAMUS_SPLITS)}, got {split!r}")
    fname = f"subgroup_{CAMUS_SPLITS[split]}.txt"
    hits = sorted(Path(root).rglob(fname))
    if not hits:
        raise FileNotFoundError(f"CAMUS split file {fname} not found under {root}")
    names = [ln.strip() for ln in hits[0].read_text().splitlines() if ln.strip()]
    return names


def _camus_file(root: Path, patient: str, stem: str) -> Path:
    for ext in (".nii.gz", ".mhd"):
        for cand in (root / patient / f"{stem}{ext}", root / f"{stem}{ext}"):
            if cand.exists():
                return cand
    hits = [p for ext in (".nii.gz", ".mhd") for p in root.rglob(f"{stem}{ext}")]
    if not hits:
        raise FileNotFoundError(f"CAMUS: no {stem}.nii.gz or {stem}.mhd under {root}")
    return hits[0]


def load_camus(root: str | Path, split: str, size: int = 64,
               views: Sequence[str] = CAMUS_VIEWS, phases: Sequence[str] = CAMUS_PHASES
               ) -> tuple[np.ndarray, np.ndarray]:
    """Load a CAMUS split as ``(images, masks)`` arrays ``(N, 1, size, size)``; mask = label 1."""
    root = Path(root)
    imgs, masks = [], []
    for patient in camus_split(root, split):
        for view in views:
            if view not in CAMUS_VIEWS:
                raise ValueError(f"CAMUS view must be one of {CAMUS_VIEWS}, got {view!r}")
            for phase in phases:
                if phase not in CAMUS_PHASES:
                    raise ValueError(f"CAMUS phase must be one of {CAMUS_PHASES}, got {phase!r}")
                stem = f"{patient}_{view}_{phase}"
                img = read_camus_image(_camus_file(root, patient, stem)).astype(np.float32)
                lab = read_camus_image(_camus_file(root, patient, stem + "_gt"))
                if img.shape != lab.shape:
                    raise ValueError(f"CAMUS {stem}: image {img.shape} and label {lab.shape} differ")
                img, lab = resize_pair(img, lab, size)
                imgs.append(img[None])
                masks.append((lab == LV_LABEL).astype(np.float32)[None])
    if not imgs:
        raise ValueError(f"CAMUS split {split!r} under {root} is empty")
    return np.stack(imgs), np.stack(masks)


# ------------------------------------------------------------------------------------ EchoNet
def echonet_mask(x1: Sequence[float], y1: Sequence[float], x2: Sequence[float],
                 y2: Sequence[float], height: int, width: int) -> np.ndarray:
    """Rasterize one EchoNet tracing: polygon of ``X1[1:] + reversed(X2[1:])`` (row 0 = long axis)."""
    xs = np.concatenate([np.asarray(x1, float)[1:], np.asarray(x2, float)[1:][::-1]])
    ys = np.concatenate([np.asarray(y1, float)[1:], np.asarray(y2, float)[1:][::-1]])
    if len(xs) < 3:
        raise ValueError("an EchoNet tracing needs at least 4 rows (long axis + 3 chords)")
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=1,
                                   outline=1)  # boundary pixels included
    return np.asarray(canvas, dtype=np.uint8).astype(bool)


def read_avi_frames(path: str | Path) -> np.ndarray:
    """All frames of an AVI as a grey ``(T, H, W)`` uint8 array (PyAV)."""
    import av
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"EchoNet video not found: {path}")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


def load_echonet(root: str | Path, split: str, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Traced ED/ES frames of an EchoNet-Dynamic split as ``(images, masks)`` ``(N, 1, size, size)``.

    Reads ``FileList.csv`` (FileName, Split), ``VolumeTracings.csv`` (FileName, X1, Y1, X2, Y2,
    Frame) and ``Videos/<FileName>.avi``.
    """
    root = Path(root)
    split_up = {"train": "TRAIN", "val": "VAL", "test": "TEST"}.get(split)
    if split_up is None:
        raise ValueError(f"split must be train/val/test, got {split!r}")
    flist, tracings = root / "FileList.csv", root / "VolumeTracings.csv"
    for p in (flist, tracings):
        if not p.exists():
            raise FileNotFoundError(f"EchoNet file not found: {p}")
    with flist.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for col in ("FileName", "Split"):
        if rows and col not in rows[0]:
            raise ValueError(f"{flist}: missing column {col!r}")
    names = [Path(r["FileName"]).stem for r in rows if r["Split"].upper() == split_up]
    traces: dict[str, dict[int, list[tuple[float, float, float, float]]]] = {}
    with tracings.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{tracings}: missing columns {missing}")
        for r in reader:
            d = traces.setdefault(Path(r["FileName"]).stem, {})
            d.setdefault(int(r["Frame"]), []).append(
                (float(r["X1"]), float(r["Y1"]), float(r["X2"]), float(r["Y2"])))
    imgs, masks = [], []
    for name in names:
        if name not in traces:
            continue
        video = read_avi_frames(root / "Videos" / f"{name}.avi")
        for frame, rows_ in sorted(traces[name].items()):
            if frame >= len(video):
                raise ValueError(f"{tracings}: {name} frame {frame} beyond {len(video)} frames")
            arr = np.asarray(rows_)
            img = video[frame].astype(np.float32)
            lab = echonet_mask(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], *img.shape)
            img, lab = resize_pair(img, lab.astype(np.uint8), size)
            imgs.append(img[None])
            masks.append(lab.astype(np.float32)[None])
    if not imgs:
        raise ValueError(f"EchoNet split {split!r} under {root} has no traced videos")
    return np.stack(imgs), np.stack(masks)


# ------------------------------------------------------------------------------------ DataModules
class _SegDataModule(DomainDataModule):
    """Shared loaders for the echo segmentation DataModules."""

    size: int

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "_sets", None) is None:
            self._sets = {s: SegmentationArrays(*self._arrays(s)) for s in ("train", "val", "test")}

    def dataset(self, split: str) -> SegmentationArrays:
        """The dataset of ``split`` (train/val/test)."""
        self.setup()
        return self._sets[split]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.dataset("train"))  # resumable (seed, epoch) order

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size,
                          num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=self.batch_size,
                          num_workers=self.num_workers)


class SyntheticEcho(_SegDataModule):
    """Offline default: synthetic echocardiograms (cached as npz under ``$DOMAINDIFF_DATA``).

    Args:
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        size: image side.
        root: data directory.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: generator seed (train, val and test use disjoint seeds).
    """

    name = "medical"

    def __init__(self, num_train: int = 512, num_val: int = 32, num_test: int = 32,
                 size: int = 64, root: str | None = None, batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(root, batch_size, num_workers, seed)
        for arg, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if v < 1:
                raise ValueError(f"{arg} must be >= 1, got {v}")
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.size = size

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        n = self.counts[split]
        offset = {"train": 0, "val": 10_000_000, "test": 20_000_000}[split] + 1000 * self.seed
        path = self.cache_dir / f"synthetic_{split}_n{n}_s{self.size}_seed{self.seed}.npz"
        if path.exists():
            with np.load(path) as z:
                return z["images"], z["masks"]
        pairs = [synthetic_echo(offset + k, self.size) for k in range(n)]
        images = np.stack([p[0] for p in pairs])[:, None]
        masks = np.stack([(p[1] == LV_LABEL) for p in pairs])[:, None].astype(np.float32)
        atomic_savez(path, images=images, masks=masks)
        return images, masks


class CAMUS(_SegDataModule):
    """CAMUS (either release) from ``root``; patient-level splits from the ``subgroup_*.txt`` files.

    Args:
        root: directory holding the patient folders and split files.
        size: resized image side.
        views: views to use (2CH, 4CH).
        phases: phases to use (ED, ES).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: shuffling seed.
    """

    name = "camus"

    def __init__(self, root: str | None = None, size: int = 256,
                 views: list[str] | None = None, phases: list[str] | None = None,
                 batch_size: int = 8, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(root, batch_size, num_workers, seed)
        self.size = size
        self.views = list(views or CAMUS_VIEWS)
        self.phases = list(phases or CAMUS_PHASES)

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return load_camus(self.cache_dir, split, self.size, self.views, self.phases)


class EchoNetDynamic(_SegDataModule):
    """EchoNet-Dynamic traced frames from ``root`` (FileList.csv, VolumeTracings.csv, Videos/).

    Args:
        root: dataset directory.
        size: resized image side (videos are 112x112).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: shuffling seed.
    """

    name = "echonet"

    def __init__(self, root: str | None = None, size: int = 112, batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(root, batch_size, num_workers, seed)
        self.size = size

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return load_echonet(self.cache_dir, split, self.size)
