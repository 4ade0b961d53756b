"""Trajectory datasets: N-body (generator files or simulated), MD17 / rMD17 (npz), ETH-UCY.

Every dataset yields dict batches: ``x`` target frames ``(B, N, T_pred, 3)``, ``cond`` condition
frames ``(B, N, T_cond, 3)``, ``h`` node features ``(B, N, F)`` and ``mask`` ``(B, N)``.

Whatever is generated into the cache (N-body simulations, the MD17 stand-in, ETH-UCY windows
prepared from the raw text files) is one cache entry built in a temporary directory and moved in
with a manifest (:func:`domaindiff.data.build_cache_entry`): a killed run leaves nothing that a
later run trusts. Every loader refuses non-finite coordinates, truncated files and wrong shapes
with one line naming the file and the key.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from domaindiff.data import DomainDataModule, atomic_write
from domaindiff_trajectories.nbody import DEFAULT_BODIES, SYSTEMS, frames_of, simulate

SPLITS = ("train", "valid", "test")
_log = logging.getLogger(__name__)
_READ_ERRORS = (ValueError, EOFError, OSError, zipfile.BadZipFile, KeyError)


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` of one ``.npy`` (no pickles) with errors that name the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, not a ``.npy`` file or holds Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise ValueError(f"{path}: truncated or not a .npy file ({err})") from err


def check_at_least(low: int, **values: int) -> None:
    """Raise ``ValueError`` naming the first argument below ``low``."""
    for arg, value in values.items():
        if value < low:
            raise ValueError(f"{arg} must be >= {low}, got {value}")


def check_numeric(array: np.ndarray, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``array`` holds numbers."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{where}: expected numbers, got dtype {array.dtype}")


def check_finite(array: np.ndarray, where: str, axes: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``where`` if ``array`` is not numeric or holds NaN / inf.

    Args:
        array: the values.
        where: the file and key, e.g. ``"md17_aspirin.npz: key 'R'"``.
        axes: names of the leading axes, to locate the first bad value.
    """
    check_numeric(array, where)
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.argwhere(bad)[0]
        at = ", ".join(f"{name} {i}" for name, i in zip(axes, first, strict=False))
        raise ValueError(f"{where}: {int(bad.sum())} non-finite values (NaN or inf), the first "
                         f"at {at}; values must be finite")


class TrajectoryDataset(Dataset):
    """Windows of trajectories as dict items.

    Args:
        traj: positions ``(n, T, N, D)``.
        h: node features ``(n, N, F)``.
        cond_frames: leading frames used as the condition.
        pred_frames: following frames to predict.
        mask: ``(n, N)`` node mask (None: all real).
        edges: ``(n, N, N)`` edge attributes (None: the network uses ``h_i h_j``), yielded as
            ``edge`` ``(N, N, 1)``.
    """

    def __init__(self, traj: np.ndarray, h: np.ndarray, cond_frames: int, pred_frames: int,
                 mask: np.ndarray | None = None, edges: np.ndarray | None = None) -> None:
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
        self.edges = None if edges is None else \
            torch.tensor(np.asarray(edges), dtype=torch.float32)[..., None]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"x": self.x[i], "cond": self.cond[i], "h": self.h[i], "mask": self.mask[i]}
        if self.edges is not None:
            item["edge"] = self.edges[i]
        return item


def nbody_suffix(system: str, n_bodies: int) -> str:
    """The generator's file suffix, e.g. ``charged5_initvel1``."""
    return f"{system}{n_bodies}_initvel1"


def nbody_system_of(suffix: str) -> str:
    """The system a file suffix names (``gravity10_initvel1`` -> ``gravity``), read by name.

    Raises:
        ValueError: the suffix names none of :data:`SYSTEMS`.
    """
    for system in SYSTEMS:
        if suffix.startswith(system):
            return system
    raise ValueError(f"N-body suffix {suffix!r}: names none of the systems {SYSTEMS}")


#: how each file of a split is laid out, by system: the GeoTDM/NRI generator writes charged and
#: springs positions as (n, frames, 3, N) with edges (n, N, N), and gravity positions as
#: (n, frames, N, 3) with the forces (n, frames, N, 3) in the edges file and the masses in charges
NBODY_LAYOUTS = {
    "charged": {"loc": ("trajectory", "frame", "dim", "body"),
                "vel": ("trajectory", "frame", "dim", "body"),
                "edges": ("trajectory", "body", "body"), "charges": ("trajectory", "body", "1")},
    "springs": {"loc": ("trajectory", "frame", "dim", "body"),
                "vel": ("trajectory", "frame", "dim", "body"),
                "edges": ("trajectory", "body", "body"), "charges": ("trajectory", "body", "1")},
    "gravity": {"loc": ("trajectory", "frame", "body", "dim"),
                "vel": ("trajectory", "frame", "body", "dim"),
                "edges": ("trajectory", "frame", "body", "dim"),
                "charges": ("trajectory", "body", "1")},
}


