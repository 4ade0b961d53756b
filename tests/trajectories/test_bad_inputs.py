"""Bad trajectory inputs (MD17 npz, N-body npy, ETH-UCY npy and text): each refused in one line.

Every ``check`` writes the tiny bad file(s) into ``tmp_path`` in the real format and runs the real
loader (the DataModule's ``setup``, as ``domaindiff fit`` does) or the real CLI.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from domaindiff_trajectories.data import ETHUCY, MD17, NBody, write_nbody_split
from domaindiff_trajectories.nbody import simulate
from tests.catalogue import BadInput, assert_refused, cli_message, raised

CONF = Path(__file__).parents[2] / "plugins/trajectories/domaindiff_trajectories/conf"
Z = np.array([6, 1, 1, 8])
SUFFIX = "charged5_initvel1"
ERRORS = (ValueError, FileNotFoundError)


def _frames(n: int = 400) -> np.ndarray:
    return np.cumsum(np.random.default_rng(0).normal(0, 0.01, (n, 4, 3)), 0)


def _md17(tmp: Path, setup: dict | None = None, **arrays: np.ndarray) -> str:
    """Write ``md17_toy.npz`` with ``arrays`` and return ``MD17(...).setup``'s error message."""
    np.savez(tmp / "md17_toy.npz", **arrays)
    return _md17_setup(tmp, **(setup or {}))


def _md17_setup(tmp: Path, **kw) -> str:
    args = {"molecule": "toy", "every": 2, "cond_frames": 3, "pred_frames": 4,
            "standin_steps": 0, **kw}
    return raised(ERRORS, lambda: MD17(root=str(tmp), **args).setup("fit"))


def _md17_bytes(tmp: Path, cut: int | None = None, flip: int | None = None) -> str:
    buf = io.BytesIO()
    np.savez(buf, R=_frames(), z=Z)
    data = bytearray(buf.getvalue())
    if flip is not None:
        data[flip] ^= 0xFF
    (tmp / "md17_toy.npz").write_bytes(bytes(data[:cut]))
    return _md17_setup(tmp)


def _nbody(tmp: Path, change=None) -> str:
    """Place NRI files of a tiny charged system in ``tmp``; ``change(files)`` spoils one."""
    for i, split in enumerate(("train", "valid", "test")):
        write_nbody_split(tmp, split, SUFFIX, simulate("charged", 2, length=400, seed=i))
    if change is not None:
        change({p.name.split("_")[0]: p for p in tmp.glob("*_train_*.npy")})
    return raised(ERRORS, lambda: NBody(root=str(tmp), cond_frames=1, pred_frames=2,
                                        num_train=2, num_val=2, num_test=2).setup("fit"))


def _nbody_too_few(tmp: Path) -> str:
    for i, split in enumerate(("train", "valid", "test")):
        write_nbody_split(tmp, split, SUFFIX, simulate("charged", 2, length=400, seed=i))
    return raised(ERRORS, lambda: NBody(root=str(tmp), cond_frames=1, pred_frames=2,
                                        num_train=5).setup("fit"))


def _gravity_in_charged_layout(tmp: Path) -> str:
    """Charged-layout arrays saved under gravity names: read by name, refused by shape."""
    for i, split in enumerate(("train", "valid", "test")):
        sim = simulate("charged", 2, length=5000, seed=i)
        write_nbody_split(tmp, split, "gravity5_initvel1", sim)
    return raised(ERRORS, lambda: NBody("gravity", n_bodies=5, root=str(tmp)).setup("fit"))


def _rmd17_bad_coords(tmp: Path) -> str:
    np.savez(tmp / "rmd17_toy.npz", coords=_frames()[..., 0], nuclear_charges=Z)
    return _md17_setup(tmp, source="rmd17")


def _nan_loc(files: dict[str, Path]) -> None:
    loc = np.load(files["loc"])
    loc[1, 2, 0, 3] = np.nan
    np.save(files["loc"], loc)


def _inf_vel(files: dict[str, Path]) -> None:
    vel = np.load(files["vel"])
    vel[0, 0, 1, 0] = np.inf
    np.save(files["vel"], vel)


def _truncate(path: Path, keep: int = 200) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _eth_npy(tmp: Path, data: np.ndarray, num: np.ndarray) -> str:
    for split in ("train", "test"):
        np.save(tmp / f"hotel_data_{split}.npy", data)
        np.save(tmp / f"hotel_num_{split}.npy", num)
    return raised(ERRORS, lambda: ETHUCY("hotel", root=str(tmp)).setup("fit"))


def _eth_nan_real_agent(tmp: Path) -> str:
    data = np.zeros((2, 3, 20, 2))
    data[1, 2] = np.nan  # padded agent of scene 1: ignored
    data[0, 1, 5, 0] = np.nan  # real agent 1 of scene 0: refused
    return _eth_npy(tmp, data, np.array([2, 2]))


