"""Reference MD with OpenMM (docs/design.md §3): `simulate` runs the protocol on a built peptide,
resumably, with settings `MDSettings` from the `md:` config section.

One job per module:

- settings: `MDSettings`, the `md:` section checked against the schema and across keys;
- system: force field, implicit or explicit (solvated) system, hydrogen mass repartitioning;
- platform: the OpenMM platform (timed for "auto"), CPU threads, every Context;
- protocol: minimization, restrained NVT/NPT stages, production stage, integrator and seeds;
- run: `simulate`, the resumable loop (work folder, checkpoints, XTC truncation, final move);
- records: run.json and md.json.
"""

from jamun.md.run import simulate
from jamun.md.settings import MDSettings

__all__ = ["MDSettings", "simulate"]
