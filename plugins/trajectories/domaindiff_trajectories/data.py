"""Trajectory datasets: N-body (simulated into the cache), MD17 (sgdml npz), ETH-UCY (EqMotion npy).

Every dataset yields dict batches: ``x`` target frames ``(B, N, T_pred, 3)``, ``cond`` condition
frames ``(B, N, T_cond, 3)``, ``h`` node features ``(B, N, F)`` and ``mask`` ``(B, N)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from domaindiff.data import DomainDataModule, atomic_write
from domaindiff_trajectories.nbody import DEFAULT_BODIES, SYSTEMS, simulate

SPLITS = ("train", "valid", "test")


class TrajectoryDataset(Dataset):
    """Windows of trajectories as dict items.

    Args:
        traj: positions ``(n, T, N, D)``.
        h: node features ``(n, N, F)``.
        cond_frames: leading frames used as the condition.
        pred_frames: following frames to predict.
        mask: ``(n, N)`` node mask (None: all real).
    """

    def __init__(self, traj: np.ndarray, h: np.ndarray, cond_frames: int, pred_frames: int,
                 mask: np.ndarray | None = None) -> None:
        if traj.ndim != 4:
            raise ValueError(f"traj must be (n, T, N, D), got shape {traj.shape}")
        if cond_frames + pred_frames > traj.shape[1]:
            raise ValueError(f"cond_frames + pred_frames = {cond_frames + pred_frames} exceeds the "
                             f"{traj.shape[1]} frames available")
        x = torch.as_tensor(traj, dtype=torch.float32).permute(0, 2, 1, 3)  # (n, N, T, D)
        self.cond = x[:, :, :cond_frames].contiguous()
        self.x = x[:, :, cond_frames:cond_frames + pred_frames].contiguous()
        self.h = torch.tensor(np.asarray(h), dtype=torch.float32)
        self.mask = (torch.ones(x.shape[:2]) if mask is None
                     else torch.as_tensor(mask, dtype=torch.float32))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "cond": self.cond[i], "h": self.h[i], "mask": self.mask[i]}


def nbody_suffix(system: str, n_bodies: int) -> str:
    """The NRI file suffix, e.g. ``charged5_initvel1``."""
    return f"{system}{n_bodies}_initvel1"


def write_nbody_split(directory: str | Path, split: str, suffix: str,
                      sim: dict[str, np.ndarray]) -> None:
    """Write one split in the NRI layout ``{loc,vel,edges,charges}_{split}_{suffix}.npy``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("loc", "vel", "edges", "charges"):
        with atomic_write(directory / f"{key}_{split}_{suffix}.npy") as f:
            np.save(f, sim[key])


def load_nbody_split(directory: str | Path, split: str, suffix: str) -> dict[str, np.ndarray]:
    """Read an NRI/EGNN N-body split.

    Returns:
        ``loc`` and ``vel`` as ``(n, T, N, 3)`` (converted from the files' ``(n, T, 3, N)``),
        ``charges`` ``(n, N, 1)`` and ``edges`` ``(n, N, N)``.

    Raises:
        FileNotFoundError: a file is missing (named).
        ValueError: a file has the wrong shape (named, with the expected layout).
    """
    directory = Path(directory)
    out = {}
    for key in ("loc", "vel", "edges", "charges"):
        path = directory / f"{key}_{split}_{suffix}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"N-body file {path} is missing")
        out[key] = np.load(path, allow_pickle=False)
    loc = out["loc"]
    if loc.ndim != 4 or loc.shape[2] not in (2, 3):
        raise ValueError(f"{directory / f'loc_{split}_{suffix}.npy'}: expected shape "
                         f"(n, frames, 3, N), got {loc.shape}")
    if out["vel"].shape != loc.shape:
        raise ValueError(f"{directory / f'vel_{split}_{suffix}.npy'}: shape {out['vel'].shape} "
                         f"!= loc shape {loc.shape}")
    n, _, _, nb = loc.shape
    charges = out["charges"].reshape(n, -1, 1) if out["charges"].size == n * nb else None
    if charges is None:
        raise ValueError(f"{directory / f'charges_{split}_{suffix}.npy'}: expected {n * nb} "
                         f"values (n, N, 1), got shape {out['charges'].shape}")
    return {"loc": loc.transpose(0, 1, 3, 2), "vel": out["vel"].transpose(0, 1, 3, 2),
            "charges": charges, "edges": out["edges"]}


