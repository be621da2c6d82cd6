"""The ``train:`` config section: defaults and validation."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["TRAIN_DEFAULTS", "train_settings"]

TRAIN_DEFAULTS = {
    "sigma_nm": 0.04, "model": {}, "batch_size": 32, "lr": 0.002, "max_steps": 2000, "max_minutes": None,
    "val_every": 100, "val_batches": 10, "checkpoint_every": 200, "ema_decay": None, "grad_clip": None,
    "seed": 0, "gpus": 0,
}  # fmt: skip
_POSITIVE_INTS = ("batch_size", "max_steps", "val_every", "val_batches", "checkpoint_every")
_POSITIVE = ("sigma_nm", "lr")
_POSITIVE_OR_NULL = ("max_minutes", "grad_clip")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


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
    return s
