"""JSD from sparse periodic histograms: limits, bin edges, agreement with dense scipy."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from jamun.analysis.jsd import (bin_index, js_distance, jsd_angles, jsd_from_counts,
                                jsd_from_labels, wrap_angles)

RNG = np.random.default_rng(7)


def test_identical_distributions_give_zero():
    angles = RNG.uniform(-np.pi, np.pi, size=(500, 2))
    assert jsd_angles(angles, angles, bins=50) == pytest.approx(0.0, abs=1e-12)
    # Same histogram from a reordered copy.
    assert jsd_angles(angles, angles[::-1], bins=50) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_distributions_give_ln2():
    left = RNG.uniform(-3.0, -0.1, size=(300, 2))
    right = RNG.uniform(0.1, 3.0, size=(200, 2))
    assert jsd_angles(left, right, bins=50) == pytest.approx(np.log(2.0), rel=1e-12)
    assert js_distance(np.log(2.0)) == pytest.approx(np.sqrt(np.log(2.0)))


def test_periodic_bin_edges():
    bins = 50
    eps = 1e-9
    edges = np.array([-np.pi, np.pi - eps, np.pi, -np.pi - eps, 3 * np.pi, 0.0])
    assert bin_index(edges, bins).tolist() == [0, bins - 1, 0, bins - 1, 0, bins // 2]
    assert wrap_angles(np.pi) == pytest.approx(-np.pi)
    # +π and -π are the same angle, so their histograms coincide.
    assert jsd_angles(np.full(10, np.pi), np.full(10, -np.pi), bins) == 0.0


def test_flat_index_is_row_major_over_angles():
    width = 2 * np.pi / 4
    point = np.array([[-np.pi + 1.5 * width, -np.pi + 3.5 * width]])  # cells (1, 3) of 4 x 4
    assert bin_index(point, 4).tolist() == [1 * 4 + 3]


@pytest.mark.parametrize("dim,bins", [(1, 7), (2, 6), (3, 4)])
def test_sparse_equals_dense_scipy(dim, bins):
    p = RNG.vonmises(0.5, 1.0, size=(400, dim))
    q = RNG.vonmises(-1.0, 0.5, size=(300, dim))
    dense = [np.histogramdd(x, bins=bins, range=[(-np.pi, np.pi)] * dim)[0].ravel() for x in (p, q)]
    expected = jensenshannon(dense[0], dense[1], base=np.e) ** 2
    assert jsd_angles(p, q, bins) == pytest.approx(expected, rel=1e-10)
    # The flat indices address the same cells as the dense C-ordered histogram.
    assert np.array_equal(np.bincount(bin_index(p, bins), minlength=bins**dim), dense[0])


def test_counts_and_probabilities_agree_and_order_is_symmetric():
    keys_p, counts_p = np.array([0, 3, 9]), np.array([5, 3, 2])
    keys_q, counts_q = np.array([3, 4]), np.array([1, 1])
    value = jsd_from_counts(keys_p, counts_p, keys_q, counts_q)
    assert value == pytest.approx(jsd_from_counts(keys_p, counts_p / 10, keys_q, counts_q / 2))
    assert value == pytest.approx(jsd_from_counts(keys_q, counts_q, keys_p, counts_p))
    dense_p = np.bincount(keys_p, counts_p, minlength=10)
    dense_q = np.bincount(keys_q, counts_q, minlength=10)
    assert value == pytest.approx(jensenshannon(dense_p, dense_q, base=np.e) ** 2)


def test_high_dimensional_grid_stays_sparse():
    # 49^4 cells: a dense array would be ~46 MB per histogram; sparse counts touch only frames.
    p = RNG.uniform(-np.pi, np.pi, size=(2000, 4))
    value = jsd_angles(p, p[:1000], bins=49)
    assert 0.0 < value < np.log(2.0)


def test_empty_and_bad_input_raise():
    with pytest.raises(ValueError, match="empty"):
        jsd_from_labels(np.array([1, 2]), np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="bins"):
        bin_index(np.zeros(3), 0)
