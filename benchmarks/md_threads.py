"""Sustained MD ns/day per OpenMM platform and thread count, alone and beside a busy process (issue 15).

A workflow MD job declares `threads: 1`, but the OpenMM CPU platform defaults to every core, so
beside another job its threads fight for a core. For a built capped dipeptide (implicit protocol,
default settings) this times `--seconds` of stepping on contexts made by `jamun.md.platform.make_context`
(the code path of `simulate`) for Reference, CPU with Threads=1 and CPU with OpenMM's default
(all cores), each alone and beside a competitor: a second process spinning a pure-Python loop,
which keeps one core busy like a neighbouring single-threaded job. It also prints what the `auto`
probe (`select_platform`) chooses with threads=1 and with the default, alone and beside the
competitor. cpu/wall is this process's CPU seconds per wall second (cores it kept busy). The load
average is printed at start and end: on a shared machine other processes count as competitors too.

    python benchmarks/md_threads.py --peptide WP --seconds 25
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openmm
import openmm.unit as unit

from jamun.md import MDSettings
from jamun.md.platform import make_context, select_platform
from jamun.md.protocol import make_integrator
from jamun.md.system import PreparedSystem, create_system, load_system_pdb
from jamun.peptides import build_peptide

CHUNK_STEPS = 500  # steps between clock reads (~40 ms at 2,000 ns/day and 2 fs)


@contextlib.contextmanager
def competitor(busy: bool) -> Iterator[None]:
    """While active, a child process spinning on one core (nothing if not `busy`)."""
    if not busy:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start and take its core
        yield
    finally:
        proc.terminate()
        proc.wait()


def sustained(prepared: PreparedSystem, settings: MDSettings, platform: str, threads: int | None,
              seconds: float) -> tuple[float, float]:
    """ns/day by wall clock over `seconds` of stepping after minimization and a warm-up, and cpu/wall."""
    integrator = make_integrator(settings, 1)
    context = make_context(prepared.system, integrator, platform, threads)
    context.setPositions(prepared.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    context.setVelocitiesToTemperature(settings.temperature_k * unit.kelvin, 1)
    integrator.step(CHUNK_STEPS)
    steps, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        integrator.step(CHUNK_STEPS)
        steps += CHUNK_STEPS
    elapsed = time.perf_counter() - wall
    return steps * settings.timestep_ps / 1000.0 / elapsed * 86400.0, (time.process_time() - cpu) / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peptide", default="WP", help="sequence between the ACE/NME caps")
    parser.add_argument("--seconds", type=float, default=25.0, help="stepping time per row")
    parser.add_argument("--probes", type=int, default=3, help="auto-probe repeats per condition")
    args = parser.parse_args(argv)

    default_threads = openmm.Platform.getPlatformByName("CPU").getPropertyDefaultValue("Threads")
    print(f"cpus {os.cpu_count()}, OpenMM {openmm.__version__} (CPU default Threads={default_threads}), "
          f"load average at start {os.getloadavg()}")
    settings = MDSettings.from_config({})
    with tempfile.TemporaryDirectory() as tmp:
        pdb = load_system_pdb(build_peptide(args.peptide, Path(tmp) / "system.pdb"))
    prepared = create_system(pdb.topology, pdb.positions, settings)
    print(f"peptide ACE-{args.peptide}-NME, {prepared.system.getNumParticles()} atoms, implicit, "
          f"{settings.timestep_fs} fs")

    auto = MDSettings.from_config({"platform": "auto"})
    print("\nauto probe (select_platform, 0.5 s per platform): choice and ns/day per platform")
    for busy in (False, True):
        for threads in (1, None):
            with competitor(busy):
                for _ in range(args.probes):
                    name, timings = select_platform(prepared.system, prepared.positions, auto, threads)
                    rounded = {k: round(v) for k, v in timings.items()}
                    print(f"  threads={str(threads):4s} {'beside competitor' if busy else 'alone':17s} -> "
                          f"{name:9s} {rounded}", flush=True)

    print(f"\n{'platform':9s} {'threads':>7s} {'competitor':>10s} {'ns/day':>8s} {'cpu/wall':>8s}  "
          f"(sustained, {args.seconds:g} s each)")
    for busy in (False, True):
        for platform, threads in (("Reference", None), ("CPU", 1), ("CPU", None)):
            with competitor(busy):
                rate, cores = sustained(prepared, settings, platform, threads, args.seconds)
            label = "-" if platform == "Reference" else "default" if threads is None else str(threads)
            print(f"{platform:9s} {label:>7s} {'yes' if busy else 'no':>10s} {rate:8.0f} {cores:8.2f}", flush=True)
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
