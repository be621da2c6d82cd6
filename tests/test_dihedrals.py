"""Backbone dihedrals: known torsions, cap atoms, (φ_i, ψ_i) pairing, all-atom vs heavy-atom."""

import mdtraj
import numpy as np
import pytest

from jamun.analysis.dihedrals import backbone_dihedrals, check_same_residues, dihedral_features
from jamun.peptides import build_peptide


def numpy_dihedral(p0, p1, p2, p3):
    """IUPAC dihedral (rad) of four points (Blondel & Karplus 1996 atan2 form; not mdtraj's)."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    y = np.linalg.norm(b2) * np.dot(b1, np.cross(b2, b3))
    return np.arctan2(y, np.dot(np.cross(b1, b2), np.cross(b2, b3)))


def place(a, b, c, bond, angle_deg, torsion_deg):
    """Point d with |cd| = bond, angle bcd and dihedral abcd, by rotating a probe about bc."""
    bc = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    theta, tau = np.radians(angle_deg), np.radians(torsion_deg)
    # d in the frame (bc, normal x bc, normal): the angle fixes the bc component, tau the rest.
    perp = np.cross(normal, bc)
    sideways = np.cos(tau) * perp + np.sin(tau) * normal
    return c + bond * (-np.cos(theta) * bc + np.sin(theta) * sideways)


def capped_backbone_pdb(path, phi_psi_deg):
    """ACE-ALA..-NME backbone (CH3 C | N CA C | ... | N C), given (φ, ψ) per residue, ω = 180."""
    atoms = [("ACE", 1, "CH3", np.zeros(3)), ("ACE", 1, "C", np.array([0.152, 0.0, 0.0]))]
    chain = [atoms[0][3], atoms[1][3], np.array([0.152 + 0.066, 0.115, 0.0])]
    atoms.append(("ALA", 2, "N", chain[2]))
    torsions = []
    for phi, psi in phi_psi_deg:
        torsions += [180.0, phi, psi]
    torsions.append(180.0)  # omega into NME
    names = []
    for k in range(len(phi_psi_deg)):
        names += [("ALA", k + 2, "CA"), ("ALA", k + 2, "C"),
                  ("NME" if k == len(phi_psi_deg) - 1 else "ALA", k + 3, "N")]
    names.append(("NME", len(phi_psi_deg) + 2, "C"))
    for (res, seq, name), torsion in zip(names, torsions):
        chain.append(place(*chain[-3:], 0.150, 115.0, torsion))
        atoms.append((res, seq, name, chain[-1]))
    lines = [f"ATOM  {i:5d} {name:<4s} {res:3s} A{seq:4d}    "
             f"{x * 10:8.3f}{y * 10:8.3f}{z * 10:8.3f}  1.00  0.00           {name[0]:>2s}"
             for i, (res, seq, name, (x, y, z)) in enumerate(atoms, start=1)]
    path.write_text("\n".join(lines + ["END", ""]))
    return path


def test_matches_a_textbook_dihedral_on_a_distorted_peptide(tmp_path):
    """On a built ACE-GLY-ASN-NME with random displacements, every (φ_i, ψ_i) equals the atan2
    dihedral of the atoms named C(i-1), N, CA, C and N, CA, C, N(i+1), found by name here."""
    traj = mdtraj.load(str(build_peptide("GN", tmp_path / "gn.pdb")))
    traj.xyz += np.random.default_rng(3).normal(scale=0.03, size=traj.xyz.shape).astype(np.float32)
    top, xyz = traj.topology, traj.xyz[0].astype(np.float64)

    def atom(residue: int, name: str) -> np.ndarray:
        return xyz[top.select(f"resid {residue} and name {name}")[0]]

    dih = backbone_dihedrals(traj)
    for k, residue in enumerate((1, 2)):  # GLY and ASN; ACE is residue 0, NME residue 3
        phi = numpy_dihedral(atom(residue - 1, "C"), atom(residue, "N"), atom(residue, "CA"), atom(residue, "C"))
        psi = numpy_dihedral(atom(residue, "N"), atom(residue, "CA"), atom(residue, "C"), atom(residue + 1, "N"))
        np.testing.assert_allclose(dih.angles[0, k], [phi, psi], atol=1e-5)


def test_known_torsions_are_recovered_per_residue(tmp_path):
    target = [(-60.0, 140.0), (75.0, -45.0)]
    traj = mdtraj.load(str(capped_backbone_pdb(tmp_path / "aa.pdb", target)))
    dih = backbone_dihedrals(traj)
    assert dih.residues == ("ALA", "ALA")
    assert dih.residue_index.tolist() == [1, 2]
    np.testing.assert_allclose(np.degrees(dih.angles[0]), target, atol=0.05)  # PDB rounding
    assert dih.labels == ["phi_1", "psi_1", "phi_2", "psi_2"]
    np.testing.assert_allclose(np.degrees(dih.torsions[0]), np.ravel(target), atol=0.05)


def test_caps_and_heavy_atom_slice(tmp_path):
    traj = mdtraj.load(str(build_peptide("GN", tmp_path / "gn.pdb")))
    top = traj.topology
    xyz = traj.xyz[0]

    def atom(res, name):
        return xyz[top.select(f"resname {res} and name {name}")[0]]

    dih = backbone_dihedrals(traj)
    assert dih.residues == ("GLY", "ASN")
    phi1 = numpy_dihedral(atom("ACE", "C"), atom("GLY", "N"), atom("GLY", "CA"), atom("GLY", "C"))
    psi1 = numpy_dihedral(atom("GLY", "N"), atom("GLY", "CA"), atom("GLY", "C"), atom("ASN", "N"))
    phi2 = numpy_dihedral(atom("GLY", "C"), atom("ASN", "N"), atom("ASN", "CA"), atom("ASN", "C"))
    psi2 = numpy_dihedral(atom("ASN", "N"), atom("ASN", "CA"), atom("ASN", "C"), atom("NME", "N"))
    np.testing.assert_allclose(dih.angles[0], [[phi1, psi1], [phi2, psi2]], atol=1e-5)

    heavy = traj.atom_slice(top.select("not element H"))
    heavy_path = tmp_path / "heavy.pdb"
    heavy.save_pdb(str(heavy_path))
    heavy_dih = backbone_dihedrals(mdtraj.load(str(heavy_path)))
    check_same_residues(dih, heavy_dih, "heavy-atom copy")
    np.testing.assert_allclose(heavy_dih.angles, dih.angles, atol=2e-3)  # PDB keeps 1e-4 nm


def test_mismatched_residues_raise(tmp_path):
    gn = backbone_dihedrals(mdtraj.load(str(build_peptide("GN", tmp_path / "gn.pdb"))))
    ga = backbone_dihedrals(mdtraj.load(str(build_peptide("GA", tmp_path / "ga.pdb"))))
    with pytest.raises(ValueError, match="do not match"):
        check_same_residues(gn, ga, "samples")


def test_features_are_periodic():
    features = dihedral_features(np.array([[np.pi, 0.5], [-np.pi, 0.5]]))
    assert features.shape == (2, 4)
    np.testing.assert_allclose(features[0], features[1], atol=1e-12)
