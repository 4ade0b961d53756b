"""Molecules as graphs: kekulized RDKit encodings, GDSS decoding and valency correction.

Encoding (GDSS): node features are a one-hot over the dataset's atom types (padded nodes are all
zero), the adjacency holds bond orders 1/2/3 (kekulized, so no aromatic bonds), 0 for no bond.
Decoding: atom = argmax with a no-atom channel (a node whose features are all below 0.5 is empty),
bond orders thresholded at 0.5 / 1.5 / 2.5; a valence violation adds a +1 formal charge on N, O
or S when that fixes it; correction lowers the highest-order bond of the offending atom until the
molecule sanitises; the largest fragment is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from rdkit import Chem, RDLogger
from torch import Tensor

RDLogger.DisableLog("rdApp.*")

QM9_ATOMS = ("C", "N", "O", "F")
ZINC_ATOMS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")
BOND_ORDERS = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
_PT = Chem.GetPeriodicTable()
_ELEMENTS = frozenset(_PT.GetElementSymbol(z) for z in range(1, 119))


def atom_types_for(name: str) -> tuple[str, ...]:
    """Atom vocabulary of a molecule dataset (``qm9``, ``zinc250k``) or a list ``"C,N,O,S"``.

    A comma-separated list of element symbols is the vocabulary of your own molecules
    (:class:`~domaindiff_graphs.user_data.UserMolecules`), in feature order.
    """
    key = name.lower()
    if key == "qm9":
        return QM9_ATOMS
    if key in ("zinc250k", "zinc"):
        return ZINC_ATOMS
    if "," in name or name.strip() in _ELEMENTS:
        symbols = tuple(s.strip() for s in name.split(","))
        bad = [s for s in symbols if s not in _ELEMENTS]
        if bad or len(set(symbols)) != len(symbols):
            what = f"{bad[0]!r} is not an element symbol" if bad else "a symbol is repeated"
            raise ValueError(f"atom types {name!r}: {what}; expected distinct element symbols "
                             "such as 'C,N,O,F'")
        return symbols
    raise ValueError(f"unknown molecule dataset {name!r}: use 'qm9', 'zinc250k' or a list of "
                     "element symbols such as 'C,N,O,S'")


def unsupported_bond(mol: Chem.Mol) -> str | None:
    """The first bond that is not single, double or triple (after kekulization), in words."""
    for b in mol.GetBonds():
        if b.GetBondType() not in BOND_ORDERS:
            return (f"bond {b.GetIdx()} ({b.GetBeginAtom().GetSymbol()}-"
                    f"{b.GetEndAtom().GetSymbol()}) is {b.GetBondType()}; expected single, double "
                    "or triple")
    return None


def kekulized(smiles: str) -> Chem.Mol | None:
    """Parse and kekulize a SMILES string (None if RDKit cannot)."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 - RDKit raises its own types
        return None
    return mol


def fits(mol: Chem.Mol, atom_types: Sequence[str], max_atoms: int) -> bool:
    """Whether a molecule is one fragment of at most ``max_atoms`` heavy atoms of ``atom_types``."""
    return (mol.GetNumAtoms() <= max_atoms and len(Chem.GetMolFrags(mol)) == 1
            and all(a.GetSymbol() in atom_types for a in mol.GetAtoms())
            and unsupported_bond(mol) is None)


def mol_to_dense(mol: Chem.Mol, atom_types: Sequence[str], max_atoms: int
                 ) -> tuple[Tensor, Tensor]:
    """Encode a kekulized molecule: ``x`` (max_atoms, len(atom_types)) one-hot, ``adj`` bond orders.

    Raises:
        ValueError: an atom outside ``atom_types``, an aromatic bond or too many atoms.
    """
    n = mol.GetNumAtoms()
    if n > max_atoms:
        raise ValueError(f"molecule {Chem.MolToSmiles(mol)} has {n} atoms > max_atoms={max_atoms}")
    x = torch.zeros(max_atoms, len(atom_types))
    for a in mol.GetAtoms():
        if a.GetSymbol() not in atom_types:
            raise ValueError(f"molecule {Chem.MolToSmiles(mol)}: atom {a.GetSymbol()} (index "
                             f"{a.GetIdx()}) not in the featurizer's atom types "
                             f"{list(atom_types)}; expected one of them")
        x[a.GetIdx(), atom_types.index(a.GetSymbol())] = 1.0
    adj = torch.zeros(max_atoms, max_atoms)
    for b in mol.GetBonds():
        if b.GetBondType() not in BOND_ORDERS:
            raise ValueError(f"molecule {Chem.MolToSmiles(mol)}: bond type {b.GetBondType()} "
                             "(kekulize first)")
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        adj[i, j] = adj[j, i] = BOND_ORDERS[b.GetBondType()]
    return x, adj


