"""Training pairs (x, y): noise fixed by (seed, step), centring and rotation-only alignment."""

from __future__ import annotations

import numpy as np
import torch

from jamun.data.dataset import FrameBatch
from jamun.data.graph import GraphBatch, center_positions
from jamun.data.kabsch import kabsch_align

__all__ = ["TRAIN_STREAM", "VAL_STREAM", "batch_noise", "rank_noise", "corrupt"]

TRAIN_STREAM, VAL_STREAM = 1, 2  # independent noise streams: training steps, validation batches


def batch_noise(seed: int, stream: int, index: int, n_atoms: int, device: torch.device) -> torch.Tensor:
    """Standard normal noise (n_atoms, 3) float32 for a whole global batch, fixed by (seed, stream, index).

    Every rank draws the same global array and keeps its own atoms, so the noise a frame gets does
    not depend on the number of processes. The same generator type on another device (CUDA)
    gives other numbers: runs are reproducible per device type.
    """
    key = int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    generator = torch.Generator(device=device).manual_seed(key)
    return torch.randn((n_atoms, 3), generator=generator, device=device)


def rank_noise(seed: int, stream: int, index: int, frames: FrameBatch, device: torch.device) -> torch.Tensor:
    """This rank's rows (len(frames.positions), 3) of the global batch's :func:`batch_noise`."""
    eta = batch_noise(seed, stream, index, frames.global_atoms, device)
    return eta[frames.atom_offset : frames.atom_offset + len(frames.positions)]


def corrupt(x: torch.Tensor, eta: torch.Tensor, sigma: float, graph: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pair (docs/design.md §5): x centred; y = x + sigma eta, centred, Kabsch-aligned onto x.

    x: (N, 3) nm; eta: (N, 3) standard normal; sigma in nm. Returns (x, y), both (N, 3) nm and
    centred per graph. Alignment (rotation only) removes the rigid-motion part of the noise,
    which no translation- and rotation-equivariant denoiser could predict anyway.
    """
    x, _ = center_positions(x, graph)
    y, _ = center_positions(x + sigma * eta, graph)
    return x, kabsch_align(y, x, graph)
