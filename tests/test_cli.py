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
        [JAMUN, "simulate", "GN", "--system", str(tmp_path / "GN" / "system.pdb"), "-o", str(tmp_path / "GN"),
         "--config", "config/ci.yaml"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert str(tmp_path / "GN" / "system.pdb") in result.stderr and "jamun build GN" in result.stderr
    assert not (tmp_path / "GN").exists()


def test_missing_config_file_is_named(tmp_path):
    result = subprocess.run(
        [JAMUN, "simulate", "GN", "--system", "GN.pdb", "-o", str(tmp_path), "--config", str(tmp_path / "nope.yaml")],
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
        [JAMUN, "train", "--train-shards", str(tmp_path / "shards"), "-o", str(tmp_path / "out"),
         "--settings", '{"sample_check": {"every": 10}}', "--validation-md", str(tmp_path / "AA")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert str(tmp_path / "AA") in result.stderr and "traj.xtc" in result.stderr and "jamun simulate" in result.stderr
    assert not (tmp_path / "out" / "model.ckpt").exists()


MISSPELLED = {
    "simulate": ["GN", "--system", "GN.pdb", "-o", "{out}"],
    "shard": ["train", "--peptides", "train.txt", "--traj", "a.xtc", "--topology", "a.pdb", "-o", "{out}"],
    "train": ["--train-shards", "shards", "-o", "{out}"],
    "sample": ["GN", "--model", "pretrained", "--system", "GN.pdb", "-o", "{out}"],
    "evaluate": ["GN", "--reference", "r.xtc", "r.json", "r.pdb", "--replicate", "p.xtc", "p.json",
                 "--samples", "s.xtc", "s.json", "s.pdb", "-o", "{out}"],
}


@pytest.mark.parametrize("stage", sorted(MISSPELLED))
def test_misspelled_setting_is_named_before_any_work(stage, tmp_path):
    """A typo in a stage's settings: one line naming it and the valid keys, exit 2, nothing written."""
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in MISSPELLED[stage]]
    result = subprocess.run([JAMUN, stage, *argv, "--settings", '{"chainz": 4}'], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "unknown key 'chainz'" in line and "valid keys:" in line
    assert not out.exists()


def test_a_corrupt_input_is_one_line_and_debug_shows_the_traceback(tmp_path):
    """A damaged file: one line naming it, exit 2; with --debug the traceback as well."""
    record = tmp_path / "md.json"
    record.write_bytes(b"\x00\x01garbage")
    argv = ["evaluate", "GN", "--reference", "r.xtc", str(record), "r.pdb", "--replicate", "p.xtc", str(record),
            "--samples", "s.xtc", "s.json", "s.pdb", "-o", str(tmp_path / "out")]
    result = subprocess.run([JAMUN, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"jamun evaluate: error: {record}: not a JSON run record")
    debug = subprocess.run([JAMUN, "--debug", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InputError" in debug.stderr