def quantize_bonds(adj: np.ndarray) -> np.ndarray:
    """Bond orders from a continuous adjacency: thresholds 0.5 / 1.5 / 2.5 (GDSS ``quantize_mol``)."""
    adj = np.asarray(adj, dtype=np.float64)
    out = np.zeros(adj.shape, dtype=np.int64)
    out[adj >= 0.5] = 1
    out[adj >= 1.5] = 2
    out[adj >= 2.5] = 3
    return out


def _allowed_valence(atom: Chem.Atom) -> int:
    """Largest permitted valence of an atom given its formal charge (isoelectronic rule)."""
    z = atom.GetAtomicNum() - atom.GetFormalCharge()
    vals = [v for v in _PT.GetValenceList(max(z, 1)) if v >= 0]
    return max(vals) if vals else 0


def _bond_valence(mol: Chem.RWMol, idx: int) -> int:
    return int(sum(b.GetBondTypeAsDouble() for b in mol.GetAtomWithIdx(idx).GetBonds()))


def valence_problem(mol: Chem.RWMol) -> tuple[int, int] | None:
    """``(atom index, its valence)`` of the first atom RDKit rejects, or None if it sanitises."""
    try:
        Chem.SanitizeMol(mol, sanitizeOps=Chem.SanitizeFlags.SANITIZE_PROPERTIES)
        return None
    except Exception as err:  # noqa: BLE001 - RDKit raises its own types
        found = re.search(r"#\s*(\d+)", str(err))
        if found and int(found.group(1)) < mol.GetNumAtoms():
            idx = int(found.group(1))
            return idx, _bond_valence(mol, idx)
        for a in mol.GetAtoms():  # message format unknown: find the offender ourselves
            v = _bond_valence(mol, a.GetIdx())
            if v > _allowed_valence(a):
                return a.GetIdx(), v
        return -1, -1


_DEFAULT_VALENCE = {"C": 4, "N": 3, "O": 2, "F": 1, "P": 3, "S": 2, "Cl": 1, "Br": 1, "I": 1}


def construct_mol(atoms: Sequence[str | None], bonds: np.ndarray) -> Chem.RWMol:
    """Build a molecule from atom symbols (None = no atom) and integer bond orders.

    Bonds are added one at a time; a valence violation of N, O or S by exactly one is fixed with a
    +1 formal charge (GDSS ``construct_mol``).
    """
    mol = Chem.RWMol()
    keep = [i for i, a in enumerate(atoms) if a is not None]
    for i in keep:
        mol.AddAtom(Chem.Atom(atoms[i]))
    sub = np.asarray(bonds)[np.ix_(keep, keep)]
    for i in range(len(keep)):
        for j in range(i):
            order = int(sub[i, j])
            if order <= 0:
                continue
            mol.AddBond(j, i, BOND_TYPES[min(order, 3)])
            problem = valence_problem(mol)
            if problem is None or problem[0] < 0:
                continue
            idx, v = problem
            atom = mol.GetAtomWithIdx(idx)
            sym = atom.GetSymbol()
            if sym in ("N", "O", "S") and v - _DEFAULT_VALENCE[sym] == 1:
                atom.SetFormalCharge(1)
    return mol


def correct_mol(mol: Chem.RWMol) -> tuple[Chem.RWMol, bool]:
    """Lower the highest-order bond of the offending atom until RDKit sanitises (GDSS).

    Returns:
        The corrected molecule and whether it was valid *before* any correction.
    """
    valid_before = valence_problem(mol) is None
    for _ in range(4 * mol.GetNumBonds() + 1):
        problem = valence_problem(mol)
        if problem is None:
            break
        idx = problem[0]
        if idx < 0:
            break
        bonds = sorted(mol.GetAtomWithIdx(idx).GetBonds(), key=lambda b: b.GetBondTypeAsDouble(),
                       reverse=True)
        if not bonds:
            break
        b = bonds[0]
        i, j, order = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble())
        mol.RemoveBond(i, j)
        if order - 1 >= 1:
            mol.AddBond(i, j, BOND_TYPES[order - 1])
    return mol, valid_before


