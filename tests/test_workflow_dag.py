"""The Snakemake DAG: dry runs of every shipped config and of targets for arbitrary peptides, in a
throw-away copy of the workflow (no results/ of an earlier run can change what is planned)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_workflow_to
from jamun.roles import PeptideRoles

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    return copy_workflow_to(tmp_path_factory.mktemp("dag"))


def snakemake_dry_run(workflow: Path, *args: str) -> str:
    """stdout of ``snakemake -n -p ARGS`` in ``workflow``."""
    result = subprocess.run([SNAKEMAKE, "-n", "-p", "--cores", "2", *args], cwd=workflow, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:", 1)[1] if "Job stats:" in stdout else ""
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


@pytest.mark.parametrize("config", ["config/config.yaml", "config/ci.yaml"])
def test_whole_dag(workflow, config):
    """One job per peptide and stage, counted from the config's own peptide lists."""
    peptides = yaml.safe_load((workflow / config).read_text())["peptides"]
    roles = PeptideRoles.from_config({k: workflow / v if k != "evaluate_train" else v for k, v in peptides.items()})
    evaluated = len(roles.evaluated)
    jobs = job_counts(snakemake_dry_run(workflow, "--configfile", config, "--forceall"))
    assert jobs["evaluate"] == jobs["sample"] == jobs["simulate_replicate"] == evaluated
    assert jobs["simulate"] == jobs["build"] == len(roles.train) + len(roles.val) + len(roles.test)
    assert jobs["shard"] == 1 + bool(roles.val)
    assert jobs["train"] == jobs["summarize"] == jobs["provenance"] == 1
    # pretrained_model: the held-out peptides, and only they, are sampled with the shipped model too.
    assert jobs["sample_pretrained"] == jobs["evaluate_pretrained"] == len(roles.test)
    assert jobs["compare_models"] == 1


def test_pretrained_model_null_adds_no_job(workflow, tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("pretrained_model: null\n")
    jobs = job_counts(snakemake_dry_run(workflow, "--forceall", "--configfile", "config/ci.yaml", str(off)))
    assert not {"sample_pretrained", "evaluate_pretrained", "compare_models"} & set(jobs)
    assert jobs["sample"] == 2 and jobs["summarize"] == 1
    paper = job_counts(snakemake_dry_run(workflow, "--forceall", "--configfile", "config/paper.yaml"))
    assert not {"sample_pretrained", "evaluate_pretrained", "compare_models"} & set(paper)  # paper.yaml: off


def test_sampling_any_peptide_needs_no_md_of_it(workflow):
    stdout = snakemake_dry_run(workflow, "--forceall", "results/samples/WP/samples.xtc")
    # MD of the training peptides runs (for the model), never MD of the target WP itself:
    assert "results/md/WP/traj.xtc" not in stdout
    assert "results/md/WP/system.pdb" in stdout
    assert job_counts(stdout)["sample"] == 1


def test_md_of_a_peptide_in_no_list_is_a_test_run(workflow):
    stdout = snakemake_dry_run(workflow, "--forceall", "results/md/WP/traj.xtc")
    assert "jamun simulate WP --system results/md/WP/system.pdb -o results/md/WP --role test" in stdout
