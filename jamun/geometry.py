"""Molecular geometry shared by building, training checks and evaluation: bond lengths and the
signed volume that tells L from D at each alpha carbon.

Works on plain arrays (nm) so that OpenMM topologies (building), mdtraj trajectories (evaluation)
and sampler output (training checks) share one implementation. Imports numpy and mdtraj only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from mdtraj.geometry.distance import compute_distances_core

__all__ = ["CHIRALITY_ATOMS", "bond_lengths", "chirality_quads", "signed_volumes"]

# The atoms whose signed volume fixes the handedness at CA: det[N − CA, C − CA, CB − CA] > 0 is L.
CHIRALITY_ATOMS = ("N", "CA", "C", "CB")


def bond_lengths(xyz: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """(n_frames, n_bonds) nm: lengths of ``bonds`` (n_bonds, 2) in ``xyz`` (n_frames, n_atoms, 3) nm,
    without periodic images (mdtraj's distance kernel)."""
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    pairs = np.ascontiguousarray(bonds, dtype=np.int32).reshape(-1, 2)
    return compute_distances_core(xyz, pairs, periodic=False)


def chirality_quads(residues: Iterable[Mapping[str, int]]) -> np.ndarray:
    """(n_chiral, 4) int64 atom indices (N, CA, C, CB) of every residue that has all four.

    residues: one ``{atom name: atom index}`` mapping per residue, from any topology type.
    """
    rows = [[atoms[name] for name in CHIRALITY_ATOMS] for atoms in residues
            if all(name in atoms for name in CHIRALITY_ATOMS)]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def signed_volumes(xyz: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """(n_frames, n_chiral) nm³: (N − CA) · ((C − CA) × (CB − CA)) for ``quads`` (n_chiral, 4);
    positive at an L alpha carbon. xyz: (n_frames, n_atoms, 3) nm."""
    n, ca, c, cb = (xyz[:, quads[:, k]] for k in range(4))
    return np.einsum("fij,fij->fi", n - ca, np.cross(c - ca, cb - ca))
