"""N-body simulation and the real-format loaders (NRI npy, sgdml npz, EqMotion npy)."""

from __future__ import annotations

import numpy as np
import pytest

from domaindiff_trajectories.data import (
    NBody,
    load_eth_ucy,
    load_md17_npz,
    load_nbody_split,
    md17_windows,
    write_nbody_split,
)
from domaindiff_trajectories.nbody import simulate


def test_simulation_deterministic_and_conserves_momentum():
    a = simulate("charged", 6, length=600, sample_freq=100, seed=3)
    b = simulate("charged", 6, length=600, sample_freq=100, seed=3)
    c = simulate("charged", 6, length=600, sample_freq=100, seed=4)
    assert a["loc"].shape == (6, 5, 3, 5)  # NRI layout (n, frames, 3, N): 600/100 - 1 frames
    np.testing.assert_array_equal(a["loc"], b["loc"])
    assert not np.allclose(a["loc"], c["loc"])
    # Coulomb forces are pairwise antisymmetric: total momentum (unit masses) is conserved
    mom = a["vel"].sum(-1)  # (n, frames, 3)
    np.testing.assert_allclose(mom, np.broadcast_to(mom[:, :1], mom.shape), atol=1e-6)
    # charges are +-1 and edges are their products
    q = a["charges"][..., 0]
    np.testing.assert_array_equal(a["edges"], (q[:, :, None] * q[:, None]) *
                                  (1 - np.eye(5)))
    s = simulate("springs", 2, length=300, sample_freq=100, seed=0)
    assert s["loc"].shape == (2, 2, 3, 5) and np.isfinite(s["loc"]).all()
    # gravity as the GeoTDM generator writes it: (n, frames, N, 3) from frame 0, forces in edges
    g = simulate("gravity", 2, length=300, sample_freq=100, seed=0)
    assert g["loc"].shape == g["edges"].shape == (2, 3, 10, 3) and g["charges"].shape == (2, 10, 1)
    np.testing.assert_allclose(g["vel"].sum(2), 0.0, atol=1e-9)  # centre-of-mass frame


def test_charged_velocity_update_matches_hand_computation():
    # one step by hand: loc += dt vel; vel += dt F(loc)
    s = simulate("charged", 1, n_bodies=2, length=2, sample_freq=1, dt=0.01, seed=0)
    rng = np.random.default_rng(0)
    q = rng.choice([-1.0, 1.0], size=(1, 2, 1))
    loc = rng.standard_normal((1, 2, 3))
    vel = rng.standard_normal((1, 2, 3))
    vel = vel * 0.5 / np.linalg.norm(vel, axis=-1, keepdims=True)
    loc1 = loc + 0.01 * vel
    r = loc1[0, 0] - loc1[0, 1]
    f0 = q[0, 0, 0] * q[0, 1, 0] * r / np.linalg.norm(r) ** 3
    np.testing.assert_allclose(s["loc"][0, 0].T, loc1[0], atol=1e-12)
    np.testing.assert_allclose(s["vel"][0, 0, :, 0], vel[0, 0] + 0.01 * f0, atol=1e-12)
    np.testing.assert_allclose(s["vel"][0, 0, :, 1], vel[0, 1] - 0.01 * f0, atol=1e-12)


def test_nbody_files_round_trip_and_errors(tmp_path):
    sim = simulate("springs", 3, length=400, sample_freq=100, seed=1)
    write_nbody_split(tmp_path, "train", "springs5_initvel1", sim)
    assert (tmp_path / "loc_train_springs5_initvel1.npy").is_file()
    d = load_nbody_split(tmp_path, "train", "springs5_initvel1")
    np.testing.assert_array_equal(d["loc"], sim["loc"].transpose(0, 1, 3, 2))
    assert d["charges"].shape == (3, 5, 1)
    with pytest.raises(FileNotFoundError, match="loc_valid_springs5_initvel1.npy"):
        load_nbody_split(tmp_path, "valid", "springs5_initvel1")
    np.save(tmp_path / "vel_train_springs5_initvel1.npy", np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match="vel_train_springs5_initvel1.npy"):
        load_nbody_split(tmp_path, "train", "springs5_initvel1")


