"""MSM pipeline on a synthetic metastable 3-state chain: macrostates, assignment, reduction."""

import numpy as np
import pytest

from jamun.analysis.msm import UNASSIGNED, fit_msm, macrostate_fractions

CENTRES = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
# Metastable chain: stays put 98% of steps; stationary distribution is not uniform.
TRANSITIONS = np.array([[0.98, 0.015, 0.005], [0.01, 0.98, 0.01], [0.005, 0.015, 0.98]])


def three_state_data(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states (n,) of the chain and 2D points (n, 2) around each state's centre."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(TRANSITIONS, axis=1)
    states = np.zeros(n_frames, dtype=np.int64)
    uniforms = rng.random(n_frames)
    for t in range(1, n_frames):
        states[t] = np.searchsorted(cumulative[states[t - 1]], uniforms[t])
    return states, CENTRES[states] + 0.4 * rng.normal(size=(n_frames, 2))


@pytest.fixture(scope="module")
def fitted():
    states, points = three_state_data(6000, seed=0)
    with pytest.warns(RuntimeWarning, match="reduced from 5 to 3"):
        fit = fit_msm(points, lag_frames=2, tica_dim=2, clusters=20, macrostates=5, seed=0)
    return states, points, fit


def test_recovers_three_macrostates(fitted):
    states, points, fit = fitted
    assert fit.n_macrostates == 3
    labels = fit.assign(points)
    # Each hidden state maps almost entirely onto its own, distinct macrostate.
    majority = [np.bincount(labels[states == s], minlength=3).argmax() for s in range(3)]
    assert sorted(majority) == [0, 1, 2]
    purity = np.mean(labels == np.array(majority)[states])
    assert purity > 0.97
    # MSM stationary populations match the chain's own stationary distribution.
    eigenvalues, vectors = np.linalg.eig(TRANSITIONS.T)
    pi = np.real(vectors[:, np.argmax(np.real(eigenvalues))])
    pi /= pi.sum()
    np.testing.assert_allclose(fit.stationary[majority], pi, atol=0.08)
    # The two slow processes are resolved; their scan over lags exists and is positive.
    lags, timescales = fit.its_table()
    assert lags[0] < fit.lag_frames < lags[-1]
    assert timescales.shape[0] == lags.size and np.all(timescales[:, :2] > fit.lag_frames)


def test_new_frames_from_one_state_are_assigned_to_it(fitted):
    states, points, fit = fitted
    trained = fit.assign(points)
    for state in range(3):
        expected = np.bincount(trained[states == state]).argmax()
        fresh = CENTRES[state] + 0.3 * np.random.default_rng(state + 10).normal(size=(200, 2))
        fractions, unassigned = macrostate_fractions(fit.assign(fresh), fit.n_macrostates)
        assert unassigned == 0.0
        assert fractions[expected] > 0.97


def test_clusters_outside_connected_set_are_unassigned():
    states, points = three_state_data(3000, seed=1)
    # A single far-away frame at the end forms its own cluster, never left: not connected.
    outlier = np.array([[20.0, 20.0]])
    with pytest.warns(RuntimeWarning):
        fit = fit_msm(np.vstack([points, outlier]), lag_frames=2, tica_dim=2, clusters=10,
                      macrostates=5, seed=0)
    labels = fit.assign(np.vstack([outlier, points[:10]]))
    assert labels[0] == UNASSIGNED and np.all(labels[1:] != UNASSIGNED)
    fractions, unassigned = macrostate_fractions(labels, fit.n_macrostates)
    assert unassigned == pytest.approx(1 / 11)
    assert fractions.sum() == pytest.approx(1.0)


def test_bad_lag_raises():
    _, points = three_state_data(100, seed=2)
    with pytest.raises(ValueError, match="lag_frames"):
        fit_msm(points, lag_frames=60, tica_dim=2, clusters=5, macrostates=3)
