"""Batched Kabsch: matches scipy's optimum, never reflects, works per graph."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from jamun.data.graph import graph_mean
from jamun.data.kabsch import kabsch_align, kabsch_rotations


def _graph(sizes: list[int]) -> SimpleNamespace:
    """The two GraphBatch fields Kabsch uses."""
    return SimpleNamespace(batch=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
                           num_graphs=len(sizes))  # fmt: skip


def _centred(points: np.ndarray) -> np.ndarray:
    return points - points.mean(axis=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotations_match_scipy_align_vectors(seed):
    rng = np.random.default_rng(seed)
    sizes = [5, 12, 3, 20]
    targets = [_centred(rng.normal(size=(n, 3))) for n in sizes]
    # Mobile clouds: randomly rotated and noisy copies of the targets.
    mobiles = [
        _centred(Rotation.random(random_state=rng.integers(1 << 31)).apply(t) + 0.1 * rng.normal(size=t.shape))
        for t in targets
    ]
    rot = kabsch_rotations(
        torch.tensor(np.concatenate(mobiles)), torch.tensor(np.concatenate(targets)), _graph(sizes)
    ).numpy()
    for g, (m, t) in enumerate(zip(mobiles, targets)):
        expected, _ = Rotation.align_vectors(t, m)  # expected.apply(m) ~ t
        np.testing.assert_allclose(rot[g], expected.as_matrix(), atol=1e-8)
        assert np.linalg.det(rot[g]) == pytest.approx(1.0, abs=1e-10)


def test_mirror_image_gets_a_proper_rotation_not_the_reflection():
    rng = np.random.default_rng(3)
    target = _centred(rng.normal(size=(9, 3)))
    mirror = target * np.array([1.0, 1.0, -1.0])  # a perfect fit exists only with det = -1
    graph = _graph([9])
    rot = kabsch_rotations(torch.tensor(mirror), torch.tensor(target), graph).numpy()[0]
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-10)
    expected, _ = Rotation.align_vectors(target, mirror)
    np.testing.assert_allclose(rot, expected.as_matrix(), atol=1e-8)
    aligned = kabsch_align(torch.tensor(mirror), torch.tensor(target), graph).numpy()
    assert np.sqrt(((aligned - target) ** 2).sum(1).mean()) > 1e-3  # the reflection is not undone


def test_aligned_rmsd_beats_random_rotations_and_recovers_pose():
    rng = np.random.default_rng(4)
    sizes = [7, 11]
    x = torch.tensor(rng.normal(size=(sum(sizes), 3)))
    graph = _graph(sizes)
    batch = graph.batch
    rot_true = torch.tensor(Rotation.random(2, random_state=5).as_matrix())
    shift = torch.tensor(rng.normal(size=(2, 3)))
    y = torch.einsum("nij,nj->ni", rot_true[batch], x) + shift[batch] + 0.05 * torch.randn(x.shape, dtype=x.dtype)
    aligned = kabsch_align(y, x, graph)
    np.testing.assert_allclose(graph_mean(aligned, graph), graph_mean(x, graph), atol=1e-12)
    for g in range(2):
        mask = batch == g
        best = ((aligned[mask] - x[mask]) ** 2).sum()
        yc = (y[mask] - y[mask].mean(0)).numpy()
        xc = (x[mask] - x[mask].mean(0)).numpy()
        for r in Rotation.random(200, random_state=g).as_matrix():
            assert best <= ((yc @ r.T - xc) ** 2).sum() + 1e-12
        assert best < 0.05**2 * 3 * mask.sum() * 3  # noise level, not a misaligned pose


def test_float32_input_keeps_dtype_and_shape():
    x = torch.randn(10, 3)
    out = kabsch_align(x, x, _graph([4, 6]))
    assert out.dtype == torch.float32 and out.shape == (10, 3)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
