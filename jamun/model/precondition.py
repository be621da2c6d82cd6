"""Preconditioning of the denoiser (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models", Table 1, adapted to point clouds as in JAMUN, Daigavane et al. 2024)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch


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

    def at(self, sigma: torch.Tensor) -> "Scalings":
        """The four scalings at per-item noise levels ``sigma`` (a tensor of nm, any shape), as
        tensors of sigma's shape and dtype; the same formulas as the properties (Karras et al. 2022,
        Table 1: c_in = 1/sqrt(C + 2D sigma^2), c_skip = C/(C + 2D sigma^2),
        c_out = sqrt(C 2D sigma^2/(C + 2D sigma^2)), c_noise = log10 sigma). Used when every graph of a
        batch has its own sigma (training over a range, :class:`jamun.model.Denoiser`)."""
        noise_variance = 2 * self.D * sigma.square()
        total = self.C + noise_variance
        return Scalings(c_in=total.rsqrt(), c_skip=self.C / total, c_out=(self.C * noise_variance / total).sqrt(),
                        c_noise=torch.log10(sigma))


class Scalings(NamedTuple):
    """c_in, c_skip, c_out and c_noise as tensors (see :meth:`Preconditioning.at`)."""

    c_in: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_noise: torch.Tensor


def check_sigma_range(sigma_nm: float, sigma_range_nm: Sequence[float] | None, source: str) -> tuple[float, float] | None:
    """``train.sigma_range_nm`` as (low, high), or None; a one-line ValueError naming ``source`` and
    the key unless 0 < low < high and low <= sigma_nm <= high."""
    if sigma_range_nm is None:
        return None
    if len(sigma_range_nm) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                           for v in sigma_range_nm):
        raise ValueError(f"{source}: train.sigma_range_nm = {list(sigma_range_nm)} must be null or [low, high] "
                         f"with 0 < low < high (nm)")
    low, high = (float(v) for v in sigma_range_nm)
    if not low < high:
        raise ValueError(f"{source}: train.sigma_range_nm = {[low, high]} must have low < high (nm)")
    if not low <= sigma_nm <= high:
        raise ValueError(f"{source}: train.sigma_nm = {sigma_nm} must lie in train.sigma_range_nm = {[low, high]}")
    return low, high
