"""Echocardiography segmentation data: synthetic default, CAMUS (.mhd/.raw, .nii.gz), EchoNet-Dynamic.

Every dataset yields ``{"image": (1, H, W) float in [0, 1], "mask": (1, H, W) float 0/1}`` with
``mask = (label == 1)`` (the left-ventricle cavity, CAMUS label 1).
"""

from __future__ import annotations

import csv
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from domaindiff.data import DomainDataModule

LV_LABEL = 1
CAMUS_VIEWS = ("2CH", "4CH")
CAMUS_PHASES = ("ED", "ES")
CAMUS_SPLITS = {"train": "training", "val": "validation", "test": "testing"}
CAMUS_LABELS = (0, 1, 2, 3)


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
    """Images, LV masks and pixel spacings held in memory.

    Args:
        images: ``(N, 1, H, W)`` images in [0, 1].
        masks: ``(N, 1, H, W)`` 0/1 masks.
        spacing: ``(N, 2)`` (row, column) pixel spacing of each image in ``unit`` (default 1).
        unit: the spacing's unit, ``"mm"`` when read from the files, else ``"px"``.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, spacing: np.ndarray | None = None,
                 unit: str = "px") -> None:
        if images.shape != masks.shape or images.ndim != 4:
            raise ValueError(f"images {images.shape} and masks {masks.shape} must be equal (N,1,H,W)")
        self.images = torch.as_tensor(images, dtype=torch.float32)
        self.masks = torch.as_tensor(masks, dtype=torch.float32)
        sp = np.ones((len(images), 2), np.float32) if spacing is None else np.asarray(spacing)
        if sp.shape != (len(images), 2) or not np.all(np.isfinite(sp) & (sp > 0)):
            raise ValueError(f"spacing: expected ({len(images)}, 2) positive (row, col) spacings, "
                             f"got shape {sp.shape}")
        self.spacing = torch.as_tensor(sp, dtype=torch.float32)
        self.unit = unit

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i], "spacing": self.spacing[i]}


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (bilinear, scaled to [0, 1]) and a label map (nearest) to ``size x size``."""
    img = torch.as_tensor(np.asarray(image, np.float32))[None, None]
    lab = torch.as_tensor(np.asarray(label, np.float32))[None, None]
    img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    lab = F.interpolate(lab, size=(size, size), mode="nearest")[0, 0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    return img.numpy(), lab.numpy().astype(np.uint8)


def resample_pair(image: np.ndarray, label: np.ndarray, size: int,
                  spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Resample to square pixels with the image's real aspect, centred on a ``size x size`` canvas.

    The physical extent ``(H * row spacing, W * column spacing)`` is scaled so that its longer
    side spans ``size`` pixels; the shorter side is padded with zeros (no echo) on both ends.

    Args:
        image: ``(H, W)`` intensities.
        label: ``(H, W)`` label map.
        size: canvas side.
        spacing: (row, column) spacing of the input pixels (mm).

    Returns:
        ``(image in [0, 1], label, (s, s))`` with ``s`` the isotropic output spacing.
    """
    h, w = np.asarray(image).shape
    sr, sc = (float(v) for v in spacing)
    if not (np.isfinite(sr) and np.isfinite(sc) and sr > 0 and sc > 0):
        raise ValueError(f"spacing: expected positive (row, col) values, got {tuple(spacing)}")
    extent = max(h * sr, w * sc)
    s = extent / size
    nh = max(1, min(size, int(round(h * sr / s))))
    nw = max(1, min(size, int(round(w * sc / s))))
    img = torch.as_tensor(np.asarray(image, np.float32))[None, None]
    lab = torch.as_tensor(np.asarray(label, np.float32))[None, None]
    img = F.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False)[0, 0]
    lab = F.interpolate(lab, size=(nh, nw), mode="nearest")[0, 0]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)
    top, left = (size - nh) // 2, (size - nw) // 2
    out_img = np.zeros((size, size), np.float32)
    out_lab = np.zeros((size, size), np.uint8)
    out_img[top:top + nh, left:left + nw] = img.numpy()
    out_lab[top:top + nh, left:left + nw] = lab.numpy().astype(np.uint8)
    return out_img, out_lab, (s, s)


# ------------------------------------------------------------------------------------ CAMUS
#: MetaImage element types a CAMUS header may name, and their sizes in bytes
MET_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
             "MET_UINT": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
             "MET_DOUBLE": 8}
_READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, zlib.error)


def _header_ints(path: Path, line: int, key: str, value: str, n: int | None = None) -> list[int]:
    """Positive integers of a header field (``n`` of them if given)."""
    try:
        out = [int(v) for v in value.split()]
    except ValueError:
        out = []
    if not out or any(v < 1 for v in out) or (n is not None and len(out) != n):
        what = f"{n} positive integers" if n else "positive integers"
        raise ValueError(f"{path} line {line}: {key} = {value!r}; expected {what}")
    return out


def read_mhd_header(path: str | Path) -> dict[str, str]:
    """Read a MetaImage (``.mhd``) header and check it against its data file.

    Required fields: ``NDims``, ``DimSize`` (``NDims`` positive integers), ``ElementType`` (one of
    :data:`MET_TYPES`) and ``ElementDataFile`` (a file next to the header, or ``LOCAL``). For
    uncompressed binary data the data file's size must be exactly ``prod(DimSize) x element
    size`` (plus ``HeaderSize``).

    Args:
        path: the ``.mhd`` file.

    Returns:
        The header fields, ``key -> value`` (strings).

    Raises:
        FileNotFoundError: the header or its data file is missing (both are named).
        ValueError: a malformed, incomplete or unsupported header, or a data file of the wrong
            size (a truncated ``.raw``), naming the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CAMUS file not found: {path}")
    fields: dict[str, str] = {}
    lines: dict[str, int] = {}
    offset = 0
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            offset += len(raw)
            text = raw.decode("latin-1").strip()
            if not text:
                continue
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{path} line {number}: {text[:60]!r} is not 'Key = Value' "
                                 "(expected a MetaImage header)")
            fields[key.strip()] = value.strip()
            lines[key.strip()] = number
            if key.strip() == "ElementDataFile":  # the last field; LOCAL data follows
                break
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise ValueError(f"{path}: MetaImage header has no {key} field")
    dims = _header_ints(path, lines["DimSize"], "DimSize", fields["DimSize"])
    (ndims,) = _header_ints(path, lines["NDims"], "NDims", fields["NDims"], 1)
    if ndims != len(dims):
        raise ValueError(f"{path} line {lines['DimSize']}: DimSize has {len(dims)} values but "
                         f"NDims = {ndims}")
    etype = fields["ElementType"]
    if etype not in MET_TYPES:
        raise ValueError(f"{path} line {lines['ElementType']}: unsupported ElementType "
                         f"{etype!r}; expected one of {sorted(MET_TYPES)}")
    channels = fields.get("ElementNumberOfChannels", "1")
    if channels != "1":
        raise ValueError(f"{path} line {lines['ElementNumberOfChannels']}: "
                         f"ElementNumberOfChannels = {channels}; expected 1 (a grey-level image)")
    _check_mhd_data(path, fields, lines, dims, offset)
    return fields


def _check_mhd_data(path: Path, fields: dict[str, str], lines: dict[str, int],
                    dims: list[int], offset: int) -> None:
    """The data file a header names exists and, if binary and uncompressed, has the right size."""
    name = fields["ElementDataFile"]
    if name.upper() in ("LIST",) or "%" in name or " " in name.strip():
        raise ValueError(f"{path} line {lines['ElementDataFile']}: ElementDataFile = {name!r}; "
                         "expected one data file (LIST and file patterns are not supported)")
    local = name.upper() == "LOCAL"
    data = path if local else path.parent / name
    if not data.is_file():
        raise FileNotFoundError(f"{path}: its ElementDataFile {name!r} is missing (expected "
                                f"{data} next to the header)")
    if fields.get("CompressedData", "False").lower() == "true":
        return
    if fields.get("BinaryData", "True").lower() == "false":
        return
    expected = int(np.prod(dims)) * MET_TYPES[fields["ElementType"]]
    skip = offset if local else 0
    header = fields.get("HeaderSize", "0")
    try:
        header_size = int(header)
    except ValueError:
        raise ValueError(f"{path} line {lines['HeaderSize']}: HeaderSize = {header!r}; expected "
                         "an integer") from None
    actual = data.stat().st_size - skip
    ok = actual >= expected if header_size == -1 else actual == expected + max(header_size, 0)
    if not ok:
        dim_text = " ".join(map(str, dims))
        raise ValueError(f"{data}: {actual} bytes of image data, expected "
                         f"{expected + max(header_size, 0)} (DimSize {dim_text} x "
                         f"{fields['ElementType']} in {path.name}); truncated file or wrong header")


def read_camus(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """Read one CAMUS 2-D image or label as ``(H, W)`` and its (row, column) pixel spacing.

    ``.mhd`` via SimpleITK (``GetSpacing()`` is (x, y) = (column, row)), ``.nii.gz`` via nibabel
    (``header.get_zooms()`` of the (x, y) axes, transposed like the array).

    SimpleITK gives ``(1, H, W)`` or ``(H, W)``; nibabel gives ``(W, H[, 1])`` and is transposed.
    A ``.mhd`` header is checked first (see :func:`read_mhd_header`).

    Raises:
        FileNotFoundError: the file (or the ``.raw`` its header names) is missing.
        ValueError: an unknown format, an unreadable or truncated file, or not a 2-D image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CAMUS file not found: {path}")
    name = path.name
    if name.endswith(".mhd"):
        import SimpleITK as sitk
        read_mhd_header(path)
        try:
            image = sitk.ReadImage(str(path))
            arr = sitk.GetArrayFromImage(image)
            zooms = tuple(float(v) for v in image.GetSpacing())
        except RuntimeError as err:
            reason = " ".join(str(err).split())[-200:]
            raise ValueError(f"{path}: SimpleITK cannot read it ({reason})") from None
        transpose = False
    elif name.endswith(".nii.gz") or name.endswith(".nii"):
        import nibabel as nib
        from nibabel.filebasedimages import ImageFileError
        try:
            nii = nib.load(str(path))
            arr = np.asarray(nii.dataobj)
            zooms = tuple(float(v) for v in nii.header.get_zooms())
        except (*_READ_ERRORS, ImageFileError) as err:
            reason = str(err).replace(f'"{path}"', "it").replace(f"'{path}'", "it")
            raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: "
                             f"{reason}); truncated or corrupt?") from None
        transpose = True
    else:
        raise ValueError(f"{path}: unknown CAMUS format (expected .mhd or .nii.gz)")
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    col, row = (zooms + (1.0, 1.0))[:2]
    if not all(np.isfinite(v) and v > 0 for v in (row, col)):
        raise ValueError(f"{path}: pixel spacing ({row:g}, {col:g}) is not positive; expected "
                         "the image's spacing in mm")
    return (arr.T if transpose else arr), (row, col)


def read_camus_image(path: str | Path) -> np.ndarray:
    """Read one CAMUS 2-D image or label as ``(H, W)`` (see :func:`read_camus`)."""
    return read_camus(path)[0]


def check_camus_label(label: np.ndarray, path: str | Path) -> np.ndarray:
    """A CAMUS label map as ``uint8``, refusing any value outside {0, 1, 2, 3}.

    CAMUS labels are 0 background, 1 LV cavity, 2 myocardium, 3 left atrium. A map with other
    values (a 0/255 mask, a float map, another label convention) would silently give empty or
    wrong LV masks, so it is refused.

    Raises:
        ValueError: naming the file, the offending values and how many pixels have them.
    """
    arr = np.asarray(label)
    values = np.unique(arr)
    bad = values[~np.isin(values, CAMUS_LABELS)]
    if bad.size:
        count = int(np.count_nonzero(~np.isin(arr, CAMUS_LABELS)))
        shown = ", ".join(f"{v:g}" for v in bad[:5].tolist()) + (", ..." if bad.size > 5 else "")
        raise ValueError(f"{path}: label values must be integers in {{0, 1, 2, 3}} (background, "
                         f"LV cavity, myocardium, atrium); found {shown} in {count} pixel(s)")
    return arr.astype(np.uint8)


def check_finite_image(image: np.ndarray, path: str | Path) -> np.ndarray:
    """``image`` as float32, refusing NaN or infinite pixels (named with their count)."""
    arr = np.asarray(image, np.float32)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{path}: {bad} pixel value(s) are NaN or infinite; expected finite "
                         "intensities")
    return arr


def _choices(arg: str, values: Sequence[str] | str | None, allowed: Sequence[str]) -> list[str]:
    """Validated list of CAMUS views or phases (``None``: all of ``allowed``)."""
    if values is None:
        return list(allowed)
    vals = [values] if isinstance(values, str) else list(values)
    if not vals:
        raise ValueError(f"{arg}: empty; expected some of {list(allowed)} (or leave it unset)")
    for v in vals:
        if v not in allowed:
            raise ValueError(f"{arg}: unknown CAMUS {arg.rstrip('s')} {v!r}; expected one of "
                             f"{list(allowed)}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{arg}: {vals} lists a value twice")
    return vals


#: the manual step named when a licensed dataset is not on disk (neither can be downloaded for you)
CAMUS_MANUAL = ("CAMUS is distributed after registration by the CREATIS challenge site (search "
                "'CAMUS dataset Creatis'); unpack it and pass its folder as root")
ECHONET_MANUAL = ("EchoNet-Dynamic is distributed by Stanford AIMI after accepting its licence "
                  "(search 'EchoNet-Dynamic'); unpack it and pass the folder holding FileList.csv, "
                  "VolumeTracings.csv and Videos/ as root")

def _split_file(root: Path, split: str) -> Path:
    """The one ``subgroup_<split>.txt`` under ``root``."""
    fname = f"subgroup_{CAMUS_SPLITS[split]}.txt"
    hits = sorted(root.rglob(fname))
    if not hits:
        raise FileNotFoundError(f"CAMUS split file {fname} not found under {root}; {CAMUS_MANUAL}")
    if len(hits) > 1:
        raise ValueError(f"CAMUS: {len(hits)} split files {fname} under {root} ({hits[0]}, "
                         f"{hits[1]}); keep exactly one")
    return hits[0]


def _split_entries(path: Path) -> list[tuple[int, str]]:
    """``(line, patient)`` of a split file; refuses duplicates, path-like names and empty files."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start}); "
                         "expected one patient name per line") from None
    entries: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{path} line {number}: {name!r} is not a patient folder name")
        if name in seen:
            raise ValueError(f"{path} line {number}: patient {name!r} already listed on line "
                             f"{seen[name]}")
        seen[name] = number
        entries.append((number, name))
    if not entries:
        raise ValueError(f"{path}: no patients listed (expected one patient name per line)")
    return entries


def _camus_split_entries(root: Path, split: str) -> tuple[Path, list[tuple[int, str]]]:
    """The split file of ``split`` and its entries; a patient in two splits is refused."""
    if split not in CAMUS_SPLITS:
        raise ValueError(f"split must be one of {sorted(CAMUS_SPLITS)}, got {split!r}")
    path = _split_file(root, split)
    entries = _split_entries(path)
    mine = {name: number for number, name in entries}
    for other in CAMUS_SPLITS:
        if other == split or not list(root.rglob(f"subgroup_{CAMUS_SPLITS[other]}.txt")):
            continue
        other_path = _split_file(root, other)
        for number, name in _split_entries(other_path):
            if name in mine:
                raise ValueError(f"{path} line {mine[name]}: patient {name!r} is also in "
                                 f"{other_path} line {number} (a patient belongs to one split)")
    return path, entries


class SplitSourceWarning(UserWarning):
    """Which CAMUS split source was used when no ``subgroup_*.txt`` file names the split."""


def _patient_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name.startswith("patient"))


