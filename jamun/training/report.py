"""What training reports besides the model: the rows of metrics.csv as they are logged, and
metrics.csv, loss.png and train.json, each written atomically (:mod:`jamun.atomic`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from jamun.atomic import write_atomic, write_json_atomic
from jamun.training.sample_quality import QUALITY_COLUMNS

__all__ = ["METRIC_COLUMNS", "MetricsLog", "write_metrics", "plot_losses", "write_reports"]

# scaled_rmsd: per-atom RMS error of xhat (graphs weighted equally) / (sigma sqrt 3); the identity
# xhat = y scores 1. data_wait_fraction: share of step time spent reading and preparing batches.
# QUALITY_COLUMNS: means over the validation peptides of a sample check, NaN on rows without one.
METRIC_COLUMNS = (
    "step", "epoch", "train_loss", "val_loss", "scaled_rmsd", "graphs_per_s", "data_wait_fraction", "elapsed_s",
    *QUALITY_COLUMNS,
)  # fmt: skip


_INTERVAL = ("loss", "steps", "graphs", "t_data", "t_step")


class MetricsLog:
    """The logged rows (``history``) and the sums over the steps since the last row (``interval``),
    both part of the work checkpoint so that a resumed run logs the same rows."""

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.interval = dict.fromkeys(_INTERVAL, 0.0)

    def add_step(self, loss: float, graphs: int, t_data: float, t_step: float) -> None:
        """Count one training step: its mean loss, global batch size and times in seconds."""
        for key, value in zip(_INTERVAL, (loss, 1, graphs, t_data, t_step)):
            self.interval[key] += value

    def log(self, step: int, epoch: float, val_loss: float, scaled_rmsd: float, elapsed_s: float) -> dict:
        """Append a row with the interval's means (NaN before the first step) and start a new interval."""
        i = self.interval
        self.history.append({
            "step": step, "epoch": epoch, "train_loss": i["loss"] / i["steps"] if i["steps"] else math.nan,
            "val_loss": val_loss, "scaled_rmsd": scaled_rmsd,
            "graphs_per_s": i["graphs"] / i["t_step"] if i["steps"] else math.nan,
            "data_wait_fraction": i["t_data"] / i["t_step"] if i["steps"] else math.nan, "elapsed_s": elapsed_s,
        })  # fmt: skip
        self.interval = dict.fromkeys(_INTERVAL, 0.0)
        return self.history[-1]

    def state_dict(self) -> dict:
        """The work checkpoint's ``history`` and ``interval`` entries."""
        return {"history": self.history, "interval": self.interval}

    def load_state_dict(self, state: Mapping) -> None:
        self.history, self.interval = state["history"], state["interval"]


def write_metrics(rows: Sequence[dict], path: Path) -> pd.DataFrame:
    """Write one row per logged step to ``path`` (CSV, atomically); returns the table."""
    table = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
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
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def write_reports(history: Sequence[dict], summary: Mapping, out_dir: Path) -> None:
    """Write ``out_dir``/{metrics.csv, loss.png, train.json}; the plot marks the selected step."""
    table = write_metrics(history, out_dir / "metrics.csv")
    plot_losses(table, out_dir / "loss.png", title=f"denoiser, sigma = {summary['sigma_nm']} nm",
                selected_step=summary["selected_step"])
    write_json_atomic(out_dir / "train.json", summary, indent=1)