def test_nbody_datamodule_generates_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    dm = NBody(num_train=4, num_val=2, num_test=2, length=1600, sample_freq=100,
               cond_frames=5, pred_frames=10, batch_size=2, simulate=True)
    dm.setup()
    files = sorted(p.name for p in (tmp_path / "nbody").rglob("*.npy"))
    assert "loc_train_charged5_initvel1_len1600_every100.npy" in files and len(files) == 12
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (2, 5, 10, 3) and b["cond"].shape == (2, 5, 5, 3)
    assert set(b["h"].unique().tolist()) <= {-1.0, 1.0}
    # condition and target are consecutive frames of the same stored trajectory
    raw = load_nbody_split(next((tmp_path / "nbody").glob("test*")), "test", dm.suffix)["loc"]
    item = dm.test_set[1]
    np.testing.assert_allclose(item["cond"].numpy(), raw[1, :5].transpose(1, 0, 2), rtol=1e-6)
    np.testing.assert_allclose(item["x"].numpy(), raw[1, 5:15].transpose(1, 0, 2), rtol=1e-6)
    with pytest.raises(ValueError, match="cond_frames"):
        NBody(num_train=2, num_val=2, num_test=2, length=600, cond_frames=10,
              simulate=True).setup()


def test_md17_npz_loader_and_windows(tmp_path):
    r = np.random.default_rng(0).standard_normal((400, 4, 3))
    z = np.array([6, 1, 1, 8])
    np.savez(tmp_path / "md17_toy.npz", R=r, z=z, E=np.zeros(400), F=np.zeros_like(r))
    r2, z2 = load_md17_npz(tmp_path / "md17_toy.npz")
    np.testing.assert_array_equal(r2, r)
    np.testing.assert_array_equal(z2, z)
    w = md17_windows(r2, every=2, window=10)  # 200 frames -> 120/40/40, chronological
    assert w["train"].shape == (111, 10, 4, 3) and w["valid"].shape == (31, 10, 4, 3)
    np.testing.assert_array_equal(w["valid"][0], r[::2][120:130])
    np.testing.assert_array_equal(w["test"][-1], r[::2][190:200])
    np.savez(tmp_path / "bad.npz", R=r)
    with pytest.raises(ValueError, match=r"bad.npz: key 'z' missing"):
        load_md17_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", R=r[..., :2], z=z)
    with pytest.raises(ValueError, match=r"bad2.npz: key 'R'"):
        load_md17_npz(tmp_path / "bad2.npz")


def test_md17_reads_sgdml_names_and_rmd17_keys(tmp_path):
    from domaindiff_trajectories.data import MD17

    rng = np.random.default_rng(0)
    r = np.cumsum(rng.normal(0, 0.01, (400, 12, 3)), 0)
    z = np.array([6] * 6 + [1] * 6)
    # sGDML's benzene file is md17_benzene2017.npz (keys R, z, E, F, as downloaded)
    np.savez(tmp_path / "md17_benzene2017.npz", R=r, z=z, E=np.zeros((400, 1)),
             F=np.zeros_like(r), name="benzene", theory="DFT")
    dm = MD17("benzene", root=str(tmp_path), every=2, cond_frames=3, pred_frames=4)
    dm.setup()
    np.testing.assert_allclose(dm.train_set.cond[0].numpy(), r[::2][:3].transpose(1, 0, 2),
                               rtol=1e-6)
    # rMD17: rmd17_<molecule>.npz with coords / nuclear_charges / energies / forces
    np.savez(tmp_path / "rmd17_benzene.npz", coords=r + 1.0, nuclear_charges=z,
             energies=np.zeros(400), forces=np.zeros_like(r), old_indices=np.arange(400))
    rm = MD17("benzene", source="rmd17", root=str(tmp_path), every=2, cond_frames=3,
              pred_frames=4)
    rm.setup()
    np.testing.assert_allclose(rm.train_set.cond.numpy(), dm.train_set.cond.numpy() + 1.0,
                               rtol=1e-5)
    # a requested real file that is missing names itself and where to get it; no stand-in
    with pytest.raises(FileNotFoundError, match=r"md17_aspirin\.npz is missing: download it "
                                                r"from http://www\.sgdml\.org.*source=standin"):
        MD17("aspirin", root=str(tmp_path)).setup()
    with pytest.raises(FileNotFoundError, match=r"rmd17_toluene\.npz is missing: download it "
                                                r"from https://figshare\.com"):
        MD17("toluene", source="rmd17", root=str(tmp_path)).setup()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing simulated


