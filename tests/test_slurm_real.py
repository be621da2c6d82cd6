"""The SLURM profile on a real SLURM: a one-node cluster on this machine runs ``config/ci.yaml``.

A session fixture writes a ``slurm.conf`` into a temporary folder (this host's name, CPUs and memory
as ``slurmd -C`` reports them; partitions named as ``JAMUN_SLURM_PARTITION`` and
``JAMUN_SLURM_GPU_PARTITION`` say; no cgroups, no accounting database), starts ``munged`` if none
answers, then ``slurmctld -f <conf>`` and ``slurmd`` (which fetches the configuration from slurmctld,
see ``slurm_cluster``), waits until ``sinfo`` shows the node idle, and stops what it started
afterwards. Snakemake then runs a copy of the workflow, configured as the local run of
tests/conftest.py (``ci_run``), with ``--workflow-profile workflow/profiles/slurm`` and the real
snakemake-executor-plugin-slurm: every job that is not a localrule goes through ``sbatch``, its job
step through ``srun``, on this machine's filesystem (slurmd runs as root; jobs as their user).

What the run needs on top of the profile (``overrides``), all of it about this small cluster:

- No accounting database: ``sacct`` answers "Slurm accounting storage is disabled", so the plugin
  polls with ``squeue`` (``--slurm-status-command squeue``; the plugin uses it only while MinJobAge
  is at least 3 x the first poll delay, hence ``MinJobAge=3600`` here). Its account check finds no
  accounts and is skipped: any account name is accepted.
- The profile's requests are sized for a real cluster: ``shard`` 32000 MB and ``train`` 64000 MB
  exceed this node's memory and are capped at it; ``set-threads`` (sample 4) exceeds its 2 CPUs, so
  sampling gets the rule's own 1 thread, as in the local run, whose seeded outputs are then equal
  byte for byte.

GPU requests cannot be shown on a node without GPUs (``train.gpus`` is 0 and ``sample.device`` auto
in config/ci.yaml): tests/test_slurm_profile.py keeps the stand-in SLURM commands for those flags
(``--gpus``, no ``--ntasks-per-gpu``, one task for multi-GPU training).

Skipped, with the reason, where munged, slurmctld or slurmd are not installed (Debian:
``apt-get install slurm-wlm munge``; .ci/run does) or the tests do not run as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow_to

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE = "workflow/profiles/slurm"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("munge", "unmunge", "sbatch", "squeue", "sinfo", "scontrol", "sshare")
MISSING = [name for name in DAEMONS + COMMANDS if shutil.which(name, path=SBIN) is None]
# Partition and account names as a user exports them (README, "Running on a cluster").
SLURM_ENV = {
    "JAMUN_SLURM_ACCOUNT": "jamun_ci_account",
    "JAMUN_SLURM_PARTITION": "jamun_cpu",
    "JAMUN_SLURM_GPU_PARTITION": "jamun_gpu",
}
# Rules the profile routes to the GPU partition (set-resources slurm_partition).
GPU_PARTITION_RULES = {"train", "sample", "sample_pretrained"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"SLURM not installed ({', '.join(MISSING)} not found; Debian: apt-get install "
        "slurm-wlm munge)",
    ),
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0,
        reason="slurmd runs jobs as their user and must run as root (CI runs as root)",
    ),
]


def which(name: str) -> str:
    return shutil.which(name, path=SBIN)


@dataclass
class Cluster:
    conf: Path
    node: str
    cpus: int
    memory_mb: int
    env: dict[str, str]  # SLURM_CONF for the client commands

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [which(args[0]), *args[1:]], env=self.env, capture_output=True, text=True, check=check,
            timeout=60,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_line() -> tuple[str, int, int]:
    """``NodeName=... CPUs=... RealMemory=...`` as slurmd detects this host, and CPUs, memory."""
    detected = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, check=True)
    line = detected.stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in line.split())
    return line, int(fields["CPUs"]), int(fields["RealMemory"])


def munge_works() -> bool:
    encode = subprocess.run([which("munge"), "-n"], capture_output=True)
    if encode.returncode != 0:
        return False
    decode = subprocess.run([which("unmunge")], input=encode.stdout, capture_output=True)
    return decode.returncode == 0


def start_munged() -> int | None:
    """Start the system munged (as the munge user, Debian's key) unless one answers; its pid."""
    if munge_works():
        return None
    if not Path("/etc/munge/munge.key").exists():
        pytest.skip("munged is not running and /etc/munge/munge.key is missing (mungekey -c)")
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    run_dir.chmod(0o755)
    subprocess.run([which("runuser"), "-u", "munge", "--", which("munged")], check=True)
    deadline = time.monotonic() + 20
    while not munge_works():
        assert time.monotonic() < deadline, "munged did not answer within 20 s"
        time.sleep(0.2)
    return int((run_dir / "munged.pid").read_text())


def stop_pid(pid: int | None, timeout: float = 20) -> None:
    """SIGTERM one process this module started, then wait for it (SIGKILL after ``timeout``)."""
    if pid is None:
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, 9)


