"""Data-parallel training with plain ``torch.distributed`` (docs/design.md §8).

One process per GPU (or per CPU worker with gloo), started by ``torchrun``, which sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address in the environment. Gradients are summed with
one all-reduce of a flat buffer per step instead of DistributedDataParallel: the denoiser trains
through ``Denoiser.loss`` rather than ``forward``, which DDP's hooks expect, and a flat buffer
also carries the step's loss and stop flag, so ranks agree on NaNs and time limits for free.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "setup", "teardown", "reduce_gradients", "all_reduce_sum", "broadcast_module", "launch"]


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


def reduce_gradients(parameters: Sequence[torch.nn.Parameter], extras: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Average gradients over ranks and sum ``extras`` (k,) over ranks, in one all-reduce.

    Every rank's loss is a mean over an equal number of graphs, so the averaged gradient equals
    the gradient of the mean loss over the global batch. Returns the summed extras.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    if ctx.world_size == 1:
        return extras
    flat = torch.cat([g.reshape(-1) for g in grads] + [extras.to(grads[0].dtype)])
    all_reduce_sum(flat, ctx)
    offset = 0
    for p, g in zip(parameters, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g) / ctx.world_size
        offset += g.numel()
    return flat[offset:]


def broadcast_module(module: torch.nn.Module, ctx: Context) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if ctx.world_size > 1:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def launch(nproc: int, module_args: Sequence[str], *, threads_per_process: int | None = None) -> None:
    """Run ``python -m jamun.train MODULE_ARGS`` as ``nproc`` DDP processes via torchrun.

    ``--standalone`` makes torchrun pick a free local port, so concurrent jobs do not collide.
    Under SLURM this runs inside the job step (one task); torchrun starts one process per GPU.

    Raises
    ------
    RuntimeError
        If any process fails (torchrun's return code is in the message; the processes' own
        errors went to stderr).
    """
    env = dict(os.environ)
    if threads_per_process is not None:
        env["OMP_NUM_THREADS"] = str(threads_per_process)
    # Spinning OpenMP threads collapse when cores are oversubscribed (2 threads ran 6x slower
    # than 1 on a busy 2-core machine); sleeping ones cost little. Must be set before torch loads.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
        f"--nproc_per_node={nproc}", "-m", "jamun.train", *module_args,
    ]  # fmt: skip
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"distributed training with {nproc} processes failed (torchrun exit code {result.returncode})"
        )
