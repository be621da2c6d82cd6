"""MD protocol: settings validation, restraints, barostat, kill + resume, metadata."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit
import pytest
from mdtraj.formats import XTCTrajectoryFile

from jamun.errors import InputError
from jamun.lock import WorkFolderBusy
from jamun.md import MDSettings, simulate
from jamun.md import platform as md_platform
from jamun.md import run as md_run
from jamun.md.platform import available_platforms, choose_platform, make_context, select_platform
from jamun.md.protocol import RESTRAINT_GROUP, Stage, add_restraints, frame_count, plan_stages, set_stage_forces
from jamun.md.system import create_system, load_system_pdb
from jamun.peptides import build_peptide

MD_JSON_KEYS = {"forcefield", "water_model", "implicit_model", "protocol", "timestep_ps", "steps",
                "temperature_k", "friction_per_ps", "seed", "platform", "openmm_version", "wall_seconds",
                "ns_per_day", "n_frames", "save_every_ps", "length_ns", "hydrogen_mass_amu"}
# Tiny implicit protocol: 0.2 ps NVT, frames every 0.1 ps, checkpoints every 4 frames.
TINY = dict(nvt_ps=0.2, save_every_ps=0.1, checkpoint_every_ps=0.4, platform="Reference")


AMU_PER_NM3_IN_G_PER_CM3 = 1.66053907e-24 / 1e-21  # 1 amu/nm^3 in g/cm^3


def reference_context(system: openmm.System) -> openmm.Context:
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def restraint_energy(context: openmm.Context) -> float:
    """OpenMM's potential energy (kJ/mol) of the restraint force group alone."""
    state = context.getState(getEnergy=True, groups={RESTRAINT_GROUP})
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.fixture(scope="module")
def ala_pdb(tmp_path_factory):
    return build_peptide("A", tmp_path_factory.mktemp("ala") / "system.pdb")


@pytest.fixture(scope="module")
def gly_pdb(tmp_path_factory):
    return build_peptide("G", tmp_path_factory.mktemp("gly") / "system.pdb")


def test_settings_from_config_maps_sections():
    cfg = {"protocol": "explicit", "platform": "CPU", "timestep_fs": 4, "hydrogen_mass_amu": 1.5,
           "npt_ps": 500, "length_ns": {"train": 2.0}, "seed": 1,
           "explicit": {"padding_nm": 1.5, "cutoff_nm": 1.0, "pressure_bar": 1, "ionic_strength_molar": 0.1}}
    s = MDSettings.from_config(cfg)
    assert (s.protocol, s.platform, s.timestep_ps, s.hydrogen_mass_amu) == ("explicit", "CPU", 0.004, 1.5)
    assert (s.padding_nm, s.cutoff_nm, s.ionic_strength_molar, s.npt_ps) == (1.5, 1.0, 0.1, 500.0)


@pytest.mark.parametrize("cfg, key", [
    ({"protcol": "implicit"}, "unknown key 'protcol' in md settings"),
    ({"protocol": "vacuum"}, "md.protocol"),
    ({"platform": "Metal"}, "md.platform"),
    ({"temperature_k": "300"}, "md.temperature_k"),
    ({"timestep_fs": -2.0}, "md.timestep_fs"),
    ({"hydrogen_mass_amu": 10.0}, "md.hydrogen_mass_amu"),
    ({"save_every_ps": 0.003}, "md.save_every_ps"),
    ({"save_every_ps": 1.0, "checkpoint_every_ps": 2.5}, "md.checkpoint_every_ps"),
    ({"npt_ps": 10.0}, "md.npt_ps"),
    ({"explicit": {"cutoff": 1.0}}, "unknown key 'cutoff' in md.explicit settings"),
    ({"protocol": "explicit", "explicit": {"padding_nm": 0.8}}, "md.explicit.padding_nm"),
])
def test_settings_errors_name_the_key(cfg, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        MDSettings.from_config(cfg)


def test_frame_count_and_stages():
    s = MDSettings.from_config({"protocol": "explicit", "timestep_fs": 2.0, "hydrogen_mass_amu": None, "nvt_ps": 1.0,
                                "npt_ps": 2.0, "save_every_ps": 0.5})
    assert frame_count(0.004, s) == 8
    with pytest.raises(ValueError, match="length_ns"):
        frame_count(0.00425, s)
    stages = plan_stages(s, 8)
    assert [(st.name, st.start, st.steps, st.restrained, st.barostat) for st in stages] == [
        ("nvt", 0, 500, True, False), ("npt", 500, 1000, True, True), ("production", 1500, 2000, False, True)]


def test_restraints_come_off_in_a_live_context_keeping_its_state(ala_pdb):
    """Restrained stage -> production stage in one Context, as the run does: the restraint energy
    (k = restraint_k, heavy atoms only) goes to zero, positions and every other force stay."""
    pdb = load_system_pdb(ala_pdb)
    settings = MDSettings.from_config(TINY)
    prepared = create_system(pdb.topology, pdb.positions, settings)
    reference = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    set_stage_forces(prepared, Stage("nvt", 0, 10, restrained=True, barostat=False), reference, settings, 1, 0)
    context = reference_context(prepared.system)
    shifted = reference + np.array([0.01, 0.0, 0.0])
    context.setPositions(shifted)
    n_heavy = sum(a.element.symbol != "H" for a in pdb.topology.atoms())
    restraint = 0.5 * settings.restraint_k * n_heavy * 0.01**2
    assert restraint_energy(context) == pytest.approx(restraint, rel=1e-6)
    total_before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    production = Stage("production", 10, 10, restrained=False, barostat=False)
    set_stage_forces(prepared, production, reference, settings, 1, 10, context)
    assert restraint_energy(context) == 0.0
    state = context.getState(getEnergy=True, getPositions=True)
    np.testing.assert_allclose(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), shifted, atol=1e-9)
    total_after = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert total_after == pytest.approx(total_before - restraint, rel=1e-6)