def write_slurm_conf(folder: Path) -> tuple[Path, str, int, int]:
    node, cpus, memory_mb = node_line()
    name = node.split()[0].split("=", 1)[1]
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""# One-node test cluster (tests/test_slurm_real.py)
ClusterName=jamun-ci
# This host, reached over loopback whatever its name resolves to.
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
# No cgroups: processes are tracked by /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No accounting database: sacct and sacctmgr have nothing to ask.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay in slurmctld for an hour: squeue status polls and scontrol see them.
MinJobAge=3600
# slurmd and the commands inside jobs fetch this file from slurmctld (see slurm_cluster).
SlurmctldParameters=enable_configless
MpiDefault=none
ReturnToService=2
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={SLURM_ENV["JAMUN_SLURM_PARTITION"]} Nodes={name} Default=YES MaxTime=INFINITE State=UP
PartitionName={SLURM_ENV["JAMUN_SLURM_GPU_PARTITION"]} Nodes={name} MaxTime=INFINITE State=UP
"""
    )
    return conf, name, cpus, memory_mb


# Where slurmd keeps the configuration it fetched from slurmctld ("configless" SLURM); client
# commands on the node read it when neither SLURM_CONF nor /etc/slurm/slurm.conf points elsewhere.
CONFIGLESS_CACHE = Path("/run/slurm/conf")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Cluster:
    """munged (if not running), slurmctld and slurmd on this machine, stopped after the session.

    slurmd fetches its configuration from slurmctld (``--conf-server``, "configless"), as many
    clusters do: the job-step plugin (snakemake-executor-plugin-slurm-jobstep 0.6.1) removes
    SLURM_CONF from the environment of the ``srun`` it starts inside a job, so a ``slurm.conf``
    named only by SLURM_CONF would leave that ``srun`` without a configuration ("DNS SRV lookup
    failed"); slurmd's cache at /run/slurm/conf is where it then looks.
    """
    folder = tmp_path_factory.mktemp("slurm_cluster")
    if CONFIGLESS_CACHE.exists() and folder.parent not in CONFIGLESS_CACHE.resolve().parents:
        pytest.skip(f"another slurmd's configuration cache is at {CONFIGLESS_CACHE}")
    conf, node, cpus, memory_mb = write_slurm_conf(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    cluster = Cluster(conf, node, cpus, memory_mb, env | {"SLURM_CONF": str(conf)})
    port = re.search(r"^SlurmctldPort=(\d+)", conf.read_text(), flags=re.M)[1]
    munged = start_munged()
    started: list[Path] = []
    try:
        subprocess.run([which("slurmctld"), "-f", str(conf)], env=cluster.env, check=True)
        started.append(folder / "slurmctld.pid")
        subprocess.run(
            [which("slurmd"), "--conf-server", f"127.0.0.1:{port}"],
            env=cluster.env, check=True,
        )
        started.append(folder / "slurmd.pid")
        deadline = time.monotonic() + 60
        # One line per partition: the node is idle in both.
        while set(cluster.run("sinfo", "-h", "-n", node, "-o", "%t", check=False).stdout.split()) != {
            "idle"
        }:
            if time.monotonic() > deadline:
                logs = "".join((folder / f"{d}.log").read_text() for d in ("slurmctld", "slurmd"))
                pytest.fail(f"node {node} not idle after 60 s:\n{logs[-4000:]}")
            time.sleep(0.5)
        yield cluster
    finally:
        pids = [int(p.read_text()) for p in started if p.exists()]
        cluster.run("scontrol", "shutdown", check=False)  # slurmctld and its slurmd
        for pid in pids:
            stop_pid(pid)
        stop_pid(munged)
        if CONFIGLESS_CACHE.is_symlink() and folder in CONFIGLESS_CACHE.resolve().parents:
            CONFIGLESS_CACHE.unlink()


@dataclass
class SlurmRun:
    work: Path
    local: Path  # the local run of the same configuration (tests/conftest.py, ci_run)
    jobs: list[dict[str, str]]  # `scontrol show job` of every job of the run
    dag: set[tuple[str, str]]  # (rule, wildcards) of every job of a full run
    output: str  # Snakemake's stdout and stderr
    seconds: float

    @property
    def local_rules(self) -> set[str]:
        """Rules whose jobs Snakemake ran on the submit host (``localrule <name>:`` in its log)."""
        return set(re.findall(r"^localrule (\w+):", self.output, flags=re.M))

    def jobs_of(self, rule: str) -> list[dict[str, str]]:
        return [j for j in self.jobs if rule_of(j) == rule]


def rule_of(job: dict[str, str]) -> str:
    """The rule of a job from the plugin's comment ``rule_<name>[_wildcards_<values>]``."""
    return re.fullmatch(r"rule_(\w+?)(_wildcards_.*)?", job["Comment"])[1]


def scontrol_jobs(cluster: Cluster) -> list[dict[str, str]]:
    """The jobs Snakemake submitted (the plugin comments them ``rule_...``), as {field: value} of
    ``scontrol show job --oneliner``."""
    out = cluster.run("scontrol", "show", "job", "--oneliner").stdout
    jobs = [dict(re.findall(r"(\w[\w:/]*)=(\S*)", line)) for line in out.splitlines()]
    return [job for job in jobs if job.get("Comment", "").startswith("rule_")]


def dag_jobs(work: Path, configfile: str) -> set[tuple[str, str]]:
    """(rule, wildcard values joined by _) of every job of a full run, from a dry run with
    --forceall (the plugin's comment has the same form)."""
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--configfile", configfile],
        cwd=work, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        header = re.match(r"(local)?rule (\w+):", block)
        if not header:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        values = [kv.split("=", 1)[1] for kv in wildcards[1].split(", ")] if wildcards else []
        jobs.add((header[2], "_".join(values)))
    return jobs


def profile_value(value) -> str:
    """A profile value as Snakemake passes it on (snakemake/profiles.py): numeric strings quoted."""
    if isinstance(value, str):
        try:
            float(value)
            return repr(value)
        except ValueError:
            return value
    return str(value)


def overrides(cluster: Cluster) -> list[str]:
    """Test-only settings on top of the profile (module docstring). ``--set-resources`` and
    ``--set-threads`` on the command line replace the profile's whole mapping, so they repeat it,
    with memory capped at the node's and threads at the rules' own 1."""
    profile = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())
    resources = []
    for rule, values in profile["set-resources"].items():
        for key, value in values.items():
            if key == "mem_mb":
                value = min(value, cluster.memory_mb)
            resources.append(f"{rule}:{key}={profile_value(value)}")
    return [
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--retries", "0",
        "--set-threads", *[f"{rule}=1" for rule in profile["set-threads"]],
        "--set-resources", *resources,
    ]