def largest_fragment(mol: Chem.Mol | None) -> Chem.Mol | None:
    """The largest fragment (by SMILES length, as GDSS) re-parsed from SMILES; None if invalid."""
    if mol is None:
        return None
    try:
        smi = Chem.MolToSmiles(mol, isomericSmiles=True)
    except Exception:  # noqa: BLE001
        return None
    if "." in smi:
        smi = max(smi.split("."), key=len)
    return Chem.MolFromSmiles(smi)


def decode_molecules(x: Tensor, adj: Tensor, mask: Tensor | None, atom_types: Sequence[str],
                     correct: bool = True) -> tuple[list[Chem.Mol | None], list[bool]]:
    """Decode sampled dense molecules.

    Args:
        x: (B, N, F) atom features; a node is an atom if ``max(x) >= 0.5`` and the mask allows.
        adj: (B, N, N) continuous bond orders.
        mask: (B, N) node flags or None.
        atom_types: the atom vocabulary (F symbols).
        correct: apply valency correction (else invalid molecules decode to None).

    Returns:
        Molecules (largest fragment, None if invalid) and per-sample validity without correction.
    """
    xs, adjs = x.detach().cpu().numpy(), adj.detach().cpu().numpy()
    ms = mask.detach().cpu().numpy() if mask is not None else np.ones(xs.shape[:2])
    mols, valid_wo = [], []
    for xi, ai, mi in zip(xs, adjs, ms):
        present = (xi.max(axis=-1) >= 0.5) & (mi > 0.5)
        atoms = [atom_types[int(k)] if p else None for k, p in zip(xi.argmax(axis=-1), present)]
        mol = construct_mol(atoms, quantize_bonds(ai))
        fixed, ok = correct_mol(mol) if correct else (mol, valence_problem(mol) is None)
        valid_wo.append(bool(ok) and mol.GetNumAtoms() > 0)
        mols.append(largest_fragment(fixed) if (correct or ok) else None)
    return mols, valid_wo


def screen(smiles: str, atom_types: Sequence[str], max_atoms: int
           ) -> tuple[Chem.Mol | None, str, str]:
    """Parse a dataset row's SMILES and check it against the dataset's rules.

    Returns:
        ``(mol, "", "")`` for a kept molecule (kekulized), else ``(None, kind, detail)`` with
        ``kind`` "unparsable" (empty, RDKit cannot parse or kekulize it) or "rules" (an atom
        outside ``atom_types``, more than ``max_atoms`` heavy atoms, or several fragments) and a
        one-line ``detail``.
    """
    if not smiles.strip():
        return None, "unparsable", "empty SMILES"
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None, "unparsable", f"RDKit cannot parse the SMILES {smiles!r}"
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 - RDKit raises its own types
        return None, "unparsable", f"RDKit cannot kekulize the SMILES {smiles!r}"
    unknown = sorted({a.GetSymbol() for a in mol.GetAtoms()} - set(atom_types))
    if unknown:
        return None, "rules", (f"{smiles!r} has atom {unknown[0]}; expected only the atom types "
                               f"{list(atom_types)}")
    if mol.GetNumAtoms() > max_atoms:
        return None, "rules", (f"{smiles!r} has {mol.GetNumAtoms()} heavy atoms; expected at most "
                               f"max_nodes={max_atoms}")
    if mol.GetNumAtoms() == 0:
        return None, "unparsable", f"{smiles!r} has no atoms"
    frags = len(Chem.GetMolFrags(mol))
    if frags != 1:
        return None, "rules", f"{smiles!r} has {frags} fragments; expected one molecule"
    bond = unsupported_bond(mol)
    if bond is not None:  # dative, quadruple...: mol_to_dense cannot encode it
        return None, "rules", f"{smiles!r}: {bond}"
    return mol, "", ""
