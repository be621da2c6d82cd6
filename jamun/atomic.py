"""Atomic file writes: a file appears complete under its name or not at all.

Every output of the pipeline is written to a temporary sibling and moved into place with
``os.replace`` (atomic on POSIX within one filesystem), so a killed job never leaves a half-written
file that a rerun or a reader would take for a finished one. Imports only the standard library.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_json_atomic", "write_text_atomic"]


def write_atomic(path: Path | str, write: Callable[[Path], None], *, mode: int = 0o644) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it to ``path``.

    The parent folder is created. ``mode`` is applied before the move (mkstemp makes files 0600,
    which other users of a shared results folder could not read). On any error the temporary file
    is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path | str, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (keys in insertion order, trailing newline) atomically."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n")
