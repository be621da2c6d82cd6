"""Measured-cost bookkeeping: MD of equal wall time and prefix lengths for JSD-vs-time curves.

Costs come from the run records: md.json (`production_wall_seconds` or `wall_seconds`,
`n_frames`) and sample.json (`wall_seconds`, shared by `batch_peptides`). A prefix of a run is
charged pro rata (k of n frames cost k/n of the wall time), which ignores setup costs but keeps
both methods on the same footing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def seconds_per_frame(run_record: dict, name: str = "md.json") -> float:
    """Measured wall seconds per saved frame of an MD run record (md.json).

    Uses `production_wall_seconds` when recorded, else `wall_seconds`, over `n_frames`:
    equilibration is a fixed cost that more frames do not repeat, and leaving it out charges MD
    the least per frame (the comparison never flatters the sampler).
    """
    seconds = run_record.get("production_wall_seconds", run_record.get("wall_seconds"))
    frames = run_record.get("n_frames")
    if seconds is None or frames is None:
        raise ValueError(f"{name} lacks 'wall_seconds' (or 'production_wall_seconds') or "
                         f"'n_frames'; keys present: {sorted(run_record)}")
    if float(seconds) <= 0 or int(frames) <= 0:
        raise ValueError(f"{name}: wall seconds {seconds} and n_frames {frames} must be positive")
    return float(seconds) / int(frames)


def sampler_seconds(sample_record: dict, sequence: str, name: str = "sample.json") -> float:
    """Measured sampler wall seconds charged to `sequence` (s).

    Peptides sampled together in one batch (`batch_peptides`) share its wall time equally.
    """
    if "wall_seconds" not in sample_record:
        raise ValueError(f"{name} lacks 'wall_seconds'; keys present: {sorted(sample_record)}")
    batch = sample_record.get("batch_peptides") or [sequence]
    if sequence not in batch:
        raise ValueError(f"{name} was sampled for {batch}, not for peptide {sequence}")
    return float(sample_record["wall_seconds"]) / len(batch)


@dataclass(frozen=True)
class EqualTimePrefix:
    """The MD prefix that costs as much as the sampler.

    frames: prefix length (≥ 1) actually used; seconds: its cost (s);
    target_frames: frames the sampler's cost would buy; capped: the replicate was shorter.
    """

    frames: int
    seconds: float
    target_frames: int
    capped: bool


def equal_time_prefix(sampler_seconds: float, md_seconds_per_frame: float,
                      available_frames: int) -> EqualTimePrefix:
    """Longest MD prefix whose measured cost does not exceed `sampler_seconds` (s).

    At least one frame is used; if the replicate holds fewer frames than the cost buys, the prefix
    is the whole replicate and `capped` is True.
    """
    if sampler_seconds <= 0 or md_seconds_per_frame <= 0 or available_frames < 1:
        raise ValueError(f"need positive sampler_seconds ({sampler_seconds}), md_seconds_per_frame "
                         f"({md_seconds_per_frame}) and available_frames ({available_frames})")
    # The small relative slack absorbs float error when the cost is an exact multiple.
    target = max(1, int(np.floor(sampler_seconds / md_seconds_per_frame * (1 + 1e-12))))
    frames = min(target, available_frames)
    return EqualTimePrefix(frames=frames, seconds=frames * md_seconds_per_frame,
                           target_frames=target, capped=target > available_frames)


def prefix_lengths(total: int, points: int, smallest_fraction: float = 0.01) -> np.ndarray:
    """About `points` log-spaced prefix lengths (int64, increasing, unique) ending at `total`.

    The first is `smallest_fraction` of the total (at least 1).
    """
    if total < 1 or points < 1:
        raise ValueError(f"need total ≥ 1 and points ≥ 1, got total={total}, points={points}")
    start = max(1.0, smallest_fraction * total)
    return np.unique(np.geomspace(start, total, points).round().astype(np.int64))
