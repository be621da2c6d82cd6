"""Real Snakemake runs of the tiny CI configuration, in a copy of the workflow.

One module-scoped run of ``config/ci.yaml`` end to end (MD, shards, training, sampling,
evaluation, report), then properties of the rerun logic: a second run has nothing to do, a
sampler setting reruns only sampling and what follows, deleting one peptide's samples reruns only
that peptide. Interrupted MD and training jobs resume with ``--rerun-incomplete``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import pytest
import yaml
from conftest import copy_workflow_to

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    table = result.stdout.split("Job stats:", 1)[1] if "Job stats:" in result.stdout else ""
    counts = {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    counts.pop("total", None)
    return counts


def write_config(workdir: Path, name: str, edit) -> str:
    config = yaml.safe_load((workdir / "config/ci.yaml").read_text())
    edit(config)
    (workdir / "config" / name).write_text(yaml.safe_dump(config))
    return f"config/{name}"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> Path:
    workdir = copy_workflow_to(tmp_path_factory.mktemp("ci_workflow"))
    snakemake(workdir, "--configfile", "config/ci.yaml")
    return workdir


def test_ci_workflow_produces_every_output(ci_run):
    for peptide in ("GN", "AA"):
        for name in ("metrics.json", "ramachandran.png", "jsd_vs_time.png", "msm.png", "its.png"):
            assert (ci_run / "results/evaluate" / peptide / name).stat().st_size > 0
    for name in ("model.ckpt", "metrics.csv", "loss.png", "train.json"):
        assert (ci_run / "results/train" / name).is_file()
    for name in ("metrics.csv", "summary.png", "provenance.txt"):
        assert (ci_run / "results/summary" / name).is_file()
    md = yaml.safe_load((ci_run / "results/md/GN/md.json").read_text())
    traj = mdtraj.load(ci_run / "results/md/GN/traj.xtc", top=ci_run / "results/md/GN/topology.pdb")
    assert traj.n_frames == md["n_frames"] == 40


def test_report_is_written(ci_run):
    snakemake(ci_run, "--configfile", "config/ci.yaml", "--report", "report.html")
    html = (ci_run / "report.html").read_text(errors="ignore")
    assert "ramachandran.png" in html and "loss.png" in html


def test_second_run_has_nothing_to_do(ci_run):
    result = snakemake(ci_run, "--configfile", "config/ci.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_sampler_setting_reruns_only_sampling_and_after(ci_run):
    config = write_config(ci_run, "ci_chains.yaml", lambda c: c["sample"].update(chains=6))
    jobs = planned_jobs(snakemake(ci_run, "-n", "--configfile", config))
    assert set(jobs) == {"sample", "evaluate", "summarize", "all"}
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2


def test_deleting_one_peptides_samples_reruns_only_that_peptide(ci_run):
    shutil.rmtree(ci_run / "results/samples/GN")
    result = snakemake(ci_run, "-n", "-p", "--configfile", "config/ci.yaml")
    jobs = planned_jobs(result)
    assert jobs == {"sample": 1, "evaluate": 1, "summarize": 1, "all": 1}
    assert "jamun sample GN" in result.stdout and "jamun evaluate GN" in result.stdout
    assert "jamun sample AA" not in result.stdout and "jamun evaluate AA" not in result.stdout


def run_until(workdir: Path, args: list[str], marker: Path, timeout: float = 240) -> None:
    """Start snakemake, wait until ``marker`` exists, then kill the whole process group."""
    process = subprocess.Popen(
        [SNAKEMAKE, "--cores", "2", *args], cwd=workdir, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, "snakemake finished before it could be interrupted"
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_md_resumes_to_exactly_the_configured_frames(tmp_path):
    workdir = copy_workflow_to(tmp_path)

    def longer_md(config):
        config["md"]["length_ns"]["test"] = 0.6
        config["md"]["checkpoint_every_ps"] = 50.0

    config = write_config(workdir, "ci_long_md.yaml", longer_md)
    target = "results/md/GN/traj.xtc"
    work = workdir / "results/md/GN/.work"
    # --configfile takes several files, so targets go before it.
    run_until(workdir, [target, "--configfile", config], marker=work / "checkpoint.json")
    assert not (workdir / target).exists()
    # A killed Snakemake leaves its lock behind, as after a power loss; users unlock, then resume.
    snakemake(workdir, "--unlock", "--configfile", config)
    snakemake(workdir, target, "--rerun-incomplete", "--configfile", config)
    traj = mdtraj.load(workdir / target, top=workdir / "results/md/GN/topology.pdb")
    assert traj.n_frames == 600
    steps = traj.time[1:] - traj.time[:-1]
    assert (steps > 0).all() and len(set(traj.time.round(3))) == 600
    assert not work.exists()


def test_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    workdir = copy_workflow_to(tmp_path)

    def longer_training(config):
        config["train"].update(max_steps=400, checkpoint_every=20, max_minutes=None)

    config = write_config(workdir, "ci_long_train.yaml", longer_training)
    snakemake(workdir, "results/shards/train/manifest.csv", "--configfile", config)
    target = "results/train/model.ckpt"
    run_until(workdir, [target, "--configfile", config], marker=workdir / "results/train/.work/last.pt")
    assert not (workdir / target).exists()
    snakemake(workdir, "--unlock", "--configfile", config)
    snakemake(workdir, target, "--rerun-incomplete", "--configfile", config)
    summary = yaml.safe_load((workdir / "results/train/train.json").read_text())
    assert summary["steps"] == 400
    assert summary["resumed_from_steps"] and 0 < summary["resumed_from_steps"][0] < 400
    assert not (workdir / "results/train/.work").exists()
