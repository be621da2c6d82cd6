"""Reference MD with OpenMM: implicit/explicit protocols, restraints, resumable production.

Protocol (docs/design.md §3): minimize; heavy-atom position restraints during NVT (and, explicit, NPT
with a Monte Carlo barostat); restraints removed with `context.reinitialize(preserveState=True)`;
production at constant T (explicit: and P), saving protein-only frames (all atoms, no solvent) to
XTC every `save_every_ps`.

Resume state lives in `out_dir/.work/` (never a declared Snakemake output, which Snakemake deletes
after a failure):

- `run.json`: fingerprint of the inputs and settings, the platform chosen (reused on resume).
- `system.xml`, `start.xml`: the (solvated) system without restraints or barostat, and its
  minimized start (the restraint reference), so a resume never re-solvates.
- `checkpoint.json`: step, frame count, clock totals and an OpenMM `State` (XML) in one file, replaced
  atomically. We use `State`s rather than `Simulation.saveCheckpoint` because states are portable
  across platforms, OpenMM versions and GPUs (a SLURM resume may land on another node); binary
  checkpoints are bit-exact but tied to all three. The cost: the Langevin random stream restarts,
  so each resumed segment is reseeded from (seed, step) — reproducible, statistically equivalent,
  not bitwise identical to an uninterrupted run.
- `traj.xtc`, `topology.pdb`: the partial trajectory (truncated to the checkpoint's frame count on
  resume) and the protein-only topology. They move to `out_dir` by `os.replace` when done.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from mdtraj.formats import XTCTrajectoryFile
from tqdm import tqdm

from jamun.peptides import FORCEFIELD_FILES, implicit_forcefield, seeded_random, write_pdb_atomic, write_text_atomic
from jamun.schema import section_settings
from jamun.sequence import RESIDUES

log = logging.getLogger(__name__)

# Measured in this order by platform "auto" (GPU first: it usually wins and compiles kernels once).
AUTO_CANDIDATES = ("CUDA", "OpenCL", "Reference", "CPU")
EXPLICIT_FORCEFIELD_FILES = ("amber99sbildn.xml", "tip3p.xml")
RESTRAINT_FORCE_NAME = "position_restraints"
RESTRAINT_GROUP = 31  # own force group so its energy can be read alone; every other force is 0
BAROSTAT_FREQUENCY = 25  # steps between Monte Carlo volume moves (OpenMM's default)
# The box edge must stay above 2 x cutoff under NPT; padding >= 1.1 x cutoff makes the initial
# edge >= 2.2 x cutoff (OpenMM sets edge = max(solute diameter + padding, 2 x padding)).
MIN_PADDING_OVER_CUTOFF = 1.1
WORK_DIR = ".work"
# Settings that live under `md.explicit` in the config.
EXPLICIT_KEYS = ("padding_nm", "cutoff_nm", "pressure_bar", "ionic_strength_molar")


@dataclass(frozen=True)
class MDSettings:
    """MD protocol settings (the `md:` config section; keys and defaults in
    workflow/schemas/config.schema.yaml, described in config/README.md).

    Times in ps (timestep in fs), temperature K, friction 1/ps, restraint_k kJ/mol/nm^2,
    lengths nm, pressure bar, ionic strength mol/L. Build it with :meth:`from_config`, which
    checks every key against the schema; ``__post_init__`` checks what relates two keys.
    """

    protocol: str
    platform: str
    temperature_k: float
    friction_per_ps: float
    timestep_fs: float
    hydrogen_mass_amu: float | None
    save_every_ps: float
    checkpoint_every_ps: float
    restraint_k: float
    nvt_ps: float
    npt_ps: float
    padding_nm: float
    cutoff_nm: float
    pressure_bar: float
    ionic_strength_molar: float

    @classmethod
    def from_config(cls, md_cfg: Mapping | None, source: str = "config") -> MDSettings:
        """Settings from the `md:` config dict; missing keys take the schema's defaults.

        `length_ns` and `seed` are validated and ignored (they are arguments of `simulate`);
        the `explicit:` sub-dict maps onto padding_nm, cutoff_nm, pressure_bar and
        ionic_strength_molar.

        Raises
        ------
        ValueError
            One line naming ``source`` and the key (e.g. ``md.explicit.cutoff_nm``), the bad value
            and what is valid.
        """
        s = section_settings("md", md_cfg, source)
        flat = {**s, **s["explicit"]}
        try:
            return cls(**{f.name: flat[f.name] if f.name in ("protocol", "platform") or flat[f.name] is None
                          else float(flat[f.name]) for f in dataclasses.fields(cls)})
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def __post_init__(self) -> None:
        """Check what one key cannot say alone (interval multiples, protocol-dependent keys);
        ValueError names both keys."""
        _whole_ratio("md.save_every_ps", self.save_every_ps, "md.timestep_fs", self.timestep_ps)
        _whole_ratio("md.checkpoint_every_ps", self.checkpoint_every_ps, "md.save_every_ps", self.save_every_ps)
        for name in ("nvt_ps", "npt_ps"):
            _whole_ratio(_config_key(name), getattr(self, name), "md.timestep_fs", self.timestep_ps)
        if self.protocol == "implicit" and self.npt_ps > 0:
            raise ValueError(f"md.npt_ps is {self.npt_ps} but md.protocol 'implicit' has no box; set it to 0")
        if self.protocol == "explicit" and self.padding_nm < MIN_PADDING_OVER_CUTOFF * self.cutoff_nm:
            raise ValueError(
                f"md.explicit.padding_nm = {self.padding_nm} is too small for md.explicit.cutoff_nm = "
                f"{self.cutoff_nm}: it must be >= {MIN_PADDING_OVER_CUTOFF} x cutoff so the box stays > 2 x "
                "cutoff under NPT")

    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs / 1000.0

    def steps(self, ps: float) -> int:
        """Number of integrator steps in `ps` picoseconds."""
        return int(round(ps / self.timestep_ps))


def _config_key(name: str) -> str:
    """Where setting `name` lives in the config, e.g. "md.explicit.cutoff_nm"."""
    return f"md.explicit.{name}" if name in EXPLICIT_KEYS else f"md.{name}"


def _whole_ratio(name: str, value: float, unit_name: str, unit_value: float) -> int:
    """value / unit_value as an int; ValueError naming `name` if it is not a whole number."""
    ratio = value / unit_value
    if abs(ratio - round(ratio)) > 1e-6 * max(1.0, ratio):
        raise ValueError(f"{name} = {value} must be a whole multiple of {unit_name} ({unit_value} ps)")
    return int(round(ratio))


# ----------------------------------------------------------------------------- systems


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


def _remove_forces(system: openmm.System, predicate: Callable[[openmm.Force], bool]) -> bool:
    indices = [i for i, f in enumerate(system.getForces()) if predicate(f)]
    for i in reversed(indices):
        system.removeForce(i)
    return bool(indices)


def remove_restraints(system: openmm.System, context: openmm.Context | None = None) -> None:
    """Remove the position restraints; with a context, reinitialize it keeping state.

    Without `context.reinitialize` a Context keeps the forces it was created with (the bug in
    the reference scripts: their restraints never came off).
    """
    if _remove_forces(system, lambda f: f.getName() == RESTRAINT_FORCE_NAME) and context is not None:
        context.reinitialize(preserveState=True)


def add_barostat(system: openmm.System, settings: MDSettings, seed: int) -> None:
    """Add a MonteCarloBarostat (pressure_bar, temperature_k); a live Context needs reinitialize."""
    barostat = openmm.MonteCarloBarostat(settings.pressure_bar * unit.bar,
                                         settings.temperature_k * unit.kelvin, BAROSTAT_FREQUENCY)
    barostat.setRandomNumberSeed(seed)
    system.addForce(barostat)


def has_barostat(system: openmm.System) -> bool:
    return any(isinstance(f, openmm.MonteCarloBarostat) for f in system.getForces())


def has_restraints(system: openmm.System) -> bool:
    return any(f.getName() == RESTRAINT_FORCE_NAME for f in system.getForces())


def restraint_energy(context: openmm.Context) -> float:
    """Potential energy (kJ/mol) of the restraint force group; 0 once restraints are removed."""
    state = context.getState(getEnergy=True, groups={RESTRAINT_GROUP})
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def make_integrator(settings: MDSettings, seed: int) -> openmm.LangevinMiddleIntegrator:
    """LangevinMiddleIntegrator at temperature_k, friction_per_ps, timestep_fs; seed > 0."""
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_k * unit.kelvin,
                                                 settings.friction_per_ps / unit.picosecond,
                                                 settings.timestep_ps * unit.picoseconds)
    integrator.setRandomNumberSeed(seed)
    return integrator


def derived_seed(seed: int, step: int) -> int:
    """Positive 31-bit seed for the segment starting at `step` (OpenMM treats 0 as 'random')."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] % (2**31 - 2)) + 1