def camus_patients(root: str | Path, split: str) -> tuple[Path, str, list[tuple[int, str]]]:
    """Where a CAMUS split's patients live, what named them, and ``(line, patient)`` entries.

    Sources, in order:

    1. ``subgroup_{training,validation,testing}.txt`` (the 2023 release's ``database_split``);
       only the requested split's file is needed, so a test-only folder works.
    2. The 2019 challenge release layout ``training/`` and ``testing/`` (no split files): its
       published split is ``training/`` = train (450 patients) and ``testing/`` = test (50);
       it has no validation split (pass a ``subgroup_validation.txt`` for one).
    3. ``split="test"`` on a folder of ``patient*`` folders and nothing else: every patient
       there is evaluated, said with a :class:`SplitSourceWarning` giving the count.

    Returns:
        ``(folder holding the patient folders, source description, entries)``; entries
        from a folder listing carry line 0.

    Raises:
        FileNotFoundError: no source names the split (the message says which files would).
    """
    root = Path(root)
    if split not in CAMUS_SPLITS:
        raise ValueError(f"split must be one of {sorted(CAMUS_SPLITS)}, got {split!r}")
    fname = f"subgroup_{CAMUS_SPLITS[split]}.txt"
    if root.is_dir() and list(root.rglob(fname)):
        path, entries = _camus_split_entries(root, split)
        return root, str(path), entries
    if not root.is_dir():
        raise FileNotFoundError(f"CAMUS folder not found: {root}; {CAMUS_MANUAL}")
    layout = {"train": root / "training", "test": root / "testing"}
    if (root / "training").is_dir() or (root / "testing").is_dir():
        if split == "val":
            raise FileNotFoundError(f"{root}: the 2019 CAMUS layout (training/, testing/) has no "
                                    f"validation split; put a {fname} (one patient per line) "
                                    "under it")
        folder = layout[split]
        if not folder.is_dir():
            raise FileNotFoundError(f"{root}: no {folder.name}/ folder for the {split} split "
                                    f"(2019 CAMUS layout) and no {fname}")
        names = _patient_dirs(folder)
        if not names:
            raise FileNotFoundError(f"{folder}: no patient* folders")
        return folder, f"{folder} (2019 release split)", [(0, n) for n in names]
    names = _patient_dirs(root)
    if split == "test" and names:
        warnings.warn(f"{root}: no {fname}; evaluating all {len(names)} patient folders there "
                      "as the test split", SplitSourceWarning, stacklevel=2)
        return root, f"{root} (all patient folders)", [(0, n) for n in names]
    raise FileNotFoundError(f"CAMUS split file {fname} not found under {root}; {CAMUS_MANUAL}")


