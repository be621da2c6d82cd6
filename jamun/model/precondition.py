"""Preconditioning of the denoiser (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models", Table 1, adapted to point clouds as in JAMUN, Daigavane et al. 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Preconditioning:
    """Input, skip, output and noise scalings for a fixed noise level.

    ``xhat(y) = c_skip * y + c_out * F(c_in * y, c_noise)`` with y mean-centred. C is the data
    scale (mean squared distance over the pair set of stats.json, nm^2) and D the spatial
    dimension; the noise adds 2 D sigma^2 to the mean squared pair distance.

    Attributes
    ----------
    sigma
        Noise level in nm.
    C
        Data scale in nm^2.
    D
        Spatial dimension (3).
    """

    sigma: float
    C: float
    D: int = 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a positive number of nm, got {self.sigma}")
        if not (math.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive number of nm^2, got {self.C}")

    @property
    def noise_variance(self) -> float:
        """2 D sigma^2 in nm^2: what noise adds to a mean squared pair distance."""
        return 2 * self.D * self.sigma**2

    @property
    def c_in(self) -> float:
        """1 / sqrt(C + 2 D sigma^2), in 1/nm."""
        return 1.0 / math.sqrt(self.C + self.noise_variance)

    @property
    def c_skip(self) -> float:
        """C / (C + 2 D sigma^2), dimensionless."""
        return self.C / (self.C + self.noise_variance)

    @property
    def c_out(self) -> float:
        """sqrt(C 2 D sigma^2 / (C + 2 D sigma^2)), in nm."""
        return math.sqrt(self.C * self.noise_variance / (self.C + self.noise_variance))

    @property
    def c_noise(self) -> float:
        """log10(sigma / nm)."""
        return math.log10(self.sigma)
