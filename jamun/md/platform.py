"""Where MD runs: the OpenMM platform (chosen by timing for "auto"), its thread count, and the one
place every MD Context is made (docs/design.md §3).

The CPU platform gets the threads the job was given, so a workflow job does not compete with the
job beside it; the choice and its timings are recorded in run.json and reused on resume
(jamun/md/run.py), since a second probe on a busy machine could choose otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import openmm
import openmm.unit as unit

from jamun.md.settings import MDSettings

log = logging.getLogger(__name__)

# Measured in this order by platform "auto" (GPU first: it usually wins and compiles kernels once).
AUTO_CANDIDATES = ("CUDA", "OpenCL", "Reference", "CPU")


def available_platforms() -> list[str]:
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def check_threads(threads: int | None) -> None:
    """ValueError unless `threads` is a positive int or None."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")


def platform_properties(name: str, threads: int | None) -> dict[str, str]:
    """OpenMM properties for platform `name`: the CPU platform gets `Threads` = threads.

    A job then uses the cores its scheduler gave it, not every core of the machine. None keeps
    OpenMM's default (all cores, or $OPENMM_CPU_THREADS). Reference is single-threaded and the GPU
    platforms take no thread count, so they get no properties.
    """
    check_threads(threads)
    return {"Threads": str(threads)} if name == "CPU" and threads is not None else {}


def make_context(system: openmm.System, integrator: openmm.Integrator, name: str, threads: int | None
                 ) -> openmm.Context:
    """A Context on platform `name` with `platform_properties(name, threads)`; every MD context is made here."""
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(name),
                          platform_properties(name, threads))


def ns_per_day(ns: float, seconds: float) -> float:
    """Throughput of `ns` simulated in `seconds` of wall time; NaN for no time."""
    return ns / seconds * 86400.0 if seconds > 0 else float("nan")


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
    return ns_per_day(steps * settings.timestep_ps / 1000.0, time.perf_counter() - start)


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


def choose_platform(system: openmm.System, positions: unit.Quantity, settings: MDSettings, threads: int | None,
                    recorded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The platform record of a run segment: {"platform", "platform_ns_per_day", "threads"}.

    A fresh run (`recorded` None) selects with :func:`select_platform`. A resumed run keeps its
    recorded platform and timings unless the settings now name another platform, this machine
    lacks it, or 'auto' chose it with another thread count (a record from before threads were
    recorded counts as None, OpenMM's default). "threads" is always the count this segment runs with.
    """
    if recorded is not None:
        keep = (settings.platform in ("auto", recorded["platform"]) and recorded["platform"] in available_platforms()
                and not (settings.platform == "auto" and recorded.get("threads") != threads))
        if keep:
            return {"platform": recorded["platform"], "platform_ns_per_day": recorded["platform_ns_per_day"],
                    "threads": threads}
    platform, timings = select_platform(system, positions, settings, threads)
    if recorded is not None:
        log.warning("resuming on platform %s with threads %s instead of the recorded %s with %s",
                    platform, threads, recorded["platform"], recorded.get("threads"))
    return {"platform": platform, "platform_ns_per_day": timings, "threads": threads}