# ----------------------------------------------------------------------------- platforms


def available_platforms() -> list[str]:
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def _check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")


def platform_properties(name: str, threads: int | None) -> dict[str, str]:
    """OpenMM properties for platform `name`: the CPU platform gets `Threads` = threads.

    A job then uses the cores its scheduler gave it, not every core of the machine. None keeps
    OpenMM's default (all cores, or $OPENMM_CPU_THREADS). Reference is single-threaded and the GPU
    platforms take no thread count, so they get no properties.
    """
    _check_threads(threads)
    return {"Threads": str(threads)} if name == "CPU" and threads is not None else {}


def make_context(system: openmm.System, integrator: openmm.Integrator, name: str, threads: int | None
                 ) -> openmm.Context:
    """A Context on platform `name` with `platform_properties(name, threads)`; every MD context is made here."""
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(name),
                          platform_properties(name, threads))


def measure_platform(name: str, system: openmm.System, positions: unit.Quantity, settings: MDSettings,
                     *, threads: int | None = None, seconds: float = 0.5) -> float:
    """Throughput (ns/day at settings.timestep_fs) of `system` on platform `name` with `threads` (CPU).

    Runs chunks of steps until `seconds` of wall time have passed, after a warm-up chunk that
    absorbs kernel compilation. The measuring integrator uses a 1e-5 ps step so an unminimized
    start cannot blow up; the cost per step does not depend on the step size.
    """
    integrator = openmm.LangevinMiddleIntegrator(settings.temperature_k, settings.friction_per_ps, 1e-5)
    context = make_context(system, integrator, name, threads)
    context.setPositions(positions)
    integrator.step(5)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        integrator.step(10)
        steps += 10
    context.getState(getEnergy=True)  # wait for asynchronous GPU work before stopping the clock
    return _ns_per_day(steps * settings.timestep_ps / 1000.0, time.perf_counter() - start)