def test_explicit_restraints_use_minimum_image(gly_pdb):
    pdb = load_system_pdb(gly_pdb)
    settings = MDSettings.from_config({"protocol": "explicit", "platform": "CPU"})
    prepared = create_system(pdb.topology, pdb.positions, settings, seed=1)
    assert prepared.solvent["HOH"] > 300 and prepared.periodic
    xyz = np.asarray(prepared.positions.value_in_unit(unit.nanometer))
    add_restraints(prepared, xyz, k=1000.0)
    context = reference_context(prepared.system)
    box = prepared.system.getDefaultPeriodicBoxVectors()[0].value_in_unit(unit.nanometer)
    assert box[0] > 2 * settings.cutoff_nm * 1.1
    moved = xyz.copy()
    moved[: prepared.n_solute] += np.array(box)  # a whole box vector away: the same periodic image
    context.setPositions(moved)
    assert restraint_energy(context) == pytest.approx(0.0, abs=1e-6)


def test_explicit_box_stays_cubic_at_waters_density(gly_pdb, tmp_path, monkeypatch):
    """Smallest capped peptide (ACE-GLY-NME), TIP3P, barostat during NPT and production.

    Every checkpointed State is looked at: the box stays the configured cube (an isotropic barostat
    scales all edges alike) and keeps the minimized start's volume through NVT (no barostat there).
    Modeller's box starts under-dense (~0.93 g/cm^3, gaps around the solute), i.e. far below 1 bar,
    so a barostat at 1 bar must shrink it: the density rises under NPT and stays within 10 % of
    liquid water's (TIP3P at 300 K: 0.98 g/cm^3), every edge above 2 x cutoff.
    """
    observed = []  # (step, box vectors nm, total mass amu) of every checkpoint
    write = md_run.write_checkpoint

    def observe(work, context, progress):
        system = context.getSystem()
        mass = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles()))
        box = context.getState().getPeriodicBoxVectors().value_in_unit(unit.nanometer)
        observed.append((progress["step"], np.array(box), mass))
        write(work, context, progress)

    monkeypatch.setattr(md_run, "write_checkpoint", observe)
    settings = MDSettings.from_config({"protocol": "explicit", "platform": "CPU", "nvt_ps": 0.2, "npt_ps": 1.0,
                                       "save_every_ps": 0.1, "checkpoint_every_ps": 0.2})
    md = simulate(gly_pdb, tmp_path, length_ns=0.0002, seed=2, settings=settings, progress=False)
    nvt_end = settings.steps(settings.nvt_ps)
    assert [step for step, _, _ in observed] == [0, nvt_end] + [nvt_end + 50 * i for i in range(1, 6)]
    for _, box, _ in observed:
        np.testing.assert_allclose(box, box[0, 0] * np.eye(3), rtol=1e-9, atol=1e-12)
    start, end = md["explicit"]["box_volume_nm3_start"], md["explicit"]["box_volume_nm3_end"]
    volumes = [np.linalg.det(box) for _, box, _ in observed] + [end]
    assert volumes[0] == pytest.approx(start, rel=1e-9) and volumes[1] == pytest.approx(start, rel=1e-9)
    densities = [observed[0][2] / v * AMU_PER_NM3_IN_G_PER_CM3 for v in volumes]
    assert densities == pytest.approx([1.0] * len(densities), rel=0.1)
    assert densities[-1] > densities[0]  # compressed towards water's density
    assert min(volumes) ** (1 / 3) > 2 * settings.cutoff_nm
    assert md["solvent"]["HOH"] > 300 and md["n_atoms_protein"] == 19
    traj = mdtraj.load(str(tmp_path / "traj.xtc"), top=str(tmp_path / "topology.pdb"))
    assert traj.n_frames == 2 and traj.n_atoms == 19  # protein only, hydrogens included
    assert not (tmp_path / ".work").exists()


KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import jamun.md.run as md

    write = md.write_checkpoint

    def crash_at(work, context, progress):
        # Die right before the checkpoint after frame KILL_AT: the XTC then holds frames the last
        # checkpoint does not know about, as after a real kill.
        if progress["frames"] >= int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)
        write(work, context, progress)

    md.write_checkpoint = crash_at
    md.simulate(sys.argv[1], sys.argv[2], length_ns=0.003, seed=3,
                settings=md.MDSettings.from_config(json.loads(sys.argv[3])), progress=False)
""")


def test_kill_and_resume_gives_exact_frames(ala_pdb, tmp_path, monkeypatch):
    settings = dict(TINY, platform="auto")
    out = tmp_path / "A"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(ala_pdb), str(out), json.dumps(settings), "12"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    work = out / ".work"
    checkpoint = json.loads((work / "checkpoint.json").read_text())
    assert checkpoint["frames"] == 8 and not (out / "traj.xtc").exists()
    with XTCTrajectoryFile(str(work / "traj.xtc")) as handle:
        before = handle.read()[0]
    assert len(before) == 12
    with open(work / "traj.xtc", "ab") as handle:  # a torn frame, as a kill mid-write leaves
        handle.write(b"\x00\x00\x07\xcb" + b"\x01" * 37)

    # The recorded platform must be reused, not measured again: swap it for the other one and
    # make any probe fail the test.
    run = json.loads((work / "run.json").read_text())
    assert set(run["platform_ns_per_day"]) == {"Reference", "CPU"} & set(available_platforms())
    run["platform"] = "CPU" if run["platform"] == "Reference" else "Reference"
    (work / "run.json").write_text(json.dumps(run))
    monkeypatch.setattr(md_platform, "measure_platform", lambda *a, **k: pytest.fail("platform probed on resume"))

    md = simulate(ala_pdb, out, length_ns=0.003, seed=3, settings=MDSettings.from_config(settings), progress=False)
    assert md["platform"] == run["platform"] and md["resumes"] == 1
    assert md["platform_ns_per_day"] == run["platform_ns_per_day"]
    assert md["n_frames"] == 30 and not work.exists()
    traj = mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 30 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.time, 0.1 * np.arange(1, 31), atol=1e-4)
    assert np.all(np.diff(traj.time) > 0)
    np.testing.assert_allclose(traj.xyz[:8], before[:8], atol=1e-6)  # checkpointed frames kept as written
    assert MD_JSON_KEYS <= set(json.loads((out / "md.json").read_text()))


def test_stale_work_folder_is_discarded(ala_pdb, tmp_path):
    work = tmp_path / ".work"
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"fingerprint": {"seed": -1}}))
    (work / "checkpoint.json").write_text("{}")
    md = simulate(ala_pdb, tmp_path, length_ns=0.001, seed=1, settings=MDSettings.from_config(TINY), progress=False)
    assert md["resumes"] == 0 and md["n_frames"] == 10 and not work.exists()
    assert MD_JSON_KEYS <= set(md) and md["implicit_model"] and md["water_model"] is None


@pytest.fixture
def fake_timings(monkeypatch):
    """Replace the platform probe by a table {platform: ns/day} (set it on the returned dict); a
    platform missing from the table fails as an unusable one does. Records what was probed."""
    table, probed = {}, []

    def measure(name, system, positions, settings, *, threads=None, seconds=0.5):
        probed.append(name)
        if name not in table:
            raise openmm.OpenMMException(f"no {name} here")
        return table[name]

    monkeypatch.setattr(md_platform, "measure_platform", measure)
    monkeypatch.setattr(md_platform, "available_platforms", lambda: ["Reference", "CPU", "OpenCL"])
    return table, probed


def test_auto_platform_is_the_fastest_and_is_recorded(ala_pdb, tmp_path, fake_timings):
    table, probed = fake_timings
    pdb = load_system_pdb(ala_pdb)
    prepared = create_system(pdb.topology, pdb.positions, MDSettings.from_config({}))
    auto = MDSettings.from_config({"platform": "auto"})
    for timings, fastest in (({"Reference": 5.0, "CPU": 50.0}, "CPU"), ({"Reference": 50.0, "CPU": 5.0}, "Reference")):
        table.clear(), table.update(timings)
        assert select_platform(prepared.system, prepared.positions, auto) == (fastest, timings)
    assert set(probed) == {"Reference", "CPU", "OpenCL"}  # OpenCL failed, so it is left out

    probed.clear()
    named = MDSettings.from_config({"platform": "Reference"})
    assert select_platform(prepared.system, prepared.positions, named) == ("Reference", {}) and probed == []
    with pytest.raises(ValueError, match="md.platform 'CUDA' is not available"):
        select_platform(prepared.system, prepared.positions, MDSettings.from_config({"platform": "CUDA"}))
    table.clear()
    with pytest.raises(RuntimeError, match="no usable OpenMM platform"):
        select_platform(prepared.system, prepared.positions, auto)

    table.update({"Reference": 900.0, "CPU": 100.0})
    settings = MDSettings.from_config(dict(TINY, platform="auto"))
    md = simulate(ala_pdb, tmp_path, length_ns=0.001, seed=1, settings=settings, progress=False)
    assert md["platform"] == "Reference" and md["platform_ns_per_day"] == table
    assert json.loads((tmp_path / "md.json").read_text()) == md


@pytest.fixture
def contexts_made(monkeypatch):
    """(platform, its Threads property or None) of every OpenMM Context created during the test."""
    made = []

    class Recorded(openmm.Context):
        def __init__(self, *args):
            super().__init__(*args)
            platform = self.getPlatform()
            threads = platform.getPropertyValue(self, "Threads") if platform.getName() == "CPU" else None
            made.append((platform.getName(), threads))

    monkeypatch.setattr(openmm, "Context", Recorded)
    return made


def test_make_context_gives_cpu_platform_the_threads():
    system = openmm.System()
    system.addParticle(1.0)
    for threads in (1, 2):
        context = make_context(system, openmm.VerletIntegrator(0.001), "CPU", threads)
        assert context.getPlatform().getPropertyValue(context, "Threads") == str(threads)
    assert make_context(system, openmm.VerletIntegrator(0.001), "Reference", 1).getPlatform().getName() == "Reference"
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            make_context(system, openmm.VerletIntegrator(0.001), "CPU", bad)


def test_platform_probe_runs_cpu_with_the_jobs_threads(ala_pdb, contexts_made):
    pdb = load_system_pdb(ala_pdb)
    prepared = create_system(pdb.topology, pdb.positions, MDSettings.from_config({}))
    auto = MDSettings.from_config({"platform": "auto"})
    _, timings = select_platform(prepared.system, prepared.positions, auto, threads=1)
    assert timings["CPU"] > 0
    assert [threads for platform, threads in contexts_made if platform == "CPU"] == ["1"]


def test_simulate_runs_cpu_platform_with_threads(ala_pdb, tmp_path, contexts_made):
    cpu = MDSettings.from_config(dict(TINY, platform="CPU"))
    md = simulate(ala_pdb, tmp_path, length_ns=0.001, seed=1, settings=cpu, threads=1, progress=False)
    assert contexts_made == [("CPU", "1"), ("CPU", "1")]  # minimization, then equilibration and production
    assert md["platform"] == "CPU" and md["threads"] == 1
    with pytest.raises(ValueError, match="threads"):
        simulate(ala_pdb, tmp_path / "bad", length_ns=0.001, seed=1, settings=MDSettings.from_config(TINY), threads=0)


def test_resume_platform_reprobes_auto_for_other_threads(ala_pdb, contexts_made):
    pdb = load_system_pdb(ala_pdb)
    prepared = create_system(pdb.topology, pdb.positions, MDSettings.from_config({}))
    auto = MDSettings.from_config({"platform": "auto"})
    run = {"platform": "CPU", "platform_ns_per_day": {"CPU": 1.0}}  # chosen before threads were recorded
    record = choose_platform(prepared.system, prepared.positions, auto, 1, recorded=run)
    assert record["threads"] == 1 and record["platform_ns_per_day"]["CPU"] != 1.0 and ("CPU", "1") in contexts_made
    contexts_made.clear()
    # Same threads: the choice stands; a named platform stays, with the new thread count.
    assert choose_platform(prepared.system, prepared.positions, auto, 1, recorded=record) == record
    named = {"platform": "CPU", "platform_ns_per_day": {}, "threads": None}
    cpu = MDSettings.from_config({"platform": "CPU"})
    assert choose_platform(prepared.system, prepared.positions, cpu, 2, recorded=named) == dict(named, threads=2)
    assert contexts_made == []


LONG_RUN = textwrap.dedent("""
    import json, sys
    import jamun.md.run as md
    md.simulate(sys.argv[1], sys.argv[2], length_ns=0.5, seed=3,
                settings=md.MDSettings.from_config(json.loads(sys.argv[3])), progress=False)
