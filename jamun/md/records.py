"""What a run records: `run.json` in the work folder (inputs' fingerprint, platform choice, solvent)
and the `md.json` that comes with every finished trajectory (docs/design.md §3).

run.json is what a resume must match and reuse; md.json is what a reader of the trajectory needs
to know how it was made (force field, protocol, seeds, platform, throughput).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import openmm
import openmm.app as app
import openmm.unit as unit

from jamun.atomic import write_json_atomic
from jamun.md.platform import ns_per_day
from jamun.md.protocol import Stage
from jamun.md.settings import MDSettings
from jamun.md.system import PreparedSystem, forcefield_files
from jamun.sequence import RESIDUES

RUN_JSON = "run.json"
CAPS = ("ACE", "NME")
_ONE_LETTER = {three: one for one, three in RESIDUES.items()}


def fingerprint(system_pdb: Path, settings: MDSettings, length_ns: float, seed: int) -> dict[str, Any]:
    """What a work folder must match to be resumed. The platform is left out: states are portable."""
    physics = {k: v for k, v in dataclasses.asdict(settings).items() if k != "platform"}
    return {"system_pdb_sha256": hashlib.sha256(system_pdb.read_bytes()).hexdigest(),
            "settings": physics, "length_ns": length_ns, "seed": seed}


def box_volume(state: openmm.State) -> float:
    """Periodic box volume of `state`, nm^3."""
    return state.getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)


def new_run(fingerprint: dict[str, Any], platform: Mapping[str, Any], prepared: PreparedSystem,
            start: openmm.State) -> dict[str, Any]:
    """run.json of a fresh run: fingerprint, platform record (jamun.md.platform.choose_platform),
    solvent and atom counts, resume count and, for a box, the minimized start's volume."""
    return {"fingerprint": fingerprint, **platform, "solvent": prepared.solvent,
            "n_atoms_total": prepared.system.getNumParticles(), "resumes": 0,
            "box_volume_nm3_start": box_volume(start) if prepared.periodic else None}


def read_run(work: Path) -> dict[str, Any]:
    """run.json of work folder `work` (OSError or ValueError if missing or torn)."""
    return json.loads((work / RUN_JSON).read_text())


def write_run(work: Path, run: Mapping[str, Any]) -> None:
    write_json_atomic(work / RUN_JSON, run, indent=1)


def sequence_of(topology: app.Topology) -> str:
    """One-letter sequence of a capped peptide ("?" for a residue outside jamun.sequence.RESIDUES)."""
    return "".join(_ONE_LETTER.get(r.name, "?") for r in topology.residues() if r.name not in CAPS)


def md_record(run: Mapping[str, Any], settings: MDSettings, topology: app.Topology, *, n_frames: int,
              length_ns: float, seed: int, stages: list[Stage], clock: Mapping[str, float],
              final_state: openmm.State) -> dict[str, Any]:
    """The md.json of a finished run: how the trajectory was made and what it cost.

    `clock` holds the wall/CPU totals over all resumed segments; `final_state` needs its energy.
    """
    explicit = settings.protocol == "explicit"
    steps = {s.name: s.steps for s in stages}
    metadata = {
        "peptide": sequence_of(topology),
        "system_pdb_sha256": run["fingerprint"]["system_pdb_sha256"],
        "forcefield": "amber99sbildn",
        "forcefield_files": list(forcefield_files(settings.protocol)),
        "water_model": "tip3p" if explicit else None,
        "implicit_model": None if explicit else "OBC (amber99_obc.xml)",
        "protocol": settings.protocol,
        "integrator": "LangevinMiddleIntegrator",
        "timestep_ps": settings.timestep_ps,
        "steps": sum(steps.values()),
        "steps_per_stage": steps,
        "temperature_k": settings.temperature_k,
        "friction_per_ps": settings.friction_per_ps,
        "hydrogen_mass_amu": settings.hydrogen_mass_amu,
        "constraints": "HBonds",
        "restraint_k": settings.restraint_k,
        "nvt_ps": settings.nvt_ps,
        "npt_ps": settings.npt_ps if explicit else 0.0,
        "length_ns": length_ns,
        "save_every_ps": settings.save_every_ps,
        "checkpoint_every_ps": settings.checkpoint_every_ps,
        "n_frames": n_frames,
        "seed": seed,
        "platform": run["platform"],
        "platform_ns_per_day": run["platform_ns_per_day"],  # the 'auto' measurement, else {}
        "threads": run["threads"],  # OpenMM CPU threads (None: all cores); other platforms ignore it
        "openmm_version": openmm.__version__,
        **clock,
        # Production throughput: stepping, frame output and checkpoints; not setup/equilibration.
        "ns_per_day": ns_per_day(length_ns, clock["production_wall_seconds"]),
        "resumes": run["resumes"],
        "n_atoms_protein": topology.getNumAtoms(),
        "n_atoms_total": run["n_atoms_total"],
        "solvent": run["solvent"],
        "final_potential_energy_kj_mol": final_state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
    }
    if explicit:
        metadata["explicit"] = {"padding_nm": settings.padding_nm, "cutoff_nm": settings.cutoff_nm,
                                "pressure_bar": settings.pressure_bar,
                                "ionic_strength_molar": settings.ionic_strength_molar,
                                "box_volume_nm3_start": run["box_volume_nm3_start"],
                                "box_volume_nm3_end": box_volume(final_state)}
    return metadata