class NBody(DomainDataModule):
    """Charged / springs / gravity N-body forecasting, simulated into the cache on first use.

    Files follow the NRI/EGNN layout (``loc_train_charged5_initvel1.npy``...), so real files
    from those repositories can be dropped into :attr:`cache_dir` instead.

    Args:
        system: ``charged``, ``springs`` or ``gravity``.
        n_bodies: bodies (default 5, 5, 10).
        num_train: training trajectories (paper 3000).
        num_val: validation trajectories (paper 2000).
        num_test: test trajectories (paper 2000).
        cond_frames: observed frames (paper 10).
        pred_frames: predicted frames (paper 20).
        length: integration steps (paper 5000).
        sample_freq: frame interval in steps (paper 100).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: simulation seed (train/valid/test use seed, seed+1, seed+2).
        root: data directory (default ``$DOMAINDIFF_DATA/nbody``).
    """

    name = "nbody"

    def __init__(self, system: str = "charged", n_bodies: int | None = None,
                 num_train: int = 3000, num_val: int = 2000, num_test: int = 2000,
                 cond_frames: int = 10, pred_frames: int = 20, length: int = 5000,
                 sample_freq: int = 100, batch_size: int = 128, num_workers: int = 0,
                 seed: int = 0, root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if system not in SYSTEMS:
            raise ValueError(f"system: unknown {system!r}; choose one of {SYSTEMS}")
        self.system, self.n_bodies = system, n_bodies or DEFAULT_BODIES[system]
        self.sizes = {"train": num_train, "valid": num_val, "test": num_test}
        self.cond_frames, self.pred_frames = cond_frames, pred_frames
        self.length, self.sample_freq = length, sample_freq

    @property
    def suffix(self) -> str:
        """NRI file suffix, with the split size and seed when they differ from the paper's."""
        base = nbody_suffix(self.system, self.n_bodies)
        if (self.length, self.sample_freq) != (5000, 100):
            base += f"_len{self.length}_every{self.sample_freq}"
        return base

    def _split_dir(self, split: str) -> Path:
        return self.cache_dir / f"{split}{self.sizes[split]}_seed{self.seed}"

    def prepare_data(self) -> None:
        for i, split in enumerate(SPLITS):
            d = self._split_dir(split)
            if not (d / f"loc_{split}_{self.suffix}.npy").is_file():
                sim = simulate(self.system, self.sizes[split], self.n_bodies, self.length,
                               self.sample_freq, seed=self.seed + i)
                write_nbody_split(d, split, self.suffix, sim)

    def dataset(self, split: str) -> TrajectoryDataset:
        """The windows of one split (``train``, ``valid`` or ``test``)."""
        self.prepare_data()
        d = load_nbody_split(self._split_dir(split), split, self.suffix)
        return TrajectoryDataset(d["loc"], d["charges"], self.cond_frames, self.pred_frames)

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (self.dataset(s) for s in SPLITS)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, drop_last=len(self.train_set) >
                          self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)

    predict_dataloader = test_dataloader


