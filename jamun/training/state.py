"""Training checkpoints in the work folder: atomic writes, RNG states, plain contents.

A checkpoint is ``torch.save`` of plain Python values and tensors only (numpy RNG keys become a
tensor), so it loads with ``torch.load(weights_only=True)``. Writes go to a temporary file in the
same folder, are flushed to disk and then renamed over the old file, so a process killed at any
moment leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "save_atomic", "load_state"]


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
    """``torch.save`` ``state`` to ``path`` via a synced temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_state(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)
