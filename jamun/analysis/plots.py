"""Figures of the evaluation (matplotlib); every writer saves atomically to `path`.

The backend is the caller's choice (the CLI picks Agg), so importing this module changes nothing
in a notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jamun.atomic import write_atomic

# Free energies above this (in kT) share the top colour, so sparse panels stay comparable.
MAX_FREE_ENERGY_KT = 8.0


def save_figure(fig: plt.Figure, path: Path | str) -> Path:
    """Write `fig` as PNG atomically (jamun.atomic); close it."""
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def free_energy_2d(phi_psi: np.ndarray, bins: int) -> np.ndarray:
    """−ln p (kT, minimum 0, NaN where empty) on a (bins, bins) grid over [−π, π)²; rows φ."""
    counts, _, _ = np.histogram2d(phi_psi[:, 0], phi_psi[:, 1], bins=bins,
                                  range=[[-np.pi, np.pi], [-np.pi, np.pi]])
    with np.errstate(divide="ignore"):
        energy = -np.log(counts / counts.sum())
    energy[~np.isfinite(energy)] = np.nan
    return energy - np.nanmin(energy)


def ramachandran(panels: Mapping[str, np.ndarray], residues: Sequence[str], path: Path | str,
                 bins: int = 50) -> Path:
    """One row per residue, one column per ensemble: −ln p(φ_i, ψ_i) in kT.

    panels: {column title: (n_frames, n_residues, 2) rad}; residues: row labels.
    """
    n_rows, n_cols = len(residues), len(panels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 3.0 * n_rows), squeeze=False,
                             sharex=True, sharey=True)
    edges = np.degrees(np.linspace(-np.pi, np.pi, bins + 1))
    image = None
    for col, (title, angles) in enumerate(panels.items()):
        for row, residue in enumerate(residues):
            ax = axes[row, col]
            image = ax.pcolormesh(edges, edges, free_energy_2d(angles[:, row], bins).T,
                                  cmap="viridis", vmin=0.0, vmax=MAX_FREE_ENERGY_KT)
            ax.set_aspect("equal")
            ax.set_xticks([-180, -90, 0, 90, 180])
            ax.set_yticks([-180, -90, 0, 90, 180])
            if row == 0:
                ax.set_title(f"{title}\n({angles.shape[0]} frames)", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{residue} {row + 1}\nψ (deg)")
            if row == n_rows - 1:
                ax.set_xlabel("φ (deg)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="−ln p (kT)")
    return save_figure(fig, path)


def jsd_vs_time(curves: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str],
                path: Path | str, *, marker_seconds: float | None = None) -> Path:
    """JSD (nats) against measured wall time (s, log axis), one panel per metric.

    curves: {label: {"seconds": [...], metric: [...]}}; marker_seconds: dotted vertical line
    (the sampler's total cost).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, curve in curves.items():
            if metric in curve:
                ax.plot(curve["seconds"], curve[metric], marker="o", ms=3, label=label)
        if marker_seconds is not None:
            ax.axvline(marker_seconds, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("measured wall time (s)")
        ax.set_ylabel(f"{metric} (nats)")
        ax.set_ylim(bottom=0.0)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def msm_overview(populations: Mapping[str, np.ndarray], tica: Mapping[str, np.ndarray],
                 path: Path | str) -> Path:
    """Left: macrostate populations per ensemble (bars). Right: TIC1-TIC2 of each ensemble.

    populations: {label: (n_macrostates,)}; tica: {label: (n_frames, tica_dim)}, the first entry
    drawn as a density background, the others as points.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = list(populations)
    n_macro = len(next(iter(populations.values())))
    width = 0.8 / len(labels)
    for k, label in enumerate(labels):
        left.bar(np.arange(n_macro) + (k - (len(labels) - 1) / 2) * width,
                 np.asarray(populations[label], dtype=float), width=width, label=label)
    left.set_xticks(np.arange(n_macro), [str(m + 1) for m in range(n_macro)])
    left.set_xlabel("macrostate (PCCA+ of reference MSM)")
    left.set_ylabel("population")
    left.legend(fontsize=8)

    (background_label, background), *others = tica.items()
    second = background[:, 1] if background.shape[1] > 1 else np.zeros(len(background))
    right.hexbin(background[:, 0], second, gridsize=40, bins="log", cmap="Greys", mincnt=1)
    for label, points in others:
        y = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
        step = max(1, len(points) // 3000)  # a few thousand points show the cloud; more hide it
        right.scatter(points[::step, 0], y[::step], s=2, alpha=0.4, label=label)
    right.set_xlabel("TIC 1")
    right.set_ylabel("TIC 2" if background.shape[1] > 1 else "")
    right.set_title(f"grey: {background_label} density", fontsize=9)
    if others:
        right.legend(fontsize=8, markerscale=4)
    fig.tight_layout()
    return save_figure(fig, path)


def implied_timescales(lags_ps: np.ndarray, timescales_ps: np.ndarray, path: Path | str,
                       *, model_lag_ps: float) -> Path:
    """Implied timescales (ps) against lag time (ps), log y; shaded where timescale < lag.

    timescales_ps: (n_lags, n_processes); empty when no process could be resolved.
    """
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for k in range(timescales_ps.shape[1]):
        ax.plot(lags_ps, timescales_ps[:, k], marker="o", ms=3, label=f"process {k + 1}")
    if timescales_ps.size:
        bottom = 0.5 * min(np.nanmin(timescales_ps), np.min(lags_ps))
        ax.fill_between(lags_ps, bottom, lags_ps, color="grey", alpha=0.3, label="timescale < lag")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "single connected state:\nno process to time", ha="center",
                transform=ax.transAxes)
    ax.axvline(model_lag_ps, color="grey", ls=":", lw=1)
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("implied timescale (ps)")
    fig.tight_layout()
    return save_figure(fig, path)


# How figures name the ensembles and metrics of metrics.json.
ENSEMBLE_NAMES = {"jamun": "JAMUN samples", "md_equal_time": "MD of equal wall time",
                  "replicate_floor": "floor (MD replicate, as many frames)"}
METRIC_NAMES = {"jsd_rama_mean": "Ramachandran JSD", "jsd_1d_mean": "1D dihedral JSD",
                "jsd_macrostates": "macrostate JSD"}


def summary(table: pd.DataFrame, path: Path | str, *, metrics: Sequence[str],
            comparisons: Sequence[str]) -> Path:
    """Grouped bars per peptide: each metric (panel) for each comparison (colour).

    table: one row per peptide with columns "peptide", "role" and "<comparison>.<metric>"; JAMUN
    error bars come from "jamun_ci_low.<metric>" / "jamun_ci_high.<metric>" when present.
    """
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(5, 1.2 * len(table) + 2),
                                                        2.8 * len(metrics)), squeeze=False)
    x = np.arange(len(table))
    width = 0.8 / len(comparisons)
    names = [f"{p}\n({r})" for p, r in zip(table["peptide"], table["role"])]
    for ax, metric in zip(axes[:, 0], metrics):
        for k, comparison in enumerate(comparisons):
            column = f"{comparison}.{metric}"
            if column not in table:
                continue
            values = table[column].to_numpy(dtype=float)
            err = None
            low, high = f"jamun_ci_low.{metric}", f"jamun_ci_high.{metric}"
            if comparison == "jamun" and low in table and high in table:
                # Percentile intervals of a biased statistic need not contain the estimate.
                err = np.clip(np.vstack([values - table[low].to_numpy(dtype=float),
                                         table[high].to_numpy(dtype=float) - values]), 0, None)
            ax.bar(x + (k - (len(comparisons) - 1) / 2) * width, values, width=width, yerr=err,
                   capsize=2, label=ENSEMBLE_NAMES.get(comparison, comparison))
        ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (nats)", fontsize=8)
        ax.set_xticks(x, names, fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def model_comparison(table: pd.DataFrame, path: Path | str, *, valid_target: float = 0.95) -> Path:
    """Models side by side per peptide. Top: JAMUN's mean Ramachandran JSD, one bar per model
    (bootstrap CI as error bars, hatched where the model was trained on the peptide), with that
    model's MD of equal wall time (black bar) and replicate floor (grey dotted bar) as markers.
    Bottom: valid fraction per model, dashed line at `valid_target`. The legend holds the labels.

    table: one row per (model, peptide) with columns "model", "label", "peptide", "valid",
    "jamun.jsd_rama_mean", "md_equal_time.jsd_rama_mean", "replicate_floor.jsd_rama_mean" and
    optionally "jamun_ci_low/high.jsd_rama_mean", "seen_in_training".
    """
    peptides = list(dict.fromkeys(table["peptide"]))
    models = list(dict.fromkeys(table["model"]))
    x = np.arange(len(peptides))
    width = 0.8 / len(models)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(5.0, 1.6 * len(peptides) + 2), 6.2),
                                      sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def values(rows: pd.DataFrame, column: str) -> np.ndarray:
        if column not in rows:
            return np.full(len(rows), np.nan)
        return pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)

    for k, model in enumerate(models):
        rows = table[table["model"] == model].set_index("peptide").reindex(peptides)
        at = x + (k - (len(models) - 1) / 2) * width
        colour = colours[k % len(colours)]
        jsd = values(rows, "jamun.jsd_rama_mean")
        low, high = values(rows, "jamun_ci_low.jsd_rama_mean"), values(rows, "jamun_ci_high.jsd_rama_mean")
        err = None
        if np.isfinite(low).any() and np.isfinite(high).any():
            err = np.clip(np.nan_to_num(np.vstack([jsd - low, high - jsd])), 0, None)
        seen = rows["seen_in_training"].fillna(False).astype(bool).to_numpy() \
            if "seen_in_training" in rows else np.zeros(len(rows), bool)
        bars = top.bar(at, jsd, width=width, yerr=err, capsize=2, color=colour,
                       label=rows["label"].dropna().iloc[0] if rows["label"].notna().any() else model)
        for bar, was_seen in zip(bars, seen):
            if was_seen:
                bar.set_hatch("//")
        top.hlines(values(rows, "md_equal_time.jsd_rama_mean"), at - width / 2, at + width / 2,
                   color="black", lw=2, zorder=3,
                   label="MD of equal wall time (per model)" if k == 0 else None)
        top.hlines(values(rows, "replicate_floor.jsd_rama_mean"), at - width / 2, at + width / 2,
                   color="grey", lw=2, linestyles=":", zorder=3,
                   label="replicate floor" if k == 0 else None)
        valid = bottom.bar(at, values(rows, "valid"), width=width, color=colour)
        bottom.bar_label(valid, fmt="%.2f", fontsize=7)
    top.set_ylabel("Ramachandran JSD\n(nats, mean over residues)", fontsize=8)
    top.set_ylim(bottom=0.0)
    if "seen_in_training" in table and table["seen_in_training"].fillna(False).astype(bool).any():
        top.bar([np.nan], [np.nan], color="white", edgecolor="black", hatch="//",
                label="peptide in that model's training data")
    bottom.axhline(valid_target, color="grey", ls="--", lw=1)
    bottom.set_ylim(0.0, 1.12)
    bottom.set_ylabel("valid fraction", fontsize=8)
    bottom.set_xticks(x, peptides, fontsize=9)
    handles, labels = top.get_legend_handles_labels()
    first = [i for i, label in enumerate(labels) if label in set(table["label"])]  # models first
    order = first + [i for i in range(len(labels)) if i not in first]
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
               bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)
