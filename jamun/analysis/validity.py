"""Physical validity of generated structures: covalent bond lengths and L-chirality at CA.

Bond lengths are compared with the reference MD's mean length of each heavy-atom bond; chirality
is the sign of the signed volume at every CA that has a CB (glycine has none):
V = (N − CA) · ((C − CA) × (CB − CA)), positive for L-amino acids (checked in the tests on the
villin headpiece structure shipped with OpenMM).
"""

from __future__ import annotations

import mdtraj
import numpy as np

from jamun.geometry import bond_lengths, chirality_quads, signed_volumes

# A bond longer than this multiple of its MD mean length is broken: the chain left the molecule.
LEFT_MOLECULE_FACTOR = 2.0


def heavy_atom_bonds(topology: mdtraj.Topology) -> np.ndarray:
    """(n_bonds, 2) int64 atom indices of bonds between two non-hydrogen atoms."""
    bonds = [(a.index, b.index) for a, b in topology.bonds
             if a.element.symbol != "H" and b.element.symbol != "H"]
    if not bonds:
        raise ValueError(f"{topology} has no heavy-atom bonds (PDB without standard residues?)")
    return np.array(bonds, dtype=np.int64)


def atom_keys(topology: mdtraj.Topology) -> list[tuple[int, str]]:
    """(residue index, atom name) of every atom: matches atoms across all-atom and heavy-atom
    files."""
    return [(atom.residue.index, atom.name) for atom in topology.atoms]


def map_atoms(source: mdtraj.Topology, target: mdtraj.Topology, indices: np.ndarray) -> np.ndarray:
    """Translate atom indices of `source` into `target` by (residue index, atom name).

    Raises ValueError naming the first atom `target` lacks.
    """
    lookup = {key: i for i, key in enumerate(atom_keys(target))}
    keys = atom_keys(source)
    missing = [keys[i] for i in np.unique(indices) if keys[i] not in lookup]
    if missing:
        raise ValueError(f"atom {missing[0]} (residue index, name) of {source} is missing in "
                         f"{target}")
    return np.vectorize(lambda i: lookup[keys[i]], otypes=[np.int64])(indices)


def bond_length_ok(traj: mdtraj.Trajectory, bonds: np.ndarray, reference_nm: np.ndarray,
                   tolerance_nm: float) -> np.ndarray:
    """(n_frames,) bool: every bond within `tolerance_nm` of its reference length.

    bonds: (n_bonds, 2) atom indices into `traj`; reference_nm: (n_bonds,) nm.
    """
    lengths = bond_lengths(traj.xyz, bonds)
    return np.all(np.abs(lengths - reference_nm) <= tolerance_nm, axis=1)


def chirality_atoms(topology: mdtraj.Topology) -> np.ndarray:
    """(n_chiral, 4) int64 indices (N, CA, C, CB) of every residue with all four atoms."""
    return chirality_quads({atom.name: atom.index for atom in residue.atoms} for residue in topology.residues)


def l_chirality_ok(traj: mdtraj.Trajectory) -> np.ndarray:
    """(n_frames,) bool: every CA with a CB is L (positive signed volume); True if none has one."""
    volumes = signed_volumes(traj.xyz, chirality_atoms(traj.topology))
    return np.all(volumes > 0, axis=1)


def chains_left_molecule(lengths: np.ndarray, reference_nm: np.ndarray, n_chains: int,
                         factor: float = LEFT_MOLECULE_FACTOR) -> np.ndarray:
    """(n_chains,) bool: chains with a frame where some bond is longer than `factor` x its
    reference length, i.e. the walk left the molecule (a broken covalent bond).

    lengths: (n_frames, n_bonds) nm of step-major samples (frame k is chain k % n_chains).
    """
    if lengths.shape[0] % n_chains:
        raise ValueError(f"{lengths.shape[0]} frames are not a multiple of {n_chains} chains")
    broken = np.any(lengths > factor * reference_nm, axis=1)  # [n_frames]
    return broken.reshape(-1, n_chains).any(axis=0)
