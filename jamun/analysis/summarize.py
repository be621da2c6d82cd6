"""Cross-peptide summary: one table row per evaluated peptide, and a bar chart of the JSDs."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from jamun.analysis import plots
from jamun.analysis.evaluate import COMPARISONS

SUMMARY_METRICS = ("jsd_rama_mean", "jsd_1d_mean", "jsd_macrostates")


def metrics_table(metrics_files: Sequence[Path | str]) -> pd.DataFrame:
    """Scalar metrics of each metrics.json as one row, columns "<section>.<key>" (lists such as
    curves and populations dropped), held-out peptides first, then by peptide."""
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
    order = table["role"].map({"held-out": 0, "train": 1})
    return table.assign(_order=order).sort_values(["_order", "peptide"]).drop(columns="_order") \
        .reset_index(drop=True)


def summarize(metrics_files: Sequence[Path | str], out_dir: Path | str) -> pd.DataFrame:
    """Write `out_dir/metrics.csv` (one row per peptide) and `out_dir/summary.png`; return the
    table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = metrics_table(metrics_files)
    fd, tmp = tempfile.mkstemp(prefix=".metrics.csv.", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, out_dir / "metrics.csv")
    finally:
        Path(tmp).unlink(missing_ok=True)
    plots.summary(table, out_dir / "summary.png", metrics=SUMMARY_METRICS,
                  comparisons=COMPARISONS)
    return table
