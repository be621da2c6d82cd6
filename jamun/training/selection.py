"""Checkpoint selection by sample quality (docs/design.md §5.5): the run's sample checks and the
checked state with the lowest mean ``sample_error`` so far.

Only rank 0 walks (:func:`jamun.training.sample_quality.sample_quality`, with its own seeded
generator, so checks do not disturb training) and keeps states; both are part of the work
checkpoint, so a resumed run selects exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from jamun.training.sample_quality import load_validation_peptide, sample_quality

__all__ = ["CheckpointSelection"]


class CheckpointSelection:
    """Sample checks of the validation peptides and the best checked state.

    Parameters
    ----------
    validation_md
        MD folders of the validation peptides (empty on ranks that do not walk).
    check
        The ``train.sample_check`` settings.
    seed
        ``train.seed``: the walks' seed.
    """

    def __init__(self, validation_md: Sequence[Path], check: Mapping, seed: int) -> None:
        self.peptides = [load_validation_peptide(d) for d in validation_md]
        self.walk = {"chains": check["chains"], "steps": check["steps"], "burn_in": check["burn_in"], "seed": seed}
        self.scoring = {"bond_tolerance_nm": check["bond_tolerance_nm"], "bins": check["bins_rama"],
                        "start": check["start"]}
        self.checks: list[dict] = []  # per check: {step, peptides: {sequence: scores}, mean: scores}
        self.best: dict | None = None  # {step, sample_error, state (on the CPU)} of the lowest mean error

    def check(self, model: torch.nn.Module, step: int) -> tuple[dict[str, float], bool]:
        """Walk and score ``model`` at ``step``; keep its state if its mean sample_error is the
        lowest so far (the earliest on ties; non-finite counts as infinite). Returns the mean
        scores and whether the state was kept."""
        scores = sample_quality(model, self.peptides, self.walk, **self.scoring)
        mean = scores.pop("mean")
        self.checks.append({"step": step, "peptides": scores, "mean": mean})
        error = mean["sample_error"] if math.isfinite(mean["sample_error"]) else math.inf
        kept = self.best is None or error < self.best["sample_error"]
        if kept:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.best = {"step": step, "sample_error": error, "state": state}
        return mean, kept

    def checked_at(self, step: int) -> dict | None:
        """The check made at ``step``, if any."""
        return next((c for c in self.checks if c["step"] == step), None)

    def state_dict(self) -> dict:
        """The work checkpoint's ``sample_checks`` and ``best`` entries."""
        return {"sample_checks": self.checks, "best": self.best}

    def load_state_dict(self, state: Mapping) -> None:
        self.checks, self.best = state["sample_checks"], state["best"]
