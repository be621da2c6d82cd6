"""The SLURM profile (workflow/profiles/slurm), submitted for real to a stand-in SLURM.

Kept for what a real cluster without GPUs cannot show: the GPU requests (``--gpus``, no
``--ntasks-per-gpu``, multi-GPU training as one task). The CPU path runs end to end on a real
one-node SLURM in tests/test_slurm_real.py (sbatch, srun, squeue polling, partitions, account,
outputs equal to the local run); the stand-in also covers sacct polling and an unset account, which
that cluster (no accounting database) cannot.

Snakemake runs a temporary copy of the workflow with ``--workflow-profile workflow/profiles/slurm``
and the real snakemake-executor-plugin-slurm, but ``sbatch``/``srun``/``sacct``/... on PATH are
tests/fake_slurm (see its docstring): sbatch records its arguments and runs the job here, so the
whole path runs: plugin -> sbatch -> job-step plugin -> ``srun -n1`` -> the rule's shell command.

How we avoid real MD, shards and training: a job's inputs are placeholder files, and the
program the rules call, ``jamun``, is a stand-in put first on PATH that records its arguments
and creates the outputs the rule declares. So every job succeeds in seconds, and the test can
check what matters here: the flags SLURM received (GPU request present, ``--ntasks-per-gpu``
absent), and that the multi-GPU ``train`` rule ran once, as one ``jamun train`` in one task, which
starts one process per GPU itself (the real 2-process gloo run through torchrun is in
tests/test_train.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow_to

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
FAKE_SLURM = ROOT / "tests" / "fake_slurm"
PROFILE = "workflow/profiles/slurm"
SLURM_ENV = {
    "JAMUN_SLURM_ACCOUNT": "fake_account",
    "JAMUN_SLURM_PARTITION": "cpu",
    "JAMUN_SLURM_GPU_PARTITION": "gpu",
}
# Test-speed overrides of the profile: poll after 1 s (not 40 s), no retries, short latency wait.
FAST = ["--slurm-init-seconds-before-status-checks", "1", "--retries", "0", "--latency-wait", "5"]

# Stand-in for `jamun`: records its call, creates what the rule declares in -o DIR.
STUB = f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
OUTPUTS = {{
    "simulate": ["traj.xtc", "topology.pdb", "md.json"],
    "train": ["model.ckpt", "metrics.csv", "loss.png", "train.json"],
    "sample": ["samples.xtc", "topology.pdb", "sample.json"],
}}
argv = sys.argv[1:]
name = Path(sys.argv[0]).name
with open(Path(os.environ["FAKE_SLURM_DIR"]) / "programs.jsonl", "a") as log:
    log.write(json.dumps({{"cmd": name, "argv": argv}}) + "\\n")
command = argv[0]
out_dir = Path(argv[argv.index("-o") + 1])
out_dir.mkdir(parents=True, exist_ok=True)
for file in OUTPUTS[command]:
    (out_dir / file).write_text("stand-in")
"""


def copy_workflow(into: Path) -> Path:
    """A copy of the workflow without results, in ``into/wf``."""
    return copy_workflow_to(into / "wf")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


def write_config(work: Path, **overrides: dict) -> str:
    """config/ci.yaml with some keys of some sections replaced, as config/test.yaml."""
    config = yaml.safe_load((work / "config/ci.yaml").read_text())
    for section, values in overrides.items():
        config[section].update(values)
    (work / "config/test.yaml").write_text(yaml.safe_dump(config))
    return "config/test.yaml"


def placeholders(work: Path, *paths: str) -> None:
    """Create input files a job needs, an hour old, so that nothing upstream of them reruns; the
    peptide lists (inputs of `shard`) are made older still, as in a checkout of any age."""
    past = time.time() - 3600
    for peptide_list in (work / "config" / "peptides").glob("*.txt"):
        os.utime(peptide_list, (past - 3600, past - 3600))
    for path in paths:
        file = work / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("placeholder")
        os.utime(file, (past, past))


def clean_env() -> dict[str, str]:
    """This environment without SLURM job variables, the user's JAMUN_SLURM_* or default profile."""
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "JAMUN_SLURM_"))
        and k != "SNAKEMAKE_PROFILE"
    }


def run_snakemake(work: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SNAKEMAKE), *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )


