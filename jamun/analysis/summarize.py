"""Cross-peptide summary: one table row per evaluated peptide, and a bar chart of the JSDs.

Targets (for held-out peptides; checked on every row): at least VALID_TARGET of the JAMUN jumps
valid and at least L_CHIRALITY_TARGET of them L at every CA; JAMUN's mean Ramachandran JSD no
higher than that of MD of equal wall time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jamun.analysis import plots
from jamun.analysis.evaluate import COMPARISONS
from jamun.atomic import write_atomic

SUMMARY_METRICS = ("jsd_rama_mean", "jsd_1d_mean", "jsd_macrostates")
VALID_TARGET = 0.95
L_CHIRALITY_TARGET = 0.995
# Headline columns of JAMUN's validity, copied to the front of the table next to the targets.
HEADLINE = ("valid", "l_chirality_ok", "chains_left_molecule", "left_molecule_fraction")


def target_columns(table: pd.DataFrame) -> pd.DataFrame:
    """HEADLINE columns (from "validity.jamun.<name>"; NaN where a metrics.json lacks one) and
    the target checks "meets_validity_target", "meets_jsd_target" (False where an input is NaN)."""
    def column(name: str) -> pd.Series:
        return table[name] if name in table else pd.Series(np.nan, index=table.index)

    out = pd.DataFrame({name: column(f"validity.jamun.{name}") for name in HEADLINE})
    out["meets_validity_target"] = ((out["valid"] >= VALID_TARGET)
                                    & (out["l_chirality_ok"] >= L_CHIRALITY_TARGET))
    out["meets_jsd_target"] = (column("jamun.jsd_rama_mean")
                               <= column("md_equal_time.jsd_rama_mean"))
    return out


def metrics_table(metrics_files: Sequence[Path | str]) -> pd.DataFrame:
    """Scalar metrics of each metrics.json as one row, columns "<section>.<key>" (lists such as
    curves and populations dropped) after the :func:`target_columns` placed behind "role";
    held-out (test) peptides first, then by peptide."""
    if not metrics_files:
        raise ValueError("summarize needs at least one metrics.json file, got none")
    records = []
    for path in map(Path, metrics_files):
        if not path.is_file():
            raise FileNotFoundError(f"metrics file {path} not found")
        records.append(json.loads(path.read_text()))
    table = pd.json_normalize(records, sep=".")
    listed = [c for c in table if table[c].map(lambda v: isinstance(v, list)).any()]
    table = table.drop(columns=listed)
    after_role = table.columns.get_loc("role") + 1
    table = pd.concat([table.iloc[:, :after_role], target_columns(table),
                       table.iloc[:, after_role:]], axis=1)
    order = table["role"].map({"test": 0, "train": 1})
    return table.assign(_order=order).sort_values(["_order", "peptide"]).drop(columns="_order") \
        .reset_index(drop=True)


# The per-peptide numbers a reader of the report compares first: (column of metrics.csv, heading).
READER_COLUMNS = (
    ("peptide", "peptide"), ("residues", "residues"), ("role", "role"),
    ("valid", "valid jumps"), ("l_chirality_ok", "L at every CA"),
    ("jamun.jsd_rama_mean", "Rama JSD: JAMUN"), ("md_equal_time.jsd_rama_mean", "Rama JSD: MD of equal time"),
    ("replicate_floor.jsd_rama_mean", "Rama JSD: floor (MD replicate)"),
    ("meets_validity_target", "validity target met"), ("meets_jsd_target", "JSD target met"),
)


def reader_table(table: pd.DataFrame) -> pd.DataFrame:
    """The READER_COLUMNS of a :func:`metrics_table`, renamed to their headings (absent ones NaN)."""
    return pd.DataFrame({heading: table[column] if column in table else np.nan for column, heading in READER_COLUMNS})


def write_reader_table(table: pd.DataFrame, path: Path) -> Path:
    """``path`` as a standalone HTML page with one row per peptide (the report shows it as is)."""
    body = reader_table(table).to_html(index=False, float_format=lambda x: f"{x:.3f}", na_rep="–", border=0)
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>per-peptide metrics</title><style>"
            "table{border-collapse:collapse;font-family:sans-serif}th,td{padding:4px 10px;text-align:right}"
            "tr:nth-child(even){background:#f3f3f3}</style></head><body>" + body + "</body></html>\n")
    return write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))


def summarize(metrics_files: Sequence[Path | str], out_dir: Path | str) -> pd.DataFrame:
    """Write `out_dir/metrics.csv` (one row per peptide, every scalar metric), `out_dir/metrics.html`
    (the headline numbers, for the report) and `out_dir/summary.png`; return the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics_table(metrics_files)
    write_atomic(out_dir / "metrics.csv", lambda tmp: table.to_csv(tmp, index=False))
    write_reader_table(table, out_dir / "metrics.html")
    plots.summary(table, out_dir / "summary.png", metrics=SUMMARY_METRICS,
                  comparisons=COMPARISONS)
    return table