@pytest.fixture(scope="module")
def slurm_run(ci_run: Path, slurm_cluster: Cluster, tmp_path_factory) -> SlurmRun:
    work = copy_workflow_to(tmp_path_factory.mktemp("slurm_run") / "wf")
    # The very configuration of the local run (its pretrained_model is a tiny checkpoint).
    shutil.copy(ci_run / "config/ci.yaml", work / "config/ci.yaml")
    env = slurm_cluster.env | SLURM_ENV
    env.pop("SNAKEMAKE_PROFILE", None)
    args = [
        SNAKEMAKE, "--workflow-profile", PROFILE, *overrides(slurm_cluster),
        "--configfile", "config/ci.yaml",
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}"
            for p in sorted(work.glob(".snakemake/slurm_logs/**/*.log"))
        )
        pytest.fail(f"snakemake on SLURM failed:\n{output[-6000:]}\n{logs[-6000:]}")
    print(f"SLURM run of config/ci.yaml: {seconds:.0f} s")
    return SlurmRun(
        work, ci_run, scontrol_jobs(slurm_cluster), dag_jobs(work, "config/ci.yaml"),
        output, seconds,
    )


def test_every_cluster_job_went_through_sbatch_and_completed(slurm_run):
    """Each non-local job of the DAG is one SLURM batch job (no retries), COMPLETED with exit 0,
    and its log is in .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log."""
    submitted = [
        (rule_of(job), re.fullmatch(r"rule_\w+?(?:_wildcards_(.*))?", job["Comment"])[1] or "")
        for job in slurm_run.jobs
    ]
    assert len(submitted) == len(set(submitted)), submitted
    assert set(submitted) == {
        (rule, wildcards) for rule, wildcards in slurm_run.dag if rule not in slurm_run.local_rules
    }
    for job in slurm_run.jobs:
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), job
        rule, wildcards = rule_of(job), job["Comment"].partition("_wildcards_")[2]
        log = slurm_run.work / ".snakemake/slurm_logs" / f"rule_{rule}" / wildcards
        log = log / f"{job['JobId']}.log"
        assert log.is_file(), log
    assert {rule for rule, _ in submitted} == {
        "simulate", "simulate_replicate", "shard", "train", "sample", "sample_pretrained",
        "evaluate", "evaluate_pretrained",
    }


