"""Scalar embeddings of atoms (graph features) and of the noise level."""

from __future__ import annotations

import torch

from jamun.data.graph import (
    FEATURE_NAMES,
    NUM_ATOM_NAMES,
    NUM_ELEMENTS,
    NUM_RESIDUE_INDICES,
    NUM_RESIDUE_TYPES,
    GraphBatch,
)

NUM_NOISE_FEATURES = 16


class AtomEmbedding(torch.nn.Module):
    """Sum of learned embeddings of element, atom name, residue type and residue index.

    Output: (N, num_scalars) invariant (0e) features, unit variance at initialisation.
    """

    def __init__(self, num_scalars: int) -> None:
        super().__init__()
        sizes = (NUM_ELEMENTS, NUM_ATOM_NAMES, NUM_RESIDUE_TYPES, NUM_RESIDUE_INDICES)
        self.tables = torch.nn.ModuleDict(
            {name: torch.nn.Embedding(size, num_scalars) for name, size in zip(FEATURE_NAMES, sizes)}
        )

    def forward(self, graph: GraphBatch) -> torch.Tensor:
        total = sum(table(getattr(graph, name)) for name, table in self.tables.items())
        return total / len(self.tables) ** 0.5  # [N, num_scalars]


class NoiseEmbedding(torch.nn.Module):
    """Small MLP of c_noise = log10(sigma / nm): (...,) -> (..., NUM_NOISE_FEATURES)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(1, NUM_NOISE_FEATURES),
            torch.nn.SiLU(),
            torch.nn.Linear(NUM_NOISE_FEATURES, NUM_NOISE_FEATURES),
            torch.nn.SiLU(),
        )

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.mlp(c_noise.unsqueeze(-1))