def select_platform(system: openmm.System, positions: unit.Quantity, settings: MDSettings,
                    threads: int | None = None) -> tuple[str, dict[str, float]]:
    """The platform to use and the ns/day measured for each candidate (empty unless 'auto').

    'auto' measures every available platform of AUTO_CANDIDATES (CUDA first) and picks the
    fastest; a platform that fails to create a context is skipped. On small implicit systems
    Reference beats the multithreaded CPU platform (~350 us per-step overhead). The CPU platform
    is measured with the `threads` it will run with: with all cores it can win a short probe on
    an idle machine and then lose to Reference once another job holds a core (issue 15,
    benchmarks/README.md).
    """
    available = available_platforms()
    if settings.platform != "auto":
        if settings.platform not in available:
            raise ValueError(f"md.platform {settings.platform!r} is not available here; available: "
                             f"{available} or 'auto'")
        return settings.platform, {}
    timings = {}
    for name in (p for p in AUTO_CANDIDATES if p in available):
        try:
            timings[name] = measure_platform(name, system, positions, settings, threads=threads)
        except openmm.OpenMMException as error:
            log.warning("platform %s unusable, skipped: %s", name, error)
    if not timings:
        raise RuntimeError(f"no usable OpenMM platform among {available}")
    best = max(timings, key=timings.get)
    log.info("platform auto: %s (ns/day %s)", best, {k: round(v, 1) for k, v in timings.items()})
    return best, timings


def _ns_per_day(ns: float, seconds: float) -> float:
    return ns / seconds * 86400.0 if seconds > 0 else float("nan")


# ----------------------------------------------------------------------------- protocol


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
    return _whole_ratio("length_ns", length_ns * 1000.0, "md.save_every_ps", settings.save_every_ps)


def _write_checkpoint(work: Path, context: openmm.Context, progress: dict[str, Any]) -> None:
    """Atomically write step/frame/wall-clock progress together with the State (one file)."""
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
    payload = dict(progress, state=openmm.XmlSerializer.serialize(state))
    write_text_atomic(work / "checkpoint.json", json.dumps(payload))