def _eth_txt(tmp: Path, text: str) -> str:
    for split in ("train", "test"):
        d = tmp / "datasets" / "zara1" / split
        d.mkdir(parents=True)
        good = "\n".join(f"{10 * f}\t1\t{0.1 * f:.2f}\t1.0" for f in range(20))
        (d / "crowds_zara01.txt").write_text(good + "\n" + text if split == "train" else good)
    return raised(ERRORS, lambda: ETHUCY("zara1", root=str(tmp)).setup("fit"))


def _eth_txt_short(tmp: Path) -> str:
    for split in ("train", "test"):
        d = tmp / "datasets" / "zara1" / split
        d.mkdir(parents=True)
        (d / "crowds_zara01.txt").write_text("".join(f"{10 * f} 1 0.5 1.0\n" for f in range(12)))
    return raised(ERRORS, lambda: ETHUCY("zara1", root=str(tmp)).setup("fit"))


def _cli_md17_short(tmp: Path) -> str:
    np.savez(tmp / "md17_toy.npz", R=_frames(50), z=Z)
    return cli_message(["fit", "--config", str(CONF / "md17_aspirin.yaml"),
                        f"--data.init_args.root={tmp}", "--data.init_args.molecule=toy",
                        "--data.init_args.standin_steps=0", "--trainer.accelerator=cpu",
                        "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp}"], cwd=tmp)


def _cli_md17_nan(tmp: Path) -> str:
    r = _frames()
    r[7, 0, 2] = np.nan
    np.savez(tmp / "md17_toy.npz", R=r, z=Z)
    return cli_message(["fit", "--config", str(CONF / "md17_aspirin.yaml"),
                        f"--data.init_args.root={tmp}", "--data.init_args.molecule=toy",
                        "--data.init_args.standin_steps=0", "--data.init_args.every=2",
                        "--trainer.accelerator=cpu", "--trainer.max_epochs=1",
                        f"--trainer.default_root_dir={tmp}"], cwd=tmp)


def _r_with(value: float) -> np.ndarray:
    r = _frames()
    r[12, 3, 1] = value
    return r


FIT = "domaindiff fit --config plugins/trajectories/domaindiff_trajectories/conf/md17_aspirin.yaml"
MD17_CALL = "MD17('toy', root=DIR, every=2, cond_frames=3, pred_frames=4, standin_steps=0).setup()"
NBODY_CALL = "NBody(root=DIR, cond_frames=1, pred_frames=2, num_train=2, ...).setup()"

