"""Evaluation of sampled ensembles against MD: dihedrals, JSDs, MSM, validity, figures.

Reads trajectories only; never imports the model, sampler or trainer (nor torch).
"""

from jamun.analysis.evaluate import EvaluateSettings, evaluate_peptide
from jamun.analysis.inputs import EnsembleFiles
from jamun.analysis.summarize import summarize

__all__ = ["EnsembleFiles", "EvaluateSettings", "evaluate_peptide", "summarize"]
