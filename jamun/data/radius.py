"""Radius graphs of batched point clouds: torch_cluster when importable, an exact pairwise search otherwise.

Both backends return the same edge set (up to order) whenever no atom has more than
``max_num_neighbors`` neighbours. torch_cluster's own default of 32 neighbours silently drops
edges, so callers always pass ``max_num_neighbors`` explicitly.

The backend is chosen by the ``backend`` argument or, when that is ``None``, by the environment
variable ``JAMUN_RADIUS_BACKEND``: ``auto`` (default: torch_cluster if importable, else exact),
``torch_cluster`` or ``exact``.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "torch_cluster", "exact")
BACKEND_ENV_VAR = "JAMUN_RADIUS_BACKEND"


def torch_cluster_available() -> bool:
    """Whether the optional ``torch_cluster`` extension can be imported."""
    return importlib.util.find_spec("torch_cluster") is not None


def resolve_backend(backend: str | None = None) -> str:
    """The concrete backend, ``"torch_cluster"`` or ``"exact"``, for a requested one.

    Parameters
    ----------
    backend
        One of :data:`BACKENDS`; ``None`` reads ``$JAMUN_RADIUS_BACKEND`` (default ``auto``).
    """
    requested = backend if backend is not None else os.environ.get(BACKEND_ENV_VAR, "auto")
    if requested not in BACKENDS:
        source = "backend" if backend is not None else f"${BACKEND_ENV_VAR}"
        raise ValueError(f"{source}={requested!r} is not a radius-graph backend; choose one of {BACKENDS}")
    if requested == "auto":
        return "torch_cluster" if torch_cluster_available() else "exact"
    if requested == "torch_cluster" and not torch_cluster_available():
        raise ValueError(
            "radius-graph backend 'torch_cluster' was requested but torch_cluster is not installed; "
            "install it (pip install --no-build-isolation torch-cluster) or use backend 'exact'"
        )
    return requested


def radius_graph(
    pos: torch.Tensor,
    r: float,
    batch: torch.Tensor,
    max_num_neighbors: int,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Directed edges between distinct atoms of the same graph closer than ``r``.

    Parameters
    ----------
    pos
        (N, 3) positions, any length unit (nm in this package).
    r
        Cutoff in the unit of ``pos``; pairs with distance strictly below ``r`` are edges.
    batch
        (N,) graph id of each atom, non-decreasing (graphs are contiguous blocks).
    max_num_neighbors
        At most this many incoming edges per atom. When an atom has more neighbours the exact
        backend keeps the nearest ones, torch_cluster an arbitrary subset.
    backend
        See :func:`resolve_backend`.

    Returns
    -------
    LongTensor (2, E): ``edge_index[0]`` is the source (neighbour) j, ``edge_index[1]`` the
    target (centre) i, as in torch_cluster's default ``flow="source_to_target"``. Both
    directions of every pair are present. The order of edges is unspecified.
    """
    _check_inputs(pos, r, batch, max_num_neighbors)
    if resolve_backend(backend) == "torch_cluster":
        import torch_cluster

        return torch_cluster.radius_graph(pos, r, batch, loop=False, max_num_neighbors=max_num_neighbors)
    return _radius_graph_exact(pos, r, batch, max_num_neighbors)


def _check_inputs(pos: torch.Tensor, r: float, batch: torch.Tensor, max_num_neighbors: int) -> None:
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (N, 3), got {tuple(pos.shape)}")
    if batch.shape != pos.shape[:1]:
        raise ValueError(f"batch must have shape ({pos.shape[0]},) like pos, got {tuple(batch.shape)}")
    if not torch.isfinite(pos).all():
        raise ValueError("pos contains NaN or infinite coordinates")
    if not r > 0:
        raise ValueError(f"radius r must be > 0, got {r}")
    if max_num_neighbors < 1:
        raise ValueError(f"max_num_neighbors must be >= 1, got {max_num_neighbors}")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be non-decreasing: atoms of one graph must be contiguous")


def _radius_graph_exact(pos: torch.Tensor, r: float, batch: torch.Tensor, max_num_neighbors: int) -> torch.Tensor:
    """Exact radius graph from all pairwise distances within each graph.

    Graphs are padded to a dense (B, n_max, 3) block, so memory grows as B * n_max**2: cheap for
    peptides (n_max ~ 10-100) and faster than a KD-tree there, not meant for large proteins.
    """
    if pos.shape[0] == 0:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    counts = torch.bincount(batch)  # [B]
    starts = torch.cumsum(counts, 0) - counts  # [B]
    local = torch.arange(pos.shape[0], device=pos.device) - starts[batch]  # [N]
    n_max = int(counts.max())
    num_graphs = counts.shape[0]

    dense = pos.new_zeros(num_graphs, n_max, 3)
    dense[batch, local] = pos
    valid = torch.zeros(num_graphs, n_max, dtype=torch.bool, device=pos.device)
    valid[batch, local] = True

    # Explicit differences rather than torch.cdist, whose matmul shortcut is not exact near r.
    d2 = (dense[:, :, None, :] - dense[:, None, :, :]).square().sum(-1)  # [B, n_i, n_j]
    eye = torch.eye(n_max, dtype=torch.bool, device=pos.device)
    mask = (d2 < r * r) & valid[:, :, None] & valid[:, None, :] & ~eye  # [B, n_i, n_j]

    if int(mask.sum(-1).max()) > max_num_neighbors:
        nearest = torch.where(mask, d2, torch.inf).topk(max_num_neighbors, dim=-1, largest=False).indices
        kept = torch.zeros_like(mask).scatter_(-1, nearest, True)
        mask &= kept

    graph, i, j = mask.nonzero(as_tuple=True)
    return torch.stack([starts[graph] + j, starts[graph] + i])
