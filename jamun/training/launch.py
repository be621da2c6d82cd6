"""The entry of training: :func:`train` runs this process's :class:`~jamun.training.loop.Trainer`,
or starts ``nproc`` of them with torchrun and waits (docs/design.md §8).

There is one launch path: every multi-process run, whether ``jamun train`` started it (the
workflow rule) or a call of :func:`train` (tests, benchmarks), is
``torchrun ... -m jamun.cli train ...``, whose processes come back into :func:`train` inside the
group and train.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from jamun.lock import owned
from jamun.training.distributed import in_launched_group, setup, teardown
from jamun.training.loop import Trainer
from jamun.training.settings import train_settings
from jamun.training.state import WORK_DIR

# Set for the processes `launch` starts: their parent already owns the work folder.
LAUNCHED_BY_JAMUN = "JAMUN_LAUNCHED_RANKS"

__all__ = ["train", "launch"]


def train(
    train_shards: Path,
    out_dir: Path,
    train_cfg: Mapping,
    *,
    val_shards: Path | None = None,
    validation_md: Sequence[Path] = (),
    init_model: Path | None = None,
    threads: int | None = None,
    nproc: int | None = None,
    interrupt_at_step: int | None = None,
) -> dict:
    """Train a denoiser on the ``train_shards`` folder and write ``out_dir``/{model.ckpt,
    metrics.csv, loss.png, train.json}; resumes from ``out_dir``/.work/last.pt if present.

    Parameters
    ----------
    val_shards
        The validation split's shard folder; None: no validation loss.
    train_cfg
        The ``train:`` config section; missing keys take the schema's defaults
        (:func:`jamun.training.settings.train_settings`). ``batch_size`` is per process.
    validation_md
        MD folders (``results/md/<peptide>``: system.pdb, traj.xtc, topology.pdb) of the
        validation peptides for the sample checks that choose ``model.ckpt`` (with
        ``train.sample_check.every`` set); none: ``model.ckpt`` is the last state.
    init_model
        A checkpoint of the same architecture whose weights training starts from (warm start).
    threads
        torch CPU threads of the node, split evenly between its processes (LOCAL_WORLD_SIZE).
    nproc
        Processes; default ``max(1, train_cfg["gpus"])``. Above 1 (and not already inside a
        torchrun group) this runs :func:`launch` and waits. On CPU, nproc > 1 runs gloo
        processes (tests).
    interrupt_at_step
        Stop once this step is done, leaving only ``.work/last.pt`` as a killed run would (tests).

    Returns
    -------
    The ``train.json`` content (or ``{"interrupted_at_step": k}``).
    """
    settings = train_settings(train_cfg)
    train_shards, out_dir = Path(train_shards), Path(out_dir)
    val_shards = Path(val_shards) if val_shards is not None else None
    validation_md = [Path(d) for d in validation_md]
    init_model = Path(init_model) if init_model is not None else None
    nproc = nproc or max(1, settings["gpus"])
    # The process that starts the run owns the work folder; the ranks it launches do not lock again.
    owner = not os.environ.get(LAUNCHED_BY_JAMUN) and int(os.environ.get("RANK", "0")) == 0
    existed = out_dir.exists()
    try:
        with owned(out_dir / WORK_DIR) if owner else contextlib.nullcontext():
            try:
                return _train(train_shards, out_dir, settings, val_shards, validation_md, init_model, threads,
                              nproc, interrupt_at_step)
            except BaseException:
                if owner:
                    _remove_if_empty(out_dir / WORK_DIR)  # still locked: nobody else is writing it
                raise
    except BaseException:
        if owner and not existed:
            _remove_if_empty(out_dir)  # the lock file is gone with the work folder
        raise


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if a failed run created it and left nothing in it."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _train(train_shards: Path, out_dir: Path, settings: dict, val_shards: Path | None, validation_md: list[Path],
           init_model: Path | None, threads: int | None, nproc: int, interrupt_at_step: int | None) -> dict:
    """:func:`train` once the work folder is owned: launch the ranks, or be one."""
    if nproc > 1 and not in_launched_group():
        out_dir.mkdir(parents=True, exist_ok=True)
        args = ["--train-shards", str(train_shards), "-o", str(out_dir), "--settings", json.dumps(settings)]
        args += ["--val-shards", str(val_shards)] if val_shards else []
        args += ["--validation-md", *map(str, validation_md)] if validation_md else []
        args += ["--init-model", str(init_model)] if init_model else []
        args += ["--threads", str(threads)] if threads else []
        launch(nproc, args, threads_per_process=None if threads is None else max(1, threads // nproc))
        return json.loads((out_dir / "train.json").read_text())
    if threads is not None:
        torch.set_num_threads(max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    ctx = setup(settings["gpus"])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Trainer(train_shards, val_shards, out_dir, settings, ctx, validation_md, init_model).run(
            interrupt_at_step
        )
    finally:
        teardown(ctx)


def launch(nproc: int, train_args: Sequence[str], *, threads_per_process: int | None = None) -> None:
    """Run ``jamun train TRAIN_ARGS`` as ``nproc`` processes of one group via torchrun.

    ``--standalone`` makes torchrun pick a free local port, so concurrent jobs do not collide.
    Under SLURM this runs inside the job step (one task); torchrun starts one process per GPU.

    Raises
    ------
    RuntimeError
        If any process fails (torchrun's return code is in the message; the processes' own
        errors went to stderr).
    """
    env = dict(os.environ, **{LAUNCHED_BY_JAMUN: "1"})
    if threads_per_process is not None:
        env["OMP_NUM_THREADS"] = str(threads_per_process)
    # Spinning OpenMP threads collapse when cores are oversubscribed (2 threads ran 6x slower
    # than 1 on a busy 2-core machine); sleeping ones cost little. Must be set before torch loads.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc_per_node={nproc}", "-m", "jamun.cli", "train", *train_args,
    ]  # fmt: skip
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"distributed training with {nproc} processes failed (torchrun exit code {result.returncode})"
        )