def camus_split(root: str | Path, split: str) -> list[str]:
    """Patient names of a CAMUS split (see :func:`camus_patients` for the sources).

    Raises:
        ValueError: an unknown split, an empty split file, a patient listed twice or in two splits.
        FileNotFoundError: no source names the split.
    """
    return [name for _, name in camus_patients(root, split)[2]]


def _camus_file(root: Path, patient: str, stem: str) -> Path:
    for ext in (".nii.gz", ".mhd"):
        for cand in (root / patient / f"{stem}{ext}", root / f"{stem}{ext}"):
            if cand.exists():
                return cand
    hits = [p for ext in (".nii.gz", ".mhd") for p in root.rglob(f"{stem}{ext}")]
    if not hits:
        raise FileNotFoundError(f"CAMUS: no {stem}.nii.gz or {stem}.mhd under {root}")
    return hits[0]


def _camus_pair(root: Path, patient: str, stem: str,
                where: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Checked ``(image, label, spacing)`` of one CAMUS view and phase (``where``: its source)."""
    try:
        img_path = _camus_file(root, patient, stem)
        lab_path = _camus_file(root, patient, stem + "_gt")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{where}: patient {patient!r}: {err}") from None
    img, spacing = read_camus(img_path)
    img = check_finite_image(img, img_path)
    lab = check_camus_label(read_camus_image(lab_path), lab_path)
    if img.shape != lab.shape:
        raise ValueError(f"{lab_path}: label shape {lab.shape} differs from the image's "
                         f"{img.shape} ({img_path.name}); expected the same (H, W)")
    return img, lab, spacing


def load_camus(root: str | Path, split: str, size: int = 64,
               views: Sequence[str] | None = CAMUS_VIEWS,
               phases: Sequence[str] | None = CAMUS_PHASES,
               keep_aspect: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load a CAMUS split as ``(images, masks, spacing)``; mask = label 1.

    Images and masks are ``(N, 1, size, size)``; ``spacing`` is ``(N, 2)`` (row, column) in mm
    of the output pixels, from each file's own spacing. With ``keep_aspect`` (default) each image
    is resampled to square pixels with its real aspect (:func:`resample_pair`); otherwise it is
    stretched to the square and the spacing follows the stretch.

    Every image and label is checked (see :func:`read_mhd_header`, :func:`check_camus_label`,
    :func:`check_finite_image`); any bad file stops the load with a message naming it.
    """
    views = _choices("views", views, CAMUS_VIEWS)
    phases = _choices("phases", phases, CAMUS_PHASES)
    _check_size(size)
    folder, source, entries = camus_patients(root, split)
    imgs, masks, spacings = [], [], []
    for number, patient in entries:
        where = f"{source} line {number}" if number else source
        for view in views:
            for phase in phases:
                img, lab, sp = _camus_pair(folder, patient, f"{patient}_{view}_{phase}", where)
                if keep_aspect:
                    img, lab, out_sp = resample_pair(img, lab, size, sp)
                else:
                    h, w = img.shape
                    out_sp = (sp[0] * h / size, sp[1] * w / size)
                    img, lab = resize_pair(img, lab, size)
                imgs.append(img[None])
                masks.append((lab == LV_LABEL).astype(np.float32)[None])
                spacings.append(out_sp)
    return np.stack(imgs), np.stack(masks), np.asarray(spacings, np.float32)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive integer image side, got {size!r}")


# ------------------------------------------------------------------------------------ EchoNet
ECHONET_SPLITS = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
_TRACE_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")


class SkippedVideosWarning(UserWarning):
    """FileList rows of the split that have no tracings (EchoNet's own loader drops them too)."""


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
    """All frames of an AVI as a grey ``(T, H, W)`` uint8 array (PyAV).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be decoded or holds no frames (named).
    """
    import av
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"EchoNet video not found: {path}")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode the video ({type(err).__name__}: {err})") \
            from None
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


