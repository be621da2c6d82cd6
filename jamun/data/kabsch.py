"""Batched Kabsch alignment of many small point clouds (one per graph), rotation only.

Kabsch, Acta Cryst. A32 (1976) 922; the determinant correction that forbids reflections is from
Umeyama, IEEE TPAMI 13 (1991) 376. Reflections must be excluded: a mirror image of a peptide is
a different molecule (chirality), so aligning noisy ``y`` onto ``x`` may only rotate it.
"""

from __future__ import annotations

import torch

from jamun.data.graph import GraphBatch, graph_mean

__all__ = ["kabsch_rotations", "kabsch_align"]


def kabsch_rotations(mobile: torch.Tensor, target: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
    """Proper rotations (det = +1) minimising sum_i |R m_i - t_i|^2 for every graph.

    mobile, target: (N, 3), already centred per graph; only ``graph.batch`` (N,) and
    ``graph.num_graphs`` are used. Returns (num_graphs, 3, 3).
    The SVD runs in float64: for nearly planar or tiny clouds float32 loses the sign of the
    smallest singular direction, which is exactly what decides rotation versus reflection.
    """
    m = mobile.double()
    t = target.double()
    batch, num_graphs = graph.batch, graph.num_graphs
    # Cross-covariance H_g = sum_i m_i t_i^T, accumulated per graph.
    outer = (m[:, :, None] * t[:, None, :]).reshape(-1, 9)  # [N, 9]
    h = m.new_zeros((num_graphs, 9)).index_add_(0, batch, outer).reshape(num_graphs, 3, 3)
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(1, 2)
    d = torch.sign(torch.linalg.det(v @ u.transpose(1, 2)))
    # A zero determinant (degenerate cloud) has no preferred handedness; keep the rotation proper.
    d = torch.where(d == 0, torch.ones_like(d), d)
    correction = torch.ones((num_graphs, 3), dtype=m.dtype, device=m.device)
    correction[:, 2] = d
    rot = v @ torch.diag_embed(correction) @ u.transpose(1, 2)
    return rot.to(mobile.dtype)


@torch.no_grad()
def kabsch_align(mobile: torch.Tensor, target: torch.Tensor, graph: GraphBatch) -> torch.Tensor:
    """Rotate and translate each graph of ``mobile`` onto ``target`` (least squares, no mirror).

    mobile, target: (N, 3) nm, same atoms in the same order, graphs as in ``graph``.
    Returns (N, 3) nm: mobile centred per graph, rotated by the optimal proper rotation, then
    moved to target's per-graph centroid. Alignment is a data transform, so no gradient flows.
    """
    batch = graph.batch
    target_centroid = graph_mean(target, graph)
    m = mobile - graph_mean(mobile, graph)[batch]
    rot = kabsch_rotations(m, target - target_centroid[batch], graph)
    return torch.einsum("nij,nj->ni", rot[batch], m) + target_centroid[batch]
