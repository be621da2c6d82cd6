"""Batched Kabsch alignment of many small point clouds (one per graph), rotation only.

Kabsch, Acta Cryst. A32 (1976) 922; the determinant correction that forbids reflections is from
Umeyama, IEEE TPAMI 13 (1991) 376. Reflections must be excluded: a mirror image of a peptide is
a different molecule (chirality), so aligning noisy ``y`` onto ``x`` may only rotate it.
"""

from __future__ import annotations

import torch

__all__ = ["segment_mean", "kabsch_rotations", "kabsch_align"]


def segment_mean(values: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Per-graph mean of per-atom rows.

    values: (N, k); batch: (N,) graph id in [0, num_graphs). Returns (num_graphs, k).
    Every graph must own at least one atom.
    """
    sums = values.new_zeros((num_graphs, values.shape[1])).index_add_(0, batch, values)
    counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).to(values.dtype)
    return sums / counts[:, None]


def kabsch_rotations(
    mobile: torch.Tensor, target: torch.Tensor, batch: torch.Tensor, num_graphs: int
) -> torch.Tensor:
    """Proper rotations (det = +1) minimising sum_i |R m_i - t_i|^2 for every graph.

    mobile, target: (N, 3), already centred per graph; batch: (N,). Returns (num_graphs, 3, 3).
    The SVD runs in float64: for nearly planar or tiny clouds float32 loses the sign of the
    smallest singular direction, which is exactly what decides rotation versus reflection.
    """
    m = mobile.double()
    t = target.double()
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
def kabsch_align(
    mobile: torch.Tensor, target: torch.Tensor, batch: torch.Tensor, num_graphs: int
) -> torch.Tensor:
    """Rotate and translate each graph of ``mobile`` onto ``target`` (least squares, no mirror).

    mobile, target: (N, 3) nm, same atoms in the same order; batch: (N,) graph id.
    Returns (N, 3) nm: mobile centred per graph, rotated by the optimal proper rotation, then
    moved to target's per-graph centroid. Alignment is a data transform, so no gradient flows.
    """
    mobile_centroid = segment_mean(mobile, batch, num_graphs)
    target_centroid = segment_mean(target, batch, num_graphs)
    m = mobile - mobile_centroid[batch]
    t = target - target_centroid[batch]
    rot = kabsch_rotations(m, t, batch, num_graphs)
    return torch.einsum("nij,nj->ni", rot[batch], m) + target_centroid[batch]
