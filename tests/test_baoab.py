"""BAOAB walk-jump integrator on exact targets (docs/design.md §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from jamun.sampling.baoab import BAOAB, NonFiniteChainError, clip_score

torch.set_num_threads(1)


def _walk_array(integrator: BAOAB, denoise, y0, *, seed: int = 0, **walk) -> tuple[np.ndarray, np.ndarray]:
    """All saved (y, xhat) of a walk stacked as (n_saves, *y0.shape) arrays."""
    generator = torch.Generator().manual_seed(seed)
    jumps = list(integrator.walk(denoise, y0, generator=generator, **walk))
    return (np.stack([j.y.numpy() for j in jumps]), np.stack([j.xhat.numpy() for j in jumps]))


def test_harmonic_configurational_variance_is_exact_at_omega_dt_one():
    # score = -k y (M = 1): BAOAB samples y with variance 1/k at any stable step; OBABO would
    # give 1 / (k (1 - (ω dt)² / 4)) = 1.33 / k at ω dt = 1, far outside the 3% tolerance.
    k, sigma = 1.0, 0.5
    integrator = BAOAB(sigma=sigma, dt=1.0 / math.sqrt(k), friction_per_step=1.0)

    def denoise(y):
        return y + sigma**2 * (-k * y)

    y0 = torch.zeros(2000, 1, dtype=torch.float64)
    ys, _ = _walk_array(integrator, denoise, y0, steps=1200, burn_in=200)
    variance = float((ys**2).mean())
    assert variance == pytest.approx(1.0 / k, rel=0.03)


class TwoGaussians:
    """1-D mixture 0.3 N(−a, s²) + 0.7 N(a, s²) and its exact σ-smoothed score and denoiser."""

    weights = np.array([0.3, 0.7])

    def __init__(self, a: float, s: float, sigma: float) -> None:
        self.means = np.array([-a, a])
        self.s, self.sigma = s, sigma
        self.smoothed_var = s**2 + sigma**2

    def responsibilities(self, y: np.ndarray | torch.Tensor):
        """(…, 2) posterior mode probabilities under p_σ."""
        means = torch.as_tensor(self.means, dtype=torch.float64)
        log_w = torch.log(torch.as_tensor(self.weights, dtype=torch.float64))
        logits = log_w - (torch.as_tensor(y)[..., None] - means) ** 2 / (2 * self.smoothed_var)
        return torch.softmax(logits, dim=-1)

    def score(self, y: torch.Tensor) -> torch.Tensor:
        means = torch.as_tensor(self.means, dtype=y.dtype)
        resp = self.responsibilities(y)
        return (resp * (means - y[..., None])).sum(-1) / self.smoothed_var

    def xhat(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.sigma**2 * self.score(y)

    def sample_x(self, n: int, rng: np.random.Generator) -> np.ndarray:
        mode = rng.random(n) < self.weights[1]
        return np.where(mode, self.means[1], self.means[0]) + self.s * rng.standard_normal(n)


def test_walk_jump_on_two_mode_mixture_matches_exact_distributions():
    target = TwoGaussians(a=2.0, s=1.0, sigma=0.5)
    integrator = BAOAB(sigma=target.sigma, friction_per_step=1.0)
    # Every chain starts in the minor mode, so the 0.7 weight is reached only by crossing.
    y0 = torch.full((1000, 1), target.means[0], dtype=torch.float64)
    ys, jumps = _walk_array(integrator, target.xhat, y0, steps=3000, burn_in=1000)
    y = ys.reshape(-1)

    resp = target.responsibilities(y).numpy()
    weights = resp.mean(axis=0)
    np.testing.assert_allclose(weights, target.weights, atol=0.03)
    for mode in range(2):
        var = (resp[:, mode] * (y - target.means[mode]) ** 2).sum() / resp[:, mode].sum()
        assert var == pytest.approx(target.smoothed_var, rel=0.05), f"mode {mode}"

    rng = np.random.default_rng(1)
    x = target.sample_x(200_000, rng)
    reference = target.xhat(torch.as_tensor(x + target.sigma * rng.standard_normal(x.size))).numpy()
    # Measured 0.006; jumping with y itself instead of xhat(y) gives 0.04.
    assert stats.ks_2samp(jumps.reshape(-1), reference).statistic < 0.02


class CountingDenoiser:
    """Shrinks towards 0 like a harmonic target and counts its forward calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return 0.5 * y


