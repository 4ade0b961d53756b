"""Offline MD17 stand-in: Langevin MD of the eight MD17 molecules with RDKit's MMFF94.

Writes the sgdml keys (``R`` positions in Angstrom, ``z`` atomic numbers, ``E`` energies in
kcal/mol, ``F`` forces in kcal/mol/Angstrom), so the MD17 loader reads it like the real files.
BAOAB Langevin integration at 500 K with a 0.5 fs step, as the REFERENCES note.
"""

from __future__ import annotations

import numpy as np

MD17_SMILES = {
    "aspirin": "CC(=O)OC1=CC=CC=C1C(=O)O",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=CCC=O",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic": "O=C(O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=C1C=CNC(=O)N1",
}
_KCAL_PER_MOL_K = 0.0019872041
_ACC = 4.184e-4  # (kcal/mol/Angstrom/amu) -> Angstrom/fs^2


def simulate_md17_standin(molecule: str, steps: int = 20000, record_every: int = 1,
                          dt_fs: float = 0.5, temperature: float = 500.0,
                          friction_per_fs: float = 0.01, seed: int = 0) -> dict[str, np.ndarray]:
    """Langevin MD of one MD17 molecule (hydrogens kept) under MMFF94.

    Args:
        molecule: one of :data:`MD17_SMILES`.
        steps: integration steps.
        record_every: keep one frame every this many steps.
        dt_fs: time step in femtoseconds.
        temperature: bath temperature in kelvin.
        friction_per_fs: Langevin friction.
        seed: seed of the embedding and the thermal noise.

    Returns:
        ``{"R": (frames, atoms, 3), "z": (atoms,), "E": (frames,), "F": (frames, atoms, 3)}``.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    if molecule not in MD17_SMILES:
        raise ValueError(f"molecule: unknown {molecule!r}; choose one of {sorted(MD17_SMILES)}")
    if steps < 1 or record_every < 1 or steps < record_every:
        raise ValueError(f"steps and record_every must be >= 1 with steps >= record_every, got "
                         f"steps={steps}, record_every={record_every}")
    mol = Chem.AddHs(Chem.MolFromSmiles(MD17_SMILES[molecule]))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {molecule}")
    AllChem.MMFFOptimizeMolecule(mol)
    props = AllChem.MMFFGetMoleculeProperties(mol)
    ff = AllChem.MMFFGetMoleculeForceField(mol, props)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    mass = np.array([a.GetMass() for a in mol.GetAtoms()])[:, None]
    x = np.array(mol.GetConformer().GetPositions())
    rng = np.random.default_rng(seed)
    kt = _KCAL_PER_MOL_K * temperature
    vstd = np.sqrt(kt / mass * _ACC)  # Angstrom / fs
    v = rng.standard_normal(x.shape) * vstd
    c1 = np.exp(-friction_per_fs * dt_fs)
    c2 = np.sqrt(1 - c1**2)

    def force(pos: np.ndarray) -> np.ndarray:
        # RDKit's CalcGrad(positions) is stale after the first call unless re-initialised
        ff.Initialize()
        return -np.asarray(ff.CalcGrad(pos.ravel().tolist())).reshape(pos.shape)

    f = force(x)
    rs, es, fs = [], [], []
    for step in range(1, steps + 1):  # BAOAB
        v += 0.5 * dt_fs * f / mass * _ACC
        x += 0.5 * dt_fs * v
        v = c1 * v + c2 * vstd * rng.standard_normal(x.shape)
        x += 0.5 * dt_fs * v
        f = force(x)
        v += 0.5 * dt_fs * f / mass * _ACC
        if step % record_every == 0:
            rs.append(x.copy())
            fs.append(f.copy())
            es.append(ff.CalcEnergy(x.ravel().tolist()))
    out = {"R": np.stack(rs), "z": z, "E": np.array(es), "F": np.stack(fs)}
    if not np.isfinite(out["R"]).all():
        raise ValueError(f"MD of {molecule} (seed {seed}, dt {dt_fs} fs) diverged to NaN or "
                                 "inf; use a smaller dt_fs")
    return out
