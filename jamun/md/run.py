"""The resumable MD run: `simulate` takes a built peptide through the protocol (jamun/md/protocol.py,
docs/design.md §3) and writes out_dir/{traj.xtc, topology.pdb, md.json}, surviving a kill at any point.

Resume state lives in `out_dir/.work/` (never a declared Snakemake output, which Snakemake deletes
after a failure):

- `run.json`: fingerprint of the inputs and settings, the platform chosen (reused on resume);
  jamun/md/records.py.
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

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from mdtraj.formats import XTCTrajectoryFile
from tqdm import tqdm

from jamun.atomic import write_atomic, write_json_atomic, write_text_atomic
from jamun.errors import bad_file
from jamun.lock import owned
from jamun.md.platform import check_threads, choose_platform, make_context, ns_per_day
from jamun.md.protocol import Stage, derived_seed, frame_count, make_integrator, minimize, plan_stages, set_stage_forces
from jamun.md.records import fingerprint, md_record, new_run, read_run, write_run
from jamun.md.settings import MDSettings
from jamun.md.system import PreparedSystem, create_system, load_system_pdb
from jamun.peptides import write_pdb_atomic

log = logging.getLogger(__name__)

WORK_DIR = ".work"
CHECKPOINT_JSON = "checkpoint.json"
OUTPUTS = ("traj.xtc", "topology.pdb", "md.json")  # md.json last: it marks completion


def write_checkpoint(work: Path, context: openmm.Context, progress: dict[str, Any]) -> None:
    """Atomically write step/frame/wall-clock progress together with the State (one file)."""
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
    write_text_atomic(work / CHECKPOINT_JSON, json.dumps(dict(progress, state=openmm.XmlSerializer.serialize(state))))


def truncate_xtc(path: Path, n_frames: int) -> bool:
    """Keep frames [0, n_frames) of `path` (rewritten atomically); False if it holds fewer readable frames."""
    if n_frames == 0:
        path.unlink(missing_ok=True)
        return True
    if not path.is_file():
        return False
    with XTCTrajectoryFile(str(path)) as handle:
        xyz, times, steps, box = handle.read(n_frames=n_frames)
    if len(xyz) < n_frames:
        return False

    def write(tmp: Path) -> None:
        with XTCTrajectoryFile(str(tmp), "w", force_overwrite=True) as handle:
            handle.write(xyz, time=times, step=steps, box=box)

    write_atomic(path, write)
    return True


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


def _start(work: Path, pdb: app.PDBFile, settings: MDSettings, seed: int,
           run_fingerprint: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Fresh run: build the system, choose the platform, minimize, write the step-0 checkpoint."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    prepared = create_system(pdb.topology, pdb.positions, settings, seed=seed)
    platform = choose_platform(prepared.system, prepared.positions, settings, threads)
    context = make_context(prepared.system, make_integrator(settings, derived_seed(seed, 0)), platform["platform"],
                           threads)
    start = minimize(context, prepared.positions, settings, seed)
    write_text_atomic(work / "system.xml", openmm.XmlSerializer.serialize(prepared.system))
    write_text_atomic(work / "start.xml", openmm.XmlSerializer.serialize(start))
    write_pdb_atomic(pdb.topology, start.getPositions(asNumpy=True)[: prepared.n_solute], work / "topology.pdb")
    run = new_run(run_fingerprint, platform, prepared, start)
    write_run(work, run)
    write_checkpoint(work, context, {"step": 0, "frames": 0})
    return run


def _resume(work: Path, run_fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """run.json of a resumable work folder for these inputs, with the XTC truncated; None for a
    fresh start (no work folder, or one made with other inputs).

    A damaged run record or checkpoint stops the run (InputError naming it) rather than starting
    over, which would silently drop the frames already simulated.
    """
    if not (work / "run.json").is_file():
        return None
    try:
        run = read_run(work)
        if run.get("fingerprint") != run_fingerprint:
            log.warning("%s was made with other inputs or settings; starting over", work)
            return None
        checkpoint = json.loads((work / CHECKPOINT_JSON).read_text())
        checkpoint["frames"], checkpoint["step"], checkpoint["state"]  # noqa: B018 (the keys a resume needs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise bad_file(work, f"cannot resume: damaged run record or checkpoint ({type(error).__name__}: {error})",
                       f"delete {work} to start this run over (its frames are lost)") from None
    if not truncate_xtc(work / "traj.xtc", checkpoint["frames"]):
        log.warning("%s/traj.xtc has fewer frames than its checkpoint; starting over", work)
        return None
    run["resumes"] += 1
    write_run(work, run)
    log.info("resuming %s at step %d (%d frames)", work, checkpoint["step"], checkpoint["frames"])
    return run


def _progress_bar(stages: list[Stage], step: int, settings: MDSettings, enabled: bool) -> tqdm:
    """Counted in steps (exact integers), shown in ns through unit_scale; into a log file (Snakemake)
    only every 30 s."""
    return tqdm(total=stages[-1].end, initial=step, unit_scale=settings.timestep_ps / 1000.0, unit="ns",
                disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 30.0,
                desc=next(s.name for s in stages if step < s.end) + ": ",
                bar_format="{desc}{percentage:3.0f}%|{bar}| {n:.4f}/{total:.4f} ns "
                           "[{elapsed}<{remaining}{postfix}]")


def _run_stages(work: Path, prepared: PreparedSystem, reference_nm: np.ndarray, stages: list[Stage],
                checkpoint: dict[str, Any], platform: str, threads: int | None, settings: MDSettings, seed: int,
                clock: _Clock, progress: bool) -> openmm.Context:
    """Step from the checkpoint to the end of the last stage, writing frames and checkpoints;
    returns the Context at the end."""
    step, frames = checkpoint["step"], checkpoint["frames"]
    save_steps = settings.steps(settings.save_every_ps)
    checkpoint_steps = settings.steps(settings.checkpoint_every_ps)
    integrator = make_integrator(settings, derived_seed(seed, step))
    context = None
    bar = _progress_bar(stages, step, settings, progress)
    for stage in (s for s in stages if step < s.end):
        set_stage_forces(prepared, stage, reference_nm, settings, seed, step, context)
        if context is None:
            context = make_context(prepared.system, integrator, platform, threads)
            context.setState(openmm.XmlSerializer.deserialize(checkpoint["state"]))
        bar.set_description(stage.name, refresh=False)
        production = stage.name == "production"
        if production:
            xtc_path = work / "traj.xtc"
            xtc = app.XTCFile(str(xtc_path), prepared.solute, settings.timestep_ps, firstStep=save_steps,
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
                write_checkpoint(work, context, dict(clock.snapshot(), step=step, frames=frames))
            if production:
                clock.add_production(time.perf_counter() - wall, time.process_time() - cpu)
            segment_steps += n
            bar.update(n)
            rate = ns_per_day(segment_steps * settings.timestep_ps / 1000.0, time.perf_counter() - segment_wall)
            bar.set_postfix_str(f"{rate:.0f} ns/day", refresh=False)
    bar.close()
    return context


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
    check_threads(threads)
    system_pdb, out_dir = Path(system_pdb), Path(out_dir)
    n_frames = frame_count(length_ns, settings)
    pdb = load_system_pdb(system_pdb)
    work = out_dir / WORK_DIR
    with owned(work):
        return _simulate_owned(work, out_dir, pdb, system_pdb, length_ns=length_ns, n_frames=n_frames, seed=seed,
                               settings=settings, threads=threads, progress=progress, started=started)


def _simulate_owned(work: Path, out_dir: Path, pdb: app.PDBFile, system_pdb: Path, *, length_ns: float,
                    n_frames: int, seed: int, settings: MDSettings, threads: int | None, progress: bool,
                    started: float) -> dict[str, Any]:
    """`simulate` once this process owns the work folder."""
    run_fingerprint = fingerprint(system_pdb, settings, length_ns, seed)
    resumed = _resume(work, run_fingerprint)
    run = resumed or _start(work, pdb, settings, seed, run_fingerprint, threads)
    checkpoint = json.loads((work / CHECKPOINT_JSON).read_text())

    start = openmm.XmlSerializer.deserialize((work / "start.xml").read_text())
    prepared = PreparedSystem(openmm.XmlSerializer.deserialize((work / "system.xml").read_text()),
                              start.getPositions(), pdb.topology)
    if resumed:
        platform = choose_platform(prepared.system, prepared.positions, settings, threads, recorded=run)
        if any(run.get(key) != value for key, value in platform.items()):
            run.update(platform)
            write_run(work, run)
    stages = plan_stages(settings, n_frames)
    clock = _Clock(checkpoint, started)
    context = _run_stages(work, prepared, start.getPositions(asNumpy=True).value_in_unit(unit.nanometer), stages,
                          checkpoint, run["platform"], threads, settings, seed, clock, progress)
    return _finish(work, out_dir, md_record(run, settings, pdb.topology, n_frames=n_frames, length_ns=length_ns,
                                            seed=seed, stages=stages, clock=clock.snapshot(),
                                            final_state=context.getState(getEnergy=True)))


def _finish(work: Path, out_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Check the trajectory (frame count, strictly increasing times), write md.json and move the
    outputs into out_dir."""
    n_frames = metadata["n_frames"]
    with XTCTrajectoryFile(str(work / "traj.xtc")) as handle:
        times = handle.read(n_frames=n_frames + 1)[1]
    remedy = f"delete {work} and rerun this simulation"
    if len(times) != n_frames:
        raise bad_file(work / "traj.xtc", f"holds {len(times)} frames, expected {n_frames}", remedy)
    if np.any(np.diff(times) <= 0):
        raise bad_file(work / "traj.xtc", "frame times do not increase (frames of two runs mixed)", remedy)
    write_json_atomic(work / "md.json", metadata, indent=1)
    for name in OUTPUTS:
        os.replace(work / name, out_dir / name)
    shutil.rmtree(work)
    return metadata
