"""Models side by side: per peptide, each model's validity and Ramachandran JSD against the same MD.

Each model is a checkpoint (a file or a shipped model's name) and the evaluation folder of its
samples (``<peptide>/metrics.json`` as written by :func:`jamun.analysis.evaluate_peptide`). Its
label says where and how long it was trained, from the checkpoint's ``train`` entry (the
train.json summary). Reading that entry imports torch (inside :func:`training_record` only, so
importing this module does not).

Outputs: ``models.csv`` (one row per model and peptide, the metrics.csv column names of
:mod:`jamun.analysis.summarize` for the metrics) and ``models.png`` (grouped bars).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from jamun.analysis import plots
from jamun.analysis.summarize import metrics_table
from jamun.atomic import write_atomic

# metrics.csv columns copied into models.csv, in this order.
METRIC_COLUMNS = (
    "role",
    "valid",
    "l_chirality_ok",
    "jamun.jsd_rama_mean",
    "jamun_ci_low.jsd_rama_mean",
    "jamun_ci_high.jsd_rama_mean",
    "md_equal_time.jsd_rama_mean",
    "replicate_floor.jsd_rama_mean",
    "meets_validity_target",
    "meets_jsd_target",
    "timing.sampler_wall_seconds",
)
# Records that must agree between models for one peptide: else they were scored against
# different MD or with different bins, and their JSDs are not comparable.
SAME_REFERENCE = ("frames.reference", "frames.replicate", "bins.rama")
MISSING_RECORD = "training record missing"


@dataclass(frozen=True)
class ModelSource:
    """One model to compare: ``checkpoint`` (a file or a shipped model's name), the folder with
    ``<peptide>/metrics.json`` of its samples, and the name shown (None: :func:`default_name`)."""

    checkpoint: str
    evaluation: Path
    name: str | None = None


def _pretrained_root(root: Path | str | None) -> Path:
    from jamun.model import pretrained

    return Path(root) if root is not None else pretrained.PRETRAINED_DIR


def default_name(spec: str, root: Path | str | None = None) -> str:
    """``model <path>`` for a checkpoint file, ``shipped model '<name>'`` for a shipped model
    (``pretrained`` named by the registry's default)."""
    from jamun.model import pretrained

    if Path(spec).is_file():
        return f"model {spec}"
    pretrained.resolve_model(spec, _pretrained_root(root))  # raises with the choices if unknown
    registry = pretrained.shipped_models(_pretrained_root(root))
    name = registry["default"] if spec == pretrained.DEFAULT_NAME else spec
    return f"shipped model '{name}'"


def training_record(spec: str, root: Path | str | None = None) -> dict | None:
    """The ``train`` entry of the checkpoint ``spec`` names (a shipped model's checksum is
    verified), or None where the checkpoint has none."""
    from jamun.model import read_checkpoint
    from jamun.model.pretrained import resolve_model

    record = read_checkpoint(resolve_model(spec, _pretrained_root(root))).get("train")
    return dict(record) if isinstance(record, Mapping) else None


def training_label(record: Mapping | None) -> str:
    """Where and how long a model was trained, e.g. ``cpu, 12.0 min, 5,501 steps, 0.19M params,
    σ 0.01 nm``; entries missing from the record are left out."""
    if not record:
        return MISSING_RECORD
    parts = []
    if record.get("device"):
        world = int(record.get("world_size") or 1)
        parts.append(f"{world}× {record['device']}" if world > 1 else str(record["device"]))
    if record.get("wall_seconds") is not None:
        seconds = float(record["wall_seconds"])
        parts.append(f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s")
    if record.get("steps") is not None:
        steps = f"{int(record['steps']):,} steps"
        selected = record.get("selected_step")
        if selected is not None and int(selected) != int(record["steps"]):
            steps += f" (kept step {int(selected):,})"
        parts.append(steps)
    if record.get("n_parameters"):
        n = int(record["n_parameters"])
        parts.append(f"{n / 1e6:.2g}M params" if n >= 100_000 else f"{n:,} params")
    if record.get("sigma_nm") is not None:
        parts.append(f"σ {record['sigma_nm']:g} nm")
    earlier = record.get("initialised_from")
    if earlier and earlier.get("steps") is not None and earlier.get("wall_seconds") is not None:
        parts.append(f"after {int(earlier['steps']):,} steps ({earlier['wall_seconds'] / 60:.1f} min) of earlier training")
    return ", ".join(parts) if parts else MISSING_RECORD


def seen_in_training(peptide: str, record: Mapping | None) -> bool | None:
    """Whether the record lists ``peptide`` among its train or val peptides (None: no record)."""
    if not record or ("train_peptides" not in record and "val_peptides" not in record):
        return None
    return peptide in set(record.get("train_peptides") or []) | set(record.get("val_peptides") or [])


def _model_rows(model: ModelSource, peptides: Sequence[str], root: Path | str | None) -> pd.DataFrame:
    record = training_record(model.checkpoint, root)
    entry = record or {}
    name = model.name or default_name(model.checkpoint, root)
    table = metrics_table([Path(model.evaluation) / p / "metrics.json" for p in peptides])
    table = table.set_index("peptide").loc[list(peptides)].reset_index()
    out = pd.DataFrame({
        "model": name,
        "label": f"{name}: {training_label(record)}",
        "peptide": table["peptide"],
        **{c: table[c] if c in table else pd.NA for c in METRIC_COLUMNS},
        "seen_in_training": [seen_in_training(p, record) for p in table["peptide"]],
        "train_device": entry.get("device"),
        "train_minutes": entry["wall_seconds"] / 60 if entry.get("wall_seconds") is not None else None,
        "train_steps": entry.get("steps"),
        "n_parameters": entry.get("n_parameters"),
        "sigma_nm": entry.get("sigma_nm"),
        "checkpoint": str(model.checkpoint),
        "evaluation": str(model.evaluation),
    })
    for column in SAME_REFERENCE:
        out[f"_{column}"] = table[column] if column in table else pd.NA
    return out


def model_table(models: Sequence[ModelSource], peptides: Sequence[str],
                root: Path | str | None = None) -> pd.DataFrame:
    """One row per (model, peptide), models in the given order, peptides in the given order.

    Raises ValueError for no models or peptides, repeated peptides or model names, and where two
    models' metrics of a peptide were computed against different MD (SAME_REFERENCE differs);
    FileNotFoundError for a missing metrics.json.
    """
    if not models:
        raise ValueError("compare needs at least one model")
    if not peptides:
        raise ValueError("compare needs at least one peptide")
    if len(set(peptides)) != len(peptides):
        raise ValueError(f"peptides repeat: {list(peptides)}")
    table = pd.concat([_model_rows(m, peptides, root) for m in models], ignore_index=True)
    names = list(dict.fromkeys(table["model"]))
    if len(names) != len(models):
        raise ValueError(f"two models share a name ({list(table['model'].drop_duplicates())} for "
                         f"{len(models)} models); give each its own NAME")
    for column in SAME_REFERENCE:
        differ = table.groupby("peptide")[f"_{column}"].nunique(dropna=False) > 1
        if differ.any():
            peptide = differ[differ].index[0]
            values = table.loc[table["peptide"] == peptide, ["model", f"_{column}"]].values.tolist()
            raise ValueError(f"{peptide}: models were evaluated against different MD or bins "
                             f"({column}: {values}); their JSDs are not comparable")
    return table.drop(columns=[f"_{c}" for c in SAME_REFERENCE])


def compare(models: Sequence[ModelSource], peptides: Sequence[str], out_dir: Path | str,
            root: Path | str | None = None) -> pd.DataFrame:
    """Write ``out_dir/models.csv`` and ``out_dir/models.png`` (see :func:`model_table`); return the
    table. ``root``: the shipped models' folder (default: the package's)."""
    table = model_table(models, peptides, root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "models.csv", lambda tmp: table.to_csv(tmp, index=False))
    plots.model_comparison(table, out_dir / "models.png")
    return table
