"""The MD protocol of docs/design.md §3: minimize; heavy-atom position restraints during NVT (and,
explicit, NPT with a Monte Carlo barostat); restraints removed; production at constant T
(explicit: and P).

A protocol is a list of :class:`Stage`s over global step numbers; :func:`set_stage_forces` makes a
System (and its live Context) match a stage, so a resume at any step rebuilds the right forces
from the same unrestrained system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import openmm
import openmm.unit as unit

from jamun.md.settings import MDSettings, whole_ratio
from jamun.md.system import PreparedSystem

RESTRAINT_FORCE_NAME = "position_restraints"
RESTRAINT_GROUP = 31  # own force group so its energy can be read alone; every other force is 0
BAROSTAT_FREQUENCY = 25  # steps between Monte Carlo volume moves (OpenMM's default)
MINIMIZE_TOLERANCE_KJ_MOL_NM = 10.0


@dataclass(frozen=True)
class Stage:
    """A stretch of the protocol: global steps [start, start + steps)."""

    name: str
    start: int
    steps: int
    restrained: bool
    barostat: bool

    @property
    def end(self) -> int:
        return self.start + self.steps


def plan_stages(settings: MDSettings, n_frames: int) -> list[Stage]:
    """NVT (restrained), NPT (restrained, explicit only), production; empty stages dropped."""
    explicit = settings.protocol == "explicit"
    restrained = settings.restraint_k > 0
    sizes = [("nvt", settings.steps(settings.nvt_ps), restrained, False),
             ("npt", settings.steps(settings.npt_ps), restrained, explicit),
             ("production", n_frames * settings.steps(settings.save_every_ps), False, explicit)]
    stages, start = [], 0
    for name, steps, restraint, barostat in sizes:
        if steps > 0:
            stages.append(Stage(name, start, steps, restraint, barostat))
            start += steps
    return stages


def frame_count(length_ns: float, settings: MDSettings) -> int:
    """Number of production frames; ValueError unless length_ns is a positive multiple of save_every_ps."""
    if isinstance(length_ns, bool) or not isinstance(length_ns, (int, float)) or not length_ns > 0:
        raise ValueError(f"length_ns must be a positive number of ns, got {length_ns!r}")
    return whole_ratio("length_ns", length_ns * 1000.0, "md.save_every_ps", settings.save_every_ps,
                       shown=f"{length_ns:g} ns ({length_ns * 1000.0:g} ps)")


def derived_seed(seed: int, step: int) -> int:
    """Positive 31-bit seed for the segment starting at `step` (OpenMM treats 0 as 'random')."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] % (2**31 - 2)) + 1


def make_integrator(settings: MDSettings, seed: int) -> openmm.LangevinMiddleIntegrator:
    """LangevinMiddleIntegrator at temperature_k, friction_per_ps, timestep_fs; seed > 0."""
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_k * unit.kelvin,
                                                 settings.friction_per_ps / unit.picosecond,
                                                 settings.timestep_ps * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    return integrator


def minimize(context: openmm.Context, positions: unit.Quantity, settings: MDSettings, seed: int) -> openmm.State:
    """Minimize from `positions`, then draw velocities at temperature_k from (seed, step 0).

    Returns the minimized positions (and box): the start a resume reloads and the restraints' reference.
    """
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, MINIMIZE_TOLERANCE_KJ_MOL_NM, 0)
    context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, derived_seed(seed, 0))
    return context.getState(getPositions=True)


def add_restraints(prepared: PreparedSystem, reference_nm: np.ndarray, k: float) -> None:
    """Harmonic restraints 0.5 k |x - x0|^2 on solute heavy atoms (k kJ/mol/nm^2, x0 (n, 3) nm).

    Uses the minimum-image distance when the system is periodic, so a solute atom crossing the
    box boundary is not pulled back across the box. The force is named RESTRAINT_FORCE_NAME and
    sits alone in force group RESTRAINT_GROUP.
    """
    distance = "periodicdistance(x, y, z, x0, y0, z0)^2" if prepared.periodic else \
        "(x - x0)^2 + (y - y0)^2 + (z - z0)^2"
    force = openmm.CustomExternalForce(f"0.5 * restraint_k * ({distance})")
    force.addGlobalParameter("restraint_k", k)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    for atom in prepared.solute.atoms():
        if atom.element is not None and atom.element.symbol != "H":
            force.addParticle(atom.index, reference_nm[atom.index].tolist())
    force.setName(RESTRAINT_FORCE_NAME)
    force.setForceGroup(RESTRAINT_GROUP)
    prepared.system.addForce(force)


def add_barostat(system: openmm.System, settings: MDSettings, seed: int) -> None:
    """Add a MonteCarloBarostat (pressure_bar, temperature_k); a live Context needs reinitialize."""
    barostat = openmm.MonteCarloBarostat(settings.pressure_bar * unit.bar,
                                         settings.temperature_k * unit.kelvin, BAROSTAT_FREQUENCY)
    barostat.setRandomNumberSeed(seed)
    system.addForce(barostat)


def _is_restraint(force: openmm.Force) -> bool:
    return force.getName() == RESTRAINT_FORCE_NAME


def _is_barostat(force: openmm.Force) -> bool:
    return isinstance(force, openmm.MonteCarloBarostat)


def _remove_forces(system: openmm.System, predicate: Callable[[openmm.Force], bool]) -> None:
    for i in reversed([i for i, f in enumerate(system.getForces()) if predicate(f)]):
        system.removeForce(i)


def set_stage_forces(prepared: PreparedSystem, stage: Stage, reference_nm: np.ndarray, settings: MDSettings,
                     seed: int, step: int, context: openmm.Context | None = None) -> None:
    """Add or remove the restraints and the barostat so the System matches `stage` from `step` on.

    A barostat added here is seeded from (seed + 1, step), as a resumed segment's integrator is
    from (seed, step). If the System changed, `context` (when
    given) is reinitialized keeping its state: a Context keeps the forces it was created with, so
    without this the restraints never come off and the barostat never acts (the bug in the
    reference scripts).
    """
    system, changed = prepared.system, False
    if any(map(_is_restraint, system.getForces())) != stage.restrained:
        if stage.restrained:
            add_restraints(prepared, reference_nm, settings.restraint_k)
        else:
            _remove_forces(system, _is_restraint)
        changed = True
    if any(map(_is_barostat, system.getForces())) != stage.barostat:
        if stage.barostat:
            add_barostat(system, settings, derived_seed(seed + 1, step))
        else:
            _remove_forces(system, _is_barostat)
        changed = True
    if changed and context is not None:
        context.reinitialize(preserveState=True)
