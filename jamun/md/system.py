"""The OpenMM system of a built peptide: force field, implicit or explicit solvent, HMR
(docs/design.md §3).

The system made here has no restraints and no barostat: the protocol stages add and remove those
(jamun/md/protocol.py), so the same system serves every stage and is what a resume reloads.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit

from jamun.md.settings import MDSettings
from jamun.peptides import FORCEFIELD_FILES, implicit_forcefield, seeded_random

EXPLICIT_FORCEFIELD_FILES = ("amber99sbildn.xml", "tip3p.xml")


@dataclass
class PreparedSystem:
    """An OpenMM system with its positions (all atoms, nm) and the solute's topology.

    The solute (peptide) is the first `solute.getNumAtoms()` atoms: Modeller appends solvent after
    it. `solvent` counts the added residues by name (e.g. {"HOH": 455, "NA": 1}).
    """

    system: openmm.System
    positions: unit.Quantity
    solute: app.Topology
    solvent: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def n_solute(self) -> int:
        return self.solute.getNumAtoms()

    @property
    def periodic(self) -> bool:
        return self.system.usesPeriodicBoundaryConditions()


def forcefield_files(protocol: str) -> tuple[str, ...]:
    """OpenMM force-field files of `protocol` ("implicit" or "explicit")."""
    return EXPLICIT_FORCEFIELD_FILES if protocol == "explicit" else FORCEFIELD_FILES


def load_system_pdb(system_pdb: Path | str) -> app.PDBFile:
    """Read a built peptide (jamun build); FileNotFoundError naming the path if missing."""
    system_pdb = Path(system_pdb)
    if not system_pdb.is_file():
        raise FileNotFoundError(f"system PDB {system_pdb} not found; create it with `jamun build`")
    return app.PDBFile(str(system_pdb))


def create_system(topology: app.Topology, positions: unit.Quantity, settings: MDSettings,
                  *, seed: int = 0) -> PreparedSystem:
    """OpenMM system for the settings' protocol (no restraints, no barostat yet).

    implicit: amber99sbildn + amber99_obc (OpenMM's native OBC GB force), NoCutoff, HBonds.
    explicit: amber99sbildn + TIP3P, cubic box with `padding_nm` solute-to-image distance,
    neutralizing Na+/Cl- (+ `ionic_strength_molar`), PME with `cutoff_nm`, HBonds.
    Optional HMR through `hydrogen_mass_amu`. `seed` fixes where ions replace waters.
    """
    hydrogen_mass = None if settings.hydrogen_mass_amu is None else settings.hydrogen_mass_amu * unit.amu
    if settings.protocol == "implicit":
        system = implicit_forcefield().createSystem(
            topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, hydrogenMass=hydrogen_mass)
        return PreparedSystem(system, positions, topology)
    forcefield = app.ForceField(*EXPLICIT_FORCEFIELD_FILES)
    modeller = app.Modeller(topology, positions)
    with seeded_random(seed):  # Modeller picks the waters that become ions at random
        modeller.addSolvent(forcefield, model="tip3p", padding=settings.padding_nm * unit.nanometer,
                            boxShape="cube", positiveIon="Na+", negativeIon="Cl-",
                            ionicStrength=settings.ionic_strength_molar * unit.molar, neutralize=True)
    system = forcefield.createSystem(
        modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=settings.cutoff_nm * unit.nanometer,
        constraints=app.HBonds, hydrogenMass=hydrogen_mass)
    solvent = collections.Counter(r.name for r in list(modeller.topology.residues())[topology.getNumResidues():])
    return PreparedSystem(system, modeller.positions, topology, dict(solvent))
