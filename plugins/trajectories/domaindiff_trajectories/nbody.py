"""Vectorised N-body simulators (charged particles, springs, gravity), the NRI/EGNN way.

Charged particles and springs integrate ``loc += dt * vel; vel += dt * F(loc)`` (the NRI
leapfrog-style update) for ``length`` steps of ``dt`` and keep every ``sample_freq``-th frame after
the first, so ``length=5000, sample_freq=100`` gives 49 frames, stored ``(n, frames, 3, N)`` as in
the NRI/EGNN files. Gravity follows the GeoTDM generator's ``GravitySim``: kick-drift-kick
leapfrog, standard-normal positions and velocities (zero total momentum), softening 0.1, a frame
every ``sample_freq`` steps from the first, so 50 frames, stored ``(n, frames, N, 3)`` with the
forces in the ``edges`` file and the masses in the ``charges`` file, as that generator writes them.
All trajectories of a split are integrated together in numpy, deterministic per seed.
"""

from __future__ import annotations

import numpy as np

SYSTEMS = ("charged", "springs", "gravity")
DEFAULT_BODIES = {"charged": 5, "springs": 5, "gravity": 10}


def frames_of(system: str, length: int, sample_freq: int) -> int:
    """Frames a simulation keeps: ``length // sample_freq - 1`` (NRI), gravity ``length // sample_freq``."""
    return length // sample_freq - (0 if system == "gravity" else 1)


