"""Real Snakemake runs of the tiny CI configuration, in a copy of the workflow.

One run of ``config/ci.yaml`` end to end (MD, shards, training, sampling, evaluation, the
shipped-model comparison, report; the session fixture ``ci_run`` of tests/conftest.py, shared with
tests/test_slurm_real.py and tests/test_report_browser.py), then properties of the rerun logic: a second
run has nothing to do, a sampler setting reruns only sampling and what follows, deleting one
peptide's samples reruns only that peptide, a changed shipped model reruns only its own sampling
and what follows. Interrupted MD and training jobs resume with ``--rerun-incomplete``.
The shipped model's stand-in is a tiny checkpoint file (``pretrained_model`` set to its path), so
the run needs no model in the package.
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
import pandas as pd
import pytest
import yaml
from conftest import copy_workflow_to, tiny_checkpoint

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


def test_ci_workflow_produces_every_output(ci_run):
    for peptide in ("GN", "AA"):
        for name in ("metrics.json", "ramachandran.png", "jsd_vs_time.png", "msm.png", "its.png"):
            assert (ci_run / "results/evaluate" / peptide / name).stat().st_size > 0
    for name in ("model.ckpt", "metrics.csv", "loss.png", "train.json"):
        assert (ci_run / "results/train" / name).is_file()
    for name in ("metrics.csv", "summary.png", "provenance.txt", "models.csv", "models.png"):
        assert (ci_run / "results/summary" / name).is_file()
    # The held-out GN, and only it, is sampled and evaluated with the shipped model too.
    for name in ("metrics.json", "ramachandran.png", "jsd_vs_time.png", "msm.png", "its.png"):
        assert (ci_run / "results/pretrained/evaluate/GN" / name).stat().st_size > 0
    assert not (ci_run / "results/pretrained/samples/AA").exists()
    models = pd.read_csv(ci_run / "results/summary/models.csv")
    assert list(models["peptide"]) == ["GN", "GN"]
    assert models["label"][0].startswith("workflow model: cpu, ")
    assert models["label"][1].startswith("model ") and models["label"][1].endswith(
        ": NVIDIA H200, 5.0 min, 1,000 steps, 4,166 params, σ 0.01 nm")
    workflow_metrics = yaml.safe_load((ci_run / "results/evaluate/GN/metrics.json").read_text())
    assert models["jamun.jsd_rama_mean"][0] == pytest.approx(workflow_metrics["jamun"]["jsd_rama_mean"])
    md = yaml.safe_load((ci_run / "results/md/GN/md.json").read_text())
    traj = mdtraj.load(ci_run / "results/md/GN/traj.xtc", top=ci_run / "results/md/GN/topology.pdb")
    assert traj.n_frames == md["n_frames"] == 40


def test_report_is_written(ci_run):
    snakemake(ci_run, "--configfile", "config/ci.yaml", "--report", "report.html")
    html = (ci_run / "report.html").read_text(errors="ignore")
    assert "ramachandran.png" in html and "loss.png" in html
    assert "models.png" in html and "Ramachandran (shipped model)" in html


def test_second_run_has_nothing_to_do(ci_run):
    result = snakemake(ci_run, "--configfile", "config/ci.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changed_shipped_model_reruns_only_its_sampling_and_after(ci_run):
    shipped = Path(yaml.safe_load((ci_run / "config/ci.yaml").read_text())["pretrained_model"])
    original = shipped.read_bytes()
    try:
        tiny_checkpoint(shipped, seed=1)  # same path, other weights: only its sha256 tells
        jobs = planned_jobs(snakemake(ci_run, "-n", "--configfile", "config/ci.yaml"))
    finally:
        shipped.write_bytes(original)
    assert jobs == {"sample_pretrained": 1, "evaluate_pretrained": 1, "compare_models": 1, "all": 1}


def test_sampler_setting_reruns_only_sampling_and_after(ci_run):
    config = write_config(ci_run, "ci_chains.yaml", lambda c: c["sample"].update(chains=6))
    jobs = planned_jobs(snakemake(ci_run, "-n", "--configfile", config))
    assert set(jobs) == {"sample", "evaluate", "summarize", "provenance", "sample_pretrained", "evaluate_pretrained",
                         "compare_models", "all"}
    assert jobs["sample"] == 2 and jobs["evaluate"] == 2 and jobs["sample_pretrained"] == 1


def test_deleting_one_peptides_samples_reruns_only_that_peptide(ci_run):
    shutil.rmtree(ci_run / "results/samples/GN")
    result = snakemake(ci_run, "-n", "-p", "--configfile", "config/ci.yaml")
    jobs = planned_jobs(result)
    assert jobs == {"sample": 1, "evaluate": 1, "summarize": 1, "provenance": 1, "compare_models": 1, "all": 1}
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
