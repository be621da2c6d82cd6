"""Validation loss of the evaluated model on a fixed part of the validation split (docs/design.md §5.4)."""

from __future__ import annotations

import math

import torch

from jamun.data.dataset import EpochOrder
from jamun.training.distributed import Context, all_reduce_sum
from jamun.training.loss import DenoisingLoss
from jamun.training.noise import VAL_STREAM, rank_noise

__all__ = ["validation_loss"]


@torch.no_grad()
def validation_loss(objective: DenoisingLoss, order: EpochOrder, batches: int, global_batch: int, seed: int,
                    ctx: Context) -> tuple[float, float]:
    """Loss and scaled RMSD over the first ``batches`` global batches of epoch 0 (noise fixed by
    ``seed`` and the batch index), every graph weighted equally across ranks.

    A final, partial batch may leave ranks with unequal shares (or none), so the ranks' loss sums
    and graph counts are summed, not their means averaged. ``scaled_rmsd`` = c_out sqrt(loss) /
    (sigma sqrt 3): the per-atom RMS error relative to the noise, 1 for xhat = y.
    """
    objective.eval()
    n = order.data.n_frames
    sums = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for k in range(min(batches, math.ceil(n / global_batch))):
        frames = order.batch(0, k * global_batch, min((k + 1) * global_batch, n), ctx.rank, ctx.world_size)
        if frames.graph is None:
            continue
        graph, x = frames.graph.to(ctx.device), frames.positions.to(ctx.device)
        loss = objective(x, rank_noise(seed, VAL_STREAM, k, frames, ctx.device), graph)
        sums[0] += loss.double() * graph.num_graphs
        sums[1] += graph.num_graphs
    loss = float(all_reduce_sum(sums, ctx)[0] / sums[1])
    denoiser = objective.denoiser
    return loss, denoiser.preconditioning.c_out * math.sqrt(loss) / (denoiser.sigma * math.sqrt(3))
