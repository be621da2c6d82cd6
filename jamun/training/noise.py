"""Training pairs (x, y): noise fixed by (seed, step), centring and rotation-only alignment."""

from __future__ import annotations

import math

import numpy as np
import torch

from jamun.data.dataset import FrameBatch
from jamun.data.graph import GraphBatch, center_positions
from jamun.data.kabsch import kabsch_align

__all__ = ["TRAIN_STREAM", "VAL_STREAM", "batch_noise", "batch_noise_and_sigma", "rank_noise", "rank_noise_and_sigma",
           "corrupt"]

TRAIN_STREAM, VAL_STREAM = 1, 2  # independent noise streams: training steps, validation batches


def _generator(seed: int, stream: int, index: int, device: torch.device) -> torch.Generator:
    """The generator of one global batch, seeded by (seed, stream, index)."""
    key = int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    return torch.Generator(device=device).manual_seed(key)


def batch_noise(seed: int, stream: int, index: int, n_atoms: int, device: torch.device) -> torch.Tensor:
    """Standard normal noise (n_atoms, 3) float32 for a whole global batch, fixed by (seed, stream, index).

    Every rank draws the same global array and keeps its own atoms, so the noise a frame gets does
    not depend on the number of processes. The same generator type on another device (CUDA)
    gives other numbers: runs are reproducible per device type.
    """
    return torch.randn((n_atoms, 3), generator=_generator(seed, stream, index, device), device=device)


def batch_noise_and_sigma(seed: int, stream: int, index: int, n_atoms: int, n_graphs: int,
                          sigma_range: tuple[float, float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batch_noise` and, drawn next from the same generator, one noise level per graph of the
    global batch, (n_graphs,) float64 nm, log-uniform on ``sigma_range`` = (low, high):
    sigma = low (high / low)^u with u uniform on [0, 1). The noise equals :func:`batch_noise`'s."""
    generator = _generator(seed, stream, index, device)
    eta = torch.randn((n_atoms, 3), generator=generator, device=device)
    u = torch.rand(n_graphs, generator=generator, device=device, dtype=torch.float64)
    low, high = (float(v) for v in sigma_range)
    return eta, torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def rank_noise(seed: int, stream: int, index: int, frames: FrameBatch, device: torch.device) -> torch.Tensor:
    """This rank's rows (len(frames.positions), 3) of the global batch's :func:`batch_noise`."""
    eta = batch_noise(seed, stream, index, frames.global_atoms, device)
    return eta[frames.atom_offset : frames.atom_offset + len(frames.positions)]


def rank_noise_and_sigma(seed: int, stream: int, index: int, frames: FrameBatch, sigma_range: tuple[float, float],
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the global batch's :func:`batch_noise_and_sigma`: noise (N, 3) of its
    atoms and the noise levels (num_graphs,) nm of its graphs. Like the noise, a frame's sigma
    depends only on (seed, stream, index) and its place in the global batch, not on the number
    of processes."""
    eta, sigma = batch_noise_and_sigma(seed, stream, index, frames.global_atoms, frames.global_graphs, sigma_range,
                                       device)
    n_graphs = 0 if frames.graph is None else frames.graph.num_graphs
    return (eta[frames.atom_offset : frames.atom_offset + len(frames.positions)],
            sigma[frames.graph_offset : frames.graph_offset + n_graphs])


def corrupt(x: torch.Tensor, eta: torch.Tensor, sigma: float | torch.Tensor, graph: GraphBatch
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pair (docs/design.md §5): x centred; y = x + sigma eta, centred, Kabsch-aligned onto x.

    x: (N, 3) nm; eta: (N, 3) standard normal; sigma in nm, a float or one per graph
    (num_graphs,). Returns (x, y), both (N, 3) nm and centred per graph. Alignment (rotation only) removes the rigid-motion part of the noise,
    which no translation- and rotation-equivariant denoiser could predict anyway.
    """
    x, _ = center_positions(x, graph)
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(device=x.device, dtype=x.dtype)[graph.batch, None]
    y, _ = center_positions(x + sigma * eta, graph)
    return x, kabsch_align(y, x, graph)
