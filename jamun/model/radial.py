"""Edge-length features: a Gaussian radial basis and a smooth cutoff envelope."""

from __future__ import annotations

import torch
from e3nn.math import soft_one_hot_linspace


class RadialEmbedding(torch.nn.Module):
    """Gaussian basis of edge lengths and the polynomial cutoff envelope of DimeNet
    (Gasteiger et al. 2020, eq. 8, p = 6), which falls smoothly to 0 at ``r_max``.

    Parameters
    ----------
    num_radial
        Number of basis functions, centred evenly on [0, r_max].
    r_max
        Cutoff in the unit of the lengths.
    """

    def __init__(self, num_radial: int, r_max: float) -> None:
        super().__init__()
        self.num_radial = num_radial
        self.r_max = r_max

    def forward(self, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """length: (E,) -> basis (E, num_radial), envelope (E,) in [0, 1]."""
        basis = soft_one_hot_linspace(
            length, 0.0, self.r_max, self.num_radial, basis="gaussian", cutoff=False
        )  # [E, num_radial]
        x = (length / self.r_max).clamp(max=1.0)
        p = 6
        envelope = (
            1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        )  # [E]
        return basis, envelope

    def extra_repr(self) -> str:
        return f"num_radial={self.num_radial}, r_max={self.r_max:.4g}"