def _truncate_xtc(path: Path, n_frames: int) -> bool:
    """Keep frames [0, n_frames) of `path` (rewritten to a new file, then os.replace).

    Returns False if the file holds fewer than n_frames readable frames.
    """
    if n_frames == 0:
        path.unlink(missing_ok=True)
        return True
    if not path.is_file():
        return False
    with XTCTrajectoryFile(str(path)) as handle:
        xyz, times, steps, box = handle.read(n_frames=n_frames)
    if len(xyz) < n_frames:
        return False
    tmp = path.with_suffix(".truncated.xtc")
    with XTCTrajectoryFile(str(tmp), "w") as handle:
        handle.write(xyz, time=times, step=steps, box=box)
    os.replace(tmp, path)
    return True


def _fingerprint(system_pdb: Path, settings: MDSettings, length_ns: float, seed: int) -> dict[str, Any]:
    """What a work folder must match to be resumed. The platform is left out: states are portable."""
    physics = {k: v for k, v in dataclasses.asdict(settings).items() if k != "platform"}
    return {"system_pdb_sha256": hashlib.sha256(system_pdb.read_bytes()).hexdigest(),
            "settings": physics, "length_ns": length_ns, "seed": seed}


def _sequence_of(topology: app.Topology) -> str:
    three_to_one = {v: k for k, v in RESIDUES.items()}
    return "".join(three_to_one.get(r.name, "?") for r in topology.residues() if r.name not in ("ACE", "NME"))


