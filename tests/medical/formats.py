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
