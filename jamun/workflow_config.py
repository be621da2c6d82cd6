"""The whole workflow config, checked when Snakemake parses the workflow.

Every stage checks its own section again when its job starts (the CLI, jamun/schema.py), but a
mistake that relates two keys (``md.checkpoint_every_ps`` not a multiple of
``md.save_every_ps``, ``sample.burn_in`` beyond ``sample.steps``) or an empty training list
would then surface only in one job's log, minutes or hours in. Checking here makes a dry run
refuse it, with the same one-line message the job would print. Heavy imports (OpenMM, torch)
happen because the stages' settings classes live next to their engines; Snakemake runs where
the package and its dependencies are installed.
"""

from __future__ import annotations

from collections.abc import Mapping

from jamun.roles import PeptideRoles
from jamun.schema import full_config_settings

__all__ = ["check_workflow_config"]


def check_workflow_config(config: Mapping, source: str) -> dict:
    """``config`` validated against the schema with its defaults filled in, and every stage's
    settings built from it (their cross-key checks), the peptide lists read and checked.

    Raises
    ------
    ValueError
        One line naming ``source``, the key and what is valid.
    """
    from jamun.analysis.evaluate import EvaluateSettings
    from jamun.md.settings import MDSettings
    from jamun.sampling.sample import SampleSettings
    from jamun.training.settings import train_settings

    settings = full_config_settings(config, source)
    PeptideRoles.from_config(settings["peptides"])
    MDSettings.from_config(settings["md"], source)
    train_settings(settings["train"], source)
    SampleSettings.from_config(settings["sample"], source)
    EvaluateSettings.from_config(settings["evaluate"], source)
    return settings