@dataclass
class ClusterRun:
    work: Path
    slurm: list[dict]  # calls of the fake SLURM commands: {"cmd", "argv", "cwd"}
    programs: list[dict]  # calls of the jamun / torchrun stand-ins: {"cmd", "argv"}

    def sbatch(self, rule: str) -> list[str]:
        """argv of the one sbatch call for a rule (the plugin comments it `rule_<name>...`)."""
        [argv] = [
            c["argv"] for c in self.slurm
            if c["cmd"] == "sbatch"
            and re.fullmatch(rf"rule_{rule}(_wildcards_.*)?", flag(c["argv"], "--comment"))
        ]
        return argv


def fake_cluster_env(work: Path, slurm_env: dict[str, str]) -> dict[str, str]:
    """Environment with the fake SLURM and the jamun stand-in first on PATH."""
    stubs = work.parent / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "jamun").write_text(STUB)
    (stubs / "jamun").chmod(0o755)
    return clean_env() | slurm_env | {
        "FAKE_SLURM_DIR": str(work.parent / "fake_slurm_state"),
        "PATH": os.pathsep.join([str(FAKE_SLURM), str(stubs), str(BIN), os.environ["PATH"]]),
    }


def through_profile(targets: list[str], configfile: str) -> list[str]:
    return [*targets, "--workflow-profile", PROFILE, *FAST, "--configfile", configfile]


def run_on_fake_cluster(work: Path, targets: list[str], configfile: str) -> ClusterRun:
    """Run targets through the SLURM profile on the fake SLURM; they must succeed."""
    env = fake_cluster_env(work, SLURM_ENV)
    proc = run_snakemake(work, through_profile(targets, configfile), env)
    logs = "\n".join(
        f"--- {p}\n{p.read_text()}" for p in sorted(work.glob(".snakemake/slurm_logs/**/*.log"))
    )
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stderr[-4000:]}\n{logs}"

    def calls(name: str) -> list[dict]:
        lines = (work.parent / "fake_slurm_state" / name).read_text().splitlines()
        return [json.loads(line) for line in lines]

    return ClusterRun(work, calls("calls.jsonl"), calls("programs.jsonl"))


def flag(argv: list[str], name: str) -> str | None:
    """Value of `name value` or `name=value` in argv, None if absent."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def profile_resources(rule: str) -> dict:
    return yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())["set-resources"][rule]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> ClusterRun:
    """One run on the fake cluster: train on 2 GPUs, then sample GN on one; CPU MD of GN alongside."""
    work = copy_workflow(tmp_path_factory.mktemp("slurm"))
    config = write_config(work, train={"gpus": 2}, md={"platform": "CPU"}, sample={"device": "cuda"})
    placeholders(
        work,
        "results/shards/train/manifest.csv",
        "results/shards/train/stats.json",
        "results/md/GN/system.pdb",
    )
    targets = [
        "results/train/model.ckpt", "results/samples/GN/samples.xtc", "results/md/GN/traj.xtc"
    ]
    return run_on_fake_cluster(work, targets, config)


def test_train_job_requests_gpus_without_ntasks_per_gpu(cluster):
    """train.gpus: 2 -> one SLURM job with --gpus=2 and no task geometry, on the GPU partition."""
    sbatch = cluster.sbatch("train")
    resources = profile_resources("train")
    assert flag(sbatch, "--gpus") == "2"
    assert not [a for a in sbatch if a.startswith("--ntasks")], sbatch  # neither -per-gpu nor plain
    assert flag(sbatch, "--cpus-per-gpu") == str(resources["cpus_per_gpu"])
    assert flag(sbatch, "--mem") == str(resources["mem_mb"])
    assert flag(sbatch, "-t") == str(resources["runtime"])
    assert flag(sbatch, "-p") == "gpu"
    assert flag(sbatch, "-A") == "fake_account"


def test_train_runs_once_in_one_task(cluster):
    """Inside the job: one `srun -n1` step with both GPUs running one `jamun train` (which starts
    one process per GPU itself), with train.gpus = 2 in its settings."""
    [srun] = [c["argv"] for c in cluster.slurm if c["cmd"] == "srun" and "train:" in c["argv"]]
    assert "-n1" in srun and flag(srun, "--gpus") == "2"
    [launch] = [c["argv"] for c in cluster.programs if c["argv"][0] == "train"]
    assert json.loads(flag(launch, "--settings"))["gpus"] == 2
    assert (cluster.work / "results/train/model.ckpt").read_text() == "stand-in"


def test_sample_job_gets_one_gpu(cluster):
    sbatch = cluster.sbatch("sample")
    assert flag(sbatch, "--gpus") == "1"
    assert not [a for a in sbatch if a.startswith("--ntasks")], sbatch
    assert flag(sbatch, "--cpus-per-gpu") == str(profile_resources("sample")["cpus_per_gpu"])
    assert flag(sbatch, "-p") == "gpu"
    assert (cluster.work / "results/samples/GN/samples.xtc").exists()


def test_cpu_md_job_gets_one_task_and_no_gpu(cluster):
    sbatch = cluster.sbatch("simulate")
    assert flag(sbatch, "--gpus") is None
    assert flag(sbatch, "--ntasks") == "1"
    assert flag(sbatch, "--cpus-per-task") == "1"  # implicit solvent: the rule's 1 thread
    assert flag(sbatch, "-p") == "cpu"
    assert flag(sbatch, "-t") == str(profile_resources("simulate")["runtime"])


def test_job_states_polled_with_sacct(cluster):
    """With sinfo and sacct present the plugin polls sacct for the run's jobs by name."""
    names = {flag(c["argv"], "--job-name") for c in cluster.slurm if c["cmd"] == "sbatch"}
    polled = {flag(c["argv"], "--name") for c in cluster.slurm if c["cmd"] == "sacct"}
    assert len(names) == 1 and names <= polled


