"""What training leaves behind besides the model: metrics.csv and loss.png."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from jamun.training.sample_quality import QUALITY_COLUMNS

__all__ = ["METRIC_COLUMNS", "write_metrics", "plot_losses"]

# scaled_rmsd: per-atom RMS error of xhat (graphs weighted equally) / (sigma sqrt 3); the identity
# xhat = y scores 1. data_wait_fraction: share of step time spent reading and preparing batches.
# QUALITY_COLUMNS: means over the validation peptides of a sample check, NaN on rows without one.
METRIC_COLUMNS = (
    "step", "epoch", "train_loss", "val_loss", "scaled_rmsd", "graphs_per_s", "data_wait_fraction", "elapsed_s",
    *QUALITY_COLUMNS,
)  # fmt: skip


def write_metrics(rows: Sequence[dict], path: Path) -> pd.DataFrame:
    """Write one row per logged step to ``path`` (CSV, atomically); returns the table."""
    table = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return table


def _plot_columns(ax, table: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> None:
    for column, style in columns:
        part = table[["step", column]].dropna()
        if len(part):
            ax.plot(part["step"], part[column], style, ms=3, label=column.replace("_", " "))


def plot_losses(table: pd.DataFrame, path: Path, *, title: str, selected_step: int | None = None) -> None:
    """Two panels against step, written atomically as PNG: train and validation loss (log scale),
    and the sample checks' validity and Ramachandran JSD, with ``selected_step`` (the kept
    checkpoint) marked by a vertical line on both."""
    import matplotlib.pyplot as plt

    fig, (loss_ax, quality_ax) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True)
    _plot_columns(loss_ax, table, (("train_loss", "-o"), ("val_loss", "-s")))
    values = table[["train_loss", "val_loss"]].to_numpy().ravel()
    if any(math.isfinite(v) and v > 0 for v in values):
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss (units of c_out^2)")
    loss_ax.set_title(title)
    _plot_columns(quality_ax, table, (("valid", "-o"), ("left_molecule", "-^"), ("jsd_rama", "-s")))
    if table["sample_error"].notna().any():
        quality_ax.set_ylim(-0.05, 1.05)
    else:
        quality_ax.text(0.5, 0.5, "no sample checks (train.sample_check.every: null\nor no validation peptides)",
                        ha="center", va="center", transform=quality_ax.transAxes)  # fmt: skip
    quality_ax.set_ylabel("validation samples\n(fraction; JSD in nats)")
    quality_ax.set_xlabel("step")
    if selected_step is not None:
        for ax in (loss_ax, quality_ax):
            ax.axvline(selected_step, color="0.4", ls="--", lw=1, label=f"kept: step {selected_step}")
    for ax in (loss_ax, quality_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
