"""Peptide sequences and building capped peptides (ACE-...-NME) offline.

Route (docs/design.md §11): write a heavy-atom skeleton (ACE C/O/CH3, backbone N/CA/C/O and CB of every
residue, the proline ring, NME N/C) in an idealised beta-strand geometry with L-chirality, let pdbfixer add the
missing side-chain heavy atoms from its templates and OpenMM's Modeller add hydrogens at pH 7, then
minimize with amber99sbildn + OBC implicit solvent. No tleap, no downloads. Letting pdbfixer add
whole missing residues instead gives D-residues for most pairs, hence the explicit skeleton.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from pdbfixer import PDBFixer

from jamun.atomic import write_text_atomic
from jamun.geometry import CHIRALITY_ATOMS, chirality_quads, signed_volumes
from jamun.sequence import RESIDUES, validate_sequence

FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")

# Ideal backbone geometry (Engh & Huber 1991, Acta Cryst. A47:392): lengths in nm, angles in deg.
_BOND = {"N-CA": 0.1458, "CA-C": 0.1525, "C-N": 0.1329, "C-O": 0.1231, "CA-CB": 0.1530,
         "C-CH3": 0.1520, "N-CH3": 0.1458, "CB-CG": 0.1492, "CG-CD": 0.1503}
_ANGLE = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7, "N-C-O": 122.7, "N-CA-CB": 110.5,
          "N-CA-CB(PRO)": 103.0, "CA-CB-CG": 104.5, "CB-CG-CD": 106.1}
# Proline ring in the C-gamma-endo pucker; chi1, chi2 (deg) chosen so that the ring closes with
# N-CD = 0.147 nm. Placed here, not by pdbfixer: its template fit plus soft-core dynamics could
# leave CD on the wrong side of N, and minimization then inverted CA (seen for PW and CP).
_PRO_CHI1, _PRO_CHI2 = 28.0, -33.0
# Beta-strand backbone; proline's ring fixes phi near -65 deg, so it starts there (less strain).
_PHI, _PSI, _OMEGA, _PHI_PRO = -120.0, 130.0, 180.0, -65.0
# Dihedral C-N-CA-CB that puts CB on the L (2S) side; checked by the signed-volume test.
_CB_DIHEDRAL = -122.6


def _place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float,
           dihedral: float) -> np.ndarray:
    """Position of atom d with |cd| = bond, angle bcd and dihedral abcd (deg), by NeRF.

    Parsons et al. 2005, J. Comput. Chem. 26:1063.
    """
    theta, phi = np.radians(angle), np.radians(dihedral)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d_local = bond * np.array([-np.cos(theta), np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)])
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


def _skeleton(sequence: str) -> list[tuple[int, str, str, np.ndarray]]:
    """Heavy-atom skeleton of ACE-sequence-NME: (residue index, residue name, atom name, pos nm)."""
    names = [RESIDUES[c] for c in sequence]
    # Main chain CH3(ACE) C(ACE) [N CA C]* N(NME) C(NME), built bond by bond.
    chain = [np.zeros(3), np.array([_BOND["C-CH3"], 0.0, 0.0])]
    ang = np.radians(180.0 - _ANGLE["CA-C-N"])
    chain.append(chain[1] + _BOND["C-N"] * np.array([np.cos(ang), np.sin(ang), 0.0]))
    for name in names:
        phi = _PHI_PRO if name == "PRO" else _PHI
        chain.append(_place(*chain[-3:], _BOND["N-CA"], _ANGLE["C-N-CA"], _OMEGA))   # CA_i
        chain.append(_place(*chain[-3:], _BOND["CA-C"], _ANGLE["N-CA-C"], phi))      # C_i
        chain.append(_place(*chain[-3:], _BOND["C-N"], _ANGLE["CA-C-N"], _PSI))      # N_i+1
    chain.append(_place(*chain[-3:], _BOND["N-CH3"], _ANGLE["C-N-CA"], _OMEGA))      # C(NME)

    def carbonyl_o(c: np.ndarray, n_next: np.ndarray, ca_next: np.ndarray) -> np.ndarray:
        # Trans peptide: O_i is cis to CA_i+1 across the C-N bond.
        return _place(ca_next, n_next, c, _BOND["C-O"], _ANGLE["N-C-O"], 0.0)

    atoms = [(0, "ACE", "CH3", chain[0]), (0, "ACE", "C", chain[1]),
             (0, "ACE", "O", carbonyl_o(chain[1], chain[2], chain[3]))]
    for i, name in enumerate(names, start=1):
        n, ca, c, n_next, ca_next = chain[3 * i - 1: 3 * i + 4]
        atoms += [(i, name, "N", n), (i, name, "CA", ca), (i, name, "C", c),
                  (i, name, "O", carbonyl_o(c, n_next, ca_next))]
        if name != "GLY":
            angle = _ANGLE["N-CA-CB(PRO)" if name == "PRO" else "N-CA-CB"]
            cb = _place(c, n, ca, _BOND["CA-CB"], angle, _CB_DIHEDRAL)
            atoms.append((i, name, "CB", cb))
        if name == "PRO":
            cg = _place(n, ca, cb, _BOND["CB-CG"], _ANGLE["CA-CB-CG"], _PRO_CHI1)
            cd = _place(ca, cb, cg, _BOND["CG-CD"], _ANGLE["CB-CG-CD"], _PRO_CHI2)
            atoms += [(i, name, "CG", cg), (i, name, "CD", cd)]
    last = len(names) + 1
    atoms += [(last, "NME", "N", chain[-2]), (last, "NME", "C", chain[-1])]
    return atoms


def _skeleton_pdb(sequence: str) -> str:
    """PDB text (chain A, residues numbered from 1) of the heavy-atom skeleton."""
    lines = []
    for serial, (index, res, atom, pos) in enumerate(_skeleton(sequence), start=1):
        x, y, z = pos * 10.0  # PDB is in Angstrom
        lines.append(f"ATOM  {serial:5d} {atom:<4s} {res:3s} A{index + 1:4d}    "
                     f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00           {atom[0]:>2s}")
    return "\n".join(lines + ["TER", "END", ""])


@contextlib.contextmanager
def seeded_random(seed: int) -> Iterator[None]:
    """Seed Python's global `random` inside the block and restore its state afterwards.

    OpenMM's Modeller draws from it (methyl hydrogen rotations, ion sites); this makes builds
    reproducible without disturbing anyone else's random stream.
    """
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


@functools.lru_cache(maxsize=1)
def implicit_forcefield() -> app.ForceField:
    """amber99sbildn + OBC implicit solvent (OpenMM's native GB force, fast on Reference)."""
    return app.ForceField(*FORCEFIELD_FILES)


def peptide_model(sequence: str) -> app.Modeller:
    """Unminimized ACE-sequence-NME with all atoms and hydrogens at pH 7 (HIS gets HD1 only).

    Residue names stay standard (HIS, not HID); OpenMM force fields match templates by bonded
    graph, so amber99sbildn picks its HID template from the hydrogens present.
    """
    seq = validate_sequence(sequence)
    # Reference platform: pdbfixer and Modeller.addHydrogens minimize the atoms they add, and the
    # threaded CPU platform makes the result differ from run to run (by ~1e-7 nm, which the final
    # minimization amplifies to ~0.01 nm).
    reference = openmm.Platform.getPlatformByName("Reference")
    fixer = PDBFixer(pdbfile=io.StringIO(_skeleton_pdb(seq)), platform=reference)
    fixer.missingResidues = {}  # the skeleton is complete; only side-chain atoms are missing
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=1)
    modeller = app.Modeller(fixer.topology, fixer.positions)
    # Modeller directly (not fixer.addMissingHydrogens), so nothing is ever looked up online.
    with seeded_random(0):
        modeller.addHydrogens(pH=7.0, platform=reference)
    return modeller