def test_unset_account_names_the_variable(workdir):
    """Forgetting `export JAMUN_SLURM_ACCOUNT=...` stops the submission with the name to set."""
    config = write_config(workdir, train={"gpus": 2})
    placeholders(workdir, "results/shards/train/manifest.csv", "results/shards/train/stats.json")
    partitions = {k: v for k, v in SLURM_ENV.items() if k != "JAMUN_SLURM_ACCOUNT"}
    args = through_profile(["results/train/model.ckpt"], config)
    proc = run_snakemake(workdir, args, fake_cluster_env(workdir, partitions))
    assert proc.returncode != 0
    assert "account $JAMUN_SLURM_ACCOUNT appears to be invalid" in proc.stderr


def dry_run(work: Path, targets: list[str], configfile: str) -> str:
    proc = run_snakemake(work, [*targets, "-n", "-p", "--configfile", configfile], clean_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("val", ["", "AG\n"])
def test_train_gets_a_validation_split_only_from_a_val_list(workdir, val):
    """An empty val list: no val shard job, no --val-shards; a listed peptide: both."""
    (workdir / "config/peptides/ci_val.txt").write_text(val)
    output = dry_run(workdir, ["results/train/model.ckpt"], "config/ci.yaml")
    [command] = [line for line in output.splitlines() if "jamun train " in line]
    assert ("--val-shards results/shards/val" in command) == bool(val), command
    assert ("results/shards/val/manifest.csv" in output) == bool(val)


def test_cuda_md_requests_a_gpu(workdir):
    """md.platform: CUDA -> simulate and simulate_replicate jobs declare gpu=1 (sbatch --gpus=1)."""
    config = write_config(workdir, md={"platform": "CUDA"})
    targets = ["results/md/GN/traj.xtc", "results/md/GN/replicate/traj.xtc"]
    output = dry_run(workdir, targets, config)
    blocks = re.findall(r"rule (simulate\w*):.*?resources: ([^\n]*)", output, flags=re.S)
    assert {rule for rule, _ in blocks} == {"simulate", "simulate_replicate"}
    for rule, resources in blocks:
        assert re.search(r"\bgpu=1\b", resources), f"{rule}: {resources}"


def job_counts(output: str) -> dict[str, int]:
    """The `Job stats` table of a Snakemake run as {rule: count}."""
    table = output.split("Job stats:", 1)[1].splitlines()[3:]
    counts = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_paper_dag_builds_in_seconds(workdir):
    """Paper scale: 200 train + 80 val + 100 test peptides, every test peptide evaluated."""
    start = time.perf_counter()
    args = ["-n", "--quiet", "rules", "reason", "host", "--configfile", "config/paper.yaml"]
    proc = run_snakemake(workdir, args, clean_env())
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = job_counts(proc.stdout + proc.stderr)
    print(f"paper DAG dry run: {counts['total']} jobs in {seconds:.1f} s")
    expected = {
        "build": 380, "simulate": 380, "simulate_replicate": 100, "shard": 2, "train": 1,
        "sample": 100, "evaluate": 100, "summarize": 1,
    }
    assert {rule: counts.get(rule) for rule in expected} == expected
