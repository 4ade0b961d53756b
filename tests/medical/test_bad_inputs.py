"""Bad medical inputs (CAMUS .mhd/.raw and .nii.gz, EchoNet-Dynamic CSV and AVI): each refused in one line.

Every ``check`` writes a tiny dataset in the real format into ``tmp_path`` (with the helpers of
:mod:`tests.medical.formats`), spoils one thing, and runs the real loader (the DataModule's
``setup``, as ``domaindiff fit`` does) or the real CLI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from domaindiff_medical.data import (
    CAMUS,
    EchoNetDynamic,
    SkippedVideosWarning,
    read_camus_image,
)
from domaindiff_medical.metrics import (
    ensemble_metrics,
    expected_calibration_error,
    segmentation_metrics,
)
from tests.catalogue import BadInput, assert_refused, cli_message, raised

from .formats import (
    drop_csv_column,
    drop_csv_lines,
    set_csv_cell,
    truncate,
    write_camus,
    write_echonet,
    write_mhd,
)

CONF = Path(__file__).parents[2] / "plugins/medical/domaindiff_medical/conf"
ERRORS = (ValueError, FileNotFoundError)
PATIENTS = [f"patient{k:04d}" for k in range(1, 5)]
STEM = "patient0001_2CH_ED"
CAMUS_CALL = "CAMUS(root=DIR, size=16).setup('fit')"
ECHO_CALL = "EchoNetDynamic(root=DIR, size=16).setup('fit')"
FIT_CAMUS = "domaindiff fit --config plugins/medical/domaindiff_medical/conf/camus.yaml"
FIT_ECHO = "domaindiff fit --config plugins/medical/domaindiff_medical/conf/echonet.yaml"

# VolumeTracings.csv of write_echonet: line 1 header, then 8 lines per video (frames 1 and 3, long
# axis + 3 chords each); video 0X0000 (TRAIN) has lines 2-9. FileList.csv: 0X0000 on line 2.
TRACE_LINE, FILELIST_LINE = 3, 3


# ------------------------------------------------------------------------------------ CAMUS
def _camus(tmp: Path, fmt: str = "mhd") -> Path:
    root = tmp / "camus"
    write_camus(root, fmt, PATIENTS, np.random.default_rng(0))
    return root


def _camus_setup(root: Path, **kw) -> str:
    return raised(ERRORS, lambda: CAMUS(root=str(root), size=16, **kw).setup("fit"))


def _gt(root: Path) -> Path:
    return root / "patient0001" / f"{STEM}_gt.mhd"


def _label(root: Path) -> np.ndarray:
    return read_camus_image(_gt(root))


def _camus_label(tmp: Path, change) -> str:
    root = _camus(tmp)
    write_mhd(_gt(root), change(_label(root)))
    return _camus_setup(root)


def _label_4(lab: np.ndarray) -> np.ndarray:
    lab = lab.copy()
    lab[lab == 3] = 4
    return lab


def _label_255(lab: np.ndarray) -> np.ndarray:
    return ((lab == 1) * 255).astype(np.uint8)  # a 0/255 binary mask saved as the label map


def _label_float(lab: np.ndarray) -> np.ndarray:
    out = lab.astype(np.float32)
    out[out == 2] = 1.5  # e.g. a label map resized with linear interpolation
    return out


def _image_mhd(tmp: Path, drop=(), arr=None, **fields) -> str:
    root = _camus(tmp)
    img = read_camus_image(root / "patient0001" / f"{STEM}.mhd") if arr is None else arr
    write_mhd(root / "patient0001" / f"{STEM}.mhd", img, drop=drop, **fields)
    return _camus_setup(root)


def _raw_truncated(tmp: Path) -> str:
    root = _camus(tmp)
    truncate(root / "patient0001" / f"{STEM}.raw", 200)
    return _camus_setup(root)


def _raw_missing(tmp: Path) -> str:
    root = _camus(tmp)
    (root / "patient0001" / f"{STEM}_gt.raw").unlink()
    return _camus_setup(root)


def _nan_image(tmp: Path) -> str:
    img = np.random.default_rng(1).random((24, 16)).astype(np.float32)
    img[5, 7] = np.nan
    img[6, 7] = np.inf
    return _image_mhd(tmp, arr=img)


def _shape_mismatch(tmp: Path) -> str:
    root = _camus(tmp)
    write_mhd(_gt(root), _label(root)[:20])
    return _camus_setup(root)


def _split_file(root: Path, name: str) -> Path:
    return root / "database_split" / f"subgroup_{name}.txt"


def _patient_missing(tmp: Path) -> str:
    root = _camus(tmp)
    _split_file(root, "training").write_text("patient0001\npatient0002\npatient0009\n")
    return _camus_setup(root)


def _patient_twice(tmp: Path) -> str:
    root = _camus(tmp)
    _split_file(root, "testing").write_text("patient0004\npatient0002\n")
    return _camus_setup(root)


def _nii_truncated(tmp: Path) -> str:
    root = _camus(tmp, "nii")
    truncate(root / "patient0001" / f"{STEM}_gt.nii.gz", 60)
    return _camus_setup(root)


# ------------------------------------------------------------------------------------ EchoNet
def _echonet(tmp: Path) -> Path:
    root = tmp / "EchoNet-Dynamic"
    write_echonet(root, np.random.default_rng(1))
    return root


def _echo_setup(root: Path) -> str:
    return raised(ERRORS, lambda: EchoNetDynamic(root=str(root), size=16).setup("fit"))


def _filelist_cell(tmp: Path, value: str, column: str = "Split") -> str:
    root = _echonet(tmp)
    set_csv_cell(root / "FileList.csv", FILELIST_LINE, column, value)
    return _echo_setup(root)


def _tracing_cell(tmp: Path, column: str, value: str, line: int = TRACE_LINE) -> str:
    root = _echonet(tmp)
    set_csv_cell(root / "VolumeTracings.csv", line, column, value)
    return _echo_setup(root)


def _frame_beyond(tmp: Path) -> str:
    root = _echonet(tmp)
    for line in range(6, 10):  # the 4 rows of 0X0000's second traced frame: 3 -> 9 (5 frames)
        set_csv_cell(root / "VolumeTracings.csv", line, "Frame", "9")
    return _echo_setup(root)


def _video_missing(tmp: Path) -> str:
    root = _echonet(tmp)
    (root / "Videos" / "0X0001.avi").unlink()
    return _echo_setup(root)


def _video_corrupt(tmp: Path) -> str:
    root = _echonet(tmp)
    (root / "Videos" / "0X0000.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(40))
    return _echo_setup(root)


def _no_split_column(tmp: Path) -> str:
    root = _echonet(tmp)
    drop_csv_column(root / "FileList.csv", "Split")
    return _echo_setup(root)


def _short_tracing(tmp: Path) -> str:
    root = _echonet(tmp)
    drop_csv_lines(root / "VolumeTracings.csv", [5])  # frame 1 of 0X0000 keeps 3 rows
    return _echo_setup(root)


# ------------------------------------------------------------------------------------ CLI
def _cli(config: str, root: Path, tmp: Path) -> str:
    return cli_message(["fit", "--config", str(CONF / config), f"--data.init_args.root={root}",
                        "--data.init_args.size=16", "--model.init_args.base_channels=8",
                        "--model.init_args.levels=2", "--trainer.accelerator=cpu",
                        "--trainer.devices=1", "--trainer.max_steps=1", "--trainer.logger=false",
                        f"--trainer.default_root_dir={tmp}"], cwd=tmp)


def _cli_camus_label(tmp: Path) -> str:
    root = _camus(tmp)
    write_mhd(_gt(root), _label_255(_label(root)))
    return _cli("camus.yaml", root, tmp)


def _cli_echonet_split(tmp: Path) -> str:
    root = _echonet(tmp)
    set_csv_cell(root / "FileList.csv", FILELIST_LINE, "Split", "")
    return _cli("echonet.yaml", root, tmp)


# ------------------------------------------------------------------------------------ metrics
def _masks() -> torch.Tensor:
    m = torch.zeros(2, 1, 8, 8)
    m[:, :, 2:6, 2:6] = 1
    return m


def _nan_pred() -> torch.Tensor:
    pred = _masks()
    pred[0, 0, 3, 3] = float("nan")  # would count as background after `pred > 0.5`
    return pred


LABEL_MSG = r"patient0001_2CH_ED_gt\.mhd: label values must be integers in \{0, 1, 2, 3\}"

CATALOGUE: list[BadInput] = [
    BadInput("medical-camus-label-outside-0-3", f"{CAMUS_CALL}  # a _gt.mhd with label 4",
             LABEL_MSG + r".*found 4 in \d+ pixel", lambda t: _camus_label(t, _label_4)),
    BadInput("medical-camus-label-0-255-mask", f"{CAMUS_CALL}  # a 0/255 mask as _gt.mhd",
             LABEL_MSG + r".*found 255", lambda t: _camus_label(t, _label_255)),
    BadInput("medical-camus-label-non-integer", f"{CAMUS_CALL}  # MET_FLOAT _gt.mhd with 1.5",
             LABEL_MSG + r".*found 1\.5", lambda t: _camus_label(t, _label_float)),
    BadInput("medical-camus-raw-truncated", f"{CAMUS_CALL}  # patient0001_2CH_ED.raw cut to 200 B",
             r"patient0001_2CH_ED\.raw: 200 bytes of image data, expected 384 "
             r"\(DimSize 16 24 1 x MET_UCHAR in patient0001_2CH_ED\.mhd\); truncated",
             _raw_truncated),
    BadInput("medical-camus-raw-missing", f"{CAMUS_CALL}  # patient0001_2CH_ED_gt.raw deleted",
             r"patient0001_2CH_ED_gt\.mhd: its ElementDataFile 'patient0001_2CH_ED_gt\.raw' is "
             r"missing \(expected .*patient0001_2CH_ED_gt\.raw next to the header\)",
             _raw_missing),
    BadInput("medical-camus-mhd-no-dimsize", f"{CAMUS_CALL}  # header without DimSize",
             r"patient0001_2CH_ED\.mhd: MetaImage header has no DimSize field",
             lambda t: _image_mhd(t, drop=("DimSize",))),
    BadInput("medical-camus-mhd-no-elementtype", f"{CAMUS_CALL}  # header without ElementType",
             r"patient0001_2CH_ED\.mhd: MetaImage header has no ElementType field",
             lambda t: _image_mhd(t, drop=("ElementType",))),
    BadInput("medical-camus-mhd-unsupported-elementtype", f"{CAMUS_CALL}  # ElementType = MET_HALF",
             r"patient0001_2CH_ED\.mhd line 12: unsupported ElementType 'MET_HALF'; expected one "
             r"of \[.*'MET_UCHAR'", lambda t: _image_mhd(t, ElementType="MET_HALF")),
    BadInput("medical-camus-mhd-dimsize-vs-raw", f"{CAMUS_CALL}  # DimSize = 16 25 1 (raw: 16x24)",
             r"patient0001_2CH_ED\.raw: 384 bytes of image data, expected 400 \(DimSize 16 25 1",
             lambda t: _image_mhd(t, DimSize="16 25 1")),
    BadInput("medical-camus-mhd-no-ndims", f"{CAMUS_CALL}  # header without NDims",
             r"patient0001_2CH_ED\.mhd: MetaImage header has no NDims field",
             lambda t: _image_mhd(t, drop=("NDims",))),
    BadInput("medical-camus-mhd-ndims-vs-dimsize", f"{CAMUS_CALL}  # NDims = 2, DimSize = 16 24 1",
             r"patient0001_2CH_ED\.mhd line 11: DimSize has 3 values but NDims = 2",
             lambda t: _image_mhd(t, NDims="2")),
    BadInput("medical-camus-mhd-dimsize-not-integers", f"{CAMUS_CALL}  # DimSize = 16 x24 1",
             r"patient0001_2CH_ED\.mhd line 11: DimSize = '16 x24 1'; expected positive integers",
             lambda t: _image_mhd(t, DimSize="16 x24 1")),
    BadInput("medical-camus-nan-pixels", f"{CAMUS_CALL}  # MET_FLOAT image with a NaN and an inf",
             r"patient0001_2CH_ED\.mhd: 2 pixel value\(s\) are NaN or infinite", _nan_image),
    BadInput("medical-camus-image-label-shape", f"{CAMUS_CALL}  # 20x16 _gt.mhd for a 24x16 image",
             r"patient0001_2CH_ED_gt\.mhd: label shape \(20, 16\) differs from the image's "
             r"\(24, 16\)", _shape_mismatch),
    BadInput("medical-camus-nii-truncated", f"{CAMUS_CALL}  # a _gt.nii.gz cut to 60 bytes",
             r"patient0001_2CH_ED_gt\.nii\.gz: not a readable NIfTI file", _nii_truncated),
    BadInput("medical-camus-unknown-view", "CAMUS(root=DIR, views=['3CH'])",
             r"views: unknown CAMUS view '3CH'; expected one of \['2CH', '4CH'\]",
             lambda t: _camus_setup(_camus(t), views=["3CH"])),
    BadInput("medical-camus-unknown-phase", "CAMUS(root=DIR, phases=['ED', 'MID'])",
             r"phases: unknown CAMUS phase 'MID'; expected one of \['ED', 'ES'\]",
             lambda t: _camus_setup(_camus(t), phases=["ED", "MID"])),
    BadInput("medical-camus-unknown-split", "CAMUS(root=DIR).dataset('validation')",
             r"split must be one of \['test', 'train', 'val'\], got 'validation'",
             lambda t: raised(ValueError, lambda: CAMUS(root=str(_camus(t))).dataset("validation"))),
    BadInput("medical-camus-split-lists-missing-patient",
             f"{CAMUS_CALL}  # subgroup_training.txt line 3: patient0009 (no folder)",
             r"subgroup_training\.txt line 3: patient 'patient0009': .*no "
             r"patient0009_2CH_ED\.nii\.gz or patient0009_2CH_ED\.mhd", _patient_missing),
    BadInput("medical-camus-patient-in-two-splits",
             f"{CAMUS_CALL}  # patient0002 in subgroup_training.txt and subgroup_testing.txt",
             r"subgroup_training\.txt line 2: patient 'patient0002' is also in .*"
             r"subgroup_testing\.txt line 2", _patient_twice),
    BadInput("medical-echonet-empty-split", f"{ECHO_CALL}  # FileList.csv line 3: Split ''",
             r"FileList\.csv line 3: empty Split for 0X0001; expected one of "
             r"\['TEST', 'TRAIN', 'VAL'\]", lambda t: _filelist_cell(t, "")),
    BadInput("medical-echonet-unknown-split", f"{ECHO_CALL}  # FileList.csv line 3: Split TRIAN",
             r"FileList\.csv line 3: Split 'TRIAN' for 0X0001; expected one of",
             lambda t: _filelist_cell(t, "TRIAN")),
    BadInput("medical-echonet-empty-filename", f"{ECHO_CALL}  # FileList.csv line 3: FileName ''",
             r"FileList\.csv line 3: empty FileName", lambda t: _filelist_cell(t, "", "FileName")),
    BadInput("medical-echonet-no-split-column", f"{ECHO_CALL}  # FileList.csv without Split",
             r"FileList\.csv line 1: missing column\(s\) \['Split'\]", _no_split_column),
    BadInput("medical-echonet-non-numeric-tracing",
             f"{ECHO_CALL}  # VolumeTracings.csv line 3: X1 = 'abc'",
             r"VolumeTracings\.csv line 3: X1 'abc' is not a finite number",
             lambda t: _tracing_cell(t, "X1", "abc")),
    BadInput("medical-echonet-nan-tracing", f"{ECHO_CALL}  # VolumeTracings.csv line 3: Y2 = nan",
             r"VolumeTracings\.csv line 3: Y2 'nan' is not a finite number",
             lambda t: _tracing_cell(t, "Y2", "nan")),
    BadInput("medical-echonet-bad-frame", f"{ECHO_CALL}  # VolumeTracings.csv line 3: Frame = 1.5",
             r"VolumeTracings\.csv line 3: Frame '1\.5' of 0X0000; expected a non-negative integer",
             lambda t: _tracing_cell(t, "Frame", "1.5")),
    BadInput("medical-echonet-frame-beyond-video",
             f"{ECHO_CALL}  # tracings of 0X0000 frame 9 (5 frames)",
             r"VolumeTracings\.csv line 6: 0X0000 Frame 9 does not exist \(.*0X0000\.avi has 5 "
             r"frames, 0-4\)", _frame_beyond),
    BadInput("medical-echonet-tracing-outside-frame",
             f"{ECHO_CALL}  # VolumeTracings.csv line 3: X2 = 130 (16x16 video)",
             r"VolumeTracings\.csv line 2: 0X0000 frame 1: X2 = 130 is outside the 16x16 frame "
             r"of 0X0000\.avi", lambda t: _tracing_cell(t, "X2", "130")),
    BadInput("medical-echonet-short-tracing", f"{ECHO_CALL}  # a traced frame with 3 rows",
             r"VolumeTracings\.csv line 2: 0X0000 frame 1 has 3 tracing row\(s\); expected at "
             r"least 4", _short_tracing),
    BadInput("medical-echonet-missing-video", f"{ECHO_CALL}  # Videos/0X0001.avi deleted",
             r"Videos: 1 of the 2 TRAIN videos listed in .*FileList\.csv are missing "
             r"\(first: 0X0001\.avi\)", _video_missing),
    BadInput("medical-echonet-corrupt-video", f"{ECHO_CALL}  # Videos/0X0000.avi is garbage",
             r"0X0000\.avi: cannot decode the video", _video_corrupt),
    BadInput("medical-metrics-nan-prediction", "segmentation_metrics(pred_with_nan, target)",
             r"pred: 1 value\(s\) are NaN or infinite",
             lambda t: raised(ValueError, lambda: segmentation_metrics(_nan_pred(), _masks()))),
    BadInput("medical-metrics-zero-spacing", "segmentation_metrics(pred, target, spacing=0)",
             r"spacing: expected one positive number, \(row, col\) positive numbers or a "
             r"\(2, 2\) array of per-image \(row, col\) spacings, got 0",
             lambda t: raised(ValueError, lambda: segmentation_metrics(_masks(), _masks(), 0))),
    BadInput("medical-metrics-ece-zero-bins", "expected_calibration_error(prob, target, bins=0)",
             r"bins: expected a positive integer, got 0",
             lambda t: raised(ValueError, lambda: expected_calibration_error(_masks(), _masks(), 0))),
    BadInput("medical-metrics-ensemble-shape", "ensemble_metrics(samples_without_K_axis, target)",
             r"samples \(2, 1, 8, 8\) must be \(K, B, 1, H, W\)",
             lambda t: raised(ValueError, lambda: ensemble_metrics(_masks(), _masks()))),
    BadInput("medical-cli-camus-label-mask", f"{FIT_CAMUS} --data.init_args.root=DIR  # 0/255 _gt",
             r"^error: .*" + LABEL_MSG + r".*found 255", _cli_camus_label, max_lines=1),
    BadInput("medical-cli-echonet-empty-split",
             f"{FIT_ECHO} --data.init_args.root=DIR  # FileList.csv line 3: Split ''",
             r"^error: .*FileList\.csv line 3: empty Split for 0X0001", _cli_echonet_split,
             max_lines=1),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)


def test_videos_without_tracings_are_skipped_with_a_count(tmp_path):
    root = _echonet(tmp_path)
    drop_csv_lines(root / "VolumeTracings.csv", range(2, 10))  # no tracings for 0X0000 (TRAIN)
    dm = EchoNetDynamic(root=str(root), size=16)
    with pytest.warns(SkippedVideosWarning, match=r"1 of the 2 TRAIN videos .* have no tracings "
                                                  r"and are skipped \(first: 0X0000\)"):
        train = dm.dataset("train")
    assert len(train) == 2  # the other TRAIN video's two traced frames


def test_good_mhd_header_fields_still_load(tmp_path):
    """Checks do not refuse valid headers: optional fields left out, HeaderSize, float labels 0-3."""
    lab = np.zeros((24, 16), np.float32)
    lab[4:12, 3:9] = 1
    lab[12:20, 3:9] = 2
    write_mhd(tmp_path / "a.mhd", lab, drop=("ObjectType", "AnatomicalOrientation", "Offset"))
    assert np.array_equal(read_camus_image(tmp_path / "a.mhd"), lab)
    img = np.arange(24 * 16, dtype=np.uint8).reshape(24, 16)
    raw = write_mhd(tmp_path / "b.mhd", img, HeaderSize="8")
    raw.write_bytes(bytes(8) + raw.read_bytes())
    assert np.array_equal(read_camus_image(tmp_path / "b.mhd"), img)
    root = _camus(tmp_path)
    write_mhd(_gt(root), _label(root).astype(np.float32))  # integral float labels are fine
    assert len(CAMUS(root=str(root), size=16).dataset("train")) == 8
