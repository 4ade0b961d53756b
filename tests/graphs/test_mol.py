"""Molecule encoding, GDSS decoding, formal charges and valency correction."""

import numpy as np
import pytest
import torch
from rdkit import Chem

from domaindiff_graphs import mol as M


@pytest.mark.parametrize("smiles", ["CC(=O)O", "C#N", "c1ccccc1O", "OC1=CC=CC=C1F", "N#CC=O"])
def test_encode_decode_round_trip(smiles):
    mol = M.kekulized(smiles)
    x, adj = M.mol_to_dense(mol, M.QM9_ATOMS, 9)
    g = torch.Generator().manual_seed(0)
    noise = 0.6 * (torch.rand(9, 9, generator=g) - 0.5)  # |noise| < 0.3 keeps every threshold
    noise = noise.triu(1) + noise.triu(1).T
    mask = (x.sum(-1) > 0).float()[None]
    x_noisy = x + 0.2 * torch.rand(9, 4, generator=g) * x.sum(-1, keepdim=True)
    mols, ok = M.decode_molecules(x_noisy[None], adj[None] + noise, mask, M.QM9_ATOMS)
    assert ok == [True]
    assert Chem.MolToSmiles(mols[0]) == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def test_thresholds():
    adj = np.array([[0, 0.49, 0.5], [1.49, 1.5, 2.49], [2.5, 3.7, -1]])
    np.testing.assert_array_equal(M.quantize_bonds(adj), [[0, 0, 1], [1, 2, 2], [3, 3, 0]])


def test_ammonium_gets_formal_charge_and_is_valid_without_correction():
    # N with four single bonds: valence 4 = 3 + 1 -> [N+]
    atoms = ["N", "C", "C", "C", "C"]
    bonds = np.zeros((5, 5), dtype=int)
    for j in range(1, 5):
        bonds[0, j] = bonds[j, 0] = 1
    mol = M.construct_mol(atoms, bonds)
    assert M.valence_problem(mol) is None
    assert mol.GetAtomWithIdx(0).GetFormalCharge() == 1


def test_correction_lowers_highest_order_bond():
    # C=C(=C)=C ... a carbon with valence 6 (three double bonds) -> corrected to valence 4
    atoms = ["C", "C", "C", "C"]
    bonds = np.zeros((4, 4), dtype=int)
    for j in (1, 2, 3):
        bonds[0, j] = bonds[j, 0] = 2
    mol = M.construct_mol(atoms, bonds)
    assert M.valence_problem(mol) is not None
    fixed, valid_before = M.correct_mol(mol)
    assert not valid_before and M.valence_problem(fixed) is None
    assert sum(b.GetBondTypeAsDouble() for b in fixed.GetAtomWithIdx(0).GetBonds()) <= 4


def test_decoding_keeps_largest_fragment_and_skips_empty_nodes():
    x = torch.zeros(1, 6, 4)
    x[0, [0, 1, 2], 0] = 1  # C C C
    x[0, 3, 2] = 1  # O alone
    x[0, 4, 1] = 0.4  # below 0.5: no atom
    adj = torch.zeros(1, 6, 6)
    adj[0, 0, 1] = adj[0, 1, 0] = 1.2
    adj[0, 1, 2] = adj[0, 2, 1] = 0.9
    adj[0, 3, 4] = adj[0, 4, 3] = 1.0  # bond to a non-atom is ignored
    mols, ok = M.decode_molecules(x, adj, None, M.QM9_ATOMS)
    assert ok == [True] and Chem.MolToSmiles(mols[0]) == "CCC"


def test_invalid_without_correction_returns_none():
    x = torch.zeros(1, 2, 4)
    x[0, :, 3] = 1  # F-F with a triple bond
    adj = torch.zeros(1, 2, 2)
    adj[0, 0, 1] = adj[0, 1, 0] = 3.0
    mols, ok = M.decode_molecules(x, adj, None, M.QM9_ATOMS, correct=False)
    assert ok == [False] and mols == [None]
    mols, ok = M.decode_molecules(x, adj, None, M.QM9_ATOMS, correct=True)
    assert Chem.MolToSmiles(mols[0]) == "FF"


def test_bad_atom_raises():
    with pytest.raises(ValueError, match=r"atom Cl \(index 1\) not in the featurizer.s atom types"):
        M.mol_to_dense(Chem.MolFromSmiles("CCl"), M.QM9_ATOMS, 9)


@pytest.mark.parametrize(("smiles", "kind", "detail"), [
    ("", "unparsable", "empty SMILES"),
    ("C1CC", "unparsable", "cannot parse"),
    ("CCS", "rules", "has atom S; expected only the atom types"),
    ("CCCCCCCCCC", "rules", "10 heavy atoms; expected at most max_nodes=9"),
    ("C.O", "rules", "2 fragments"),
])
def test_screen_names_why_a_row_is_dropped(smiles, kind, detail):
    mol, got_kind, got_detail = M.screen(smiles, M.QM9_ATOMS, 9)
    assert mol is None and got_kind == kind and detail in got_detail


def test_screen_keeps_a_kekulized_molecule():
    mol, kind, detail = M.screen("c1ccccc1O", M.QM9_ATOMS, 9)
    assert (kind, detail) == ("", "") and not any(b.GetIsAromatic() for b in mol.GetBonds())
