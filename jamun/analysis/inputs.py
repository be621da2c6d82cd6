"""The files one evaluation reads, each checked where it is read.

A trajectory must be readable, hold the atoms of its topology and exactly the frames its run
record (``md.json`` or ``sample.json``) says were written, with times in order; anything else is
refused with one line naming the file (:class:`jamun.errors.InputError`), so metrics are never
computed from a truncated or mixed-up run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np

from jamun.errors import bad_file

__all__ = ["EnsembleFiles", "load_trajectory", "read_record"]


@dataclass(frozen=True)
class EnsembleFiles:
    """The files one evaluation reads, each named by the caller (no folder layout is assumed).

    reference, reference_record, topology: the reference MD's trajectory, md.json and all-atom
    topology, which the replicate shares; replicate, replicate_record: the independent replicate;
    samples, samples_record, samples_topology: samples.xtc, sample.json and heavy-atom topology.
    """

    reference: Path
    reference_record: Path
    topology: Path
    replicate: Path
    replicate_record: Path
    samples: Path
    samples_record: Path
    samples_topology: Path

    @classmethod
    def from_folders(cls, reference: Path, replicate: Path, samples: Path) -> EnsembleFiles:
        """The files in output folders of `jamun simulate` (reference, replicate) and `jamun sample`."""
        reference, replicate, samples = Path(reference), Path(replicate), Path(samples)
        return cls(reference / "traj.xtc", reference / "md.json", reference / "topology.pdb",
                   replicate / "traj.xtc", replicate / "md.json",
                   samples / "samples.xtc", samples / "sample.json", samples / "topology.pdb")


def read_record(path: Path, writer: str, required: tuple[str, ...]) -> dict:
    """A run record (JSON object) with the ``required`` keys; ``writer`` is the step to rerun."""
    if not path.is_file():
        raise FileNotFoundError(f"run record {path} not found; run `{writer}` first")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_file(path, f"not a JSON run record ({error})", f"rerun `{writer}`") from None
    missing = [key for key in required if not isinstance(record, dict) or key not in record]
    if missing:
        raise bad_file(path, f"run record without {', '.join(missing)}", f"rerun `{writer}`")
    return record


def load_trajectory(xtc: Path, topology_pdb: Path, writer: str, *, frames: int,
                    frame_interval: float | None) -> mdtraj.Trajectory:
    """Heavy-atom frames of ``xtc`` on ``topology_pdb``, checked against its run record.

    frames: how many frames the record says were written. frame_interval: the time between
    frames (ps) the record gives, or None where frames share times (walk-jump chains saved
    together), which then need only be non-decreasing.
    """
    for path in (xtc, topology_pdb):
        if not path.is_file():
            raise FileNotFoundError(f"trajectory input {path} not found; run `{writer}` first")
    try:
        topology = mdtraj.load_topology(str(topology_pdb))
    except Exception as error:  # mdtraj raises many kinds for a damaged PDB
        raise bad_file(topology_pdb, f"unreadable topology ({error})", f"rerun `{writer}`") from None
    try:
        traj = mdtraj.load(str(xtc), top=topology)
    except Exception as error:  # the xdrfile reader raises OSError, RuntimeError or ValueError
        raise bad_file(xtc, f"unreadable trajectory ({type(error).__name__}: {error})",
                       f"rerun `{writer}`") from None
    if traj.n_frames != frames:
        raise bad_file(xtc, f"holds {traj.n_frames} frames, its run record says {frames}",
                       f"the run was cut short or mixed with another: rerun `{writer}`")
    steps = np.diff(traj.time)
    in_order = np.all(steps > 0) if frame_interval is not None else np.all(steps >= 0)
    if not in_order:
        first = int(np.argmax(steps <= 0 if frame_interval is not None else steps < 0)) + 1
        raise bad_file(xtc, f"frame {first} goes back in time ({traj.time[first - 1]:g} -> {traj.time[first]:g})",
                       f"frames of two runs are mixed: rerun `{writer}`")
    if frame_interval is not None and len(steps) and not np.allclose(steps, frame_interval, rtol=1e-3, atol=1e-3):
        raise bad_file(xtc, f"frames are not {frame_interval:g} ps apart as its run record says",
                       f"rerun `{writer}`")
    heavy = [atom.index for atom in topology.atoms if atom.element.symbol != "H"]
    return traj.atom_slice(heavy)
