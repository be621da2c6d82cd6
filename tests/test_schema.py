"""The config schema as the one source of settings defaults: descriptions, config/README.md,
defaults filled exactly as Snakemake fills them, one-line errors, and the settings classes."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

import jamun.schema
from jamun.analysis.evaluate import EvaluateSettings
from jamun.md import MDSettings
from jamun.sampling.sample import SampleSettings
from jamun.schema import SCHEMA_FILE, full_config_settings, load_schema, section_settings
from jamun.sequence import MAX_LENGTH, MIN_LENGTH, RESIDUES
from jamun.training.settings import train_settings

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SECTIONS = ("md", "data", "train", "sample", "evaluate")


def schema_keys(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Every key of the schema by dotted path (objects and leaves) with its subschema."""
    keys = {}
    for name, sub in schema["properties"].items():
        path = f"{prefix}{name}"
        keys[path] = sub
        if "properties" in sub:
            keys |= schema_keys(sub, f"{path}.")
    return keys


def schema_defaults(schema: dict) -> dict:
    """What filling defaults into an empty object gives, computed from the schema by hand."""
    filled = {}
    for name, sub in schema["properties"].items():
        if "default" in sub:
            filled[name] = schema_defaults(sub) if "properties" in sub else sub["default"]
    return filled


LEAVES = {path: sub for path, sub in schema_keys(load_schema()).items() if "properties" not in sub}