def write_nbody_split(directory: str | Path, split: str, suffix: str,
                      sim: dict[str, np.ndarray]) -> None:
    """Write one split as the generator does: ``{loc,vel,edges,charges}_{split}_{suffix}.npy``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("loc", "vel", "edges", "charges"):
        with atomic_write(directory / f"{key}_{split}_{suffix}.npy") as f:
            np.save(f, sim[key])


def _layout_error(path: Path, axes: tuple[str, ...], want: tuple, got: tuple, system: str) -> str:
    names = ", ".join(axes)
    return (f"{path}: expected shape ({', '.join(map(str, want))}) ({names}; the {system} "
            f"layout of the GeoTDM generator), got {tuple(got)}")


def load_nbody_split(directory: str | Path, split: str, suffix: str,
                     system: str | None = None) -> dict[str, np.ndarray]:
    """Read one split written by the GeoTDM / NRI / EGNN N-body generator.

    The layout is chosen by the system's name (``system``, else read from ``suffix``), never
    guessed from a dimension's size: charged and springs ``loc``/``vel`` are
    ``(n, frames, 3, N)``, gravity ones ``(n, frames, N, 3)`` (see :data:`NBODY_LAYOUTS`).

    Returns:
        ``loc`` and ``vel`` as ``(n, T, N, 3)``, ``charges`` ``(n, N, 1)`` (gravity: the masses)
        and ``edges`` ``(n, N, N)`` (charge products / spring constants; gravity: mass products).

    Raises:
        FileNotFoundError: a file is missing (named).
        ValueError: a file has the wrong shape, is truncated or holds NaN / inf (named, with the
            expected layout).
    """
    directory = Path(directory)
    system = system or nbody_system_of(suffix)
    if system not in NBODY_LAYOUTS:
        raise ValueError(f"system: unknown {system!r}; choose one of {SYSTEMS}")
    layout = NBODY_LAYOUTS[system]
    paths = {key: directory / f"{key}_{split}_{suffix}.npy" for key in layout}
    out = {}
    for key, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"N-body file {path} is missing")
        out[key] = load_npy(path)
        check_finite(out[key], str(path), layout[key])
    loc = out["loc"]
    dim_axis = layout["loc"].index("dim")
    if loc.ndim != 4 or loc.shape[dim_axis] not in (2, 3):
        want = ("n", "frames", 3, "N") if dim_axis == 2 else ("n", "frames", "N", 3)
        raise ValueError(_layout_error(paths["loc"], layout["loc"], want, loc.shape, system))
    n, frames = loc.shape[:2]
    nb = loc.shape[3 if dim_axis == 2 else 2]
    if out["vel"].shape != loc.shape:
        raise ValueError(f"{paths['vel']}: shape {out['vel'].shape} != loc shape {loc.shape}")
    want_edges = (n, nb, nb) if system != "gravity" else loc.shape
    if out["edges"].shape != want_edges:
        raise ValueError(_layout_error(paths["edges"], layout["edges"], want_edges,
                                       out["edges"].shape, system))
    if out["charges"].size != n * nb:
        raise ValueError(_layout_error(paths["charges"], layout["charges"], (n, nb, 1),
                                       out["charges"].shape, system))
    charges = out["charges"].reshape(n, nb, 1)
    if dim_axis == 2:
        loc, vel = loc.transpose(0, 1, 3, 2), out["vel"].transpose(0, 1, 3, 2)
        edges = out["edges"]
    else:
        vel = out["vel"]
        edges = np.broadcast_to(charges * charges.transpose(0, 2, 1), (n, nb, nb)) \
            * (1 - np.eye(nb))
    return {"loc": loc, "vel": vel, "charges": charges, "edges": edges}


class NBody(DomainDataModule):
    """Charged / springs / gravity N-body forecasting from the generator's files, or simulated.

    By default the files the GeoTDM (or NRI / EGNN) generator writes are read from :attr:`cache_dir`
    (``root``, default ``$DOMAINDIFF_DATA/nbody``):
    ``{loc,vel,edges,charges}_{train,valid,test}_<system><N>_initvel1.npy``, unchanged, in their
    layout (charged and springs ``(n, frames, 3, N)``; gravity ``(n, frames, N, 3)``). A missing
    file is an error naming it. ``num_train`` / ``num_val`` / ``num_test`` keep the first that
    many trajectories of each file, as the reference's ``force_length`` (None: all of them).

    Only with ``simulate=True`` are the splits simulated (see :mod:`domaindiff_trajectories.nbody`)
    into verified cache entries ``<cache_dir>/<split><size>_seed<seed>_<suffix>/`` (a killed
    simulation is never read). ``simulate=True`` with the generator's files in the same folder is
    refused, so one never silently replaces the other.

    Args:
        system: ``charged``, ``springs`` or ``gravity``.
        n_bodies: bodies (default 5, 5, 10).
        num_train: training trajectories kept (None: all in the file; simulated: 3000, as the
            paper).
        num_val: validation trajectories (None: all; simulated: 2000).
        num_test: test trajectories (None: all; simulated: 2000).
        cond_frames: observed frames (paper 10).
        pred_frames: predicted frames (paper 20).
        simulate: simulate the splits instead of reading the generator's files.
        length: integration steps of a simulation (paper 5000).
        sample_freq: frame interval in steps of a simulation (paper 100).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: simulation seed (train/valid/test use seed, seed+1, seed+2).
        root: data directory (default ``$DOMAINDIFF_DATA/nbody``).
    """

    name = "nbody"
    SIMULATED_SIZES = {"train": 3000, "valid": 2000, "test": 2000}

    def __init__(self, system: str = "charged", n_bodies: int | None = None,
                 num_train: int | None = None, num_val: int | None = None,
                 num_test: int | None = None, cond_frames: int = 10, pred_frames: int = 20,
                 simulate: bool = False, length: int = 5000, sample_freq: int = 100,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if system not in SYSTEMS:
            raise ValueError(f"system: unknown {system!r}; choose one of {SYSTEMS}")
        given = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
        check_at_least(1, **{k: v for k, v in given.items() if v is not None},
                       cond_frames=cond_frames, pred_frames=pred_frames, sample_freq=sample_freq)
        check_at_least(2, n_bodies=n_bodies or DEFAULT_BODIES[system])
        frames = frames_of(system, length, sample_freq)
        if simulate and cond_frames + pred_frames > frames:
            rule = "length // sample_freq" + ("" if system == "gravity" else " - 1")
            raise ValueError(f"cond_frames + pred_frames = {cond_frames + pred_frames} exceeds the "
                             f"{frames} frames that length={length}, sample_freq={sample_freq} "
                             f"simulate ({rule})")
        self.system, self.n_bodies = system, n_bodies or DEFAULT_BODIES[system]
        self.simulate = bool(simulate)
        self.sizes = dict(zip(SPLITS, given.values(), strict=True))
        if self.simulate:
            self.sizes = {s: v if v is not None else self.SIMULATED_SIZES[s]
                          for s, v in self.sizes.items()}
        self.cond_frames, self.pred_frames = cond_frames, pred_frames
        self.length, self.sample_freq = length, sample_freq

    @property
    def file_suffix(self) -> str:
        """The generator's suffix of the files read, e.g. ``charged5_initvel1``."""
        return nbody_suffix(self.system, self.n_bodies)

    @property
    def suffix(self) -> str:
        """Suffix of the files of this module: the generator's, plus the simulation settings."""
        base = self.file_suffix
        if self.simulate and (self.length, self.sample_freq) != (5000, 100):
            base += f"_len{self.length}_every{self.sample_freq}"
        return base

    def _split_dir(self, split: str) -> Path:
        """The directory of one split: the generator's files, or the simulated cache entry."""
        own = self.cache_dir / f"loc_{split}_{self.file_suffix}.npy"
        if not self.simulate:
            if not own.is_file():
                raise FileNotFoundError(
                    f"N-body file {own} is missing: place the files the GeoTDM generator writes "
                    f"(datasets/datagen/gen_data.sh: loc_/vel_/edges_/charges_{{train,valid,test}}"
                    f"_{self.file_suffix}.npy) in {self.cache_dir} (--data.init_args.root), or "
                    "pass simulate=true (--data.init_args.simulate=true) to simulate them")
            return self.cache_dir
        if own.is_file():
            raise ValueError(f"simulate=true, but {self.cache_dir} holds the generator's file "
                             f"{own.name}: pass simulate=false to train on those files, or another "
                             "root to simulate into")
        i = SPLITS.index(split)
        size, seed = self.sizes[split], self.seed + i

        def build(tmp: Path) -> None:
            sim = simulate(self.system, size, self.n_bodies, self.length, self.sample_freq,
                           seed=seed)
            write_nbody_split(tmp, split, self.suffix, sim)

        return self.cache_entry(
            f"{split}{size}_seed{self.seed}_{self.suffix}", build,
            description=f"N-body {self.system} {split}: {size} trajectories of {self.n_bodies} "
                        f"bodies, length {self.length}, every {self.sample_freq}, seed {seed}")

    def prepare_data(self) -> None:
        for split in SPLITS:
            self._split_dir(split)

    def dataset(self, split: str) -> TrajectoryDataset:
        """The windows of one split (``train``, ``valid`` or ``test``)."""
        directory = self._split_dir(split)
        suffix = self.suffix
        d = load_nbody_split(directory, split, suffix, self.system)
        loc_path = directory / f"loc_{split}_{suffix}.npy"
        n, frames = d["loc"].shape[:2]
        if d["loc"].shape[2] != self.n_bodies:
            raise ValueError(f"{loc_path}: {d['loc'].shape[2]} bodies, but n_bodies = "
                             f"{self.n_bodies}")
        if self.cond_frames + self.pred_frames > frames:
            raise ValueError(f"{loc_path}: {frames} frames, but cond_frames + pred_frames = "
                             f"{self.cond_frames + self.pred_frames}")
        keep = self.sizes[split]
        arg = {"train": "num_train", "valid": "num_val", "test": "num_test"}[split]
        if keep is not None and keep > n:
            raise ValueError(f"{loc_path}: {n} trajectories, fewer than {arg}={keep}; lower "
                             f"{arg} or leave it unset to use all {n}")
        keep = n if keep is None else keep
        if keep < n:
            _log.info("N-body %s split: the first %d of the %d trajectories of %s (%s, as the "
                      "reference's force_length)", split, keep, n, loc_path, arg)
        self.kept = {**getattr(self, "kept", {}), split: (keep, n)}
        return TrajectoryDataset(d["loc"][:keep], d["charges"][:keep], self.cond_frames,
                                 self.pred_frames, edges=d["edges"][:keep])

    def setup(self, stage: str | None = None) -> None:
        self.train_set, self.val_set, self.test_set = (self.dataset(s) for s in SPLITS)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set,  # resumable order
                                 drop_last=len(self.train_set) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)

    predict_dataloader = test_dataloader


