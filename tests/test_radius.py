"""Radius graphs: the exact backend against a numpy brute force, torch_cluster against the exact one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jamun.data import radius
from jamun.data.radius import BACKEND_ENV_VAR, radius_graph, resolve_backend, torch_cluster_available

needs_torch_cluster = pytest.mark.skipif(not torch_cluster_available(), reason="torch_cluster is not installed")


def point_clouds(sizes: list[int], spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positions (uniform in a cube of side ``spread`` nm) of graphs with ``sizes`` atoms."""
    rng = np.random.default_rng(seed)
    pos = torch.tensor(rng.uniform(0.0, spread, size=(sum(sizes), 3)), dtype=torch.float32)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return pos, batch


def brute_force(pos: torch.Tensor, r: float, batch: torch.Tensor, max_num_neighbors: int | None = None) -> set:
    """Edges (j, i) from a double loop in float64; optionally the nearest max_num_neighbors per i."""
    x, b = pos.double().numpy(), batch.numpy()
    edges = set()
    for i in range(len(x)):
        distances = [(float(np.sum((x[i] - x[j]) ** 2)), j) for j in range(len(x)) if j != i and b[j] == b[i]]
        within = sorted(d_j for d_j in distances if d_j[0] < r * r)
        edges |= {(j, i) for _, j in within[:max_num_neighbors]}
    return edges


def edge_set(edge_index: torch.Tensor) -> set:
    pairs = list(map(tuple, edge_index.t().tolist()))
    assert len(pairs) == len(set(pairs)), "duplicate edges"
    return set(pairs)


@pytest.mark.parametrize("sizes, spread", [([15, 7, 22], 1.0), ([60, 3, 45], 0.6), ([1, 40], 0.5)])
def test_exact_matches_brute_force(sizes: list[int], spread: float) -> None:
    pos, batch = point_clouds(sizes, spread, seed=sum(sizes))
    edges = radius_graph(pos, 0.5, batch, max_num_neighbors=1000, backend="exact")
    assert edge_set(edges) == brute_force(pos, 0.5, batch)


def test_dense_cluster_keeps_more_than_32_neighbours() -> None:
    pos, batch = point_clouds([80, 50], 0.4, seed=3)
    edges = radius_graph(pos, 0.5, batch, max_num_neighbors=1000, backend="exact")
    degree = torch.bincount(edges[1], minlength=pos.shape[0])
    assert int(degree.max()) > 32
    assert edge_set(edges) == brute_force(pos, 0.5, batch)


def test_exact_cap_keeps_nearest_neighbours() -> None:
    pos, batch = point_clouds([50, 30], 0.5, seed=4)
    edges = radius_graph(pos, 0.5, batch, max_num_neighbors=10, backend="exact")
    assert int(torch.bincount(edges[1]).max()) == 10
    assert edge_set(edges) == brute_force(pos, 0.5, batch, max_num_neighbors=10)


def test_edges_stay_inside_their_graph() -> None:
    pos, batch = point_clouds([20, 20], 0.3, seed=5)
    pos[20:] = pos[:20]  # the second graph sits exactly on top of the first
    edges = radius_graph(pos, 0.5, batch, max_num_neighbors=1000, backend="exact")
    assert torch.equal(batch[edges[0]], batch[edges[1]])
    assert len(edge_set(edges)) == 2 * 20 * 19


@needs_torch_cluster
@pytest.mark.parametrize("sizes, spread, min_max_degree", [([15, 7, 22], 1.0, 1), ([80, 50], 0.4, 33)])
def test_torch_cluster_matches_the_exact_search(sizes: list[int], spread: float, min_max_degree: int) -> None:
    pos, batch = point_clouds(sizes, spread, seed=len(sizes))
    ours = radius_graph(pos, 0.5, batch, max_num_neighbors=1000, backend="exact")
    theirs = radius_graph(pos, 0.5, batch, max_num_neighbors=1000, backend="torch_cluster")
    assert int(torch.bincount(ours[1]).max()) >= min_max_degree
    assert edge_set(theirs) == edge_set(ours)


def test_environment_variable_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV_VAR, "exact")
    assert resolve_backend() == "exact"
    monkeypatch.setenv(BACKEND_ENV_VAR, "kdtree")
    with pytest.raises(ValueError, match="kdtree.*auto"):
        resolve_backend()
    monkeypatch.delenv(BACKEND_ENV_VAR)
    assert resolve_backend() == ("torch_cluster" if torch_cluster_available() else "exact")


def test_requesting_missing_torch_cluster_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(radius, "torch_cluster_available", lambda: False)
    assert resolve_backend("auto") == "exact"
    with pytest.raises(ValueError, match="torch_cluster is not installed"):
        resolve_backend("torch_cluster")


def test_bad_inputs() -> None:
    pos, batch = point_clouds([5, 5], 1.0, seed=6)
    nan_pos = pos.clone()
    nan_pos[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        radius_graph(nan_pos, 0.5, batch, 100)
    with pytest.raises(ValueError, match="non-decreasing"):
        radius_graph(pos, 0.5, batch.flip(0), 100)
    with pytest.raises(ValueError, match="shape"):
        radius_graph(pos[:, :2], 0.5, batch, 100)
    with pytest.raises(ValueError, match="max_num_neighbors"):
        radius_graph(pos, 0.5, batch, 0)
    with pytest.raises(ValueError, match="radius"):
        radius_graph(pos, 0.0, batch, 100)