def readme_rows() -> dict[str, str]:
    """config/README.md's `| key | default | meaning |` rows: dotted key path -> default cell."""
    rows, section = {}, None
    in_table = False
    for line in (ROOT / "config" / "README.md").read_text().splitlines():
        if heading := re.match(r"## `(\w+)`", line):
            section = heading.group(1)
        if line.startswith("| key | default |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        if in_table and not line.startswith("|---"):
            key, default = (cell.strip() for cell in line.strip("|").split("|")[:2])
            key = key.strip("`")
            path = key if key == section else f"{section}.{key}"
            assert path not in rows, f"config/README.md has two rows for {path}"
            rows[path] = default
    return rows


def test_every_schema_key_has_a_description():
    missing = [path for path, sub in schema_keys(load_schema()).items() if not sub.get("description", "").strip()]
    assert not missing, f"schema keys without a description: {missing}"


def test_every_leaf_has_a_default_unless_required():
    schema = load_schema()
    for path, sub in LEAVES.items():
        parent = schema
        for part in path.split(".")[:-1]:
            parent = parent["properties"][part]
        assert ("default" in sub) != (path.split(".")[-1] in parent.get("required", [])), path


def test_readme_lists_every_key_with_the_schema_default():
    rows = readme_rows()
    assert set(rows) == set(LEAVES), (f"missing from config/README.md: {sorted(set(LEAVES) - set(rows))}; "
                                      f"not in the schema: {sorted(set(rows) - set(LEAVES))}")
    for path, cell in rows.items():
        if "default" not in LEAVES[path]:
            assert cell == "required", path
            continue
        assert re.fullmatch(r"`[^`]+`", cell), f"{path}: default cell {cell!r} is not one `literal`"
        documented = yaml.safe_load(cell.strip("`"))
        default = LEAVES[path]["default"]
        assert (documented, type(documented)) == (default, type(default)), f"{path}: README {cell}, schema {default!r}"


@pytest.mark.parametrize("section", SECTIONS)
def test_an_empty_section_gets_every_default(section):
    expected = schema_defaults(load_schema()["properties"][section])
    assert section_settings(section, {}, "test") == expected
    assert section_settings(section, None, "test") == expected


def test_a_partial_section_keeps_its_values_and_nothing_is_mutated():
    schema_before = yaml.safe_load(SCHEMA_FILE.read_text())
    raw = {"sigma_nm": 0.04, "model": {"num_layers": 5}, "sample_check": {"every": None}}
    given = copy.deepcopy(raw)
    filled = section_settings("train", raw, "test")
    assert raw == given, "the caller's dict is not modified"
    assert filled["sigma_nm"] == 0.04 and filled["model"]["num_layers"] == 5 and filled["sample_check"]["every"] is None
    assert filled["model"]["hidden_irreps"] == "32x0e + 8x1e" and filled["sample_check"]["chains"] == 8
    assert filled["max_steps"] == 8000
    filled["model"]["hidden_irreps"] = "changed"
    assert section_settings("train", {}, "test")["model"]["hidden_irreps"] == "32x0e + 8x1e"
    assert load_schema() == schema_before, "filling defaults must not change the schema"


@pytest.mark.parametrize("section, raw, key, valid", [
    ("sample", {"chainz": 4}, "'chainz' in sample settings", "chains, steps, burn_in, save_every"),
    ("md", {"explicit": {"cutoff": 1.0}}, "'cutoff' in md.explicit settings", "padding_nm, cutoff_nm, pressure_bar"),
    ("train", {"model": {"layers": 2}}, "'layers' in train.model settings", "hidden_irreps, num_layers"),
    ("evaluate", {"msm": {"lag": 1}}, "'lag' in evaluate.msm settings", "tica_lag_ps, tica_dim, clusters"),
])
def test_an_unknown_key_is_one_line_naming_it_and_the_valid_keys(section, raw, key, valid):
    with pytest.raises(ValueError) as error:
        section_settings(section, raw, "my.yaml")
    message = str(error.value)
    assert "\n" not in message and message.startswith("my.yaml: unknown key ")
    assert key in message and f"valid keys: {valid}" in message


@pytest.mark.parametrize("section, raw, message", [
    ("sample", {"steps": -1}, "sample.steps = -1: must be an integer >= 1"),
    ("sample", {"steps": 20.0}, "sample.steps = 20.0: must be an integer >= 1"),
    ("sample", {"device": "gpu"}, 'sample.device = "gpu": must be a string matching'),
    ("sample", {"friction_per_step": 0.0}, "sample.friction_per_step = 0.0: must be a number > 0"),
    ("md", {"explicit": {"cutoff_nm": -1}}, "md.explicit.cutoff_nm = -1: must be a number > 0"),
    ("md", {"protocol": "vacuum"}, 'md.protocol = "vacuum": must be one of implicit, explicit'),
    ("train", {"max_minutes": 0}, "train.max_minutes = 0: must be null or a number > 0"),
    ("train", {"sample_check": 10}, "train.sample_check = 10: must be a mapping"),
    ("peptides", {"train": "a", "val": "b", "test": "c", "evaluate_train": ["AZ"]},
     'peptides.evaluate_train.0 = "AZ": must be a string matching'),
    ("peptides", {"train": "a", "val": "b"}, "missing required key 'test' in peptides settings"),
])
def test_a_bad_value_is_one_line_naming_the_key_path(section, raw, message):
    with pytest.raises(ValueError) as error:
        section_settings(section, raw, "my.yaml")
    assert "\n" not in str(error.value) and str(error.value).startswith(f"my.yaml: {message}")


@pytest.mark.parametrize("config", [DEMO, {"peptides": DEMO["peptides"]}, {
    "peptides": {"train": "t", "val": "v", "test": "h"}, "md": {"explicit": {"cutoff_nm": 1.0}},
    "train": {"model": {"num_layers": 4}}, "sample": {"device": "cpu"}, "pretrained_model": None}],
    ids=["demo", "peptides-only", "partial"])
def test_defaults_are_filled_exactly_as_snakemake_fills_them(config):
    by_snakemake = copy.deepcopy(config)
    validate(by_snakemake, schema=str(SCHEMA_FILE))
    assert full_config_settings(config, "test") == by_snakemake
    for section in SECTIONS:
        assert section_settings(section, config.get(section), "test") == by_snakemake[section], section


def test_full_config_names_an_unknown_section_and_a_missing_peptides_section():
    with pytest.raises(ValueError, match=r"^c\.yaml: unknown key 'smaple' in the config; valid keys: peptides, md, "):
        full_config_settings({**DEMO, "smaple": {}}, "c.yaml")
    with pytest.raises(ValueError, match=r"^c\.yaml: missing required key 'peptides' in the config$"):
        full_config_settings({}, "c.yaml")


def test_settings_from_an_empty_section_are_the_demo_settings():
    assert MDSettings.from_config({}) == MDSettings.from_config(DEMO["md"])
    assert SampleSettings.from_config({}) == SampleSettings.from_config(DEMO["sample"])
    assert EvaluateSettings.from_config({}) == EvaluateSettings.from_config(DEMO["evaluate"])
    assert train_settings({}) == train_settings(DEMO["train"])
    assert section_settings("data", {}, "test") == DEMO["data"]


def test_cross_key_checks_name_both_keys():
    with pytest.raises(ValueError, match=r"^cfg: md\.checkpoint_every_ps = 2\.5 ps must be a whole multiple of md\.save_"):
        MDSettings.from_config({"checkpoint_every_ps": 2.5}, "cfg")
    with pytest.raises(ValueError, match=r"^cfg: sample\.steps \(4\) - sample\.burn_in \(4\) must be >= sample\.save_"):
        SampleSettings.from_config({"steps": 4, "burn_in": 4}, "cfg")
    with pytest.raises(ValueError, match=r"^cfg: train\.lr_warmup_steps = 10 must be less than train\.max_steps = 10$"):
        train_settings({"max_steps": 10, "lr_warmup_steps": 10}, "cfg")


def test_a_missing_schema_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(jamun.schema, "SCHEMA_FILE", tmp_path / "gone.yaml")
    load_schema.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="gone.yaml"):
            section_settings("sample", {}, "test")
    finally:
        load_schema.cache_clear()


def test_the_schema_module_imports_no_heavy_package():
    code = "import sys, jamun.schema; print(sorted({'torch', 'numpy', 'openmm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_peptide_patterns_match_the_residue_table():
    """The schema's and the rules' peptide patterns accept exactly jamun.sequence's letters and lengths."""
    letters = "".join(sorted(RESIDUES))
    expected = f"[{letters}]{{{MIN_LENGTH},{MAX_LENGTH}}}"
    assert load_schema()["$defs"]["peptide"]["pattern"] == f"^{expected}$"
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert f'peptide="{expected}"' in common


def test_residue_type_vocabulary_keeps_its_order():
    """Trained models index residue types in this order (three-letter codes sorted, then caps)."""
    from jamun.data.graph import RESIDUE_TYPES

    assert RESIDUE_TYPES == ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS",
                             "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL", "ACE", "NME")
