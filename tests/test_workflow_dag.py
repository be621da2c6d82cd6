"""The Snakemake DAG: dry runs of every shipped config and of targets for arbitrary peptides."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def dry_run(*args: str) -> dict[str, int]:
    """Run ``snakemake -n`` in a throw-away results tree and return the job counts per rule."""
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--cores", "2", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.split("Job stats:", 1)[1] if "Job stats:" in result.stdout else ""
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


@pytest.mark.parametrize(
    "config, held_out, training, evaluated_training",
    [("config/config.yaml", 3, 46, 1), ("config/ci.yaml", 1, 1, 1)],
)
def test_whole_dag(config, held_out, training, evaluated_training):
    evaluated = held_out + evaluated_training
    jobs = dry_run("--configfile", config, "--forceall")
    assert jobs["evaluate"] == evaluated
    assert jobs["sample"] == evaluated
    assert jobs["simulate_replicate"] == evaluated
    assert jobs["train"] == 1 and jobs["summarize"] == 1
    assert jobs["simulate"] == training + held_out
    # pretrained_model: the held-out peptides, and only they, are sampled with the shipped model too.
    assert jobs["sample_pretrained"] == jobs["evaluate_pretrained"] == held_out
    assert jobs["compare_models"] == 1


def test_pretrained_model_null_adds_no_job(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("pretrained_model: null\n")
    jobs = dry_run("--forceall", "--configfile", "config/ci.yaml", str(off))
    assert not {"sample_pretrained", "evaluate_pretrained", "compare_models"} & set(jobs)
    assert jobs["sample"] == 2 and jobs["summarize"] == 1
    # paper.yaml turns it off
    result = subprocess.run([SNAKEMAKE, "-n", "--forceall", "--cores", "2", "--configfile", "config/paper.yaml"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pretrained" not in result.stdout and "compare_models" not in result.stdout


def test_sampling_any_peptide_needs_no_md_of_it():
    jobs = dry_run("--forceall", "results/samples/WP/samples.xtc")
    # MD of the training peptides runs (for the model), never MD of the target WP itself:
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--cores", "2", "results/samples/WP/samples.xtc"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert "results/md/WP/traj.xtc" not in result.stdout
    assert "results/md/WP/system.pdb" in result.stdout
    assert jobs["sample"] == 1


def test_md_of_a_peptide_in_no_list_is_a_test_run():
    result = subprocess.run(
        [SNAKEMAKE, "-n", "-p", "--forceall", "--cores", "2", "results/md/WP/traj.xtc"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "jamun simulate WP --system results/md/WP/system.pdb -o results/md/WP --role test" in result.stdout
