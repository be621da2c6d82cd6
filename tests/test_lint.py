"""The Snakemake workflow catalog's checks: snakefmt formatting, ``snakemake --lint``, module use.

- The Snakefile and workflow/rules/*.smk are formatted by snakefmt (pinned in requirements.lock;
  line length 100 in pyproject.toml's ``[tool.snakefmt]``): ``snakefmt --check`` passes.
- ``snakemake --lint`` reports nothing, for the demo and the paper configuration (the latter turns
  the shipped-model rules off). A lint that has to stay goes into :data:`EXPLAINED` with the
  reason, and a comment where it appears.
- The workflow works as a module of another project, as README ("Using the workflow as a module")
  shows: a Snakefile in a temporary folder with ``module jamun: snakefile: <repo>/Snakefile`` and
  ``config: config``, then ``use rule * from jamun``, plans the whole run in a dry run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_workflow_to

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
SNAKEFMT = BIN / "snakefmt"
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]
# Lint titles (as `snakemake --lint` prints them) that are accepted, with the reason. None now.
EXPLAINED: dict[str, str] = {}


@pytest.mark.skipif(not SNAKEFMT.exists(), reason="snakefmt not installed (requirements.lock)")
def test_rule_files_are_snakefmt_formatted():
    proc = subprocess.run(
        [str(SNAKEFMT), "--check", "--diff", *map(str, RULE_FILES)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, (
        "run `.venv/bin/snakefmt Snakefile workflow/rules/*.smk`:\n" + proc.stdout[-4000:]
    )


def lint_titles(output: str) -> list[str]:
    """The titles of the lints in `snakemake --lint` text output (`    * <title>:`)."""
    return re.findall(r"^    \* (.+?):?$", output, flags=re.M)


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_snakemake_lint_reports_nothing_unexplained(tmp_path, configfile):
    work = copy_workflow_to(tmp_path / "wf")
    proc = subprocess.run(
        [SNAKEMAKE, "--lint", "--configfile", configfile], cwd=work, capture_output=True, text=True
    )
    output = proc.stdout + proc.stderr
    unexplained = [t for t in lint_titles(output) if t not in EXPLAINED]
    assert not unexplained, output[-6000:]
    if not EXPLAINED:
        assert proc.returncode == 0 and "Congratulations" in output, output[-6000:]


def test_workflow_runs_as_a_module_of_another_project(tmp_path):
    """README's module block with a local path: the outer project has only its config."""
    (tmp_path / "config").mkdir()
    shutil.copytree(ROOT / "config/peptides", tmp_path / "config/peptides")
    shutil.copy(ROOT / "config/ci.yaml", tmp_path / "config/config.yaml")
    (tmp_path / "Snakefile").write_text(
        f"""configfile: "config/config.yaml"


module jamun:
    snakefile:
        "{ROOT / 'Snakefile'}"
    config:
        config


use rule * from jamun
"""
    )
    proc = subprocess.run([SNAKEMAKE, "-n"], cwd=tmp_path, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", output.split("Job stats:", 1)[1], flags=re.M))
    assert jobs["all"] == "1" and jobs["train"] == "1"
    assert jobs["evaluate"] == "2"  # config/ci.yaml: GN (test) and AA (evaluate_train)
