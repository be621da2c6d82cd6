"""One owner per work folder: a lock that names its holder and dies with it.

Two processes resuming one work folder interleave their frames or checkpoints (a killed Snakemake
leaves its job running as an orphan; ``--rerun-incomplete`` then starts a second one). The lock
is an exclusive ``flock`` on ``<folder>.lock`` held for the life of the process: the kernel frees
it when the holder exits or is killed, so a dead holder's lock is simply taken over, and a live
holder is named (pid, host, start time, command) in the refusal. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jamun.errors import InputError

__all__ = ["WorkFolderBusy", "owned"]


class WorkFolderBusy(InputError):
    """Another live process holds the work folder."""


@contextlib.contextmanager
def owned(folder: Path | str) -> Iterator[Path]:
    """Hold ``<folder>.lock`` while the block runs; WorkFolderBusy naming the holder if it is taken.

    The lock file is removed on release once the folder is gone (a finished or abandoned run), while
    the lock is still held, so a process that opened it meanwhile is refused rather than let in twice.
    """
    folder = Path(folder)
    lock_path = folder.with_name(folder.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            raise WorkFolderBusy(
                f"{folder} is in use by {holder}; wait for it to finish or stop it (a killed Snakemake can "
                f"leave its job running), then rerun"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}))
        handle.flush()
        try:
            yield lock_path
        finally:
            if not folder.exists():
                lock_path.unlink(missing_ok=True)
    finally:
        handle.close()  # releases the flock