def test_one_denoiser_call_per_step_and_jump_is_xhat_of_the_saved_y():
    denoise = CountingDenoiser()
    integrator = BAOAB(sigma=0.1)
    jumps = list(integrator.walk(denoise, torch.randn(6, 3), steps=7, burn_in=2, save_every=2,
                                 generator=torch.Generator().manual_seed(0)))
    assert denoise.calls == 7 + 1
    assert [j.step for j in jumps] == [4, 6]
    for jump in jumps:
        torch.testing.assert_close(jump.xhat, 0.5 * jump.y, rtol=0, atol=0)


def test_defaults_follow_design():
    integrator = BAOAB(sigma=0.04, friction_per_step=1.0)
    assert integrator.dt == 0.04
    assert integrator.gamma == pytest.approx(25.0)
    assert integrator.velocity_retention == pytest.approx(math.exp(-1.0))


def test_walk_is_seeded_and_deterministic():
    integrator = BAOAB(sigma=0.1, score_clip=5.0)
    y0 = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))

    def run(seed):
        return _walk_array(integrator, lambda y: 0.9 * y, y0, seed=seed, steps=20)[1]

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


def test_clip_score_limits_each_row_norm_and_keeps_direction():
    score = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0], [0.0, 0.0, -20.0]])
    clipped = clip_score(score, 1.0)
    torch.testing.assert_close(clipped, torch.tensor([[0.6, 0.8, 0.0], [0.3, 0.4, 0.0], [0.0, 0.0, -1.0]]))
    assert clip_score(score, None) is score


def test_clipping_changes_the_walk_only_when_the_score_is_long():
    # A steep harmonic well (score up to ~100 at y ~ 1) walked with and without a clip.
    y0 = torch.ones(4, 3)

    def run(clip):
        integrator = BAOAB(sigma=0.1, score_clip=clip)
        return _walk_array(integrator, lambda y: y - 0.01 * 100.0 * y, y0, steps=3)[0]

    assert not np.allclose(run(1.0), run(None))
    np.testing.assert_array_equal(run(1e6), run(None))


class PoisonedDenoiser:
    """Identity-like denoiser that returns inf for one row from a given call on."""

    def __init__(self, row: int, from_call: int) -> None:
        self.row, self.from_call, self.calls = row, from_call, 0

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        xhat = 0.9 * y
        if self.calls >= self.from_call:
            xhat[self.row] = math.inf
        self.calls += 1
        return xhat


def test_nonfinite_chain_stops_the_walk_naming_chain_and_step():
    chain_of_row = torch.tensor([0, 0, 1, 1, 2, 2])
    integrator = BAOAB(sigma=0.1)
    saved = []
    with pytest.raises(NonFiniteChainError, match="chain 1 .* step 5") as error:
        for jump in integrator.walk(PoisonedDenoiser(row=3, from_call=5), torch.zeros(6, 3),
                                    steps=20, chain_of_row=chain_of_row):
            saved.append(jump.step)
    assert (error.value.chain, error.value.step) == (1, 5)
    assert saved == [1, 2, 3, 4]


def test_nonfinite_during_unsaved_steps_is_reported_at_its_first_step():
    integrator = BAOAB(sigma=0.1)
    with pytest.raises(NonFiniteChainError) as error:
        list(integrator.walk(PoisonedDenoiser(row=2, from_call=3), torch.zeros(4, 3), steps=30,
                             burn_in=10, save_every=10))
    assert (error.value.chain, error.value.step) == (2, 3)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": 0.1, "dt": -1.0}, "dt"),
        ({"sigma": 0.1, "mass": math.nan}, "mass"),
        ({"sigma": 0.1, "friction_per_step": -0.5}, "friction_per_step"),
        ({"sigma": 0.1, "friction_per_step": 0.0}, "friction_per_step"),
        ({"sigma": 0.1, "score_clip": 0.0}, "score_clip"),
    ],
)
def test_bad_settings_raise_value_error_naming_them(settings, match):
    with pytest.raises(ValueError, match=match):
        BAOAB(**settings)


@pytest.mark.parametrize(
    "walk, match", [({"steps": -1}, "steps"), ({"steps": 5, "save_every": 0}, "save_every"),
                    ({"steps": 5, "burn_in": 6}, "burn_in")]
)
def test_bad_walk_lengths_raise_value_error(walk, match):
    with pytest.raises(ValueError, match=match):
        BAOAB(sigma=0.1).walk(lambda y: y, torch.zeros(2, 3), **walk)
