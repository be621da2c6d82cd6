"""Building capped peptides: validation, chirality, atom counts, minimization, atomic writes."""

import itertools

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from jamun.peptides import build_peptide, ca_signed_volumes, implicit_forcefield, minimize, peptide_model
from jamun.sequence import RESIDUES, residue_label, validate_sequence

# Atoms of each residue inside a chain at pH 7 (HIS as HID), from the amber99sbildn templates'
# chemistry, written out independently of the builder. Caps: ACE 6, NME 6.
ATOMS_PER_RESIDUE = {
    "ALA": 10, "ARG": 24, "ASN": 14, "ASP": 12, "CYS": 11, "GLN": 17, "GLU": 15, "GLY": 7, "HIS": 17,
    "ILE": 19, "LEU": 19, "LYS": 22, "MET": 17, "PHE": 20, "PRO": 14, "SER": 11, "THR": 14, "TRP": 24,
    "TYR": 21, "VAL": 16,
}
ALL_DIPEPTIDES = ["".join(p) for p in itertools.product(sorted(RESIDUES), repeat=2)]


def expected_atoms(sequence: str) -> int:
    return 12 + sum(ATOMS_PER_RESIDUE[RESIDUES[c]] for c in sequence)


def signed_volume(xyz: np.ndarray, center: int, a: int, b: int, c: int) -> float:
    """det[a - center, b - center, c - center] (nm^3): its sign is the handedness at `center`."""
    return float(np.linalg.det(np.stack([xyz[a] - xyz[center], xyz[b] - xyz[center], xyz[c] - xyz[center]])))


def chirality_volumes(topology: app.Topology, xyz: np.ndarray) -> list[tuple[str, float]]:
    """Signed volumes that must be positive for L-amino acids, 2S,3S-ILE and 2S,3R-THR.

    CA: det[N, C, CB] > 0 (all L residues; checked against pdbfixer's CCD templates).
    ILE CB (3S): det[CA, CG1, CG2] > 0. THR CB (3R): det[OG1, CA, CG2] < 0, so its negative is used.
    """
    out = []
    for residue in topology.residues():
        i = {atom.name: atom.index for atom in residue.atoms()}
        label = f"{residue.name}{residue.index}"
        if "CB" in i and "CA" in i:
            out.append((f"{label} CA", signed_volume(xyz, i["CA"], i["N"], i["C"], i["CB"])))
        if residue.name == "ILE":
            out.append((f"{label} CB", signed_volume(xyz, i["CB"], i["CA"], i["CG1"], i["CG2"])))
        if residue.name == "THR":
            out.append((f"{label} CB", -signed_volume(xyz, i["CB"], i["OG1"], i["CA"], i["CG2"])))
    return out


def assert_chirality(topology: app.Topology, xyz: np.ndarray, sequence: str) -> None:
    volumes = chirality_volumes(topology, xyz)
    n_expected = sum(c != "G" for c in sequence) + sequence.count("I") + sequence.count("T")
    assert len(volumes) == n_expected
    wrong = [name for name, v in volumes if not v > 1e-4]
    assert not wrong, f"{sequence}: wrong handedness at {wrong}"


def heavy_bond_lengths(topology: app.Topology, xyz: np.ndarray) -> np.ndarray:
    """Lengths (nm) of bonds between heavy atoms."""
    pairs = [(a.index, b.index) for a, b in topology.bonds() if "H" not in (a.element.symbol, b.element.symbol)]
    return np.array([np.linalg.norm(xyz[i] - xyz[j]) for i, j in pairs])


