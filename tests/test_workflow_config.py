"""The workflow config is checked whole when Snakemake parses it: cross-key mistakes and bad
peptide lists stop a dry run with one line, not a job hours later."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_workflow_to
from jamun.workflow_config import check_workflow_config

ROOT = Path(__file__).resolve().parents[1]
CI = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

BROKEN = {
    "checkpoint not a multiple of the save interval": (
        lambda c: c["md"].update(save_every_ps=1.0, checkpoint_every_ps=2.5), "md.checkpoint_every_ps"),
    "burn-in beyond the steps": (lambda c: c["sample"].update(steps=50, burn_in=60), "sample.burn_in"),
    "warm-up longer than training": (lambda c: c["train"].update(lr_warmup_steps=40, max_steps=30),
                                     "train.lr_warmup_steps"),
    "NPT without a box": (lambda c: c["md"].update(protocol="implicit", npt_ps=10.0), "md.npt_ps"),
    "a misspelled key": (lambda c: c["sample"].update(chainz=4), "unknown key 'chainz'"),
}


def test_shipped_configs_pass(monkeypatch):
    monkeypatch.chdir(ROOT)
    for name in ("config.yaml", "ci.yaml", "paper.yaml", "pretrain.yaml"):
        config = yaml.safe_load((ROOT / "config" / name).read_text())
        assert check_workflow_config(config, name)["sample"]["chains"] >= 1


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_cross_key_mistakes_are_named(monkeypatch, fault):
    monkeypatch.chdir(ROOT)
    config = copy.deepcopy(CI)
    damage, key = BROKEN[fault]
    damage(config)
    with pytest.raises(ValueError, match=key) as raised:
        check_workflow_config(config, "ci.yaml")
    assert "\n" not in str(raised.value) and str(raised.value).startswith("ci.yaml")


def dry_run(workflow: Path, *args: str) -> tuple[int, str]:
    """Exit status and all output (Snakemake prints its errors on stdout) of ``snakemake -n ARGS``."""
    result = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", *args], cwd=workflow, capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def test_a_dry_run_refuses_them(tmp_path):
    """Snakemake itself stops at parse time: the empty train list and a cross-key mistake."""
    workflow = copy_workflow_to(tmp_path / "wf")
    (workflow / "config/peptides/ci_train.txt").write_text("# emptied\n")
    code, output = dry_run(workflow, "--configfile", "config/ci.yaml")
    assert code != 0 and "ci_train.txt names no peptide" in output
    (workflow / "config/peptides/ci_train.txt").write_text("AA\n")
    (workflow / "config/bad.yaml").write_text("sample: {steps: 10, burn_in: 20}\n")
    code, output = dry_run(workflow, "--configfile", "config/ci.yaml", "config/bad.yaml")
    assert code != 0 and "sample.burn_in" in output


def test_a_misspelled_top_level_key_is_one_line(tmp_path):
    workflow = copy_workflow_to(tmp_path / "wf")
    (workflow / "config/typo.yaml").write_text("sampel: {chains: 4}\n")
    code, output = dry_run(workflow, "--configfile", "config/ci.yaml", "config/typo.yaml")
    assert code != 0 and "unknown key 'sampel' in the config; valid keys: peptides, md" in output
    assert "additionalProperties" not in output and len(output) < 2000, output  # not the 300-line schema


@pytest.mark.parametrize("target", ["results/md/GX/traj.xtc", "results/samples/AAAAAAAAA/samples.xtc"])
def test_an_invalid_peptide_target_is_named_with_the_valid_letters(tmp_path, target):
    workflow = copy_workflow_to(tmp_path / "wf")
    code, output = dry_run(workflow, target, "--configfile", "config/ci.yaml")
    peptide = target.split("/")[2]
    assert code != 0 and f"peptide sequence {peptide!r}" in output and "ACDEFGHIKLMNPQRSTVWY" in output
