"""Learning rate as a function of the step: deterministic, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def learning_rate(step: int, lr: float, schedule: str, warmup_steps: int, max_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Linear warm-up from lr / warmup_steps to lr over the first ``warmup_steps`` steps, then
    ``constant`` lr or ``cosine`` decay from lr to 0 at ``max_steps`` (Loshchilov & Hutter 2017,
    "SGDR", eq. 5 without restarts).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min((step - warmup_steps) / max(max_steps - warmup_steps, 1), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
