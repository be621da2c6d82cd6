#!/usr/bin/env python3
"""A stand-in SLURM on one machine, for testing the SLURM profile without a cluster.

The commands snakemake-executor-plugin-slurm 2.8.0 and its job-step plugin 0.6.1 call are links
to this script, which acts by the name it was called under:

- ``sbatch``   runs the ``--wrap`` command (or the script on stdin) to completion in ``-D`` with
               SLURM's job variables set (``SLURM_GPUS`` from ``--gpus``: the job-step plugin reads
               it), writes its output to ``--output`` (``%j`` = job id), then prints the job id
               (``--parsable``). Running the job before answering keeps tests fast: the plugin's
               first status poll already sees the final state (it backs off +10 s per poll that
               finds none finished).
- ``sacct``, ``squeue``  list ``<id>|<state>`` of the jobs named ``--name`` (COMPLETED / FAILED).
- ``srun``     drops its options (all ``--opt=value`` / ``-n1`` single tokens, as the job-step
               plugin writes them) and runs the command that follows in place.
- ``sacctmgr`` lists the one account, ``fake_account``; ``sinfo`` the partitions ``cpu`` (default)
               and ``gpu`` (its presence also makes the plugin pick ``sacct`` for status);
               ``scontrol show config`` prints MinJobAge and MaxArraySize; ``scancel`` only records.

Every call is appended as one JSON line ``{"cmd", "argv", "cwd"}`` to
``$FAKE_SLURM_DIR/calls.jsonl``; job states live in ``$FAKE_SLURM_DIR/jobs/<id>.json``. sbatch
rejects a partition other than ``cpu`` and ``gpu``, as a real cluster would. By hand:
``PATH=tests/fake_slurm:$PATH FAKE_SLURM_DIR=/tmp/fake_slurm snakemake --workflow-profile ...``
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

ACCOUNT = "fake_account"
PARTITIONS = ("cpu", "gpu")
FIRST_JOB_ID = 1001


def state_dir() -> Path:
    """The fake cluster's state folder, ``$FAKE_SLURM_DIR`` (must be set)."""
    if "FAKE_SLURM_DIR" not in os.environ:
        sys.exit("fake SLURM: set FAKE_SLURM_DIR to a writable folder for calls and job states")
    path = Path(os.environ["FAKE_SLURM_DIR"])
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def record_call(cmd: str, argv: list[str]) -> None:
    """Append this call to calls.jsonl (locked: the plugin submits from two threads)."""
    line = json.dumps({"cmd": cmd, "argv": argv, "cwd": os.getcwd()}) + "\n"
    with open(state_dir() / "calls.jsonl", "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(line)


def option_value(argv: list[str], *names: str) -> str | None:
    """Value of an option given as ``--name=value``, ``--name value`` or ``-x value``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def next_job_id() -> int:
    """A new job id from a locked counter file."""
    with open(state_dir() / "next_id", "a+") as counter:
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        text = counter.read().strip()
        job_id = int(text) if text else FIRST_JOB_ID
        counter.seek(0)
        counter.truncate()
        counter.write(str(job_id + 1))
    return job_id


def write_job(job_id: int, name: str, state: str) -> None:
    """Record a job's name (the plugin's run id, for ``--name``) and SLURM state, atomically."""
    path = state_dir() / "jobs" / f"{job_id}.json"
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"name": name, "state": state}))
    os.replace(partial, path)


def sbatch(argv: list[str]) -> int:
    """Run the job to completion, record its final state, print its id."""
    partition = option_value(argv, "-p", "--partition")
    if partition is not None and partition not in PARTITIONS:
        print(f"sbatch: error: invalid partition specified: {partition}", file=sys.stderr)
        return 1
    command = option_value(argv, "--wrap")
    if command is None:
        command = sys.stdin.read()
    job_id = next_job_id()
    name = option_value(argv, "--job-name", "-J") or "sbatch"
    workdir = option_value(argv, "-D", "--chdir") or os.getcwd()
    output = (option_value(argv, "--output", "-o") or "slurm-%j.out").replace("%j", str(job_id))
    env = {**os.environ, "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id),
           "SLURM_JOB_NAME": name, "SLURM_SUBMIT_DIR": os.getcwd()}
    gpus = option_value(argv, "--gpus")
    if gpus is not None:
        env["SLURM_GPUS"] = gpus
    write_job(job_id, name, "RUNNING")
    with open(Path(workdir) / output, "w") as log:
        returncode = subprocess.run(
            ["/bin/sh", "-c", command], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
    write_job(job_id, name, "COMPLETED" if returncode == 0 else "FAILED")
    print(job_id)
    return 0


def job_states(argv: list[str]) -> int:
    """``sacct`` / ``squeue``: one ``<id>|<state>`` line per job named ``--name``."""
    name = option_value(argv, "--name")
    if name is None:
        return 0
    for path in sorted((state_dir() / "jobs").glob("*.json")):
        job = json.loads(path.read_text())
        if job["name"] == name:
            print(f"{path.stem}|{job['state']}")
    return 0


def srun(argv: list[str]) -> NoReturn:
    """Replace this process by the command after srun's options."""
    first = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    if first == len(argv):
        sys.exit("srun: fatal: no command given")
    os.execvp(argv[first], argv[first:])


def main() -> int:
    cmd = Path(sys.argv[0]).name
    argv = sys.argv[1:]
    record_call(cmd, argv)
    if cmd == "sbatch":
        return sbatch(argv)
    if cmd in ("sacct", "squeue"):
        return job_states(argv)
    if cmd == "srun":
        srun(argv)
    if cmd == "sacctmgr":
        print(ACCOUNT)
        return 0
    if cmd == "sinfo":
        print("PARTITION\n" + "\n".join([PARTITIONS[0] + "*", *PARTITIONS[1:]]))
        return 0
    if cmd == "scontrol":
        print("MinJobAge               = 300 sec\nMaxArraySize            = 1001")
        return 0
    if cmd == "scancel":
        return 0
    print(f"fake SLURM: unknown command {cmd!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
