"""Torsion loops and the score line integral: rotations turn exactly one mdtraj dihedral, a gradient
field integrates to ~0 around a loop, a field of known curl gives the Stokes value and scales with area."""

from __future__ import annotations

import math
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from jamun.analysis.score_curl import (
    loop_integral,
    loop_integral_from_scores,
    loop_magnitude,
    loop_scores,
    rotate_torsion,
    side_of_bond,
    square_loop_angles,
    torsion_loop,
    torsion_rotor,
)
from jamun.data.graph import topology_features

DATA = Path(__file__).parent / "data"
PEPTIDES = {"AA": "ace_ala_ala_nme_heavy.pdb", "SG": "ace_ser_gly_nme_heavy.pdb"}


@pytest.fixture(scope="module")
def peptides() -> dict:
    """{"AA": (topology, bonds, positions (n, 3) nm float64), "SG": ...}: heavy atoms only."""
    result = {}
    for name, file in PEPTIDES.items():
        trajectory = mdtraj.load_pdb(DATA / file)
        features = topology_features(trajectory.topology)
        assert np.array_equal(features.heavy_atom_indices, np.arange(trajectory.n_atoms))
        result[name] = (trajectory.topology, features.bonds, trajectory.xyz[0].astype(np.float64))
    return result


def backbone_angles(topology: mdtraj.Topology, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(n_frames, n_residues) phi and psi in degrees, from mdtraj."""
    trajectory = mdtraj.Trajectory(np.stack(frames), topology)
    return np.rad2deg(mdtraj.compute_phi(trajectory)[1]), np.rad2deg(mdtraj.compute_psi(trajectory)[1])


def wrapped(degrees: np.ndarray) -> np.ndarray:
    return (degrees + 180.0) % 360.0 - 180.0


@pytest.mark.parametrize("name", list(PEPTIDES))
@pytest.mark.parametrize("torsion", ["phi", "psi"])
def test_rotation_turns_exactly_one_mdtraj_dihedral(peptides: dict, name: str, torsion: str) -> None:
    topology, bonds, x = peptides[name]
    for residue in (1, 2):  # the two amino acids; mdtraj's angle columns are in the same order
        rotor = torsion_rotor(topology, residue, torsion, bonds)
        for delta in (7.0, -12.5):
            y = rotate_torsion(x, rotor, math.radians(delta))
            phi, psi = backbone_angles(topology, [x, y])
            expected = np.zeros(2)
            expected[residue - 1] = delta
            changed, unchanged = (phi, psi) if torsion == "phi" else (psi, phi)
            np.testing.assert_allclose(wrapped(changed[1] - changed[0]), expected, atol=1e-3)
            np.testing.assert_allclose(wrapped(unchanged[1] - unchanged[0]), 0.0, atol=1e-3)
            # rigid about a bond: every bond length is kept, the N-terminal side does not move
            lengths = [np.linalg.norm(p[bonds[:, 0]] - p[bonds[:, 1]], axis=1) for p in (x, y)]
            np.testing.assert_allclose(lengths[1], lengths[0], atol=1e-12)
            fixed = np.setdiff1d(np.arange(len(x)), rotor.moving)
            np.testing.assert_array_equal(y[fixed], x[fixed])


def test_rotor_sides(peptides: dict) -> None:
    topology, bonds, _ = peptides["AA"]
    names = lambda rotor: {(topology.atom(i).residue.index, topology.atom(i).name) for i in rotor.moving}  # noqa: E731
    phi, psi = torsion_rotor(topology, 1, "phi", bonds), torsion_rotor(topology, 1, "psi", bonds)
    assert {(1, "CA"), (1, "CB"), (1, "C"), (1, "O"), (2, "N"), (3, "C")} <= names(phi)
    assert not names(phi) & {(0, "C"), (0, "CH3"), (1, "N")}
    assert {(1, "C"), (1, "O"), (2, "N"), (3, "C")} <= names(psi)
    assert not names(psi) & {(1, "CA"), (1, "CB"), (1, "N")}
    with pytest.raises(ValueError, match="has no atom 'N'"):  # the ACE cap has no phi
        torsion_rotor(topology, 0, "phi", bonds)
    with pytest.raises(ValueError, match="no following residue"):
        torsion_rotor(topology.subset(range(13)), 2, "psi")  # the second ALA without the NME cap
    with pytest.raises(ValueError, match="ring"):
        side_of_bond(np.array([[0, 1], [1, 2], [2, 0], [2, 3]]), 4, 0, 1)


def test_loop_visits_the_square_and_closes(peptides: dict) -> None:
    topology, bonds, x = peptides["SG"]
    phi, psi = torsion_rotor(topology, 1, "phi", bonds), torsion_rotor(topology, 1, "psi", bonds)
    loop = torsion_loop(x, phi, psi, 10.0, 4)
    assert loop.shape == (17, len(x), 3)
    np.testing.assert_allclose(loop[-1], loop[0], atol=1e-12)
    phis, psis = backbone_angles(topology, list(loop))
    measured = np.stack([wrapped(phis[:, 0] - phis[0, 0]), wrapped(psis[:, 0] - psis[0, 0])], 1)
    np.testing.assert_allclose(measured, np.rad2deg(square_loop_angles(10.0, 4)), atol=1e-3)


def torch_dihedral(y: torch.Tensor, atoms: tuple[int, int, int, int]) -> torch.Tensor:
    p0, p1, p2, p3 = (y[i] for i in atoms)
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
    return torch.atan2(torch.dot(torch.linalg.cross(n1, n2), b2 / b2.norm()), torch.dot(n1, n2))


def pair_energy(y: torch.Tensor, reference: torch.Tensor, k: float = 50.0) -> torch.Tensor:
    """Harmonic springs between all atom pairs with rest lengths from ``reference``: a potential
    that torsions change (a bonds-only one would be blind to them)."""
    i, j = torch.triu_indices(len(y), len(y), 1)
    rest = (reference[i] - reference[j]).norm(dim=1)
    return 0.5 * k * ((y[i] - y[j]).norm(dim=1) - rest).square().sum()


def field(reference: torch.Tensor, curl: float = 0.0, phi_atoms=None, psi_atoms=None):
    """score(y) = -grad pair_energy(y) + curl * sin(phi(y)) grad psi(y), float64, via autograd.

    The second term is the 1-form curl * sin(phi) dpsi, whose exterior derivative is
    curl * cos(phi) dphi ^ dpsi: around the square [phi0, phi0 + d] x [psi0, psi0 + d] it integrates
    to curl * d * (sin(phi0 + d) - sin(phi0)).
    """

    def score(y: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(y).detach().double().requires_grad_(True)
        (gradient,) = torch.autograd.grad(pair_energy(y, reference), y)
        value = -gradient
        if curl:
            (grad_psi,) = torch.autograd.grad(torch_dihedral(y, psi_atoms), y)
            value = value + curl * torch.sin(torch_dihedral(y, phi_atoms)).detach() * grad_psi
        return value

    return score


@pytest.fixture(scope="module")
def noisy_start(peptides: dict) -> tuple:
    topology, bonds, x = peptides["AA"]
    generator = np.random.default_rng(0)
    y0 = x + 0.03 * generator.standard_normal(x.shape)
    rotors = torsion_rotor(topology, 1, "phi", bonds), torsion_rotor(topology, 1, "psi", bonds)
    return torch.from_numpy(x), y0, rotors


def test_gradient_field_integrates_to_zero(noisy_start: tuple) -> None:
    x, y0, (phi, psi) = noisy_start
    score = field(x)
    loop = torsion_loop(y0, phi, psi, 10.0, 20)
    scores = loop_scores(score, torch.from_numpy(loop))  # the score function gets tensors
    integral, magnitude = loop_integral_from_scores(scores, loop), loop_magnitude(scores, loop)
    assert magnitude > 1.0
    assert abs(integral) < 1e-3 * magnitude
    # not trivially zero: along one side the integral is the energy difference, which the closed
    # loop cancels to a small fraction of
    side = slice(0, 21)
    energy = lambda y: float(pair_energy(torch.from_numpy(y), x))  # noqa: E731
    difference = energy(loop[20]) - energy(loop[0])
    assert abs(integral) < 1e-3 * abs(difference)
    assert loop_integral_from_scores(scores[side], loop[side]) == pytest.approx(-difference, rel=1e-3)


def test_known_curl_matches_stokes_and_scales_with_area(noisy_start: tuple) -> None:
    x, y0, (phi, psi) = noisy_start
    curl = 20.0
    score = field(x, curl, phi.atoms, psi.atoms)
    phi0 = float(torch_dihedral(torch.from_numpy(y0), phi.atoms))
    integrals, expected = {}, {}
    for size in (10.0, 5.0):
        d = math.radians(size)
        expected[size] = curl * d * (math.sin(phi0 + d) - math.sin(phi0))
        integrals[size] = loop_integral(score, torsion_loop(y0, phi, psi, size, 20))
        assert integrals[size] == pytest.approx(expected[size], rel=1e-3)  # found: 4e-5
    assert abs(expected[10.0]) > 0.1  # cos(phi0) is far from 0: the test has signal
    ratio = integrals[10.0] / integrals[5.0]
    assert ratio == pytest.approx(expected[10.0] / expected[5.0], rel=1e-3)
    assert ratio == pytest.approx(4.0, rel=0.1)  # area scaling; sin(phi) bends it a little (3.77)