def test_eth_ucy_loader(tmp_path):
    data = np.random.default_rng(1).standard_normal((3, 4, 20, 2))
    np.save(tmp_path / "hotel_data_test.npy", data)
    np.save(tmp_path / "hotel_num_test.npy", np.array([1, 4, 2]))
    traj, mask = load_eth_ucy(tmp_path, "hotel", "test")
    assert traj.shape == (3, 20, 4, 2)
    np.testing.assert_array_equal(mask.sum(1), [1, 4, 2])
    np.testing.assert_array_equal(traj[1], data[1].transpose(1, 0, 2))
    assert (traj[0, :, 1:] == 0).all()
    np.save(tmp_path / "hotel_num_test.npy", np.array([1, 5, 2]))
    with pytest.raises(ValueError, match="hotel_num_test.npy"):
        load_eth_ucy(tmp_path, "hotel", "test")
    with pytest.raises(FileNotFoundError, match="eth_data_train.npy"):
        load_eth_ucy(tmp_path, "eth", "train")


def test_eth_ucy_datamodule_masks_padded_agents(tmp_path, monkeypatch):
    from domaindiff_trajectories.data import ETHUCY

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    d = tmp_path / "eth_ucy"
    d.mkdir()
    data = np.random.default_rng(2).standard_normal((5, 3, 20, 2))
    for split in ("train", "test"):
        np.save(d / f"zara1_data_{split}.npy", data)
        np.save(d / f"zara1_num_{split}.npy", np.array([3, 1, 2, 3, 3]))
    dm = ETHUCY("zara1", batch_size=5)
    dm.setup()
    b = next(iter(dm.val_dataloader()))
    assert b["x"].shape == (5, 3, 12, 2) and b["cond"].shape == (5, 3, 8, 2)
    np.testing.assert_array_equal(b["mask"][1].numpy(), [1, 0, 0])
    assert (b["x"][1, 1:] == 0).all()
    np.testing.assert_allclose(b["x"][0].numpy(), data[0, :, 8:], rtol=1e-6)


