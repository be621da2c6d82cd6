"""The ``jamun`` command line: help for every stage, clear errors that write nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

JAMUN = str(Path(sys.executable).with_name("jamun"))
STAGES = ["build", "simulate", "shard", "train", "sample", "models", "evaluate", "summarize", "compare",
          "provenance"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage):
    result = subprocess.run([JAMUN, stage, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: jamun " + stage in result.stdout


@pytest.mark.parametrize("bad, complaint", [("GX", "X"), ("AAAAAAAAA", "9"), ("", "0 residues")])
def test_bad_sequence_fails_and_writes_nothing(tmp_path, bad, complaint):
    out = tmp_path / "out"
    result = subprocess.run([JAMUN, "build", bad, "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "error" in result.stderr and complaint in result.stderr
    assert not out.exists()


def test_simulate_without_built_structure_names_the_file(tmp_path):
    result = subprocess.run(
        [JAMUN, "simulate", "GN", "-o", str(tmp_path / "GN"), "--config", "config/ci.yaml"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert "system.pdb" in result.stderr and "jamun build GN" in result.stderr


def test_missing_config_file_is_named(tmp_path):
    result = subprocess.run(
        [JAMUN, "simulate", "GN", "-o", str(tmp_path), "--config", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "nope.yaml" in result.stderr


def test_provenance_lists_versions_and_config(tmp_path):
    out = tmp_path / "provenance.txt"
    result = subprocess.run(
        [JAMUN, "provenance", "-o", str(out), "--settings", '{"sample": {"chains": 7}}'],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "openmm:" in text and "torch:" in text and "chains: 7" in text


def test_train_names_a_validation_md_folder_without_md(tmp_path):
    (tmp_path / "AA").mkdir()
    (tmp_path / "AA" / "system.pdb").write_text("")
    result = subprocess.run(
        [JAMUN, "train", "--shards", str(tmp_path / "shards"), "-o", str(tmp_path / "out"),
         "--settings", '{"sample_check": {"every": 10}}', "--validation-md", str(tmp_path / "AA")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert str(tmp_path / "AA") in result.stderr and "traj.xtc" in result.stderr and "jamun simulate" in result.stderr
    assert not (tmp_path / "out" / "model.ckpt").exists()