def _pairwise(loc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``diff[b, i, j] = loc_i - loc_j`` and squared distances (diagonal set to 1)."""
    diff = loc[:, :, None, :] - loc[:, None, :, :]
    d2 = (diff**2).sum(-1)
    n = loc.shape[1]
    d2[:, np.arange(n), np.arange(n)] = 1.0
    return diff, d2


def _forces(system: str, loc: np.ndarray, edges: np.ndarray, strength: float,
            softening: float) -> np.ndarray:
    diff, d2 = _pairwise(loc)
    if system == "charged":
        # Coulomb: F_i = k sum_j q_i q_j (x_i - x_j) / |x_ij|^3  (edges = q_i q_j, zero diagonal)
        coef = strength * edges / d2**1.5
    elif system == "springs":
        # Hooke: F_i = -k sum_j A_ij (x_i - x_j)
        coef = -strength * edges
    else:
        # gravity with softening: F_i = -G sum_j m_i m_j (x_i - x_j) / (|x_ij|^2 + eps^2)^1.5
        coef = -strength * edges / (d2 + softening**2) ** 1.5
    return (coef[..., None] * diff).sum(2)


def simulate(system: str, num_sims: int, n_bodies: int | None = None, length: int = 5000,
             sample_freq: int = 100, dt: float = 0.001, seed: int = 0, dim: int = 3,
             box_size: float | None = None, max_force: float = 100.0) -> dict[str, np.ndarray]:
    """Simulate ``num_sims`` trajectories of one N-body system.

    Args:
        system: ``charged`` (Coulomb, charges +-1), ``springs`` (random springs, probability 0.5)
            or ``gravity`` (unit masses, softening 0.1).
        num_sims: number of trajectories.
        n_bodies: bodies per system (default 5, 5, 10).
        length: integration steps.
        sample_freq: keep one frame every this many steps.
        dt: time step.
        seed: random seed (the result is a deterministic function of all arguments).
        dim: spatial dimension.
        box_size: reflect at ``+-box_size`` (None: free space, as the 3-D EGNN data).
        max_force: force components are clipped to this magnitude (NRI clips at 0.1/dt).

    Returns:
        charged and springs: ``loc`` and ``vel`` of shape ``(num_sims, frames, dim, n_bodies)``
        (the NRI layout), ``edges`` ``(num_sims, n, n)`` (charge products / springs) and
        ``charges`` ``(num_sims, n, 1)`` (charges; ones for springs). Gravity (the GeoTDM
        generator's layout): ``loc``, ``vel`` and ``edges`` (the forces) of shape
        ``(num_sims, frames, n_bodies, dim)`` and ``charges`` the unit masses ``(num_sims, n, 1)``.
    """
    if system not in SYSTEMS:
        raise ValueError(f"system: unknown {system!r}; choose one of {SYSTEMS}")
    for arg, value, low in (("num_sims", num_sims, 1), ("sample_freq", sample_freq, 1),
                            ("length", length, 2 * sample_freq), ("dim", dim, 1)):
        if value < low:
            raise ValueError(f"{arg} must be >= {low}, got {value}"
                             + (f" (two frames of sample_freq={sample_freq} steps)"
                                if arg == "length" else ""))
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    n = n_bodies or DEFAULT_BODIES[system]
    rng = np.random.default_rng(seed)
    if system == "gravity":
        return _simulate_gravity(rng, num_sims, n, length, sample_freq, dt, dim, strength=1.0,
                                 softening=0.1)
    eye = np.eye(n, dtype=bool)
    if system == "charged":
        charges = rng.choice([-1.0, 1.0], size=(num_sims, n, 1))
        edges = charges * charges.transpose(0, 2, 1)
        strength, softening, loc_std, vel_norm = 1.0, 0.0, 1.0, 0.5
    elif system == "springs":
        charges = np.ones((num_sims, n, 1))
        upper = np.triu(rng.random((num_sims, n, n)) < 0.5, 1)
        edges = (upper | upper.transpose(0, 2, 1)).astype(np.float64)
        strength, softening, loc_std, vel_norm = 0.1, 0.0, 0.5, 0.5
    edges = np.where(eye, 0.0, edges)
    loc = rng.standard_normal((num_sims, n, dim)) * loc_std
    vel = rng.standard_normal((num_sims, n, dim))
    vel = vel * vel_norm / np.linalg.norm(vel, axis=-1, keepdims=True)
    frames = frames_of(system, length, sample_freq)
    locs = np.empty((num_sims, frames, n, dim))
    vels = np.empty_like(locs)
    k = 0
    for step in range(1, length):
        loc = loc + dt * vel
        if box_size is not None:  # elastic reflection at the walls
            over, under = loc > box_size, loc < -box_size
            loc = np.where(over, 2 * box_size - loc, np.where(under, -2 * box_size - loc, loc))
            vel = np.where(over | under, -vel, vel)
        force = np.clip(_forces(system, loc, edges, strength, softening), -max_force, max_force)
        vel = vel + dt * force
        if step % sample_freq == 0 and k < frames:
            locs[:, k], vels[:, k] = loc, vel
            k += 1
    if not (np.isfinite(locs).all() and np.isfinite(vels).all()):
        raise ValueError(f"{system} simulation (seed {seed}, dt {dt}) diverged to NaN or "
                                 "inf; use a smaller dt or a lower max_force")
    return {"loc": locs.transpose(0, 1, 3, 2).copy(), "vel": vels.transpose(0, 1, 3, 2).copy(),
            "edges": edges, "charges": charges}


def _simulate_gravity(rng: np.random.Generator, num_sims: int, n: int, length: int,
                      sample_freq: int, dt: float, dim: int, strength: float,
                      softening: float) -> dict[str, np.ndarray]:
    """Unit masses under softened gravity, kick-drift-kick, as the GeoTDM ``GravitySim``."""
    loc = rng.standard_normal((num_sims, n, dim))
    vel = rng.standard_normal((num_sims, n, dim))
    vel = vel - vel.mean(1, keepdims=True)  # centre-of-mass frame (unit masses)
    mass = np.broadcast_to(1.0 - np.eye(n), (num_sims, n, n))  # m_i m_j, no self-force
    acc = _forces("gravity", loc, mass, strength, softening)
    frames = frames_of("gravity", length, sample_freq)
    locs = np.empty((num_sims, frames, n, dim))
    vels, forces = np.empty_like(locs), np.empty_like(locs)
    for step in range(frames * sample_freq):
        if step % sample_freq == 0:
            k = step // sample_freq
            locs[:, k], vels[:, k], forces[:, k] = loc, vel, acc
        vel = vel + acc * dt / 2
        loc = loc + vel * dt
        acc = _forces("gravity", loc, mass, strength, softening)
        vel = vel + acc * dt / 2
    if not (np.isfinite(locs).all() and np.isfinite(vels).all()):
        raise ValueError(f"gravity simulation (dt {dt}) diverged to NaN or inf; use a smaller dt")
    return {"loc": locs, "vel": vels, "edges": forces, "charges": np.ones((num_sims, n, 1))}
