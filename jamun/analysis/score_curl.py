"""Curl of a score field in one residue's (φ, ψ) plane: a line integral around a small torsion loop.

Langevin dynamics on a score field s(y) that is not a gradient has a stationary density other
than the one the field was meant to describe. A direct measure of how far s is from a gradient:
start from positions y0, follow the closed loop of structures y(Δφ, Δψ) obtained by rigidly
turning one residue's φ and ψ, and sum s · dy along it. For s = -∇U the result is 0 whatever the
loop (up to discretisation); for a field with curl it is, by Stokes,
∬ (∂_φ (s · ∂y/∂ψ) - ∂_ψ (s · ∂y/∂φ)) dφ dψ, which grows with the loop's area.

Conventions (those of mdtraj's ``compute_phi``/``compute_psi``, see :mod:`jamun.analysis.dihedrals`):
φ_i is the dihedral C(i-1)-N(i)-CA(i)-C(i) and ψ_i is N(i)-CA(i)-C(i)-N(i+1); residue indices are
mdtraj's (caps count, so the first amino acid of ACE-X-...-NME is residue 1). Turning φ_i by Δ
rotates, about the axis N(i)->CA(i) and by the right-hand rule, every atom on CA's side of the
N–CA bond (the connected component of CA once that bond is cut: CA's substituents, C, and the rest
of the chain towards the C terminus); ψ_i likewise rotates C's side of the CA–C bond about CA->C.
With these choices φ_i (resp. ψ_i) changes by exactly +Δ and every other backbone dihedral keeps
its value. Positions are in nm, angles in radians unless a name says degrees, and the integral
of a score (1/nm) along a path (nm) is dimensionless.

numpy and mdtraj only (this package runs in an environment without torch): a score function may
still take and return torch tensors, see :func:`loop_integral`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import mdtraj
import numpy as np

Torsion = Literal["phi", "psi"]


@dataclass(frozen=True)
class TorsionRotor:
    """The rigid motion that turns one backbone dihedral.

    Attributes
    ----------
    atoms
        (4,) atom indices (a, b, c, d) of the dihedral; the axis runs from b to c.
    moving
        Sorted indices of the atoms that turn (the side of the b–c bond that holds c; includes c,
        which lies on the axis and does not move).
    """

    atoms: tuple[int, int, int, int]
    moving: np.ndarray

    @property
    def axis(self) -> tuple[int, int]:
        """(b, c): the rotation axis runs from atom b to atom c."""
        return self.atoms[1], self.atoms[2]


def _atom(residue: mdtraj.core.topology.Residue, name: str) -> int:
    for atom in residue.atoms:
        if atom.name == name:
            return atom.index
    raise ValueError(f"residue {residue} (index {residue.index}) has no atom {name!r}")


def torsion_atoms(topology: mdtraj.Topology, residue: int, torsion: Torsion) -> tuple[int, int, int, int]:
    """Atom indices of φ (C(i-1), N, CA, C) or ψ (N, CA, C, N(i+1)) of residue ``residue`` (mdtraj index).

    Raises ValueError for a residue without the neighbour the dihedral needs (e.g. a cap) or
    without backbone atoms N, CA, C.
    """
    if not 0 <= residue < topology.n_residues:
        raise ValueError(f"residue index {residue} out of range: the topology has {topology.n_residues} residues")
    current = topology.residue(residue)
    n, ca, c = (_atom(current, name) for name in ("N", "CA", "C"))
    if torsion == "phi":
        if residue == 0 or topology.residue(residue - 1).chain.index != current.chain.index:
            raise ValueError(f"residue {current} has no preceding residue, so no phi")
        return _atom(topology.residue(residue - 1), "C"), n, ca, c
    if torsion == "psi":
        if residue + 1 >= topology.n_residues or topology.residue(residue + 1).chain.index != current.chain.index:
            raise ValueError(f"residue {current} has no following residue, so no psi")
        return n, ca, c, _atom(topology.residue(residue + 1), "N")
    raise ValueError(f"torsion must be 'phi' or 'psi', got {torsion!r}")


def side_of_bond(bonds: np.ndarray, n_atoms: int, b: int, c: int) -> np.ndarray:
    """Sorted atom indices connected to ``c`` once the bond b–c is cut (``c`` included, ``b`` not).

    ``bonds``: (n_bonds, 2) atom index pairs. Raises ValueError when b–c is not a bond or lies in a
    ring (proline's N–CA): then no rigid rotation turns the dihedral.
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    pairs = {tuple(sorted(map(int, pair))) for pair in bonds}
    if tuple(sorted((b, c))) not in pairs:
        raise ValueError(f"atoms {b} and {c} are not bonded; pass the topology's bonds")
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in pairs:
        if {i, j} != {b, c}:
            neighbours[i].append(j)
            neighbours[j].append(i)
    seen, stack = {c}, [c]
    while stack:
        for k in neighbours[stack.pop()]:
            if k not in seen:
                seen.add(k)
                stack.append(k)
    if b in seen:
        raise ValueError(f"bond {b}-{c} lies in a ring: cutting it leaves one piece, so the torsion is not rigid")
    return np.array(sorted(seen), dtype=np.int64)


def topology_bonds(topology: mdtraj.Topology) -> np.ndarray:
    """(n_bonds, 2) bonds of ``topology``; standard-residue bonds are created on a copy if it has none."""
    if topology.n_bonds == 0:
        topology = topology.copy()
        topology.create_standard_bonds()
    if topology.n_bonds == 0:
        raise ValueError("topology has no bonds, even after create_standard_bonds(); pass bonds explicitly")
    return np.array([(a.index, b.index) for a, b in topology.bonds], dtype=np.int64)


def torsion_rotor(
    topology: mdtraj.Topology, residue: int, torsion: Torsion, bonds: np.ndarray | None = None
) -> TorsionRotor:
    """The atoms that turn φ or ψ of ``residue``; ``topology``'s atoms are the positions' atoms.

    ``bonds`` (n_bonds, 2) in the same indexing, e.g. :class:`jamun.data.graph.TopologyFeatures`'
    ``bonds`` for a heavy-atom topology; default: the topology's own (see :func:`topology_bonds`).
    """
    atoms = torsion_atoms(topology, residue, torsion)
    bonds = topology_bonds(topology) if bonds is None else bonds
    return TorsionRotor(atoms=atoms, moving=side_of_bond(bonds, topology.n_atoms, atoms[1], atoms[2]))


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``angle`` (rad) about ``axis`` (any length > 0), Rodrigues."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def rotate_torsion(positions: np.ndarray, rotor: TorsionRotor, angle: float) -> np.ndarray:
    """A copy of ``positions`` (n, 3) with ``rotor``'s dihedral turned by ``angle`` rad (float64)."""
    out = np.array(positions, dtype=np.float64)
    b, c = rotor.axis
    origin = out[b].copy()
    rotation = rotation_matrix(out[c] - origin, angle)
    out[rotor.moving] = (out[rotor.moving] - origin) @ rotation.T + origin
    return out


def dihedral(positions: np.ndarray, atoms: Sequence[int]) -> float:
    """Dihedral angle (rad, in (-π, π]) of four atoms of ``positions`` (n, 3), mdtraj's convention."""
    p = np.asarray(positions, dtype=np.float64)[list(atoms)]
    b1, b2, b3 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return float(np.arctan2(np.dot(np.cross(n1, n2), b2 / np.linalg.norm(b2)), np.dot(n1, n2)))


def square_loop_angles(size_deg: float, points_per_side: int) -> np.ndarray:
    """(4 K + 1, 2) (Δφ, Δψ) in rad along the square (0,0)->(d,0)->(d,d)->(0,d)->(0,0), K segments a side.

    Counter-clockwise in the (φ, ψ) plane, so a field with positive curl ∂_φ s_ψ - ∂_ψ s_φ gives a
    positive integral. The last row repeats the first.
    """
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    d = np.deg2rad(size_deg)
    t = np.linspace(0.0, d, points_per_side + 1)[:-1]
    sides = [
        np.stack([t, np.zeros_like(t)], 1),
        np.stack([np.full_like(t, d), t], 1),
        np.stack([d - t, np.full_like(t, d)], 1),
        np.stack([np.zeros_like(t), d - t], 1),
    ]
    return np.concatenate([*sides, np.zeros((1, 2))])


def torsion_loop(
    y0: np.ndarray, phi: TorsionRotor, psi: TorsionRotor, size_deg: float, points_per_side: int
) -> np.ndarray:
    """(4 K + 1, n, 3) float64 positions y(Δφ, Δψ) around the square of :func:`square_loop_angles`.

    y(Δφ, Δψ) turns ψ by Δψ first and then φ by Δφ; φ's rotation carries ψ's atoms rigidly, so the
    order does not matter and ψ stays at ψ0 + Δψ. ``phi`` and ``psi`` are the rotors of the same
    residue (their axes share CA). The last structure equals the first.
    """
    if phi.atoms[2] != psi.atoms[1]:
        raise ValueError(f"phi and psi rotors of different residues (phi axis {phi.axis}, psi axis {psi.axis})")
    y0 = np.asarray(y0, dtype=np.float64)
    return np.stack([
        rotate_torsion(rotate_torsion(y0, psi, dpsi), phi, dphi)
        for dphi, dpsi in square_loop_angles(size_deg, points_per_side)
    ])  # fmt: skip


def _as_array(value: Any) -> np.ndarray:
    """float64 numpy copy of a numpy array or a (CPU or GPU, possibly grad-tracking) torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def loop_integral_from_scores(scores: np.ndarray, positions: np.ndarray) -> float:
    """Σ_k ½ (s_k + s_{k+1}) · (y_{k+1} - y_k) over all atoms, float64 (trapezoid rule).

    ``scores`` and ``positions``: (m, n, 3), the scores at the m points of a path; a closed loop
    repeats its first point last.
    """
    s, y = _as_array(scores), _as_array(positions)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and positions {y.shape} differ in shape")
    return float(np.sum(0.5 * (s[1:] + s[:-1]) * np.diff(y, axis=0)))


def loop_magnitude(scores: np.ndarray, positions: np.ndarray) -> float:
    """Σ_k Σ_atoms |½ (s_k + s_{k+1})| |y_{k+1} - y_k|: the scale against which an integral is ~0."""
    s, y = _as_array(scores), _as_array(positions)
    mean = 0.5 * (s[1:] + s[:-1])
    return float(np.sum(np.linalg.norm(mean, axis=-1) * np.linalg.norm(np.diff(y, axis=0), axis=-1)))


def loop_scores(score_fn: Callable[[Any], Any], positions: Any) -> np.ndarray:
    """(m, n, 3) float64 scores ``score_fn(positions[k])`` along a loop; the last point, equal to the
    first, reuses its score. ``positions`` may be a numpy array or a torch tensor: ``score_fn`` gets
    ``positions[k]`` as it is and may return either."""
    scores = [_as_array(score_fn(positions[k])) for k in range(len(positions) - 1)]
    return np.stack([*scores, scores[0]])


def loop_integral(score_fn: Callable[[Any], Any], positions: Any) -> float:
    """∮ s · dy along the closed path ``positions`` (4 K + 1, n, 3) (e.g. from :func:`torsion_loop`).

    ``score_fn`` maps one structure (n, 3) to its score (n, 3) (numpy or torch); ~0 for a
    gradient field, the flux of the curl through the loop otherwise.
    """
    return loop_integral_from_scores(loop_scores(score_fn, positions), positions)
