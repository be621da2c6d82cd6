"""The ``train:`` config section: the schema's checks and defaults plus the cross-key checks."""

from __future__ import annotations

from collections.abc import Mapping

from jamun.model.precondition import check_sigma_range
from jamun.schema import section_settings

__all__ = ["train_settings"]


def train_settings(train_cfg: Mapping | None, source: str = "config") -> dict:
    """The ``train:`` section validated against the schema with its defaults filled in
    (``model`` and ``sample_check`` too).

    Raises
    ------
    ValueError
        One line naming ``source`` and the key: an unknown key (with the valid ones), a value out
        of range, or two keys that do not fit together.
    """
    s = section_settings("train", train_cfg, source)
    if s["lr_warmup_steps"] >= s["max_steps"]:
        raise ValueError(f"{source}: train.lr_warmup_steps = {s['lr_warmup_steps']} must be less than "
                         f"train.max_steps = {s['max_steps']}")
    check_sigma_range(s["sigma_nm"], s["sigma_range_nm"], source)
    check = s["sample_check"]
    if check["burn_in"] >= check["steps"]:
        raise ValueError(f"{source}: train.sample_check.burn_in = {check['burn_in']} must be less than "
                         f"train.sample_check.steps = {check['steps']} so that every chain saves a jump")
    return s