def max_bond_strain(topology: app.Topology, xyz: np.ndarray) -> float:
    """Largest |r / r0 - 1| over all bonds, r0 the amber99sbildn equilibrium length."""
    system = implicit_forcefield().createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    bonds = next(f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    worst = 0.0
    for i in range(bonds.getNumBonds()):
        a, b, r0, _ = bonds.getBondParameters(i)
        length = np.linalg.norm(xyz[a] - xyz[b])
        worst = max(worst, abs(length / r0.value_in_unit(unit.nanometer) - 1.0))
    return worst


def reference_context(system: openmm.System, positions) -> openmm.Context:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def as_nm(positions) -> np.ndarray:
    return np.asarray(positions.value_in_unit(unit.nanometer))


def test_validate_sequence_accepts_and_uppercases():
    assert validate_sequence("gn") == "GN"
    assert validate_sequence("ACDEFGHI") == "ACDEFGHI"
    assert residue_label("GN") == "GLY-ASN"
    assert len(RESIDUES) == 20 and set(RESIDUES.values()) == set(ATOMS_PER_RESIDUE)


@pytest.mark.parametrize("bad, fragment", [("AXG", "'X'"), ("", "1..8"), ("AAAAAAAAA", "1..8"), ("A1", "'1'")])
def test_validate_sequence_errors_name_input_and_choices(bad, fragment):
    with pytest.raises(ValueError) as error:
        validate_sequence(bad)
    message = str(error.value)
    assert repr(bad) in message and fragment in message
    assert "ACDEFGHIKLMNPQRSTVWY" in message


def test_bad_sequence_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="'X'"):
        build_peptide("X", tmp_path / "out" / "system.pdb")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_all_400_dipeptides_minimized_have_l_chirality_and_counts():
    """What build_peptide writes, minus the file: ~30 s quiet, ~50 s on 2 busy cores.

    After minimization, because that is where chirality broke before (a pdbfixer-placed PRO
    ring inverted CA in PW and CP).
    """
    for sequence in ALL_DIPEPTIDES:
        model = peptide_model(sequence)
        xyz = as_nm(minimize(model.topology, model.positions))
        assert model.topology.getNumAtoms() == expected_atoms(sequence), sequence
        assert [r.name for r in model.topology.residues()] == ["ACE", *(RESIDUES[c] for c in sequence), "NME"]
        assert_chirality(model.topology, xyz, sequence)
        # Peptide heavy-atom bonds span C=O 0.123 to C-S 0.182 nm; a misplaced ring atom would not.
        lengths = heavy_bond_lengths(model.topology, xyz)
        assert lengths.min() > 0.118 and lengths.max() < 0.19, sequence


# Through the file: 1-, 3- and 8-residue peptides, PRO both sides, aromatics, ILE/THR.
MINIMIZED = ["A", "W", "GPW", "PW", "CP", "FY", "WH", "IT", "CM", "ACDEFGHI"]


@pytest.mark.parametrize("sequence", MINIMIZED)
def test_build_minimized_keeps_chirality(tmp_path, sequence):
    out = build_peptide(sequence, tmp_path / sequence / "system.pdb")
    pdb = app.PDBFile(str(out))
    xyz = as_nm(pdb.positions)
    assert pdb.topology.getNumAtoms() == expected_atoms(sequence)
    assert_chirality(pdb.topology, xyz, sequence)
    # Minimized: bonds near ideal (rings closed, PRO included) and the force field accepts it.
    assert max_bond_strain(pdb.topology, xyz) < 0.03
    assert not list(tmp_path.joinpath(sequence).glob(".*tmp"))
    system = implicit_forcefield().createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    context = reference_context(system, pdb.positions)
    forces = context.getState(getForces=True).getForces(asNumpy=True)
    forces = forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert np.abs(forces).max() < 2000.0  # a local minimum up to PDB rounding, not a strained start


def test_build_is_deterministic(tmp_path):
    first = build_peptide("CP", tmp_path / "a.pdb").read_text().splitlines()[1:]  # line 0: date
    assert build_peptide("CP", tmp_path / "b.pdb").read_text().splitlines()[1:] == first


def test_library_chirality_check_agrees(tmp_path):
    model = peptide_model("AW")
    volumes = ca_signed_volumes(model.topology, model.positions)
    assert set(volumes) == {"ALA1", "TRP2"} and all(v > 0 for v in volumes.values())
    mirrored = model.positions * -1.0  # a mirror image is all-D
    assert all(v < 0 for v in ca_signed_volumes(model.topology, mirrored).values())


def test_alanine_dipeptide_atoms_and_histidine_variant():
    assert peptide_model("A").topology.getNumAtoms() == 22
    his = next(r for r in peptide_model("H").topology.residues() if r.name == "HIS")
    names = {atom.name for atom in his.atoms()}
    assert "HD1" in names and "HE2" not in names  # HID at pH 7, kept under the name HIS


def test_minimization_lowers_energy():
    model = peptide_model("PW")
    system = implicit_forcefield().createSystem(model.topology, nonbondedMethod=app.NoCutoff,
                                                constraints=app.HBonds)

    def energy(positions):
        state = reference_context(system, positions).getState(getEnergy=True)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    assert energy(minimize(model.topology, model.positions)) < energy(model.positions) - 10.0