def test_local_rules_ran_on_the_submit_host(slurm_run):
    """build, summarize, provenance and compare_models are localrules: no SLURM job, outputs here."""
    assert slurm_run.local_rules == {"build", "summarize", "provenance", "compare_models", "all"}
    assert not {rule_of(job) for job in slurm_run.jobs} & slurm_run.local_rules
    for path in ("results/md/GN/system.pdb", "results/summary/metrics.csv",
                 "results/summary/provenance.txt", "results/summary/models.csv"):
        assert (slurm_run.work / path).stat().st_size > 0


def test_partition_and_account_come_from_the_profile_variables(slurm_run):
    """Each job ran on the partition and account the JAMUN_SLURM_* variables name (train and
    sampling on the GPU partition); the plugin could not check the account (no sacctmgr data) and
    said so."""
    assert "Proceeding without account validation" in slurm_run.output
    for job in slurm_run.jobs:
        gpu = rule_of(job) in GPU_PARTITION_RULES
        expected = SLURM_ENV["JAMUN_SLURM_GPU_PARTITION" if gpu else "JAMUN_SLURM_PARTITION"]
        assert job["Partition"] == expected, job
        assert job["Account"] == SLURM_ENV["JAMUN_SLURM_ACCOUNT"], job


def test_jobs_get_the_profiles_time_and_memory(slurm_run):
    """simulate: the profile's 4000 MB and 48 h, one CPU; shard: 32000 MB capped at the node."""
    [simulate, *_] = slurm_run.jobs_of("simulate")
    assert simulate["TimeLimit"] == "2-00:00:00"
    assert simulate["MinMemoryNode"] == "4000M"
    assert simulate["NumCPUs"] == "1"
    [shard] = slurm_run.jobs_of("shard")
    assert shard["TimeLimit"] == "04:00:00"
    [train] = slurm_run.jobs_of("train")
    assert train["TimeLimit"] == "2-00:00:00"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flat(record: dict, prefix: str = "") -> dict:
    """A nested JSON record as {"a.b.c": value}."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


# Files whose bytes are a function of the configuration and the seeds alone (with the threads of
# the local run): MD, shards, samples. The records next to them (md.json, sample.json, metrics.json)
# also hold measured wall times and what follows from them (MD of equal wall time is cut at the
# sampler's measured cost): they are compared without those keys (MEASURED). The checkpoint,
# train.json and metrics.csv of training record times too, and the figures draw timed curves.
SAME_BYTES = [
    "results/md/{p}/system.pdb",
    "results/md/{p}/topology.pdb",
    "results/md/{p}/traj.xtc",
    "results/md/{p}/replicate/traj.xtc",
    "results/samples/{p}/samples.xtc",
    "results/samples/{p}/topology.pdb",
]
SAME_RECORDS = [
    "results/md/{p}/md.json",
    "results/md/{p}/replicate/md.json",
    "results/samples/{p}/sample.json",
    "results/evaluate/{p}/metrics.json",
]
# model_sha256: the workflow's checkpoint file, whose training record holds its wall time (the
# weights are equal: so are the samples).
MEASURED = re.compile(r"second|ns_per_day|md_equal_time|^timing\.|model_sha256")


def compared(slurm_run: SlurmRun, patterns: list[str], extra: list[str] = ()) -> list[str]:
    """Paths to compare; skips the test for files the local run no longer has (its folder is shared
    with tests/test_workflow_run.py, which deletes one peptide's samples: run this module first,
    as pytest does by default)."""
    paths = [pattern.format(p=p) for p in ("AA", "GN") for pattern in patterns] + list(extra)
    gone = [path for path in paths if not (slurm_run.local / path).exists()]
    if gone:
        pytest.skip(f"the local run's {gone} were removed by an earlier test")
    return paths


def test_outputs_equal_the_local_runs(slurm_run):
    """MD, shards and samples of the SLURM run are byte for byte those of the local run."""
    shards = sorted(
        str(f.relative_to(slurm_run.work))
        for f in (slurm_run.work / "results/shards").rglob("*") if f.is_file()
    )
    paths = compared(slurm_run, SAME_BYTES, ["results/pretrained/samples/GN/samples.xtc", *shards])
    differ = [p for p in paths if sha256(slurm_run.work / p) != sha256(slurm_run.local / p)]
    assert not differ, f"differ from the local run: {differ}"


def test_records_equal_the_local_runs_but_for_measured_times(slurm_run):
    """md.json, sample.json and metrics.json agree in every key but measured times and what is
    cut by them: JAMUN's JSDs, validity and the replicate floor are the same numbers."""
    for path in compared(slurm_run, SAME_RECORDS):
        here, local = (
            flat(json.loads((run / path).read_text())) for run in (slurm_run.work, slurm_run.local)
        )
        assert here.keys() == local.keys(), path
        differ = [k for k in here if here[k] != local[k] and not MEASURED.search(k)]
        assert not differ, f"{path}: {differ}"


def test_sacct_is_off_and_any_account_is_accepted(slurm_cluster):
    """Why the run needs --slurm-status-command squeue, and what accounting off means for accounts:
    sacct fails, sacctmgr has no users (the plugin then asks sshare, which answers nothing, and
    skips its account check), and sbatch takes any account name."""
    sacct = slurm_cluster.run("sacct", "-X", "--noheader", check=False)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stderr
    assert slurm_cluster.run("sshare", "-U", "--noheader", check=False).stdout.strip() == ""
    submitted = slurm_cluster.run(
        "sbatch", "--parsable", "-A", "no_such_account", "-o", "/dev/null", "--wrap", "true"
    )
    job_id = submitted.stdout.strip().split(";")[0]
    shown = slurm_cluster.run("scontrol", "show", "job", job_id).stdout
    assert "Account=no_such_account" in shown
