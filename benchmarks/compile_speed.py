"""torch.compile of the denoiser network versus eager, on real demo training batches (CPU).

Times ``--steps`` training steps (forward, backward, Adam) of the demo model on batches of the
demo shards, eager and with ``torch.compile(network, dynamic=True)`` (graphs differ in atom and
edge counts from batch to batch), after ``--warmup`` untimed steps; the compile time is the
warm-up's extra wall time. Prints one row per mode.

    python benchmarks/compile_speed.py --steps 100 --warmup 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from jamun.data.dataset import EpochOrder, ShardSplit
from jamun.model import Denoiser
from jamun.training.noise import TRAIN_STREAM, batch_noise, corrupt

ROOT = Path(__file__).resolve().parents[1]


def run(mode: str, cfg: dict, shards: Path, steps: int, warmup: int) -> dict:
    """Train ``warmup + steps`` steps in ``mode`` ("eager" or "compile"); warm-up and timed wall."""
    data = ShardSplit(shards / "train")
    C = float(json.loads((shards / "train" / "stats.json").read_text())["C"])
    torch.manual_seed(0)
    model = Denoiser(cfg, C)
    if mode == "compile":
        model.network = torch.compile(model.network, dynamic=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    order, batch = EpochOrder(data, 0), cfg["batch_size"]
    times = []
    for step in range(warmup + steps):
        frames = order.batch(0, step * batch, (step + 1) * batch, 0, 1)
        eta = batch_noise(0, TRAIN_STREAM, step, frames.global_atoms, torch.device("cpu"))
        x, y = corrupt(frames.positions, eta, cfg["sigma_nm"], frames.graph)
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.loss(x, y, frames.graph).backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    timed = sum(times[warmup:])
    return {"mode": mode, "warmup_s": sum(times[:warmup]), "graphs_per_s": steps * batch / timed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shards", type=Path, default=ROOT / "results" / "shards")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(args.config.read_text())["train"]
    for mode in ("eager", "compile"):
        row = run(mode, cfg, args.shards, args.steps, args.warmup)
        print("\t".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
