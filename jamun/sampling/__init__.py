"""Walk-jump sampling: the BAOAB integrator and sampling peptides with a trained denoiser."""

from jamun.sampling.baoab import BAOAB, Jump, NonFiniteChainError, clip_score
from jamun.sampling.sample import (
    SampleSettings,
    SampleTarget,
    initial_positions,
    sample_peptide,
    sample_peptides,
    walk_jump_peptides,
)

__all__ = [
    "BAOAB", "Jump", "NonFiniteChainError", "clip_score", "SampleSettings", "SampleTarget",
    "initial_positions", "sample_peptide", "sample_peptides", "walk_jump_peptides",
]