def test_md17_standin_written_in_sgdml_format(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    from domaindiff_trajectories.data import MD17

    dm = MD17("ethanol", source="standin", every=10, cond_frames=3, pred_frames=4,
              standin_steps=1500, batch_size=4)
    dm.setup()
    path = tmp_path / "md17" / "standin_ethanol_steps1500_seed0" / "md17_ethanol.npz"
    assert dm.path == path and (path.parent / "MANIFEST.json").is_file()  # a verified entry
    with np.load(path) as f:
        assert sorted(f.files) == ["E", "F", "R", "z"]
        r, z, e = f["R"], f["z"], f["E"]
    assert r.shape == (1500, 9, 3) and sorted(z.tolist()) == [1] * 6 + [6, 6, 8]
    assert np.isfinite(e).all() and e.std() < 20  # thermalised, not exploding
    # bonds stay chemical: C-C about 1.5 A throughout 750 fs at 500 K
    cc = np.linalg.norm(r[:, 0] - r[:, 1], axis=-1)
    assert 1.35 < cc.min() and cc.max() < 1.75
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (4, 9, 4, 3) and b["h"].shape == (4, 9, 4)
    # chronological split: the first validation window starts after the training frames
    np.testing.assert_allclose(dm.val_set.cond[0].numpy(), r[::10][90:93].transpose(1, 0, 2),
                               rtol=1e-6)


# --- cache entries: a killed or damaged preparation is never trusted -----------------------------
def _tiny_nbody(**kw):
    return NBody(num_train=3, num_val=2, num_test=2, length=400, sample_freq=100, cond_frames=1,
                 pred_frames=2, batch_size=2, **{"simulate": True, **kw})


def test_nbody_damaged_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    dm = _tiny_nbody()
    dm.setup()
    entry = tmp_path / "nbody" / f"train3_seed0_{dm.suffix}"
    assert (entry / "MANIFEST.json").is_file()
    good = dm.train_set.x.clone()
    loc = entry / f"loc_train_{dm.suffix}.npy"
    size = loc.stat().st_size
    with open(loc, "r+b") as fh:  # what a kill during the write of a non-atomic copy leaves
        fh.truncate(100)
    with pytest.warns(UserWarning, match=rf"loc_train_{dm.suffix}\.npy has size 100 != {size}.*"
                                         "rebuilding"):
        dm.setup()
    assert (dm.train_set.x == good).all()
    (entry / "MANIFEST.json").unlink()  # an entry from a killed run has no manifest
    (entry / f"vel_train_{dm.suffix}.npy").unlink()
    with pytest.warns(UserWarning, match="no MANIFEST.json"):
        dm.setup()
    assert (dm.train_set.x == good).all()


def test_nbody_leftover_of_a_killed_simulation_is_ignored_and_cleaned(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    dm = _tiny_nbody()
    root = tmp_path / "nbody"
    dead = root / f".train3_seed0_{dm.suffix}.building-999999999-0123abcd"  # no such pid
    dead.mkdir(parents=True)
    np.save(dead / f"loc_train_{dm.suffix}.npy", np.full((3, 3, 3, 5), np.nan))
    dm.setup()
    assert not dead.exists() and np.isfinite(dm.train_set.x.numpy()).all()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def _reference_charged_split(n: int, bodies: int, rng: np.random.Generator) -> dict:
    """One split exactly as the GeoTDM generator's ``np.save`` of its lists writes it."""
    q = rng.choice([-1.0, 1.0], size=(n, bodies, 1))
    return {"loc": rng.standard_normal((n, 49, 3, bodies)),  # (n, frames, 3, N)
            "vel": rng.standard_normal((n, 49, 3, bodies)),
            "edges": q * q.transpose(0, 2, 1), "charges": q}


def test_nbody_reads_the_reference_generators_files_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {"train": 7, "valid": 3, "test": 4}
    files = {s: _reference_charged_split(n, 5, rng) for s, n in sizes.items()}
    for split, d in files.items():
        for key, a in d.items():
            np.save(tmp_path / f"{key}_{split}_charged5_initvel1.npy", a)
    dm = NBody(root=str(tmp_path), num_train=5, cond_frames=10, pred_frames=20)
    dm.setup()
    # num_train cuts as the reference's force_length (the first 5); unset sizes keep all
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (5, 3, 4)
    assert dm.kept == {"train": (5, 7), "valid": (3, 3), "test": (4, 4)}
    loc = files["test"]["loc"]
    np.testing.assert_allclose(dm.test_set.cond[2, 3].numpy(), loc[2, :10, :, 3], rtol=1e-6)
    np.testing.assert_allclose(dm.test_set.x[2, 3, -1].numpy(), loc[2, 29, :, 3], rtol=1e-6)
    np.testing.assert_array_equal(dm.test_set.h[:, :, 0].numpy(), files["test"]["charges"][..., 0])
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing simulated
    with pytest.raises(ValueError, match=r"loc_train_charged5_initvel1\.npy: 7 trajectories, "
                                         r"fewer than num_train=9"):
        NBody(root=str(tmp_path), num_train=9).setup()
    with pytest.raises(ValueError, match=r"simulate=true, but .* holds the generator's file "
                                         r"loc_train_charged5_initvel1\.npy"):
        NBody(root=str(tmp_path), simulate=True).setup()


def test_nbody_springs_edges_reach_the_batch(tmp_path):
    """The reference's springs files hold zeros in ``charges`` and the spring constants in
    ``edges``: the batches carry them as ``edge`` (the network's edge attributes)."""
    rng = np.random.default_rng(2)
    for split in ("train", "valid", "test"):
        k = np.triu(rng.choice([0.0, 1.0], size=(3, 5, 5)), 1)
        np.save(tmp_path / f"loc_{split}_springs5_initvel1.npy", rng.standard_normal((3, 49, 3, 5)))
        np.save(tmp_path / f"vel_{split}_springs5_initvel1.npy", rng.standard_normal((3, 49, 3, 5)))
        np.save(tmp_path / f"edges_{split}_springs5_initvel1.npy", k + k.transpose(0, 2, 1))
        np.save(tmp_path / f"charges_{split}_springs5_initvel1.npy", np.zeros((3, 5, 1)))
    dm = NBody("springs", root=str(tmp_path), batch_size=3)
    dm.setup()
    b = next(iter(dm.test_dataloader()))
    edges = np.load(tmp_path / "edges_test_springs5_initvel1.npy")
    np.testing.assert_array_equal(b["edge"][..., 0].numpy(), edges)
    assert (b["h"] == 0).all()


def test_nbody_missing_files_are_an_error_not_a_simulation(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"loc_train_charged5_initvel1\.npy is missing: "
                                                r"place the files the GeoTDM generator writes.*"
                                                r"simulate=true"):
        NBody(root=str(tmp_path)).setup()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bodies", [10, 3])
def test_nbody_reads_reference_gravity_files_by_name(tmp_path, bodies):
    """Gravity ``loc`` is (n, 50, N, 3); with N = 3 the shape cannot tell the layouts apart, the
    system's name does: the bodies axis must not be swapped with the coordinates."""
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("valid", 2), ("test", 3)):
        loc = rng.standard_normal((n, 50, bodies, 3))  # GravitySim: pos_save (T, N, 3)
        np.save(tmp_path / f"loc_{split}_gravity{bodies}_initvel1.npy", loc)
        np.save(tmp_path / f"vel_{split}_gravity{bodies}_initvel1.npy", loc * 0.5)
        np.save(tmp_path / f"edges_{split}_gravity{bodies}_initvel1.npy", loc * 0.1)  # forces
        np.save(tmp_path / f"charges_{split}_gravity{bodies}_initvel1.npy", np.ones((n, bodies, 1)))
        if split == "test":
            test_loc = loc
    dm = NBody("gravity", n_bodies=bodies, root=str(tmp_path))
    dm.setup()
    assert dm.test_set.x.shape == (3, bodies, 20, 3)
    # body 1's coordinates at frame 12 are loc[0, 12, 1, :] (not loc[0, 12, :, 1])
    np.testing.assert_allclose(dm.test_set.x[0, 1, 2].numpy(), test_loc[0, 12, 1], rtol=1e-6)
    d = load_nbody_split(tmp_path, "test", f"gravity{bodies}_initvel1")
    assert d["edges"].shape == (3, bodies, bodies) and (d["charges"] == 1).all()
    # a charged-layout file under a gravity name is refused, naming the file and the layout
    np.save(tmp_path / f"loc_valid_gravity{bodies}_initvel1.npy", np.zeros((2, 49, 3, 5)))
    np.save(tmp_path / f"vel_valid_gravity{bodies}_initvel1.npy", np.zeros((2, 49, 3, 5)))
    with pytest.raises(ValueError, match=rf"loc_valid_gravity{bodies}_initvel1\.npy: expected "
                                         r"shape \(n, frames, N, 3\) \(trajectory, frame, body, "
                                         r"dim; the gravity layout"):
        load_nbody_split(tmp_path, "valid", f"gravity{bodies}_initvel1")


def test_nbody_simulated_gravity_loads_in_the_reference_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    dm = NBody("gravity", num_train=2, num_val=1, num_test=1, length=3000, cond_frames=10,
               pred_frames=20, simulate=True)
    dm.setup()
    assert dm.train_set.x.shape == (2, 10, 20, 3) and np.isfinite(dm.train_set.x.numpy()).all()


def test_md17_standin_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    from domaindiff_trajectories.data import MD17

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    dm = MD17("ethanol", source="standin", every=1, cond_frames=2, pred_frames=2,
              standin_steps=60, batch_size=4)
    dm.setup()
    good = dm.train_set.x.clone()
    with open(dm.path, "r+b") as fh:
        fh.truncate(500)
    with pytest.warns(UserWarning, match=r"md17_ethanol\.npz has size 500 !=.*rebuilding"):
        dm.setup()
    assert (dm.train_set.x == good).all()


def _write_raw_eth(root, scene: str, shift: float = 0.0) -> None:
    for split in ("train", "test"):
        d = root / "datasets" / scene / split
        d.mkdir(parents=True)
        lines = [f"{10 * f}\t{a}\t{0.1 * f + a + shift:.2f}\t{-0.2 * f:.2f}"
                 for f in range(24) for a in (1, 2) if not (a == 2 and f > 20)]
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_eth_ucy_from_raw_text_prepared_once_into_an_entry(tmp_path, monkeypatch):
    from domaindiff_trajectories.data import ETHUCY

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    _write_raw_eth(tmp_path / "eth_ucy", "hotel")
    dm = ETHUCY("hotel", batch_size=8)
    dm.setup()
    entry = dm.data_dir()
    assert entry.parent.name == "prepared" and (entry / "MANIFEST.json").is_file()
    # 24 frames -> 5 windows; agent 2 (frames 0..20) is present throughout the first 2 only
    np.testing.assert_array_equal(dm.train_set.mask.sum(1).numpy(), [2, 2, 1, 1, 1])
    np.testing.assert_allclose(dm.train_set.cond[0, 1, 0].numpy(), [2.0, 0.0])
    np.testing.assert_allclose(dm.train_set.x[4, 0, -1].numpy(), [3.3, -4.6], rtol=1e-6)
    assert (dm.train_set.x[2, 1] == 0).all()
    # changed raw files give a new entry, not the stale one
    import shutil

    shutil.rmtree(tmp_path / "eth_ucy" / "datasets")
    _write_raw_eth(tmp_path / "eth_ucy", "hotel", shift=1.0)
    assert ETHUCY("hotel").data_dir() != entry
    # the reference's traj_scale divides the test positions (evaluation multiplies errors back)
    plain, scaled = ETHUCY("hotel"), ETHUCY("hotel", traj_scale=1.4)
    plain.setup()
    scaled.setup()
    np.testing.assert_allclose(scaled.test_set.x.numpy() * 1.4, plain.test_set.x.numpy(),
                               rtol=1e-5)
    np.testing.assert_array_equal(scaled.train_set.x.numpy(), plain.train_set.x.numpy())


def test_diverged_simulation_is_refused_and_leaves_no_entry(tmp_path, monkeypatch):
    import domaindiff_trajectories.nbody as nb

    monkeypatch.setenv("DOMAINDIFF_DATA", str(tmp_path))
    monkeypatch.setattr(nb, "_forces", lambda system, loc, *a: np.full_like(loc, np.nan))
    with pytest.raises(ValueError, match=r"charged simulation \(seed 0, dt 0.001\) diverged"):
        _tiny_nbody().prepare_data()
    assert list((tmp_path / "nbody").iterdir()) == []
    with pytest.raises(ValueError, match="length must be >= 200, got 100"):
        simulate("charged", 2, length=100, sample_freq=100)
