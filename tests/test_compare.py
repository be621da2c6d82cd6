"""`jamun compare`: two models side by side, labelled with where and how long each was trained."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

import jamun.cli
import jamun.model
from jamun.analysis import compare as compare_module
from jamun.analysis import plots
from jamun.analysis.compare import ModelSource, compare, training_label
from jamun.model import pretrained
from jamun.model.pretrained import register_model

TINY = {"sigma_nm": 0.04, "hidden_irreps": "8x0e + 2x1e", "num_layers": 2, "radial_hidden": 8, "num_radial": 4}
WORKFLOW_RECORD = {"device": "cpu", "wall_seconds": 720.0, "steps": 5501, "selected_step": 5501, "world_size": 1,
                   "n_parameters": 190_000, "sigma_nm": 0.01, "train_peptides": ["AA", "SV"], "val_peptides": ["GS"]}
SHIPPED_RECORD = {"device": "NVIDIA H200", "wall_seconds": 300.0, "steps": 20000, "selected_step": 18000,
                  "world_size": 1, "n_parameters": 1_234_567, "sigma_nm": 0.04,
                  "train_peptides": ["AA", "ET"], "val_peptides": []}
# Per (model, peptide): valid, l_chirality_ok, jsd_rama_mean, md_equal_time, replicate_floor.
VALUES = {
    ("workflow", "GN"): (0.91, 0.99, 0.30, 0.25, 0.05),
    ("workflow", "ET"): (0.80, 0.97, 0.40, 0.35, 0.06),
    ("shipped", "GN"): (0.99, 1.00, 0.10, 0.20, 0.05),
    ("shipped", "ET"): (0.97, 1.00, 0.12, 0.30, 0.06),
}


def metrics(peptide: str, valid: float, l_ok: float, jsd: float, equal_time: float, floor: float,
            reference_frames: int = 40) -> dict:
    """A metrics.json as `jamun evaluate` writes it (structure of a ci run's, fewer keys)."""
    def comparison(rama_mean: float) -> dict:
        return {"jsd_rama_1": rama_mean, "jsd_rama_mean": rama_mean, "jsd_1d_mean": rama_mean / 2,
                "jsd_macrostates": None, "js_distance_rama_mean": rama_mean ** 0.5}

    return {
        "peptide": peptide, "residues": "X-Y", "role": "test",
        "units": {"jsd": "nats", "js_distance": "sqrt(nats)", "seconds": "measured wall s"},
        "md_equal_time_capped": False,
        "frames": {"reference": reference_frames, "replicate": 40, "jamun": 200, "chains": 4, "steps": 50,
                   "md_equal_time": 9, "md_equal_time_target": 9, "replicate_floor": 40},
        "timing": {"sampler_wall_seconds": 10 * jsd, "md_seconds_per_frame": 0.04,
                   "md_equal_time_seconds": 0.36, "replicate_floor_capped": True},
        "bins": {"rama": 50, "1d": 100, "4d": 10},
        "jamun": comparison(jsd), "md_equal_time": comparison(equal_time),
        "replicate_floor": comparison(floor),
        "jamun_ci_low": comparison(jsd - 0.01), "jamun_ci_high": comparison(jsd + 0.02),
        "msm": {"lag_frames": 2, "macrostates": 2, "notes": [], "populations_reference": [0.5, 0.5]},
        "validity": {"bond_tolerance_nm": 0.02, "reference_bond_length_mean_nm": 0.14,
                     "jamun": {"bonds_ok": valid, "l_chirality_ok": l_ok, "valid": valid, "chains": 4,
                               "chains_left_molecule": 0, "left_molecule_fraction": 0.0,
                               "first_break_step": [None] * 4, "l_chirality_per_ca": {"X1": l_ok}},
                     "md_replicate": {"bonds_ok": 1.0, "l_chirality_ok": 1.0, "valid": 1.0, "chains": 1}},
        "curves": {"jamun": {"seconds": [1.0, 2.0], "jsd_rama_mean": [jsd + 0.1, jsd]}},
    }


def write_metrics(root: Path, model: str, **overrides) -> Path:
    for (name, peptide), values in VALUES.items():
        if name == model:
            path = root / peptide / "metrics.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(metrics(peptide, *values, **overrides.get(peptide, {}))))
    return root


def checkpoint(path: Path, record: dict | None) -> Path:
    torch.manual_seed(0)
    denoiser = jamun.model.Denoiser(TINY, C=0.3)
    return jamun.model.save(denoiser, path, **({"train": record} if record is not None else {}))


@pytest.fixture
def two_models(tmp_path: Path, monkeypatch) -> dict:
    """A workflow checkpoint, a shipped model 'tiny' (the default) in a temporary registry, and
    the evaluation folders of both."""
    root = tmp_path / "pretrained"
    shipped = checkpoint(tmp_path / "shipped_source.ckpt", SHIPPED_RECORD)
    register_model(shipped, "tiny", "# tiny\n", "tiny test model", default=True, root=root, half=True)
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", root)
    return {
        "workflow_ckpt": checkpoint(tmp_path / "train" / "model.ckpt", WORKFLOW_RECORD),
        "workflow_eval": write_metrics(tmp_path / "evaluate", "workflow"),
        "shipped_eval": write_metrics(tmp_path / "pretrained_evaluate", "shipped"),
        "out": tmp_path / "summary",
    }


def run_cli(models: dict, *extra: str) -> int:
    return jamun.cli.main([
        "compare", "--model", str(models["workflow_ckpt"]), str(models["workflow_eval"]), "workflow model",
        "--model", "pretrained", str(models["shipped_eval"]),
        "--peptides", "GN", "ET", "-o", str(models["out"]), *extra,
    ])


def test_table_rows_values_and_labels(two_models, monkeypatch) -> None:
    legends = []
    original = plots.save_figure

    def capture(fig: plt.Figure, path):
        legends.extend(text.get_text() for legend in fig.legends for text in legend.get_texts())
        return original(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    assert run_cli(two_models) == 0

    table = pd.read_csv(two_models["out"] / "models.csv")
    workflow_label = "workflow model: cpu, 12.0 min, 5,501 steps, 0.19M params, σ 0.01 nm"
    shipped_label = ("shipped model 'tiny': NVIDIA H200, 5.0 min, 20,000 steps (kept step 18,000), "
                     "1.2M params, σ 0.04 nm")
    # One row per (model, peptide): models in --model order, peptides in --peptides order.
    assert list(zip(table["model"], table["peptide"])) == [
        ("workflow model", "GN"), ("workflow model", "ET"),
        ("shipped model 'tiny'", "GN"), ("shipped model 'tiny'", "ET")]
    assert list(table["label"]) == [workflow_label] * 2 + [shipped_label] * 2
    for (model, peptide), (valid, l_ok, jsd, equal_time, floor) in VALUES.items():
        row = table[(table["model"].str.startswith(model)) & (table["peptide"] == peptide)].iloc[0]
        assert row["valid"] == pytest.approx(valid)
        assert row["l_chirality_ok"] == pytest.approx(l_ok)
        assert row["jamun.jsd_rama_mean"] == pytest.approx(jsd)
        assert row["md_equal_time.jsd_rama_mean"] == pytest.approx(equal_time)
        assert row["replicate_floor.jsd_rama_mean"] == pytest.approx(floor)
        assert row["jamun_ci_low.jsd_rama_mean"] == pytest.approx(jsd - 0.01)
        assert bool(row["meets_jsd_target"]) == (jsd <= equal_time)
        assert bool(row["meets_validity_target"]) == (valid >= 0.95 and l_ok >= 0.995)
    # ET is in the shipped model's training peptides: flagged, nothing else is.
    seen = {(m, p): s for m, p, s in zip(table["model"], table["peptide"], table["seen_in_training"])}
    assert seen == {("workflow model", "GN"): False, ("workflow model", "ET"): False,
                    ("shipped model 'tiny'", "GN"): False, ("shipped model 'tiny'", "ET"): True}
    assert list(table["train_device"]) == ["cpu", "cpu", "NVIDIA H200", "NVIDIA H200"]
    assert list(table["train_minutes"]) == pytest.approx([12.0, 12.0, 5.0, 5.0])
    assert list(table["train_steps"]) == [5501, 5501, 20000, 20000]

    png = two_models["out"] / "models.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert workflow_label in legends and shipped_label in legends
    assert not [p for p in two_models["out"].iterdir() if p.name.startswith(".")]  # no temporary files left


def test_missing_training_record_is_said(two_models, tmp_path) -> None:
    bare = checkpoint(tmp_path / "bare.ckpt", None)
    table = compare([ModelSource(str(bare), two_models["workflow_eval"]),
                     ModelSource("tiny", two_models["shipped_eval"])], ["GN"], two_models["out"])
    assert list(table["label"]) == [f"model {bare}: training record missing",
                                    "shipped model 'tiny': NVIDIA H200, 5.0 min, 20,000 steps (kept step 18,000), "
                                    "1.2M params, σ 0.04 nm"]
    assert table["seen_in_training"].tolist() == [None, False]


def test_label_formats() -> None:
    assert training_label(None) == training_label({}) == "training record missing"
    assert training_label({"device": "NVIDIA H200", "world_size": 6, "wall_seconds": 45.0, "steps": 100,
                           "n_parameters": 4166}) == "6× NVIDIA H200, 45.0 s, 100 steps, 4,166 params"
    warm_started = {"device": "cpu", "wall_seconds": 150.0, "steps": 300,
                    "initialised_from": {"steps": 3975, "wall_seconds": 360.0, "device": "NVIDIA H200"}}
    assert training_label(warm_started) == "cpu, 2.5 min, 300 steps, after 3,975 steps (6.0 min) of earlier training"


def test_different_reference_md_is_refused(two_models, capsys) -> None:
    write_metrics(two_models["shipped_eval"], "shipped", ET={"reference_frames": 80})
    assert run_cli(two_models) == 2
    error = capsys.readouterr().err
    assert "ET" in error and "frames.reference" in error and "not comparable" in error
    assert not (two_models["out"] / "models.csv").exists()


def test_missing_metrics_and_bad_arguments(two_models, capsys) -> None:
    (two_models["shipped_eval"] / "ET" / "metrics.json").unlink()
    assert run_cli(two_models) == 2
    assert str(two_models["shipped_eval"] / "ET" / "metrics.json") in capsys.readouterr().err

    assert jamun.cli.main(["compare", "--model", "pretrained", "--peptides", "GN", "-o", "x"]) == 2
    assert "CHECKPOINT EVALUATION [NAME]" in capsys.readouterr().err

    with pytest.raises(ValueError, match="share a name"):
        compare_module.model_table([ModelSource("tiny", two_models["shipped_eval"], "m"),
                                    ModelSource("pretrained", two_models["shipped_eval"], "m")], ["GN"])


def test_unshipped_name_lists_the_choices(two_models, capsys) -> None:
    assert jamun.cli.main(["compare", "--model", "nothere", str(two_models["shipped_eval"]),
                           "--peptides", "GN", "-o", str(two_models["out"])]) == 2
    assert "'nothere'" in capsys.readouterr().err
