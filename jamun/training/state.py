"""Training checkpoints in the work folder ``OUT/.work`` (docs/design.md §5.5): which run they
belong to, where they are written, RNG states.

A checkpoint is ``torch.save`` of plain Python values and tensors only (numpy RNG keys become a
tensor), so it loads with ``torch.load(weights_only=True)``. Writes go through
:func:`jamun.atomic.write_atomic` and are synced to disk before the rename, so a process killed at
any moment leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from jamun.atomic import write_atomic
from jamun.errors import bad_file

__all__ = ["RESUMABLE_CHANGES", "rng_state", "set_rng_state", "save_atomic", "load_state", "resume_key", "WorkFolder"]

# Settings that may change between a stop and a resume without changing what training computes
# (max_steps only with a constant learning rate: a decaying schedule ends at max_steps).
RESUMABLE_CHANGES = ("max_steps", "max_minutes", "checkpoint_every", "val_every", "val_batches", "gpus")


def rng_state() -> dict:
    """Global RNG states of torch (CPU and, if used, CUDA), numpy and Python's random."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},  # fmt: skip
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(state: dict, path: Path) -> Path:
    """``torch.save`` ``state`` to ``path`` atomically, synced to disk before the rename."""

    def save_synced(tmp: Path) -> None:
        with tmp.open("wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())

    return write_atomic(path, save_synced)


def load_state(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_key(settings: Mapping, world_size: int, train_manifest_sha256: str, sample_check_peptides: list[str],
               initialised_from_sha256: str | None) -> str:
    """What a checkpoint must share with this run to be resumed: the settings that change what
    training computes (all but :data:`RESUMABLE_CHANGES`), the world size, the training shards,
    the sample-check peptides and the warm-start weights."""
    fixed = {
        k: v for k, v in settings.items()
        if k not in RESUMABLE_CHANGES or (k == "max_steps" and settings["lr_schedule"] != "constant")
    }  # fmt: skip
    return json.dumps(
        {
            "settings": fixed, "world_size": world_size, "train_manifest_sha256": train_manifest_sha256,
            "sample_check_peptides": sample_check_peptides, "initialised_from": initialised_from_sha256,
        },
        sort_keys=True,
    )  # fmt: skip


WORK_DIR = ".work"  # inside the output folder; resume state, never a declared output


class WorkFolder:
    """``last.pt`` and the newest numbered checkpoints ``step_NNNNNNNN.pt`` of one run.

    Parameters
    ----------
    path
        The folder, ``OUT/.work``.
    key
        The run's :func:`resume_key`, stored in every checkpoint.
    keep
        Numbered checkpoints kept besides ``last.pt``.
    """

    def __init__(self, path: Path, key: str, keep: int = 3) -> None:
        self.path, self.key, self.keep = Path(path), key, keep

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def load(self, remove_foreign: bool) -> dict | None:
        """The state in ``last.pt`` if this run wrote it; None if there is none or another run
        (other settings, world size or shards) wrote it, in which case ``remove_foreign`` (rank 0;
        other ranks have run no step yet) deletes the folder.

        A damaged ``last.pt`` falls back to the newest readable numbered checkpoint (said on
        stderr); when none is readable the run stops (InputError) rather than start over.
        """
        candidates = [self.last, *sorted(self.path.glob("step_*.pt"), reverse=True)]
        damaged = []
        for path in (p for p in candidates if p.is_file()):
            try:
                state = load_state(path)
                state["resume_key"]  # noqa: B018 (a checkpoint of this format)
                break
            except Exception as error:  # torch raises RuntimeError, pickle or OS errors for a damaged file
                damaged.append(f"{path.name} ({type(error).__name__})")
        else:
            if damaged:
                raise bad_file(self.path, f"cannot resume: every checkpoint is damaged ({', '.join(damaged)})",
                               f"delete {self.path} to start training over")
            return None
        if damaged:
            print(f"{self.path}: {', '.join(damaged)} damaged; resuming from {path.name}", file=sys.stderr)
        if state["resume_key"] == self.key:
            return state
        if remove_foreign:
            print(f"discarding {self.path}: made with other settings, world size or shards", file=sys.stderr)
            self.remove()
        return None

    def save(self, state: dict, step: int, numbered: bool) -> None:
        """Write ``state`` (tagged with the key) as ``last.pt``; ``numbered``: as ``step_<step>.pt``
        too, the same file hard-linked, dropping all but the newest ``keep`` numbered ones."""
        state = {"resume_key": self.key, **state}
        if not numbered:
            save_atomic(state, self.last)
            return
        path = save_atomic(state, self.path / f"step_{step:08d}.pt")
        tmp = self.path / ".last.pt.link"
        tmp.unlink(missing_ok=True)
        os.link(path, tmp)  # last.pt becomes the same file, atomically, without a second write
        os.replace(tmp, self.last)
        for old in sorted(self.path.glob("step_*.pt"))[: -self.keep]:
            old.unlink()

    def remove(self) -> None:
        """Delete the folder (when the outputs are written, or it belongs to another run)."""
        shutil.rmtree(self.path)