# --- MD17 ----------------------------------------------------------------------------------------
def load_md17_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an sgdml MD17 ``.npz``: positions ``R`` ``(frames, atoms, 3)`` and numbers ``z``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing key or a bad shape (the file and the key are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MD17 file {path} is missing")
    with np.load(path, allow_pickle=False) as f:
        for key in ("R", "z"):
            if key not in f.files:
                raise ValueError(f"{path}: key {key!r} missing (has {sorted(f.files)})")
        r, z = np.asarray(f["R"], dtype=np.float64), np.asarray(f["z"]).astype(np.int64)
    if r.ndim != 3 or r.shape[2] != 3:
        raise ValueError(f"{path}: key 'R' must be (frames, atoms, 3), got {r.shape}")
    if z.shape != (r.shape[1],):
        raise ValueError(f"{path}: key 'z' must be ({r.shape[1]},), got {z.shape}")
    return r, z


def md17_windows(r: np.ndarray, every: int = 10, window: int = 30,
                 fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                 max_windows: tuple[int, int, int] = (5000, 1000, 1000),
                 ) -> dict[str, np.ndarray]:
    """Subsample frames, split chronologically and cut non-overlapping-start windows.

    Returns:
        ``{"train"|"valid"|"test": (n, window, atoms, 3)}``; a split never sees another's frames.
    """
    frames = r[::every]
    n = len(frames)
    bounds = np.cumsum([0] + [int(round(f * n)) for f in fractions])
    out = {}
    for split, lo, hi, cap in zip(SPLITS, bounds[:-1], bounds[1:], max_windows, strict=True):
        seg = frames[lo:min(hi, n)]
        starts = np.arange(0, max(len(seg) - window + 1, 0))
        if len(starts) > cap:
            starts = np.linspace(0, len(seg) - window, cap).astype(int)
        out[split] = (np.stack([seg[s:s + window] for s in starts]) if len(starts)
                      else np.zeros((0, window) + r.shape[1:]))
    return out


class MD17(DomainDataModule):
    """MD17 forecasting from an sgdml npz (``md17_<molecule>.npz`` in :attr:`cache_dir`).

    When the file is absent and ``standin_steps > 0``, an offline stand-in is simulated first
    (MMFF94 Langevin MD at 500 K, 0.5 fs steps, one frame per step; see
    :func:`domaindiff_trajectories.md.simulate_md17_standin`) and written with the same keys.

    Args:
        molecule: molecule name (file ``md17_<molecule>.npz``).
        every: frame subsampling.
        cond_frames: observed frames (10).
        pred_frames: predicted frames (20).
        standin_steps: MD steps of the offline stand-in (0: require the real file).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of the stand-in simulation.
        root: data directory.
    """

    name = "md17"

    def __init__(self, molecule: str = "aspirin", every: int = 10, cond_frames: int = 10,
                 pred_frames: int = 20, standin_steps: int = 60000, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0, root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.molecule, self.every, self.standin_steps = molecule, every, standin_steps
        self.cond_frames, self.pred_frames = cond_frames, pred_frames

    @property
    def path(self) -> Path:
        """The npz this module reads."""
        return self.cache_dir / f"md17_{self.molecule}.npz"

    def prepare_data(self) -> None:
        if self.path.is_file() or self.standin_steps <= 0:
            return
        from domaindiff.data import atomic_savez
        from domaindiff_trajectories.md import simulate_md17_standin

        sim = simulate_md17_standin(self.molecule, self.standin_steps, seed=self.seed)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(self.path, **sim)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        r, z = load_md17_npz(self.path)
        wins = md17_windows(r, self.every, self.cond_frames + self.pred_frames)
        h = (z[:, None] == np.array([1, 6, 7, 8])[None]).astype(np.float32)  # H C N O one-hot
        self.sets = {s: TrajectoryDataset(w, np.broadcast_to(h, (len(w),) + h.shape),
                                          self.cond_frames, self.pred_frames)
                     for s, w in wins.items()}
        self.train_set, self.val_set, self.test_set = (self.sets[s] for s in SPLITS)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)


# --- ETH-UCY -------------------------------------------------------------------------------------
ETH_SCENES = ("eth", "hotel", "univ", "zara1", "zara2")


def load_eth_ucy(directory: str | Path, scene: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read EqMotion-preprocessed ETH-UCY ``{scene}_data_{split}.npy`` / ``{scene}_num_{split}.npy``.

    Returns:
        positions ``(B, 20, N_max, 2)`` and the node mask ``(B, N_max)`` from the agent counts.
    """
    if scene not in ETH_SCENES:
        raise ValueError(f"scene: unknown {scene!r}; choose one of {ETH_SCENES}")
    directory = Path(directory)
    paths = [directory / f"{scene}_{k}_{split}.npy" for k in ("data", "num")]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"ETH-UCY file {p} is missing")
    data, num = np.load(paths[0]), np.load(paths[1]).reshape(-1).astype(np.int64)
    if data.ndim != 4 or data.shape[2] != 20 or data.shape[3] != 2:
        raise ValueError(f"{paths[0]}: expected (B, N_max, 20, 2), got {data.shape}")
    if len(num) != len(data) or (num > data.shape[1]).any() or (num < 1).any():
        raise ValueError(f"{paths[1]}: agent counts must be 1..{data.shape[1]} for each of "
                         f"{len(data)} scenes")
    mask = (np.arange(data.shape[1])[None] < num[:, None]).astype(np.float32)
    traj = data.transpose(0, 2, 1, 3) * mask[:, None, :, None]
    return traj, mask


class ETHUCY(DomainDataModule):
    """ETH-UCY pedestrians (2-D) from the EqMotion preprocessing in :attr:`cache_dir`.

    No offline stand-in: place ``{scene}_{data,num}_{train,test}.npy`` in
    ``$DOMAINDIFF_DATA/eth_ucy`` (validation uses the test split, as the reference code).

    Args:
        scene: ``eth``, ``hotel``, ``univ``, ``zara1`` or ``zara2``.
        cond_frames: observed frames (8).
        pred_frames: predicted frames (12).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: unused (common signature).
        root: data directory.
    """

    name = "eth_ucy"

    def __init__(self, scene: str = "eth", cond_frames: int = 8, pred_frames: int = 12,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if scene not in ETH_SCENES:
            raise ValueError(f"scene: unknown {scene!r}; choose one of {ETH_SCENES}")
        self.scene, self.cond_frames, self.pred_frames = scene, cond_frames, pred_frames

    def setup(self, stage: str | None = None) -> None:
        sets = {}
        for split in ("train", "test"):
            traj, mask = load_eth_ucy(self.cache_dir, self.scene, split)
            h = np.ones(mask.shape + (1,), dtype=np.float32)
            sets[split] = TrajectoryDataset(traj, h, self.cond_frames, self.pred_frames, mask)
        self.train_set, self.val_set, self.test_set = sets["train"], sets["test"], sets["test"]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    test_dataloader = val_dataloader
