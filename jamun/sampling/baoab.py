"""BAOAB walk on the noisy manifold with jumps by the denoiser (walk-jump sampling).

Walk: underdamped Langevin dynamics on the σ-smoothed density p_σ(y),

    dy = v dt,   dv = score(y) / M dt − γ v dt + sqrt(2γ / M) dB,

integrated with BAOAB (Leimkuhler & Matthews 2013, Appl. Math. Res. Express 2013:34), whose
configurational marginal is exact for harmonic targets at any stable step. Jump: the denoiser's
estimate xhat(y) = E[x | y] (Saremi & Hyvärinen 2019, "Neural empirical Bayes"). The score comes
from the same forward pass by Tweedie / Miyasawa, score(y) = (xhat(y) − y) / σ², so each step costs
exactly one denoiser call: the final B's xhat(y_{t+1}) is both the jump sample of step t + 1 and the
first B's score of the next step (docs/design.md §6).

Optionally the saved jumps come from a second, lower noise level (``jump`` of :meth:`BAOAB.walk`):
the walk and its score stay at σ_w, and on saved steps only a ``jump(y, xhat_w(y))`` callable gives
the jump, e.g. a deterministic DDIM step to σ_j < σ_w then xhat at σ_j (Song, Meng & Ermon 2021,
"Denoising diffusion implicit models"; :func:`jamun.sampling.sample.walk_jump_peptides`), one more
denoiser call per saved jump.

Sampler time is dimensionless; positions are in the units of the denoiser (nm for peptides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor

Denoise = Callable[[Tensor], Tensor]
"""y -> xhat(y), same shape; the last axis holds the coordinates of one particle."""

JumpFrom = Callable[[Tensor, Tensor], Tensor]
"""(y, xhat(y)) -> the saved jump, same shape (see :meth:`BAOAB.walk`)."""


class NonFiniteChainError(FloatingPointError):
    """A chain's position or jump became NaN or infinite.

    Attributes
    ----------
    chain: the chain id (``chain_of_row`` of the first bad row).
    step: the walk step (1-based; 0 for the initial positions) at which it was non-finite.
    """

    def __init__(self, chain: int, step: int, message: str | None = None) -> None:
        self.chain, self.step = chain, step
        super().__init__(message or f"chain {chain} became non-finite or diverged at walk step {step}")


class Jump(NamedTuple):
    """State after walk step ``step`` (1-based): the walk position y and its jump xhat(y)."""

    step: int
    y: Tensor
    xhat: Tensor


def clip_score(score: Tensor, max_norm: float | None) -> Tensor:
    """Scale each particle's score vector down to norm ``max_norm`` where it is longer.

    score: (..., d) with one particle per row of the last axis, e.g. (n_atoms, 3) in nm⁻¹.
    A ``max_norm`` of None returns the score unchanged. Clipping keeps a rare bad denoiser output
    (an atom far outside the training distribution) from throwing a chain far off the manifold.
    """
    if max_norm is None:
        return score
    norm = torch.linalg.vector_norm(score, dim=-1, keepdim=True)
    # clamp_max(1) leaves short vectors untouched; NaN / inf norms stay non-finite so they are caught.
    return score * (max_norm / norm).clamp_max(1.0)


@dataclass(frozen=True)
class BAOAB:
    """BAOAB settings of docs/design.md §6.

    Parameters
    ----------
    sigma: noise level σ of the denoiser (nm for peptides); score = (xhat − y) / σ².
    dt: step size in sampler time; None means σ (numerically), the reference choice.
    friction_per_step: γ·dt > 0, the damping per step; the O step keeps c = exp(−γ dt) of the
        velocity. 1.0 is the reference implementation's effective value, the paper's text
        (γ = 0.1, dt = σ = 0.04) gives 0.004. Zero is refused: without friction the O step adds
        no noise, each chain conserves its energy and never samples the smoothed density.
    mass: M, the same for every particle.
    score_clip: maximum score norm per particle (nm⁻¹), or None for no clipping.
    """

    sigma: float
    dt: float | None = None
    friction_per_step: float = 1.0
    mass: float = 1.0
    score_clip: float | None = None

    def __post_init__(self) -> None:
        for name in ("sigma", "mass"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"BAOAB {name} must be a finite number > 0, got {value!r}")
        if self.dt is None:
            object.__setattr__(self, "dt", float(self.sigma))
        elif not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"BAOAB dt must be a finite number > 0 or None (= sigma), got {self.dt!r}")
        if not (math.isfinite(self.friction_per_step) and self.friction_per_step > 0):
            raise ValueError(
                f"BAOAB friction_per_step (gamma*dt) must be a finite number > 0, "
                f"got {self.friction_per_step!r}"
            )
        if self.score_clip is not None and not self.score_clip > 0:
            raise ValueError(f"BAOAB score_clip must be > 0 (nm^-1) or None, got {self.score_clip!r}")

    @property
    def gamma(self) -> float:
        """Friction γ per unit sampler time, friction_per_step / dt."""
        return self.friction_per_step / self.dt

    @property
    def velocity_retention(self) -> float:
        """c = exp(−γ dt), the fraction of velocity an O step keeps."""
        return math.exp(-self.friction_per_step)

    def score(self, y: Tensor, xhat: Tensor) -> Tensor:
        """Clipped Tweedie score (xhat − y) / σ², same shape as y."""
        return clip_score((xhat - y) / self.sigma**2, self.score_clip)

    def walk(
        self,
        denoise: Denoise,
        y0: Tensor,
        *,
        steps: int,
        burn_in: int = 0,
        save_every: int = 1,
        generator: torch.Generator | None = None,
        chain_of_row: Tensor | None = None,
        jump: JumpFrom | None = None,
    ) -> Iterator[Jump]:
        """Run the walk from ``y0`` and yield the saved states.

        Parameters
        ----------
        denoise: y -> xhat(y), called once before the first step and once per step.
        y0: (..., d) initial noisy positions, e.g. (n_chains * n_atoms, 3) nm. Not modified.
        steps: number of BAOAB steps.
        burn_in: steps discarded before the first save.
        save_every: after burn-in, yield every ``save_every``-th step: steps
            burn_in + save_every, burn_in + 2 save_every, ... ≤ steps, i.e.
            (steps − burn_in) // save_every saves.
        generator: source of the initial velocities and the O-step noise (seed it for
            reproducible walks); must live on y0's device.
        chain_of_row: (n_rows,) chain id of each particle row of y0 (``y0.reshape(-1, d)``), used
            to name the chain in a NonFiniteChainError; default: the row index.
        jump: (y, xhat(y)) -> the saved jump, called on saved steps only; None (default): the
            jump is xhat(y) itself, the step's one denoiser call.

        Yields
        ------
        Jump(step, y, xhat): tensors of y0's shape; fresh tensors each step, safe to keep. With
        ``jump`` the ``xhat`` field holds ``jump(y, xhat(y))``.

        Raises
        ------
        NonFiniteChainError
            As soon as a row of y or xhat is non-finite (step 0: the initial y0), naming its chain.
        """
        for name, value, low in (("steps", steps, 0), ("burn_in", burn_in, 0), ("save_every", save_every, 1)):
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"walk {name} must be an integer >= {low}, got {value!r}")
        if burn_in > steps:
            raise ValueError(f"walk burn_in ({burn_in}) must not exceed steps ({steps})")
        return self._walk(denoise, y0, steps, burn_in, save_every, generator, chain_of_row, jump)

    def _walk(self, denoise: Denoise, y0: Tensor, steps: int, burn_in: int, save_every: int,
              generator: torch.Generator | None, chain_of_row: Tensor | None,
              jump: JumpFrom | None = None) -> Iterator[Jump]:
        """The generator behind ``walk`` (split off so that bad arguments fail at the call)."""
        half_dt = 0.5 * self.dt
        kick = half_dt / self.mass
        c = self.velocity_retention
        noise_scale = math.sqrt((1.0 - c * c) / self.mass)
        rows = y0.reshape(-1, y0.shape[-1]).shape[0]
        if chain_of_row is None:
            chain_of_row = torch.arange(rows, device=y0.device)

        def randn() -> Tensor:
            return torch.randn(y0.shape, generator=generator, dtype=y0.dtype, device=y0.device)

        y = y0.clone()
        v = randn() / math.sqrt(self.mass)  # v0 ~ N(0, I / M)
        xhat = denoise(y)
        _check_finite(y, xhat, 0, chain_of_row)
        score = self.score(y, xhat)
        for step in range(1, steps + 1):
            v = v + kick * score  # B
            y = y + half_dt * v  # A
            v = c * v + noise_scale * randn()  # O
            y = y + half_dt * v  # A
            xhat = denoise(y)  # the step's only forward pass
            score = self.score(y, xhat)
            v = v + kick * score  # B
            _check_finite(y, xhat, step, chain_of_row)
            if step > burn_in and (step - burn_in) % save_every == 0:
                if jump is None:
                    yield Jump(step, y, xhat)
                else:
                    saved = jump(y, xhat)
                    _check_finite(y, saved, step, chain_of_row)
                    yield Jump(step, y, saved)


# |coordinate| (nm) beyond which a chain has diverged: a peptide spans ~1 nm, and the XTC format
# cannot store values beyond ~2e6 nm at its 1e-3 nm precision.
DIVERGED_NM = 1e4


def _check_finite(y: Tensor, xhat: Tensor, step: int, chain_of_row: Tensor) -> None:
    """Raise NonFiniteChainError for the first particle row whose y or xhat is NaN, infinite or
    diverged (beyond DIVERGED_NM), before such a frame reaches the next forward pass or a file.

    One host sync per step; the denoiser's radius graph syncs every step anyway.
    """
    bounded = (y.abs() < DIVERGED_NM).all(dim=-1) & (xhat.abs() < DIVERGED_NM).all(dim=-1)  # False for NaN
    finite = bounded.reshape(-1)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite)[0])
        raise NonFiniteChainError(chain=int(chain_of_row[row]), step=step)