def _start(work: Path, pdb: app.PDBFile, settings: MDSettings, seed: int,
           fingerprint: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Fresh run: build the system, choose the platform, minimize, write the step-0 checkpoint."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    prepared = create_system(pdb.topology, pdb.positions, settings, seed=seed)
    platform, timings = select_platform(prepared.system, prepared.positions, settings, threads)
    context = make_context(prepared.system, make_integrator(settings, derived_seed(seed, 0)), platform, threads)
    context.setPositions(prepared.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, derived_seed(seed, 0))
    start = context.getState(getPositions=True)
    write_text_atomic(work / "system.xml", openmm.XmlSerializer.serialize(prepared.system))
    write_text_atomic(work / "start.xml", openmm.XmlSerializer.serialize(start))
    write_pdb_atomic(pdb.topology, start.getPositions(asNumpy=True)[: prepared.n_solute], work / "topology.pdb")
    run = {"fingerprint": fingerprint, "platform": platform, "platform_ns_per_day": timings, "threads": threads,
           "solvent": prepared.solvent, "n_atoms_total": prepared.system.getNumParticles(), "resumes": 0,
           "box_volume_nm3_start": _box_volume(start) if prepared.periodic else None}
    write_text_atomic(work / "run.json", json.dumps(run, indent=1))
    _write_checkpoint(work, context, {"step": 0, "frames": 0})
    return run


def _resume(work: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """run.json of a resumable work folder for these inputs, with the XTC truncated; else None."""
    try:
        run = json.loads((work / "run.json").read_text())
        checkpoint = json.loads((work / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None
    if run.get("fingerprint") != fingerprint:
        log.warning("%s was made with other inputs or settings; starting over", work)
        return None
    if not _truncate_xtc(work / "traj.xtc", checkpoint["frames"]):
        log.warning("%s/traj.xtc has fewer frames than its checkpoint; starting over", work)
        return None
    run["resumes"] += 1
    write_text_atomic(work / "run.json", json.dumps(run, indent=1))
    log.info("resuming %s at step %d (%d frames)", work, checkpoint["step"], checkpoint["frames"])
    return run


def _resume_platform(work: Path, run: dict[str, Any], prepared: PreparedSystem, settings: MDSettings,
                     threads: int | None) -> None:
    """Keep the recorded platform unless the settings now name another, this machine lacks it, or
    'auto' chose it with another thread count (a folder from before threads were recorded counts
    as None, OpenMM's default). run.json records the threads this segment runs with.
    """
    threads_changed = run.setdefault("threads", None) != threads
    keep = (settings.platform in ("auto", run["platform"]) and run["platform"] in available_platforms()
            and not (settings.platform == "auto" and threads_changed))
    if not keep:
        platform, timings = select_platform(prepared.system, prepared.positions, settings, threads)
        log.warning("resuming on platform %s with threads %s instead of the recorded %s with %s",
                    platform, threads, run["platform"], run["threads"])
        run.update(platform=platform, platform_ns_per_day=timings)
    if not keep or threads_changed:
        run["threads"] = threads
        write_text_atomic(work / "run.json", json.dumps(run, indent=1))


def _box_volume(state: openmm.State) -> float:
    return state.getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)


class _Clock:
    """Wall-clock and CPU totals across resumed segments (seconds), persisted in checkpoints.

    CPU time (all threads) is recorded too: on a shared machine it is the contention-free cost.
    """

    KEYS = ("wall_seconds", "production_wall_seconds", "production_cpu_seconds")

    def __init__(self, saved: dict[str, float], started: float):
        """`saved`: totals from the checkpoint; `started`: time.perf_counter() when this segment began."""
        self.totals = {key: saved.get(key, 0.0) for key in self.KEYS}
        self._wall0 = started
        self._base_wall = self.totals["wall_seconds"]

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals, wall_seconds=self._base_wall + time.perf_counter() - self._wall0)

    def add_production(self, wall: float, cpu: float) -> None:
        self.totals["production_wall_seconds"] += wall
        self.totals["production_cpu_seconds"] += cpu


def _set_stage_forces(prepared: PreparedSystem, stage: Stage, reference_nm: np.ndarray,
                      settings: MDSettings, seed: int, step: int) -> bool:
    """Add/remove restraints and barostat to match `stage`; True if the System changed."""
    system, changed = prepared.system, False
    if has_restraints(system) != stage.restrained:
        if stage.restrained:
            add_restraints(prepared, reference_nm, settings.restraint_k)
        else:
            remove_restraints(system)
        changed = True
    if has_barostat(system) != stage.barostat:
        if stage.barostat:
            add_barostat(system, settings, derived_seed(seed + 1, step))
        else:
            _remove_forces(system, lambda f: isinstance(f, openmm.MonteCarloBarostat))
        changed = True
    return changed


def simulate(system_pdb: Path | str, out_dir: Path | str, *, length_ns: float, seed: int,
             settings: MDSettings, threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the MD protocol on a built peptide and write out_dir/{traj.xtc, topology.pdb, md.json}.

    Parameters
    ----------
    system_pdb : the peptide from `jamun.peptides.build_peptide`.
    out_dir : final outputs appear here by os.replace; resume state in out_dir/.work/.
    length_ns : production length (ns); a whole multiple of settings.save_every_ps.
    seed : integrator, velocity, barostat and ion-placement seed.
    settings : protocol settings.
    threads : threads of the OpenMM CPU platform, in the 'auto' probe and in the run; a workflow
        job passes its rule's threads so it does not compete with the job beside it. None: OpenMM's
        default (all cores).
    progress : show a tqdm bar (stderr) with simulated ns and ns/day.

    Returns
    -------
    The md.json content. A work folder made with other inputs or settings is discarded.
    """
    started = time.perf_counter()
    _check_threads(threads)
    system_pdb, out_dir = Path(system_pdb), Path(out_dir)
    n_frames = frame_count(length_ns, settings)
    pdb = load_system_pdb(system_pdb)
    work = out_dir / WORK_DIR
    fingerprint = _fingerprint(system_pdb, settings, length_ns, seed)
    resumed = _resume(work, fingerprint)
    run = resumed or _start(work, pdb, settings, seed, fingerprint, threads)
    checkpoint = json.loads((work / "checkpoint.json").read_text())
    clock = _Clock(checkpoint, started)
    step, frames = checkpoint["step"], checkpoint["frames"]

    start = openmm.XmlSerializer.deserialize((work / "start.xml").read_text())
    prepared = PreparedSystem(openmm.XmlSerializer.deserialize((work / "system.xml").read_text()),
                              start.getPositions(), pdb.topology)
    reference = start.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    if resumed:
        _resume_platform(work, run, prepared, settings, threads)
    stages = plan_stages(settings, n_frames)
    save_steps = settings.steps(settings.save_every_ps)
    checkpoint_steps = settings.steps(settings.checkpoint_every_ps)
    integrator = make_integrator(settings, derived_seed(seed, step))
    context = None
    # Counted in steps (exact integers), shown in ns through unit_scale; into a log file (Snakemake)
    # only every 30 s.
    bar = tqdm(total=stages[-1].end, initial=step, unit_scale=settings.timestep_ps / 1000.0, unit="ns",
               disable=not progress, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0,
               desc=next(s.name for s in stages if step < s.end) + ": ",
               bar_format="{desc}{percentage:3.0f}%|{bar}| {n:.4f}/{total:.4f} ns "
                          "[{elapsed}<{remaining}{postfix}]")

    for stage in (s for s in stages if step < s.end):
        changed = _set_stage_forces(prepared, stage, reference, settings, seed, step)
        if context is None:
            context = make_context(prepared.system, integrator, run["platform"], threads)
            context.setState(openmm.XmlSerializer.deserialize(checkpoint["state"]))
        elif changed:  # a Context keeps the forces it was made with until reinitialized
            context.reinitialize(preserveState=True)
        bar.set_description(stage.name, refresh=False)
        production = stage.name == "production"
        if production:
            xtc_path = work / "traj.xtc"
            xtc = app.XTCFile(str(xtc_path), pdb.topology, settings.timestep_ps, firstStep=save_steps,
                              interval=save_steps, append=xtc_path.is_file())
        segment_wall, segment_steps = time.perf_counter(), 0
        while step < stage.end:
            # Production advances frame by frame; equilibration from checkpoint to checkpoint.
            n = save_steps if production else min(checkpoint_steps - (step - stage.start) % checkpoint_steps,
                                                   stage.end - step)
            wall, cpu = time.perf_counter(), time.process_time()
            integrator.step(n)
            step += n
            if production:
                positions = context.getState(getPositions=True).getPositions(asNumpy=True)
                xtc.writeModel(positions[: prepared.n_solute])
                frames += 1
            at_interval = (step - stage.start) % checkpoint_steps == 0
            if (at_interval or step == stage.end) and step < stages[-1].end:
                _write_checkpoint(work, context, dict(clock.snapshot(), step=step, frames=frames))
            if production:
                clock.add_production(time.perf_counter() - wall, time.process_time() - cpu)
            segment_steps += n
            bar.update(n)
            rate = _ns_per_day(segment_steps * settings.timestep_ps / 1000.0, time.perf_counter() - segment_wall)
            bar.set_postfix_str(f"{rate:.0f} ns/day", refresh=False)
    bar.close()
    return _finish(work, out_dir, run, settings, pdb, n_frames, length_ns, seed, stages, clock.snapshot(),
                   context.getState(getEnergy=True))


def _finish(work: Path, out_dir: Path, run: dict[str, Any], settings: MDSettings, pdb: app.PDBFile,
            n_frames: int, length_ns: float, seed: int, stages: list[Stage], clock: dict[str, float],
            final_state: openmm.State) -> dict[str, Any]:
    """Check the trajectory, write md.json and move the outputs into out_dir atomically."""
    with XTCTrajectoryFile(str(work / "traj.xtc")) as handle:
        written = len(handle.read(n_frames=n_frames + 1)[0])
    if written != n_frames:
        raise RuntimeError(f"{work}/traj.xtc has {written} frames, expected {n_frames}")
    explicit = settings.protocol == "explicit"
    steps = {s.name: s.steps for s in stages}
    metadata = {
        "peptide": _sequence_of(pdb.topology),
        "system_pdb_sha256": run["fingerprint"]["system_pdb_sha256"],
        "forcefield": "amber99sbildn",
        "forcefield_files": list(EXPLICIT_FORCEFIELD_FILES if explicit else FORCEFIELD_FILES),
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
        "ns_per_day": _ns_per_day(length_ns, clock["production_wall_seconds"]),
        "resumes": run["resumes"],
        "n_atoms_protein": pdb.topology.getNumAtoms(),
        "n_atoms_total": run["n_atoms_total"],
        "solvent": run["solvent"],
        "final_potential_energy_kj_mol": final_state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
    }
    if explicit:
        metadata["explicit"] = {"padding_nm": settings.padding_nm, "cutoff_nm": settings.cutoff_nm,
                                "pressure_bar": settings.pressure_bar,
                                "ionic_strength_molar": settings.ionic_strength_molar,
                                "box_volume_nm3_start": run["box_volume_nm3_start"],
                                "box_volume_nm3_end": _box_volume(final_state)}
    write_text_atomic(work / "md.json", json.dumps(metadata, indent=1))
    for name in ("traj.xtc", "topology.pdb", "md.json"):  # md.json last: it marks completion
        os.replace(work / name, out_dir / name)
    shutil.rmtree(work)
    return metadata