""")


def test_a_live_owner_is_named_and_a_dead_one_is_taken_over(ala_pdb, tmp_path):
    """The orphan case: a simulate still running on a folder refuses a second one by pid and host;
    once it is killed (-9), the next run takes the folder over and resumes to a correct trajectory."""
    out = tmp_path / "A"
    settings = dict(TINY, checkpoint_every_ps=1.0)
    owner = subprocess.Popen([sys.executable, "-c", LONG_RUN, str(ala_pdb), str(out), json.dumps(settings)],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".work" / "checkpoint.json").is_file():
            assert owner.poll() is None and time.monotonic() < deadline, owner.stderr.read() if owner.stderr else ""
            time.sleep(0.2)
        with pytest.raises(WorkFolderBusy, match=rf'{out / ".work"} is in use by .*"pid": {owner.pid}, "host"'):
            simulate(ala_pdb, out, length_ns=0.5, seed=3, settings=MDSettings.from_config(settings), progress=False)
    finally:
        owner.kill()
        owner.wait()
    md = simulate(ala_pdb, out, length_ns=0.005, seed=3, settings=MDSettings.from_config(settings), progress=False)
    assert md["n_frames"] == 50 and md["resumes"] == 0  # other length: a fresh run in the same folder
    traj = mdtraj.load(str(out / "traj.xtc"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 50 and np.all(np.diff(traj.time) > 0)


def test_a_damaged_checkpoint_stops_instead_of_starting_over(ala_pdb, tmp_path):
    """A truncated checkpoint.json keeps the frames: one line naming the folder and what to do."""
    out = tmp_path / "A"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(ala_pdb), str(out), json.dumps(TINY), "12"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    checkpoint = out / ".work" / "checkpoint.json"
    checkpoint.write_text(checkpoint.read_text()[:100])
    with pytest.raises(InputError, match=r"cannot resume: damaged run record or checkpoint .*delete .* to start"):
        simulate(ala_pdb, out, length_ns=0.003, seed=3, settings=MDSettings.from_config(TINY), progress=False)
    assert (out / ".work" / "traj.xtc").stat().st_size > 0


def test_mixed_frames_are_refused_at_the_end(ala_pdb, tmp_path, monkeypatch):
    """The final check reads the frame times: a trajectory whose times go back is not published."""
    real = md_run.truncate_xtc

    def shuffle_after_truncating(path, n_frames):
        kept = real(path, n_frames)
        if kept and n_frames:
            traj = mdtraj.load(str(path), top=str(path.parent / "topology.pdb"))
            traj[::-1].save_xtc(str(path))
        return kept

    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(ala_pdb), str(tmp_path), json.dumps(TINY), "12"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    monkeypatch.setattr(md_run, "truncate_xtc", shuffle_after_truncating)
    with pytest.raises(InputError, match="frame times do not increase"):
        simulate(ala_pdb, tmp_path, length_ns=0.003, seed=3, settings=MDSettings.from_config(TINY), progress=False)
    assert not (tmp_path / "traj.xtc").exists() and not (tmp_path / "md.json").exists()


def test_a_length_off_the_frame_grid_is_named_in_ns():
    with pytest.raises(ValueError, match=r"length_ns = 0.0015 ns \(1.5 ps\) must be a whole multiple of md.save_every_ps"):
        frame_count(0.0015, MDSettings.from_config({"save_every_ps": 1.0}))
