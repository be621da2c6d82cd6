"""Backbone dihedrals (φ_i, ψ_i) per residue, identical for all-atom MD and heavy-atom samples.

mdtraj's `compute_phi` (C_{i-1}-N_i-CA_i-C_i) and `compute_psi` (N_i-CA_i-C_i-N_{i+1}) use heavy
backbone atoms only, so an all-atom MD frame and the same frame without hydrogens give the same
angles. In a capped peptide ACE-X1..Xn-NME, φ1 uses the ACE carbonyl C and ψn the NME N; the caps
themselves have neither angle (no CA).
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj
import numpy as np


@dataclass(frozen=True)
class BackboneDihedrals:
    """φ/ψ of every residue that has both.

    angles: (n_frames, n_residues, 2) rad in [-π, π], last axis (φ_i, ψ_i) of the same residue.
    residues: residue names in chain order, e.g. ("GLY", "ASN").
    residue_index: (n_residues,) mdtraj residue indices (caps count, so GLY of ACE-GLY-... is 1).
    """

    angles: np.ndarray
    residues: tuple[str, ...]
    residue_index: np.ndarray

    @property
    def torsions(self) -> np.ndarray:
        """(n_frames, 2 n_residues) rad: φ1, ψ1, φ2, ψ2, ..."""
        return self.angles.reshape(self.angles.shape[0], -1)

    @property
    def labels(self) -> list[str]:
        """Column labels of `torsions`, e.g. ["phi_1", "psi_1", "phi_2", "psi_2"] (1-based)."""
        return [f"{name}_{i}" for i in range(1, len(self.residues) + 1) for name in ("phi", "psi")]


def _by_residue(traj: mdtraj.Trajectory, compute) -> dict[int, np.ndarray]:
    """{residue index of the angle's CA: (n_frames,) rad} for one of mdtraj's compute_phi/psi."""
    indices, angles = compute(traj)
    # The CA is the 3rd atom of φ (C-N-CA-C) and the 2nd of ψ (N-CA-C-N).
    ca_column = 2 if compute is mdtraj.compute_phi else 1
    residues = [traj.topology.atom(int(row[ca_column])).residue.index for row in indices]
    return dict(zip(residues, angles.T))


def backbone_dihedrals(traj: mdtraj.Trajectory) -> BackboneDihedrals:
    """φ_i and ψ_i of each residue that has both (all residues of a capped peptide).

    traj: any mdtraj trajectory of a peptide, with or without hydrogens.
    """
    phi = _by_residue(traj, mdtraj.compute_phi)
    psi = _by_residue(traj, mdtraj.compute_psi)
    index = np.array(sorted(phi.keys() & psi.keys()), dtype=np.int64)
    if index.size == 0:
        raise ValueError(f"no residue of {traj.topology} has both phi and psi (need a peptide "
                         "with backbone N, CA, C and neighbouring residues or caps)")
    angles = np.stack([np.stack([phi[i], psi[i]], axis=-1) for i in index], axis=1)
    names = tuple(traj.topology.residue(int(i)).name for i in index)
    return BackboneDihedrals(angles=angles.astype(np.float64), residues=names, residue_index=index)


def check_same_residues(a: BackboneDihedrals, b: BackboneDihedrals, what: str) -> None:
    """Raise ValueError unless `a` and `b` describe the same residues in the same order."""
    if a.residues != b.residues or not np.array_equal(a.residue_index, b.residue_index):
        raise ValueError(f"{what}: residues {list(b.residues)} at {b.residue_index.tolist()} "
                         f"do not match the reference {list(a.residues)} at "
                         f"{a.residue_index.tolist()}")


def dihedral_features(torsions: np.ndarray) -> np.ndarray:
    """(n_frames, 2 k) features [cos, sin] of torsions (n_frames, k) rad: continuous across ±π."""
    return np.concatenate([np.cos(torsions), np.sin(torsions)], axis=1)
