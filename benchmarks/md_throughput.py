"""Throughput of `jamun.md.simulate` against a bare OpenMM loop on the same system and platform.

For each peptide and protocol: build the peptide, run `simulate` (its md.json ns_per_day counts
production only: stepping, frame output, checkpoints), then time `integrator.step(n)` for the same
number of production steps on a context made the same way. The two alternate `--repeats` times
and the best of each is compared (on a shared machine the least disturbed run is the cleanest
estimate). Prints ns/day and the ratio (target >= 0.9), by wall clock and by CPU time (`cpu`,
which other processes on a shared machine do not disturb).

    python benchmarks/md_throughput.py --peptides AA WW --implicit-ns 0.2 --explicit-ns 0.005
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import openmm
import openmm.unit as unit

from jamun.md import MDSettings, simulate
from jamun.md.protocol import add_barostat, derived_seed, make_integrator
from jamun.md.system import create_system, load_system_pdb
from jamun.peptides import build_peptide


def bare_ns_per_day(system_pdb: Path, settings: MDSettings, platform: str, ns: float, seed: int
                    ) -> tuple[float, float]:
    """ns/day by wall clock and by CPU time of one `integrator.step(n)` call for `ns`, after minimization.

    The system is the production one: no restraints, a barostat in the explicit protocol.
    """
    pdb = load_system_pdb(system_pdb)
    prepared = create_system(pdb.topology, pdb.positions, settings, seed=seed)
    if settings.protocol == "explicit":  # production runs at constant pressure
        add_barostat(prepared.system, settings, seed)
    integrator = make_integrator(settings, derived_seed(seed, 0))
    context = openmm.Context(prepared.system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(prepared.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, derived_seed(seed, 0))
    integrator.step(50)  # warm-up (kernel compilation on GPUs)
    n_steps = settings.steps(ns * 1000.0)
    wall, cpu = time.perf_counter(), time.process_time()
    integrator.step(n_steps)
    context.getState(getEnergy=True)  # wait for asynchronous GPU work
    return ns / (time.perf_counter() - wall) * 86400.0, ns / (time.process_time() - cpu) * 86400.0


def compare(sequence: str, settings: MDSettings, ns: float, workdir: Path, repeats: int, seed: int = 1) -> dict:
    """Alternate `simulate` and the bare loop `repeats` times; best of each (least disturbed run).

    Ratios by wall clock (what ns/day means) and by CPU time (insensitive to other load).
    """
    system_pdb = build_peptide(sequence, workdir / sequence / "system.pdb")
    sim_wall, sim_cpu, bare_wall, bare_cpu = [], [], [], []
    for i in range(repeats):
        out = workdir / sequence / f"{settings.protocol}{i}"
        md = simulate(system_pdb, out, length_ns=ns, seed=seed, settings=settings, progress=False)
        sim_wall.append(md["ns_per_day"])
        sim_cpu.append(ns / md["production_cpu_seconds"] * 86400.0)
        wall, cpu = bare_ns_per_day(system_pdb, settings, md["platform"], ns, seed)
        bare_wall.append(wall)
        bare_cpu.append(cpu)
    return {"peptide": sequence, "protocol": settings.protocol, "platform": md["platform"],
            "atoms": md["n_atoms_total"], "simulate": max(sim_wall), "bare": max(bare_wall),
            "ratio": max(sim_wall) / max(bare_wall), "cpu_ratio": max(sim_cpu) / max(bare_cpu),
            "runs": ([round(x) for x in sim_wall], [round(x) for x in bare_wall])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peptides", nargs="+", default=["AA"])
    parser.add_argument("--protocols", nargs="+", default=["implicit", "explicit"],
                        choices=["implicit", "explicit"])
    parser.add_argument("--implicit-ns", type=float, default=0.2)
    parser.add_argument("--explicit-ns", type=float, default=0.005)
    parser.add_argument("--platform", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--hydrogen-mass-amu", type=float, default=None)
    args = parser.parse_args(argv)

    base = MDSettings.from_config({"platform": args.platform, "timestep_fs": args.timestep_fs,
                                   "hydrogen_mass_amu": args.hydrogen_mass_amu,
                                   "save_every_ps": 1.0, "checkpoint_every_ps": 10.0, "nvt_ps": 1.0}, "arguments")
    protocols = {"implicit": (base, args.implicit_ns),
                 "explicit": (dataclasses.replace(base, protocol="explicit", npt_ps=1.0), args.explicit_ns)}
    print(f"{'peptide':8s} {'protocol':9s} {'platform':10s} {'atoms':>6s} {'simulate':>10s} {'bare':>10s} "
          f"{'ratio':>6s} {'cpu':>5s}  (ns/day, best of repeats; all runs: simulate, bare)")
    with tempfile.TemporaryDirectory() as tmp:
        for sequence in args.peptides:
            for protocol in args.protocols:
                settings, ns = protocols[protocol]
                r = compare(sequence, settings, ns, Path(tmp), args.repeats)
                print(f"{r['peptide']:8s} {r['protocol']:9s} {r['platform']:10s} {r['atoms']:6d} "
                      f"{r['simulate']:10.1f} {r['bare']:10.1f} {r['ratio']:6.2f} {r['cpu_ratio']:5.2f}  "
                      f"{r['runs']}",
                      flush=True)


if __name__ == "__main__":
    main()