# --- MD17 ----------------------------------------------------------------------------------------
#: the sGDML file of each MD17 molecule (http://www.sgdml.org/#datasets), as the reference names them
MD17_FILES = {
    "aspirin": "md17_aspirin.npz", "benzene": "md17_benzene2017.npz",
    "ethanol": "md17_ethanol.npz", "malonaldehyde": "md17_malonaldehyde.npz",
    "naphthalene": "md17_naphthalene.npz", "salicylic": "md17_salicylic.npz",
    "toluene": "md17_toluene.npz", "uracil": "md17_uracil.npz",
}
MD17_URL = "http://www.sgdml.org/#datasets (e.g. http://quantum-machine.org/gdml/data/npz/{name})"
RMD17_URL = ("https://figshare.com/articles/dataset/Revised_MD17_dataset_rMD17_/12672038 (the "
             "npz_data/ folder of rmd17.tar.bz2)")
#: the two key conventions an MD17 npz may use: sGDML (MD17) and the revised rMD17
MD17_KEYS = {"sgdml": ("R", "z"), "rmd17": ("coords", "nuclear_charges")}


def load_md17_npz(path: str | Path, with_keys: bool = False) -> tuple:
    """Read an MD17 ``.npz``: positions ``(frames, atoms, 3)`` and atomic numbers ``(atoms,)``.

    Both key conventions are read by name: sGDML's MD17 (``R``, ``z``; also ``E``, ``F``) and the
    revised rMD17 (``coords``, ``nuclear_charges``; also ``energies``, ``forces``). With
    ``with_keys`` the two key names read are returned too.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated file, neither key set, a bad shape or dtype, non-finite positions
            or non-integer atomic numbers (the file and the key are named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MD17 file {path} is missing")
    try:
        f = np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise ValueError(f"{path}: truncated or not an npz file ({err})") from err
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single array, not an npz file with keys 'R' and 'z' (sGDML) "
                         "or 'coords' and 'nuclear_charges' (rMD17)")
    with f:
        files = sorted(f.files)
        kind = next((k for k, keys in MD17_KEYS.items() if all(x in files for x in keys)), None)
        if kind is None:
            missing = [k for k in ("R", "z") if k not in files]
            raise ValueError(f"{path}: key {missing[0]!r} missing (keys found: {files}); an "
                             "sGDML MD17 npz has R (frames, atoms, 3) and z (atoms,), an rMD17 "
                             "npz coords and nuclear_charges")
        rk, zk = MD17_KEYS[kind]
        try:
            r, z = f[rk], f[zk]
        except _READ_ERRORS as err:
            raise ValueError(f"{path}: truncated or not an npz file ({err})") from err
    check_numeric(r, f"{path}: key {rk!r}")
    check_numeric(z, f"{path}: key {zk!r}")
    if r.ndim != 3 or r.shape[2] != 3:
        raise ValueError(f"{path}: key {rk!r} must be (frames, atoms, 3), got shape {r.shape}")
    if z.shape != (r.shape[1],):
        raise ValueError(f"{path}: key {zk!r} must hold one atomic number per atom of {rk!r}, "
                         f"shape ({r.shape[1]},), got shape {z.shape}")
    check_finite(r, f"{path}: key {rk!r}", ("frame", "atom", "coordinate"))
    if not np.isfinite(z).all() or (z != np.round(z)).any() or (z < 1).any():
        raise ValueError(f"{path}: key {zk!r} must hold atomic numbers (integers >= 1), got "
                         f"{np.unique(z)[:8].tolist()}")
    out = np.asarray(r, dtype=np.float64), z.astype(np.int64)
    return (*out, (rk, zk)) if with_keys else out


#: atomic numbers one-hot encoded as MD17 node features (H, C, N, O)
MD17_ELEMENTS = (1, 6, 7, 8)


def md17_node_features(z: np.ndarray, where: str = "z") -> np.ndarray:
    """One-hot H, C, N, O features ``(atoms, 4)``; any other element is refused (named)."""
    other = sorted(set(z.tolist()) - set(MD17_ELEMENTS))
    if other:
        raise ValueError(f"{where}: atomic numbers {other} are not among H, C, N, O "
                         f"{MD17_ELEMENTS}, the elements the node features encode")
    return (z[:, None] == np.array(MD17_ELEMENTS)[None]).astype(np.float32)


def md17_min_frames(every: int, window: int,
                    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> int:
    """The fewest raw frames for which every split of :func:`md17_windows` has one window."""
    n = window
    while True:
        bounds = np.cumsum([0] + [int(round(f * n)) for f in fractions])
        if all(min(hi, n) - lo >= window for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)):
            return (n - 1) * every + 1
        n += 1


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


class StandInWarning(UserWarning):
    """Data are an offline stand-in for a real dataset (kept for code that filters it)."""


MD17_SOURCES = ("md17", "rmd17", "standin")


class MD17(DomainDataModule):
    """MD17 forecasting from the real files, or from the offline stand-in when chosen.

    ``source`` picks the data, and nothing else is ever substituted for it:

    * ``md17`` (default): sGDML's file in :attr:`cache_dir` under the name the reference reads
      (:data:`MD17_FILES`: ``md17_aspirin.npz``, ``md17_benzene2017.npz``, ...; keys ``R``,
      ``z``);
    * ``rmd17``: the revised rMD17 file ``rmd17_<molecule>.npz`` (keys ``coords``,
      ``nuclear_charges``, ``energies``, ``forces``);
    * ``standin``: MMFF94 Langevin MD at 500 K with RDKit (``standin_steps`` steps of 0.5 fs,
      see :func:`domaindiff_trajectories.md.simulate_md17_standin`), written with the sGDML keys
      into the verified cache entry ``<cache_dir>/standin_<molecule>_steps<N>_seed<seed>/``.

    A requested real file that is missing is an error naming it and where to download it. A file
    with too few frames for one window in each split, non-finite positions or elements other
    than H, C, N, O is refused with the file and the key named.

    Args:
        molecule: molecule name (one of :data:`MD17_FILES`; other names read
            ``md17_<molecule>.npz``).
        source: ``md17``, ``rmd17`` or ``standin``.
        every: frame subsampling.
        cond_frames: observed frames (10).
        pred_frames: predicted frames (20).
        standin_steps: MD steps of the stand-in (``source=standin`` only).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: seed of the stand-in simulation.
        root: data directory.
    """

    name = "md17"

    def __init__(self, molecule: str = "aspirin", source: str = "md17", every: int = 10,
                 cond_frames: int = 10, pred_frames: int = 20, standin_steps: int = 60000,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if source not in MD17_SOURCES:
            raise ValueError(f"source: unknown {source!r}; choose one of {MD17_SOURCES}")
        check_at_least(1, every=every, cond_frames=cond_frames, pred_frames=pred_frames)
        if source == "standin":
            check_at_least(1, standin_steps=standin_steps)
        self.molecule, self.source, self.every = molecule, source, every
        self.standin_steps = standin_steps
        self.cond_frames, self.pred_frames = cond_frames, pred_frames

    @property
    def real_path(self) -> Path:
        """Where the real file of ``source`` goes (``standin``: where sGDML's file would)."""
        if self.source == "rmd17":
            return self.cache_dir / f"rmd17_{self.molecule}.npz"
        return self.cache_dir / MD17_FILES.get(self.molecule, f"md17_{self.molecule}.npz")

    @property
    def path(self) -> Path:
        """The npz this module reads."""
        if self.source != "standin":
            return self.real_path
        return (self.cache_dir / f"standin_{self.molecule}_steps{self.standin_steps}_seed"
                f"{self.seed}" / f"md17_{self.molecule}.npz")

    def prepare_data(self) -> None:
        if self.source != "standin":
            return
        from domaindiff.data import atomic_savez
        from domaindiff_trajectories.md import MD17_SMILES, simulate_md17_standin

        if self.molecule not in MD17_SMILES:
            raise ValueError(f"molecule: no offline stand-in for {self.molecule!r}; stand-ins "
                             f"exist for {sorted(MD17_SMILES)}")

        def build(tmp: Path) -> None:
            sim = simulate_md17_standin(self.molecule, self.standin_steps, seed=self.seed)
            atomic_savez(tmp / self.path.name, **sim)

        self.cache_entry(self.path.parent.name, build,
                         description=f"MD17 stand-in {self.molecule}: MMFF94 Langevin MD, "
                                     f"{self.standin_steps} steps, seed {self.seed}")

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        path = self.path
        if not path.is_file():
            where = (RMD17_URL if self.source == "rmd17"
                     else MD17_URL.format(name=path.name))
            raise FileNotFoundError(
                f"MD17 file {path} is missing: download it from {where} into {path.parent} "
                "(--data.init_args.root), or pass source=standin for the offline MMFF94 "
                "stand-in (not MD17)")
        if self.source == "standin":
            _log.info("MD17 %s: the offline stand-in %s (MMFF94 Langevin MD, %d steps), chosen "
                      "with source=standin", self.molecule, path, self.standin_steps)
        r, z, (_, zk) = load_md17_npz(path, with_keys=True)
        window = self.cond_frames + self.pred_frames
        wins = md17_windows(r, self.every, window)
        counts = [len(wins[s]) for s in SPLITS]
        if min(counts) == 0:
            raise ValueError(
                f"{path}: {len(r)} frames give {'/'.join(map(str, counts))} train/valid/test "
                f"windows: every={self.every} keeps {len(r[::self.every])} frames, split 60/20/20, "
                f"and a window needs cond_frames + pred_frames = {window} of them; need at "
                f"least {md17_min_frames(self.every, window)} frames (or a smaller every)")
        h = md17_node_features(z, f"{path}: key {zk!r}")
        self.sets = {s: TrajectoryDataset(w, np.broadcast_to(h, (len(w),) + h.shape),
                                          self.cond_frames, self.pred_frames)
                     for s, w in wins.items()}
        self.train_set, self.val_set, self.test_set = (self.sets[s] for s in SPLITS)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set)  # resumable order

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)


