"""Writers of tiny CAMUS and EchoNet-Dynamic datasets in the real file formats (for tests)."""

import csv

import nibabel as nib
import numpy as np
import SimpleITK as sitk


def write_camus(root, fmt, patients, rng, shape=(24, 16)):
    """CAMUS patient folders (``.mhd/.raw`` or ``.nii.gz``) and ``database_split`` files.

    Returns:
        ``{stem: (image, label)}`` of what was written.
    """
    split_dir = root / "database_split"
    split_dir.mkdir(parents=True)
    names = {"training": patients[:2], "validation": patients[2:3], "testing": patients[3:]}
    for k, v in names.items():
        (split_dir / f"subgroup_{k}.txt").write_text("\n".join(v) + "\n")
    truth = {}
    h, w = shape  # non-square by default, to catch transposes
    for p in patients:
        d = root / p
        d.mkdir()
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                img = rng.integers(0, 255, (h, w)).astype(np.uint8)
                lab = np.zeros((h, w), np.uint8)
                lab[h // 6:h // 2, w // 5:w * 9 // 16] = 1
                lab[h // 2:h * 5 // 6, w // 5:w * 9 // 16] = 2
                lab[h // 12:h // 6, w * 5 // 8:w * 7 // 8] = 3
                stem = f"{p}_{view}_{phase}"
                truth[stem] = (img, lab)
                for arr, name in ((img, stem), (lab, stem + "_gt")):
                    if fmt == "mhd":
                        sitk.WriteImage(sitk.GetImageFromArray(arr[None]), str(d / f"{name}.mhd"))
                    else:
                        nib.save(nib.Nifti1Image(arr.T[..., None], np.eye(4)),
                                 str(d / f"{name}.nii.gz"))
    return truth


def write_avi(path, frames):
    """A grayscale rawvideo AVI (PyAV) of ``frames`` ``(T, H, W)`` uint8."""
    import av
    with av.open(str(path), "w") as out:
        st = out.add_stream("rawvideo", rate=25)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "gray"
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def write_echonet(root, rng, size=16, splits=("TRAIN", "TRAIN", "VAL", "TEST")):
    """``Videos/*.avi``, ``FileList.csv`` and ``VolumeTracings.csv`` (two traced frames each).

    The tracing is a long axis from row 1 to row ``size - 2`` at column ``size // 2`` and chords
    from column ``size // 4`` to ``size * 11 // 16`` at rows ``size // 4, size // 2, 3 size // 4``.

    Returns:
        ``{file name: frames}``.
    """
    (root / "Videos").mkdir(parents=True)
    rows, written = [], {}
    for k, split in enumerate(splits):
        name = f"0X{k:04X}"
        frames = rng.integers(0, 255, (5, size, size)).astype(np.uint8)
        write_avi(root / "Videos" / f"{name}.avi", frames)
        written[name] = frames
        rows.append({"FileName": name, "EF": 55.0, "ESV": 30, "EDV": 70, "FrameHeight": size,
                     "FrameWidth": size, "FPS": 25, "NumberOfFrames": 5, "Split": split})
    with (root / "FileList.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with (root / "VolumeTracings.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        for r in rows:
            for frame in (1, 3):
                w.writerow([r["FileName"] + ".avi", size // 2, 1, size // 2, size - 2, frame])
                for y in (size // 4, size // 2, 3 * size // 4):
                    w.writerow([r["FileName"] + ".avi", size // 4, y, size * 11 // 16, y, frame])
    return written


#: MetaImage ElementType of each numpy dtype the helpers write
MET_TYPES = {np.dtype(np.int8): "MET_CHAR", np.dtype(np.uint8): "MET_UCHAR",
             np.dtype(np.int16): "MET_SHORT", np.dtype(np.uint16): "MET_USHORT",
             np.dtype(np.int32): "MET_INT", np.dtype(np.uint32): "MET_UINT",
             np.dtype(np.float32): "MET_FLOAT", np.dtype(np.float64): "MET_DOUBLE"}


def write_mhd(path, arr, drop=(), **fields):
    """A 2-D array as a CAMUS-style ``.mhd`` header and little-endian ``.raw``, written by hand.

    The header has the fields (and order) of the CAMUS release; ``fields`` replace values
    (``DimSize="16 25 1"``) and ``drop`` removes fields, so that tests can spoil one of them.

    Returns:
        The ``.raw`` path.
    """
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape
    raw = path.with_suffix(".raw")
    header = {"ObjectType": "Image", "NDims": "3", "BinaryData": "True",
              "BinaryDataByteOrderMSB": "False", "CompressedData": "False",
              "TransformMatrix": "1 0 0 0 1 0 0 0 1", "Offset": "0 0 0",
              "CenterOfRotation": "0 0 0", "AnatomicalOrientation": "RAI",
              "ElementSpacing": "0.308 0.154 1", "DimSize": f"{w} {h} 1",
              "ElementType": MET_TYPES[arr.dtype], "ElementDataFile": raw.name}
    header.update(fields)
    header["ElementDataFile"] = header.pop("ElementDataFile")  # MetaIO: always the last field
    for key in drop:
        header.pop(key)
    path.write_text("".join(f"{k} = {v}\n" for k, v in header.items()))
    raw.write_bytes(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return raw


def truncate(path, keep):
    """Keep the first ``keep`` bytes of ``path`` (a download or copy cut short)."""
    path.write_bytes(path.read_bytes()[:keep])


def set_csv_cell(path, line, column, value):
    """Set ``column`` of the CSV row on file line ``line`` (the header is line 1) to ``value``."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[line - 1][rows[0].index(column)] = value
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def drop_csv_column(path, column):
    """Remove ``column`` from a CSV file."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    k = rows[0].index(column)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([r[:k] + r[k + 1:] for r in rows])


def drop_csv_lines(path, lines):
    """Remove the given file lines (1-based; the header is line 1) from a CSV file."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([r for n, r in enumerate(rows, 1) if n not in set(lines)])
