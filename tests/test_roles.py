"""Peptide roles, committed splits and config validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jamun.roles import PeptideRoles, paper_split, read_peptide_list

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def write_lists(tmp_path: Path, **lists: str) -> dict:
    cfg = {}
    for split in ("train", "val", "test"):
        path = tmp_path / f"{split}.txt"
        path.write_text(lists.get(split, ""))
        cfg[split] = str(path)
    return cfg


def test_roles_from_lists(tmp_path):
    roles = PeptideRoles.from_config(write_lists(tmp_path, train="AA\nGS  # comment\n", val="SA\n", test="GN\n"))
    assert roles.role("AA") == roles.role("SA") == roles.role("GS") == "train"
    assert roles.role("GN") == "test"
    assert roles.role("WP") == "test", "an id in no list is a held-out test peptide"


def test_id_in_two_lists_is_an_error(tmp_path):
    cfg = write_lists(tmp_path, train="AA\nGN\n", test="GN\n")
    with pytest.raises(ValueError, match="GN.*train.*test"):
        PeptideRoles.from_config(cfg)


def test_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("AA\nAXB\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        read_peptide_list(path)


def test_committed_paper_split_is_the_seeded_split():
    test = read_peptide_list(ROOT / "config/peptides/paper_test.txt")
    train, val = paper_split(test)
    assert len(test) == 100 and len(train) == 200 and len(val) == 80
    assert read_peptide_list(ROOT / "config/peptides/paper_train.txt") == train
    assert read_peptide_list(ROOT / "config/peptides/paper_val.txt") == val
    assert not (set(train) | set(val)) & set(test)


@pytest.mark.parametrize("name", ["config.yaml", "ci.yaml", "paper.yaml"])
def test_shipped_configs_have_the_same_keys(name):
    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    demo = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    other = yaml.safe_load((ROOT / "config" / name).read_text())
    assert keys(other) == keys(demo)


def test_misspelled_nested_key_stops_the_run(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/ci.yaml").read_text())
    cfg["evaluate"]["msm"]["tica_lagps"] = cfg["evaluate"]["msm"].pop("tica_lag_ps")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "tica_lagps" in result.stdout + result.stderr


def test_empty_train_list_and_untrained_evaluate_train_are_errors(tmp_path):
    with pytest.raises(ValueError, match="train.txt names no peptide"):
        PeptideRoles.from_config(write_lists(tmp_path, train="# nothing yet\n", test="GN\n"))
    cfg = {**write_lists(tmp_path, train="AA\n", test="GN\n"), "evaluate_train": ["GN"]}
    with pytest.raises(ValueError, match="evaluate_train lists 'GN'"):
        PeptideRoles.from_config(cfg)