# --- ETH-UCY -------------------------------------------------------------------------------------
ETH_SCENES = ("eth", "hotel", "univ", "zara1", "zara2")


def load_eth_ucy(directory: str | Path, scene: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read EqMotion-preprocessed ETH-UCY ``{scene}_data_{split}.npy`` / ``{scene}_num_{split}.npy``.

    Returns:
        positions ``(B, 20, N_max, 2)`` and the node mask ``(B, N_max)`` from the agent counts;
        padded agents' positions are set to zero (whatever the file holds there).

    Raises:
        FileNotFoundError: a file is missing (named).
        ValueError: a truncated file, a bad shape, non-integer or out-of-range agent counts, or
            non-finite positions of a real agent (the file is named).
    """
    if scene not in ETH_SCENES:
        raise ValueError(f"scene: unknown {scene!r}; choose one of {ETH_SCENES}")
    directory = Path(directory)
    paths = [directory / f"{scene}_{k}_{split}.npy" for k in ("data", "num")]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"ETH-UCY file {p} is missing")
    data, num = load_npy(paths[0]), load_npy(paths[1]).reshape(-1)
    check_numeric(data, str(paths[0]))
    check_numeric(num, str(paths[1]))
    if data.ndim != 4 or data.shape[2] != 20 or data.shape[3] != 2:
        raise ValueError(f"{paths[0]}: expected (B, N_max, 20, 2), got {data.shape}")
    if (not np.isfinite(num).all() or (num != np.round(num)).any() or len(num) != len(data)
            or (num > data.shape[1]).any() or (num < 1).any()):
        raise ValueError(f"{paths[1]}: agent counts must be integers 1..{data.shape[1]} for each "
                         f"of {len(data)} scenes, got {len(num)} values in "
                         f"[{num.min() if len(num) else 'none'}, {num.max() if len(num) else ''}]")
    num = num.astype(np.int64)
    mask = (np.arange(data.shape[1])[None] < num[:, None]).astype(np.float32)
    data = np.where(mask[:, :, None, None] > 0, data, 0.0)
    check_finite(data, str(paths[0]), ("scene", "agent", "frame"))
    return data.transpose(0, 2, 1, 3), mask


def load_eth_ucy_txt(path: str | Path) -> np.ndarray:
    """Read one raw ETH-UCY annotation file (Social-GAN layout: ``frame agent x y`` per line).

    Returns:
        ``(rows, 4)`` float64: frame, agent id, x, y (metres).

    Raises:
        ValueError: a line with other than 4 columns, a non-numeric, non-finite or (frame / agent)
            non-integer field, an agent twice in one frame, or no rows; the file and line are named.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text file ({err})") from err
    rows, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {lineno}"
        if len(fields) != 4:
            raise ValueError(f"{where}: expected 4 columns (frame, agent, x, y), got "
                             f"{len(fields)}: {line.strip()[:60]!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_float(v))
            raise ValueError(f"{where}: non-numeric field {bad!r} (columns: frame, agent, x, "
                             "y)") from None
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: non-finite value in {line.strip()[:60]!r}")
        if values[0] != round(values[0]) or values[1] != round(values[1]):
            raise ValueError(f"{where}: frame and agent must be integers, got {fields[0]!r}, "
                             f"{fields[1]!r}")
        key = (values[0], values[1])
        if key in seen:
            raise ValueError(f"{where}: agent {int(values[1])} appears twice in frame "
                             f"{int(values[0])}")
        seen.add(key)
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no data rows (expected lines 'frame agent x y')")
    return np.array(rows, dtype=np.float64)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def eth_ucy_windows(rows: np.ndarray, seq_len: int = 20) -> list[np.ndarray]:
    """Cut ``seq_len``-frame windows (stride one frame) of the agents present in all their frames.

    Args:
        rows: ``(rows, 4)`` from :func:`load_eth_ucy_txt`.
        seq_len: frames per window (8 observed + 12 predicted).

    Returns:
        one ``(agents, seq_len, 2)`` array per window that has at least one such agent.
    """
    frames = np.unique(rows[:, 0])
    where = {f: {int(a): (x, y) for _, a, x, y in rows[rows[:, 0] == f]} for f in frames}
    out = []
    for i in range(len(frames) - seq_len + 1):
        window = [where[f] for f in frames[i:i + seq_len]]
        agents = sorted(set(window[0]).intersection(*window[1:]))
        if agents:
            out.append(np.array([[w[a] for w in window] for a in agents]))
    return out


def prepare_eth_ucy_split(files: list[Path], seq_len: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """EqMotion-style arrays ``data (B, N_max, seq_len, 2)`` and ``num (B,)`` from raw files.

    Raises:
        ValueError: no file yields a window (the files are named).
    """
    wins = [w for f in files for w in eth_ucy_windows(load_eth_ucy_txt(f), seq_len)]
    if not wins:
        raise ValueError(f"{', '.join(map(str, files))}: no {seq_len}-frame window in which an "
                         "agent is present in every frame")
    n_max = max(len(w) for w in wins)
    data = np.zeros((len(wins), n_max, seq_len, 2))
    for i, w in enumerate(wins):
        data[i, :len(w)] = w
    return data, np.array([len(w) for w in wins], dtype=np.int64)


class ETHUCY(DomainDataModule):
    """ETH-UCY pedestrians (2-D): the raw files users download, or EqMotion's npy files.

    In :attr:`cache_dir` (``root``, default ``$DOMAINDIFF_DATA/eth_ucy``) either

    * the raw Social-GAN layout as downloaded, ``datasets/<scene>/{train,val,test}/*.txt`` (lines
      ``frame ped x y``, metres): the train and test files are cut into 20-frame windows of the
      agents present throughout, once, into the verified cache entry
      ``prepared/<scene>-<hash of the files>/``; or
    * EqMotion's preprocessed ``{scene}_{data,num}_{train,test}.npy`` (what GeoTDM reads).

    Validation uses the test split, as the reference code. ``traj_scale`` is the reference's
    test-time scale: test positions are divided by it before the model sees them and the
    evaluation multiplies ADE/FDE back (GeoTDM / EqMotion use 1.4 for ``eth``, 1 elsewhere);
    training positions are never scaled, as the reference's training ``traj_scale: 1``.

    Args:
        scene: ``eth``, ``hotel``, ``univ``, ``zara1`` or ``zara2``.
        cond_frames: observed frames (8).
        pred_frames: predicted frames (12).
        traj_scale: test-split position scale (reference: 1.4 for eth).
        batch_size: batch size.
        num_workers: DataLoader workers.
        seed: unused (common signature).
        root: data directory.
    """

    name = "eth_ucy"

    def __init__(self, scene: str = "eth", cond_frames: int = 8, pred_frames: int = 12,
                 traj_scale: float = 1.0, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, root: str | None = None) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, seed=seed)
        if scene not in ETH_SCENES:
            raise ValueError(f"scene: unknown {scene!r}; choose one of {ETH_SCENES}")
        check_at_least(1, cond_frames=cond_frames, pred_frames=pred_frames)
        if cond_frames + pred_frames > 20:
            raise ValueError(f"cond_frames + pred_frames = {cond_frames + pred_frames} exceeds the "
                             "20 frames of an ETH-UCY window")
        if not (isinstance(traj_scale, (int, float)) and np.isfinite(traj_scale)
                and traj_scale > 0):
            raise ValueError(f"traj_scale must be a positive number, got {traj_scale!r}")
        self.scene, self.cond_frames, self.pred_frames = scene, cond_frames, pred_frames
        self.traj_scale = float(traj_scale)

    @property
    def raw_dir(self) -> Path:
        """The raw layout's folder of this scene: ``<cache_dir>/datasets/<scene>``."""
        return self.cache_dir / "datasets" / self.scene

    def _raw_files(self, split: str) -> list[Path]:
        return sorted((self.raw_dir / split).glob("*.txt"))

    def data_dir(self) -> Path:
        """Where the npy files are: :attr:`cache_dir`, else the entry prepared from raw text."""
        if (self.cache_dir / f"{self.scene}_data_train.npy").is_file():
            return self.cache_dir
        files = {split: self._raw_files(split) for split in ("train", "test")}
        if not all(files.values()):
            raise FileNotFoundError(
                f"ETH-UCY file {self.cache_dir / f'{self.scene}_data_train.npy'} is missing, and "
                f"no raw text files in {self.raw_dir}/{{train,test}}/*.txt (the Social-GAN "
                "datasets/ folder as downloaded, lines 'frame ped x y')")
        digest = hashlib.sha256()
        for split in ("train", "test"):
            for f in files[split]:
                digest.update(f"{split}/{f.name}\0".encode() + f.read_bytes() + b"\0")

        def build(tmp: Path) -> None:
            for split in ("train", "test"):
                data, num = prepare_eth_ucy_split(files[split])
                for kind, array in (("data", data), ("num", num)):
                    with atomic_write(tmp / f"{self.scene}_{kind}_{split}.npy") as fh:
                        np.save(fh, array)

        return self.cache_entry(Path("prepared") / f"{self.scene}-{digest.hexdigest()[:12]}",
                                build, description=f"ETH-UCY {self.scene} from raw text files")

    def prepare_data(self) -> None:
        self.data_dir()

    def setup(self, stage: str | None = None) -> None:
        sets, directory = {}, self.data_dir()
        for split in ("train", "test"):
            traj, mask = load_eth_ucy(directory, self.scene, split)
            if split == "test":
                traj = traj / self.traj_scale
            h = np.ones(mask.shape + (1,), dtype=np.float32)
            sets[split] = TrajectoryDataset(traj, h, self.cond_frames, self.pred_frames, mask)
        self.train_set, self.val_set, self.test_set = sets["train"], sets["test"], sets["test"]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.train_set)  # resumable order

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)

    test_dataloader = val_dataloader