CATALOGUE: list[BadInput] = [
    BadInput("traj-md17-nan-coordinates", f"{MD17_CALL}  # R[12, 3, 1] = nan",
             r"md17_toy\.npz: key 'R': 1 non-finite values \(NaN or inf\), the first at frame 12, "
             r"atom 3, coordinate 1",
             lambda t: _md17(t, R=_r_with(np.nan), z=Z)),
    BadInput("traj-md17-inf-coordinates", f"{MD17_CALL}  # R[12, 3, 1] = inf",
             r"md17_toy\.npz: key 'R': 1 non-finite values.*frame 12",
             lambda t: _md17(t, R=_r_with(np.inf), z=Z)),
    BadInput("traj-md17-too-few-frames",
             "MD17('toy', root=DIR, standin_steps=0).setup()  # R has 50 frames (every=10, 10+20)",
             r"md17_toy\.npz: 50 frames give 0/0/0 train/valid/test windows: every=10 keeps 5 "
             r"frames.*cond_frames \+ pred_frames = 30 of them; need at least 1481 frames",
             lambda t: _md17(t, {"every": 10, "cond_frames": 10, "pred_frames": 20},
                             R=_frames(50), z=Z)),
    BadInput("traj-md17-no-valid-window", f"{MD17_CALL}  # 60 frames: train windows only",
             r"60 frames give 12/0/0 train/valid/test windows",
             lambda t: _md17(t, R=_frames(60), z=Z)),
    BadInput("traj-md17-truncated-npz", f"{MD17_CALL}  # file cut at 1000 bytes",
             r"md17_toy\.npz: truncated or not an npz file",
             lambda t: _md17_bytes(t, cut=1000)),
    BadInput("traj-md17-corrupt-member", f"{MD17_CALL}  # one byte of R's data flipped",
             r"md17_toy\.npz: truncated or not an npz file \(.*CRC",
             lambda t: _md17_bytes(t, flip=5000)),
    BadInput("traj-md17-missing-key", f"{MD17_CALL}  # npz with R only",
             r"md17_toy\.npz: key 'z' missing \(keys found: \['R'\]\)",
             lambda t: _md17(t, R=_frames())),
    BadInput("traj-md17-wrong-R-shape", f"{MD17_CALL}  # R of shape (400, 4, 2)",
             r"md17_toy\.npz: key 'R' must be \(frames, atoms, 3\), got shape \(400, 4, 2\)",
             lambda t: _md17(t, R=_frames()[..., :2], z=Z)),
    BadInput("traj-md17-z-not-matching-atoms", f"{MD17_CALL}  # 4 atoms in R, 3 numbers in z",
             r"md17_toy\.npz: key 'z' must hold one atomic number per atom of 'R', shape \(4,\), "
             r"got shape \(3,\)",
             lambda t: _md17(t, R=_frames(), z=Z[:3])),
    BadInput("traj-md17-element-not-encoded", f"{MD17_CALL}  # z = [6, 1, 1, 16] (sulfur)",
             r"md17_toy\.npz: key 'z': atomic numbers \[16\] are not among H, C, N, O",
             lambda t: _md17(t, R=_frames(), z=np.array([6, 1, 1, 16]))),
    BadInput("traj-md17-non-numeric-R", f"{MD17_CALL}  # R saved as strings",
             r"md17_toy\.npz: key 'R': expected numbers, got dtype <U",
             lambda t: _md17(t, R=_frames().astype(str), z=Z)),
    BadInput("traj-md17-missing-file", "MD17('toy', root=DIR).setup()",
             r"md17_toy\.npz is missing: download it from http://www\.sgdml\.org/#datasets.* "
             r"or pass source=standin",
             lambda t: _md17_setup(t)),
    BadInput("traj-md17-no-standin", "MD17('caffeine', source='standin', root=DIR).setup()",
             r"molecule: no offline stand-in for 'caffeine'",
             lambda t: _md17_setup(t, molecule="caffeine", source="standin", standin_steps=10)),
    BadInput("traj-md17-unknown-source", "MD17(source='md22')",
             r"source: unknown 'md22'; choose one of \('md17', 'rmd17', 'standin'\)",
             lambda t: raised(ValueError, lambda: MD17(source="md22"))),
    BadInput("traj-rmd17-missing-file", "MD17('toy', source='rmd17', root=DIR).setup()",
             r"rmd17_toy\.npz is missing: download it from https://figshare\.com",
             lambda t: _md17_setup(t, source="rmd17")),
    BadInput("traj-rmd17-wrong-coords-shape", "MD17('toy', source='rmd17', ...)  # coords (400, 4)",
             r"rmd17_toy\.npz: key 'coords' must be \(frames, atoms, 3\), got shape \(400, 4\)",
             _rmd17_bad_coords),
    BadInput("traj-nbody-no-files", "NBody(root=EMPTY_DIR).setup()",
             r"loc_train_charged5_initvel1\.npy is missing: place the files the GeoTDM generator "
             r"writes.*or pass simulate=true",
             lambda t: raised(ERRORS, lambda: NBody(root=str(t)).setup("fit"))),
    BadInput("traj-nbody-fewer-than-num-train", "NBody(root=DIR, num_train=5)  # 2 in the file",
             rf"loc_train_{SUFFIX}\.npy: 2 trajectories, fewer than num_train=5",
             _nbody_too_few),
    BadInput("traj-nbody-gravity-in-charged-layout",
             "NBody('gravity', n_bodies=5, root=DIR)  # loc (n, 49, 3, 5)",
             r"loc_train_gravity5_initvel1\.npy: expected shape \(n, frames, N, 3\) \(trajectory, "
             r"frame, body, dim; the gravity layout of the GeoTDM generator\), got \(2, 49, 3, 5\)",
             _gravity_in_charged_layout),
    BadInput("traj-ethucy-traj-scale-zero", "ETHUCY(traj_scale=0)",
             r"traj_scale must be a positive number, got 0",
             lambda t: raised(ValueError, lambda: ETHUCY(traj_scale=0))),
    BadInput("traj-md17-every-zero", "MD17(every=0)", r"every must be >= 1, got 0",
             lambda t: raised(ValueError, lambda: MD17(every=0))),
    BadInput("traj-nbody-nan-loc", f"{NBODY_CALL}  # loc_train has a NaN",
             rf"loc_train_{SUFFIX}\.npy: 1 non-finite values \(NaN or inf\), the first at "
             r"trajectory 1, frame 2, dim 0, body 3",
             lambda t: _nbody(t, _nan_loc)),
    BadInput("traj-nbody-inf-vel", f"{NBODY_CALL}  # vel_train has an inf",
             rf"vel_train_{SUFFIX}\.npy: 1 non-finite values",
             lambda t: _nbody(t, _inf_vel)),
    BadInput("traj-nbody-truncated-npy", f"{NBODY_CALL}  # loc_train cut at 200 bytes",
             rf"loc_train_{SUFFIX}\.npy: truncated or not a \.npy file",
             lambda t: _nbody(t, lambda f: _truncate(f["loc"]))),
    BadInput("traj-nbody-missing-file", f"{NBODY_CALL}  # charges_train deleted",
             rf"N-body file .*charges_train_{SUFFIX}\.npy is missing",
             lambda t: _nbody(t, lambda f: f["charges"].unlink())),
    BadInput("traj-nbody-window-longer-than-simulation",
             "NBody(simulate=True, length=600, cond_frames=10, pred_frames=20)",
             r"cond_frames \+ pred_frames = 30 exceeds the 5 frames that length=600, "
             r"sample_freq=100 simulate",
             lambda t: raised(ValueError, lambda: NBody(simulate=True, length=600))),
    BadInput("traj-nbody-zero-trajectories", "NBody(num_train=0)",
             r"num_train must be >= 1, got 0",
             lambda t: raised(ValueError, lambda: NBody(num_train=0))),
    BadInput("traj-ethucy-nan-real-agent", "ETHUCY('hotel', root=DIR).setup()  # NaN position",
             r"hotel_data_train\.npy: 1 non-finite values.*scene 0, agent 1, frame 5",
             _eth_nan_real_agent),
    BadInput("traj-ethucy-fractional-count", "ETHUCY('hotel', root=DIR).setup()  # num = 1.5",
             r"hotel_num_train\.npy: agent counts must be integers 1\.\.3",
             lambda t: _eth_npy(t, np.zeros((2, 3, 20, 2)), np.array([1.5, 2.0]))),
    BadInput("traj-ethucy-txt-non-numeric", "ETHUCY('zara1', root=DIR).setup()  # 'abc' as x",
             r"crowds_zara01\.txt, line 21: non-numeric field 'abc' \(columns: frame, agent, x, y\)",
             lambda t: _eth_txt(t, "200\t1\tabc\t1.0\n")),
    BadInput("traj-ethucy-txt-columns", "ETHUCY('zara1', root=DIR).setup()  # a 3-column line",
             r"crowds_zara01\.txt, line 21: expected 4 columns \(frame, agent, x, y\), got 3",
             lambda t: _eth_txt(t, "200\t1\t2.0\n")),
    BadInput("traj-ethucy-txt-duplicate", "ETHUCY('zara1', root=DIR).setup()  # agent twice",
             r"crowds_zara01\.txt, line 21: agent 1 appears twice in frame 190",
             lambda t: _eth_txt(t, "190\t1\t5.0\t1.0\n")),
    BadInput("traj-ethucy-txt-no-window", "ETHUCY('zara1', root=DIR).setup()  # 12 frames only",
             r"crowds_zara01\.txt: no 20-frame window in which an agent is present in every frame",
             _eth_txt_short),
    BadInput("traj-nbody-edges-shape", f"{NBODY_CALL}  # edges_train of shape (2, 5)",
             rf"edges_train_{SUFFIX}\.npy: expected shape \(2, 5, 5\) \(trajectory, body, body; "
             r"the charged layout of the GeoTDM generator\), got \(2, 5\)",
             lambda t: _nbody(t, lambda f: np.save(f["edges"], np.zeros((2, 5))))),
    BadInput("traj-ethucy-no-files", "ETHUCY('eth', root=EMPTY_DIR).setup()",
             r"eth_data_train\.npy is missing, and no raw text files in .*datasets/eth",
             lambda t: raised(ERRORS, lambda: ETHUCY("eth", root=str(t)).setup("fit"))),
    BadInput("traj-cli-md17-too-few-frames", f"{FIT} --data.init_args.molecule=toy  # 50 frames",
             r"md17_toy\.npz: 50 frames give 0/0/0 train/valid/test windows.*need at least "
             r"1481 frames", _cli_md17_short),
    BadInput("traj-cli-md17-nan", f"{FIT} --data.init_args.molecule=toy  # NaN in R",
             r"md17_toy\.npz: key 'R': 1 non-finite values.*frame 7, atom 0, coordinate 2",
             _cli_md17_nan),
]


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_is_refused_clearly(case, tmp_path):
    assert_refused(case, tmp_path)


def test_padded_agents_may_hold_anything(tmp_path):
    """NaN in a padded (masked) slot is the EqMotion convention's don't-care: it becomes 0."""
    data = np.ones((2, 3, 20, 2))
    data[1, 2] = np.nan
    for split in ("train", "test"):
        np.save(tmp_path / f"hotel_data_{split}.npy", data)
        np.save(tmp_path / f"hotel_num_{split}.npy", np.array([3, 2]))
    dm = ETHUCY("hotel", root=str(tmp_path))
    dm.setup("fit")
    assert np.isfinite(dm.train_set.x.numpy()).all() and (dm.train_set.x[1, 2] == 0).all()
