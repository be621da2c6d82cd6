"""The ``train:`` config section: defaults and validation."""

from __future__ import annotations

from collections.abc import Mapping

from jamun.training.schedule import SCHEDULES

__all__ = ["TRAIN_DEFAULTS", "SAMPLE_CHECK_DEFAULTS", "train_settings"]

# train.sample_check: a short walk-jump run on the validation peptides that picks the checkpoint kept
# (jamun.training.sample_quality); every: steps between checks, None = off.
SAMPLE_CHECK_DEFAULTS = {
    "every": None, "chains": 8, "steps": 200, "burn_in": 20, "bond_tolerance_nm": 0.02, "bins_rama": 36,
}  # fmt: skip
TRAIN_DEFAULTS = {
    "sigma_nm": 0.04, "model": {}, "batch_size": 32, "lr": 0.002, "lr_schedule": "constant", "lr_warmup_steps": 0,
    "bond_loss_weight": 0.0, "max_steps": 2000, "max_minutes": None,
    "val_every": 100, "val_batches": 10, "checkpoint_every": 200, "ema_decay": None, "grad_clip": None,
    "seed": 0, "gpus": 0, "sample_check": SAMPLE_CHECK_DEFAULTS,
}  # fmt: skip
_POSITIVE_INTS = ("batch_size", "max_steps", "val_every", "val_batches", "checkpoint_every")
_POSITIVE = ("sigma_nm", "lr")
_POSITIVE_OR_NULL = ("max_minutes", "grad_clip")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _sample_check_settings(section) -> dict:
    """``train.sample_check`` with defaults filled in."""
    if not isinstance(section, Mapping):
        raise ValueError(
            f"train.sample_check must be a mapping with keys {sorted(SAMPLE_CHECK_DEFAULTS)}, got {section!r}"
        )
    unknown = sorted(set(section) - set(SAMPLE_CHECK_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train.sample_check keys {unknown}; valid keys: {sorted(SAMPLE_CHECK_DEFAULTS)}")
    s = {**SAMPLE_CHECK_DEFAULTS, **section}
    if s["every"] is not None and not (_is_int(s["every"]) and s["every"] >= 1):
        raise ValueError(f"train.sample_check.every must be a positive integer or null, got {s['every']!r}")
    for key in ("chains", "steps", "bins_rama"):
        if not (_is_int(s[key]) and s[key] >= 1):
            raise ValueError(f"train.sample_check.{key} must be a positive integer, got {s[key]!r}")
    if not (_is_int(s["burn_in"]) and 0 <= s["burn_in"] < s["steps"]):
        raise ValueError(
            f"train.sample_check.burn_in must be an integer in [0, steps = {s['steps']}) so that every chain "
            f"saves a jump, got {s['burn_in']!r}"
        )
    if not _is_positive(s["bond_tolerance_nm"]):
        raise ValueError(
            f"train.sample_check.bond_tolerance_nm must be a positive number, got {s['bond_tolerance_nm']!r}"
        )
    return s


def train_settings(train_cfg: Mapping) -> dict:
    """The ``train:`` section with defaults filled in (model keys are checked by the model).

    Raises
    ------
    ValueError
        Naming an unknown key (and listing the valid ones) or a value out of range.
    """
    unknown = sorted(set(train_cfg) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train config keys {unknown}; valid keys: {sorted(TRAIN_DEFAULTS)}")
    s = {**TRAIN_DEFAULTS, **train_cfg}
    for key in _POSITIVE_INTS:
        if not (_is_int(s[key]) and s[key] >= 1):
            raise ValueError(f"train.{key} must be a positive integer, got {s[key]!r}")
    if not (_is_int(s["gpus"]) and s["gpus"] >= 0) or not _is_int(s["seed"]):
        raise ValueError(f"train.gpus must be an integer >= 0 and train.seed an integer, got {s['gpus']!r}, {s['seed']!r}")
    for key in _POSITIVE:
        if not _is_positive(s[key]):
            raise ValueError(f"train.{key} must be a positive number, got {s[key]!r}")
    for key in _POSITIVE_OR_NULL:
        if s[key] is not None and not _is_positive(s[key]):
            raise ValueError(f"train.{key} must be a positive number or null, got {s[key]!r}")
    if s["ema_decay"] is not None and not (_is_positive(s["ema_decay"]) and s["ema_decay"] < 1):
        raise ValueError(f"train.ema_decay must be in (0, 1) or null, got {s['ema_decay']!r}")
    if s["lr_schedule"] not in SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {list(SCHEDULES)}, got {s['lr_schedule']!r}")
    if not (_is_int(s["lr_warmup_steps"]) and 0 <= s["lr_warmup_steps"] < s["max_steps"]):
        raise ValueError(
            f"train.lr_warmup_steps must be an integer in [0, max_steps = {s['max_steps']}), got {s['lr_warmup_steps']!r}"
        )
    weight = s["bond_loss_weight"]
    if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0):
        raise ValueError(f"train.bond_loss_weight must be a number >= 0, got {weight!r}")
    s["sample_check"] = _sample_check_settings(s["sample_check"])
    return s
