"""Validity checks: L-chirality sign on crystal-derived L structures, bond-length tolerance."""

from pathlib import Path

import mdtraj
import numpy as np
import openmm.app
import pytest

from jamun.analysis.validity import bond_length_ok, chirality_atoms, heavy_atom_bonds, l_chirality_ok, map_atoms
from jamun.geometry import signed_volumes
from jamun.peptides import build_peptide

VILLIN_PDB = Path(openmm.app.__file__).parent / "data" / "test.pdb"  # villin headpiece, L-protein


@pytest.fixture(scope="module")
def villin():
    traj = mdtraj.load(str(VILLIN_PDB))
    return traj.atom_slice(traj.topology.select("protein"))


def test_natural_protein_is_l_and_its_mirror_is_not(villin):
    quads = chirality_atoms(villin.topology)
    n_gly = sum(r.name == "GLY" for r in villin.topology.residues)
    assert len(quads) == villin.topology.n_residues - n_gly
    assert np.all(signed_volumes(villin.xyz, quads) > 0)
    assert l_chirality_ok(villin).tolist() == [True]
    mirror = villin.slice([0], copy=True)
    mirror.xyz[..., 0] *= -1.0
    assert l_chirality_ok(mirror).tolist() == [False]


def test_one_d_residue_fails_the_frame(tmp_path):
    traj = mdtraj.load(str(build_peptide("AV", tmp_path / "av.pdb")))
    assert l_chirality_ok(traj).tolist() == [True]
    n, ca, c, cb = chirality_atoms(traj.topology)[1]
    flipped = traj.slice([0], copy=True)
    # Reflect VAL's CB through the N-CA-C plane: that residue becomes D.
    xyz = flipped.xyz[0]
    normal = np.cross(xyz[n] - xyz[ca], xyz[c] - xyz[ca])
    normal /= np.linalg.norm(normal)
    xyz[cb] -= 2 * np.dot(xyz[cb] - xyz[ca], normal) * normal  # xyz is a view into flipped
    assert l_chirality_ok(flipped).tolist() == [False]
    volumes = signed_volumes(flipped.xyz, chirality_atoms(flipped.topology))
    assert volumes[0, 0] > 0 > volumes[0, 1]  # ALA still L, VAL now D


def test_glycine_only_has_no_chiral_centre(tmp_path):
    traj = mdtraj.load(str(build_peptide("GG", tmp_path / "gg.pdb")))
    assert chirality_atoms(traj.topology).shape == (0, 4)
    assert l_chirality_ok(traj).tolist() == [True]


def test_bond_length_tolerance_and_heavy_atom_mapping(tmp_path):
    full = mdtraj.load(str(build_peptide("GN", tmp_path / "gn.pdb")))
    bonds = heavy_atom_bonds(full.topology)
    elements = np.array([a.element.symbol for a in full.topology.atoms])
    assert not np.any(elements[bonds] == "H")
    assert len(bonds) == 16  # ACE 3 atoms, GLY 4, ASN 8, NME 2: a tree of 17 heavy atoms

    heavy = full.atom_slice(full.topology.select("not element H"))
    heavy_bonds = map_atoms(full.topology, heavy.topology, bonds)
    reference = mdtraj.compute_distances(full, bonds)[0]
    np.testing.assert_allclose(mdtraj.compute_distances(heavy, heavy_bonds)[0], reference)

    frames = mdtraj.join([heavy] * 3)
    # Frame 1: the NME methyl pulled 0.01 nm outwards (within tolerance); frame 2: 0.03 nm.
    n_nme, c_nme = heavy.topology.select("resname NME and name N C")
    direction = frames.xyz[0, c_nme] - frames.xyz[0, n_nme]
    direction /= np.linalg.norm(direction)
    frames.xyz[1, c_nme] += 0.01 * direction
    frames.xyz[2, c_nme] += 0.03 * direction
    assert bond_length_ok(frames, heavy_bonds, reference, 0.02).tolist() == [True, True, False]


def test_map_atoms_names_a_missing_atom(tmp_path):
    gn = mdtraj.load(str(build_peptide("GN", tmp_path / "gn.pdb"))).topology
    heavy = gn.subset(gn.select("not element H"))
    hydrogen = gn.select("element H")[:1]
    with pytest.raises(ValueError, match="missing"):
        map_atoms(gn, heavy, hydrogen)
