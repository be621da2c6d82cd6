"""Data-parallel training inside one process: device, process group, DDP (docs/design.md §8).

One process per GPU (or per CPU worker with gloo), started by ``torchrun``
(:func:`jamun.training.launch.train`), which sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
address in the environment. Gradients are averaged by ``DistributedDataParallel``, whose bucketed
all-reduces run while the backward pass is still computing the remaining gradients. A process
not started by torchrun trains alone, with no process group and no DDP wrapper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Context", "in_launched_group", "setup", "teardown", "all_reduce_sum", "data_parallel"]


@dataclass(frozen=True)
class Context:
    """Where this process trains: rank among world_size processes and its torch device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_launched_group() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(gpus: int) -> Context:
    """Pick the device (cuda:LOCAL_RANK when ``gpus`` > 0) and join the process group if launched.

    Backend: nccl on CUDA, gloo on CPU. A torchrun launch joins its group even as a single
    process, so that one-GPU runs start NCCL exactly as multi-GPU jobs do.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if gpus > 0:
        if not torch.cuda.is_available():
            raise ValueError(f"train.gpus = {gpus} but CUDA is not available here; set train.gpus: 0 to train on CPU")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if (world_size > 1 or in_launched_group()) and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank=rank, world_size=world_size, device=device)


def teardown(ctx: Context) -> None:
    """Leave the process group that :func:`setup` joined."""
    if (ctx.world_size > 1 or in_launched_group()) and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if ctx.world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def data_parallel(module: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """``module`` wrapped in DDP when this process is in a process group, else ``module`` itself.

    DDP copies rank 0's parameters and buffers to every rank when it wraps ``module`` and then
    averages gradients over ranks in backward. ``static_graph``: every step uses the same
    parameters, all but the empty ones (a first layer has no vector input, so its (0, ...)
    vector weights get no gradient); DDP finds them in the first step instead of expecting a
    gradient for each. Buffers are not broadcast again before each forward: the denoiser's only
    buffers are constant index tables. Inputs are placed on ``ctx.device`` by the caller.
    """
    if not dist.is_initialized():
        return module
    return DistributedDataParallel(module, device_ids=None, broadcast_buffers=False, static_graph=True)