def minimize(topology: app.Topology, positions: unit.Quantity, *, tolerance_kj_mol_nm: float = 10.0,
             max_iterations: int = 0) -> unit.Quantity:
    """Local energy minimization with amber99sbildn + OBC (NoCutoff), Reference platform.

    Unconstrained: X-H bonds relax to their force-field lengths (the HBonds constraint lengths),
    ~2x faster than minimizing with constraints. Returns positions (n_atoms, 3) nm as a Quantity.
    """
    system = implicit_forcefield().createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance_kj_mol_nm, max_iterations)
    return context.getState(getPositions=True).getPositions()


def write_pdb_atomic(topology: app.Topology, positions: unit.Quantity, out_pdb: Path | str) -> Path:
    """Write a PDB file atomically (jamun.atomic)."""
    buffer = io.StringIO()
    app.PDBFile.writeFile(topology, positions, buffer, keepIds=True)
    return write_text_atomic(out_pdb, buffer.getvalue())


def ca_signed_volumes(topology: app.Topology, positions: unit.Quantity) -> dict[str, float]:
    """det[N - CA, C - CA, CB - CA] (nm^3) per residue with a CB, keyed "ALA1"; > 0 means L."""
    residues = [r for r in topology.residues() if set(CHIRALITY_ATOMS) <= {a.name for a in r.atoms()}]
    quads = chirality_quads({atom.name: atom.index for atom in r.atoms()} for r in residues)
    xyz = np.asarray(positions.value_in_unit(unit.nanometer))[None]
    volumes = signed_volumes(xyz, quads)[0]
    return {f"{r.name}{r.index}": float(v) for r, v in zip(residues, volumes)}


def build_peptide(sequence: str, out_pdb: Path | str) -> Path:
    """Build capped ACE-sequence-NME with all hydrogens, minimized, L-chirality; write `out_pdb`.

    The sequence is validated before anything is written, and the minimized structure is checked
    for L-chirality at every CA (RuntimeError otherwise, nothing written). Returns the path.
    """
    model = peptide_model(sequence)
    positions = minimize(model.topology, model.positions)
    inverted = [name for name, volume in ca_signed_volumes(model.topology, positions).items() if volume <= 0]
    if inverted:
        raise RuntimeError(f"building {sequence!r} inverted CA chirality at {inverted}; nothing written")
    return write_pdb_atomic(model.topology, positions, out_pdb)