def _csv_rows(path: Path, need: Sequence[str]):
    """``(line, row)`` of a CSV file whose header has the columns ``need``."""
    if not path.is_file():
        raise FileNotFoundError(f"EchoNet file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
            missing = [c for c in need if c not in header]
            if missing:
                raise ValueError(f"{path} line 1: missing column(s) {missing}; expected a header "
                                 f"with {list(need)}")
            for row in reader:
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as err:
            raise ValueError(f"{path} line {reader.line_num}: not valid CSV ({err})") from None


def echonet_split_names(flist: str | Path, split: str) -> list[str]:
    """Video names (without ``.avi``) of ``split`` in an EchoNet ``FileList.csv``.

    Every row is checked: a non-empty ``FileName`` listed once, and a ``Split`` of TRAIN, VAL
    or TEST (any case).

    Raises:
        ValueError: naming the file, line, column and value.
    """
    flist = Path(flist)
    if split not in ECHONET_SPLITS:
        raise ValueError(f"split must be one of {sorted(ECHONET_SPLITS)}, got {split!r}")
    want, allowed = ECHONET_SPLITS[split], sorted(set(ECHONET_SPLITS.values()))
    names, seen = [], {}
    for line, row in _csv_rows(flist, ("FileName", "Split")):
        name = (row.get("FileName") or "").strip()
        value = (row.get("Split") or "").strip()
        if not name:
            raise ValueError(f"{flist} line {line}: empty FileName")
        if not value:
            raise ValueError(f"{flist} line {line}: empty Split for {name}; expected one of "
                             f"{allowed}")
        if value.upper() not in allowed:
            raise ValueError(f"{flist} line {line}: Split {value!r} for {name}; expected one of "
                             f"{allowed}")
        stem = Path(name).stem
        if stem in seen:
            raise ValueError(f"{flist} line {line}: {name} already listed on line {seen[stem]}")
        seen[stem] = line
        if value.upper() == want:
            names.append(stem)
    if not seen:
        raise ValueError(f"{flist}: no rows after the header")
    return names


def _number(path: Path, line: int, key: str, text: str | None) -> float:
    try:
        value = float(text) if text is not None else float("nan")
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise ValueError(f"{path} line {line}: {key} {text!r} is not a finite number (expected a "
                         "pixel coordinate)")
    return value


def read_tracings(path: str | Path) -> dict[str, dict[int, tuple[int, list[tuple[float, ...]]]]]:
    """An EchoNet ``VolumeTracings.csv`` as ``{video: {frame: (first line, [(X1, Y1, X2, Y2)])}}``.

    Raises:
        ValueError: a missing column, a non-numeric or non-finite coordinate, a Frame that is not
            a non-negative integer, or a tracing with fewer than 4 rows, naming the line.
    """
    path = Path(path)
    traces: dict[str, dict[int, tuple[int, list[tuple[float, ...]]]]] = {}
    for line, row in _csv_rows(path, _TRACE_COLUMNS):
        name = Path((row.get("FileName") or "").strip()).stem
        if not name:
            raise ValueError(f"{path} line {line}: empty FileName")
        coords = tuple(_number(path, line, k, row.get(k)) for k in ("X1", "Y1", "X2", "Y2"))
        frame_text = (row.get("Frame") or "").strip()
        if not frame_text.isdigit():
            raise ValueError(f"{path} line {line}: Frame {row.get('Frame')!r} of {name}; expected "
                             "a non-negative integer frame index")
        frames = traces.setdefault(name, {})
        frames.setdefault(int(frame_text), (line, []))[1].append(coords)
    for name, frames in traces.items():
        for frame, (line, rows) in frames.items():
            if len(rows) < 4:
                raise ValueError(f"{path} line {line}: {name} frame {frame} has {len(rows)} "
                                 "tracing row(s); expected at least 4 (long axis + 3 chords)")
    return traces


def load_echonet(root: str | Path, split: str, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Traced ED/ES frames of an EchoNet-Dynamic split as ``(images, masks)`` ``(N, 1, size, size)``.

    Reads ``FileList.csv`` (FileName, Split), ``VolumeTracings.csv`` (FileName, X1, Y1, X2, Y2,
    Frame) and ``Videos/<FileName>.avi``. A video of the split that is missing is an error (with
    the count); videos of the split without tracings are skipped with a
    :class:`SkippedVideosWarning` that gives their count (as EchoNet's own loader drops them).
    """
    root = Path(root)
    if split not in ECHONET_SPLITS:
        raise ValueError(f"split must be one of {sorted(ECHONET_SPLITS)}, got {split!r}")
    _check_size(size)
    flist, tracings = root / "FileList.csv", root / "VolumeTracings.csv"
    for p in (flist, tracings):
        if not p.exists():
            raise FileNotFoundError(f"EchoNet file not found: {p}; {ECHONET_MANUAL}")
    names = echonet_split_names(flist, split)
    traces = read_tracings(tracings)
    videos = root / "Videos"
    missing = [n for n in names if not (videos / f"{n}.avi").is_file()]
    if missing:
        raise FileNotFoundError(f"{videos}: {len(missing)} of the {len(names)} "
                                f"{ECHONET_SPLITS[split]} videos listed in {flist} are missing "
                                f"(first: {missing[0]}.avi)")
    untraced = [n for n in names if n not in traces]
    if untraced:
        warnings.warn(f"{tracings}: {len(untraced)} of the {len(names)} "
                      f"{ECHONET_SPLITS[split]} videos in {flist} have no tracings and are "
                      f"skipped (first: {untraced[0]})", SkippedVideosWarning, stacklevel=2)
    imgs, masks = [], []
    for name in names:
        if name in traces:
            for img, lab in _traced_frames(videos / f"{name}.avi", traces[name], tracings, name):
                img, lab = resize_pair(img, lab.astype(np.uint8), size)
                imgs.append(img[None])
                masks.append(lab.astype(np.float32)[None])
    if not imgs:
        raise ValueError(f"EchoNet split {split!r} under {root} has no traced videos")
    return np.stack(imgs), np.stack(masks)


def _traced_frames(video_path: Path, frames: dict[int, tuple[int, list[tuple[float, ...]]]],
                   tracings: Path, name: str):
    """``(image, mask)`` of each traced frame of one video; a frame it lacks is an error."""
    video = read_avi_frames(video_path)
    for frame, (line, rows) in sorted(frames.items()):
        if frame >= len(video):
            raise ValueError(f"{tracings} line {line}: {name} Frame {frame} does not exist "
                             f"({video_path} has {len(video)} frames, 0-{len(video) - 1})")
        arr = np.asarray(rows)
        img = video[frame].astype(np.float32)
        _check_in_frame(arr, img.shape, f"{tracings} line {line}: {name} frame {frame}",
                        video_path)
        yield img, echonet_mask(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], *img.shape)


def _check_in_frame(coords: np.ndarray, shape: tuple[int, int], where: str,
                    video_path: Path) -> None:
    """Tracing coordinates ``(X1, Y1, X2, Y2)`` must lie in the frame (1 pixel of slack).

    Coordinates in another scale (e.g. of the original recording) would otherwise be clipped
    into a wrong mask.
    """
    h, w = shape
    for col, key, size in ((0, "X1", w), (1, "Y1", h), (2, "X2", w), (3, "Y2", h)):
        vals = coords[:, col]
        bad = vals[(vals < -1) | (vals > size)]
        if bad.size:
            raise ValueError(f"{where}: {key} = {bad[0]:g} is outside the {w}x{h} frame of "
                             f"{video_path.name} (expected 0 to {size})")


# ------------------------------------------------------------------------------------ DataModules
class _SegDataModule(DomainDataModule):
    """Shared loaders for the echo segmentation DataModules."""

    size: int

    unit = "px"

    def _arrays(self, split: str) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load the splits the stage needs (each split is read once, when first needed)."""
        need = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                "predict": ("test",)}.get(stage or "", ())
        for split in need:
            self.dataset(split)

    def dataset(self, split: str) -> SegmentationArrays:
        """The dataset of ``split`` (train/val/test), loaded on first use.

        Only the requested split is read, so a test-only folder (no train/val files) evaluates.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be one of ['test', 'train', 'val'], got {split!r}")
        sets = getattr(self, "_sets", None)
        if sets is None:
            sets = self._sets = {}
        if split not in sets:
            arrays = self._arrays(split)
            spacing = arrays[2] if len(arrays) > 2 else None
            sets[split] = SegmentationArrays(arrays[0], arrays[1], spacing, self.unit)
        return sets[split]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.dataset("train"))  # resumable (seed, epoch) order

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size,
                          num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=self.batch_size,
                          num_workers=self.num_workers)


class SyntheticEcho(_SegDataModule):
    """Offline default: synthetic echocardiograms, cached under ``$DOMAINDIFF_DATA``.

    ``generator`` picks the images (see :mod:`domaindiff_medical.synthetic`): ``camus_like``
    (default; both apical views at ED and ES, four images per synthetic patient, CAMUS order
    2CH-ED, 2CH-ES, 4CH-ED, 4CH-ES), ``shifted`` (a separately written generator with other
    appearance statistics, for domain-shift tests) or ``simple`` (the first, easy generator).
    ``corruption`` / ``severity`` corrupt the images (noise, blur, contrast, gain at 1-5). Pixel
    spacing is ``FOV_MM / size`` mm (a 160 mm deep field of view).

    Each split is one verified cache entry (an npz and its manifest, see
    :func:`domaindiff.data.build_cache_entry`): a killed build is never read, a damaged file is
    rebuilt with a warning.

    Args:
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        size: image side.
        root: data directory.
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: generator seed (train, val and test use disjoint seeds).
        generator: ``camus_like``, ``shifted`` or ``simple``.
        corruption: ``None`` or one of noise, blur, contrast, gain.
        severity: corruption severity 1-5 (0: none).
    """

    name = "medical"
    unit = "mm"

    def __init__(self, num_train: int = 512, num_val: int = 32, num_test: int = 32,
                 size: int = 64, root: str | None = None, batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, generator: str = "camus_like",
                 corruption: str | None = None, severity: int = 0) -> None:
        super().__init__(root, batch_size, num_workers, seed)
        from .synthetic import CORRUPTIONS, GENERATORS
        if generator not in GENERATORS:
            raise ValueError(f"generator: unknown synthetic generator {generator!r}; expected "
                             f"one of {list(GENERATORS)}")
        least = 16 if generator == "simple" else 32
        if size < least:
            raise ValueError(f"size: the {generator} generator needs size >= {least}, got {size}")
        for arg, v in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if v < 1:
                raise ValueError(f"{arg} must be >= 1, got {v}")
        if corruption is not None and corruption not in CORRUPTIONS:
            raise ValueError(f"corruption: unknown kind {corruption!r}; expected one of "
                             f"{list(CORRUPTIONS)} or null")
        if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
            raise ValueError(f"severity: expected an integer 0-5, got {severity!r}")
        if (corruption is None) != (severity == 0):
            raise ValueError(f"corruption={corruption!r} with severity={severity}: give both (a "
                             "kind and a severity 1-5) or neither")
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.size, self.generator = size, generator
        self.corruption, self.severity = corruption, severity

    def _arrays(self, split: str) -> tuple[np.ndarray, ...]:
        from .synthetic import FOV_MM, PHASES, VIEWS, camus_like_echo, corrupt, shifted_echo
        n = self.counts[split]
        offset = {"train": 0, "val": 10_000_000, "test": 20_000_000}[split] + 1000 * self.seed
        gen = self.generator

        def one(k: int) -> tuple[np.ndarray, np.ndarray]:
            if gen == "simple":
                img, lab = synthetic_echo(offset + k, self.size)
            else:
                fn = camus_like_echo if gen == "camus_like" else shifted_echo
                img, lab = fn(offset + k // 4, self.size, VIEWS[(k // 2) % 2], PHASES[k % 2])
            if self.corruption is not None:
                img = corrupt(img, self.corruption, self.severity, seed=offset + k)
            return img, lab

        def build(tmp: Path) -> None:
            pairs = [one(k) for k in range(n)]
            images = np.stack([p[0] for p in pairs])[:, None]
            masks = np.stack([(p[1] == LV_LABEL) for p in pairs])[:, None].astype(np.float32)
            np.savez(tmp / "arrays.npz", images=images, masks=masks)

        name = "" if gen == "simple" else f"_{gen}"
        if self.corruption is not None:
            name += f"_{self.corruption}{self.severity}"
        entry = self.cache_entry(f"synthetic{name}_{split}_n{n}_s{self.size}_seed{self.seed}",
                                 build, description=f"synthetic echo ({gen}) {split}: {n} images "
                                 f"of {self.size}x{self.size}, seeds from {offset}")
        with np.load(entry / "arrays.npz") as z:
            images, masks = z["images"], z["masks"]
        spacing = np.full((n, 2), FOV_MM / self.size, np.float32)
        return images, masks, spacing


class CAMUS(_SegDataModule):
    """CAMUS (either release) from ``root``, with each file's pixel spacing (mm).

    Patient-level splits come from the ``subgroup_*.txt`` files, the 2019 release's
    ``training/`` / ``testing/`` folders, or (test only) every patient folder; see
    :func:`camus_patients`. Only the split asked for is read.

    Args:
        root: directory holding the patient folders and split files.
        size: output image side.
        views: views to use (2CH, 4CH).
        phases: phases to use (ED, ES).
        keep_aspect: resample to square pixels with the real aspect and pad (default); False
            stretches to the square (the spacing then differs per axis).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: shuffling seed.
    """

    name = "camus"
    unit = "mm"

    def __init__(self, root: str | None = None, size: int = 256,
                 views: list[str] | None = None, phases: list[str] | None = None,
                 keep_aspect: bool = True, batch_size: int = 8, num_workers: int = 0,
                 seed: int = 0) -> None:
        super().__init__(root, batch_size, num_workers, seed)
        _check_size(size)
        self.size, self.keep_aspect = size, keep_aspect
        self.views = _choices("views", views, CAMUS_VIEWS)
        self.phases = _choices("phases", phases, CAMUS_PHASES)

    def _arrays(self, split: str) -> tuple[np.ndarray, ...]:
        return load_camus(self.cache_dir, split, self.size, self.views, self.phases,
                          self.keep_aspect)


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
        _check_size(size)
        self.size = size

    def _arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return load_echonet(self.cache_dir, split, self.size)
