"""What training leaves behind besides the model: metrics.csv and loss.png."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["METRIC_COLUMNS", "write_metrics", "plot_losses"]

# scaled_rmsd: per-atom RMS error of xhat (graphs weighted equally) / (sigma sqrt 3); the identity
# xhat = y scores 1. data_wait_fraction: share of step time spent reading and preparing batches.
METRIC_COLUMNS = (
    "step", "epoch", "train_loss", "val_loss", "scaled_rmsd", "graphs_per_s", "data_wait_fraction", "elapsed_s",
)  # fmt: skip


def write_metrics(rows: Sequence[dict], path: Path) -> pd.DataFrame:
    """Write one row per logged step to ``path`` (CSV, atomically); returns the table."""
    table = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return table


def plot_losses(table: pd.DataFrame, path: Path, *, title: str) -> None:
    """Train and validation loss against step (log scale), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for column, style in (("train_loss", "-o"), ("val_loss", "-s")):
        part = table[["step", column]].dropna()
        if len(part):
            ax.plot(part["step"], part[column], style, ms=3, label=column.replace("_", " "))
    values = table[["train_loss", "val_loss"]].to_numpy().ravel()
    if any(math.isfinite(v) and v > 0 for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (units of c_out^2)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
