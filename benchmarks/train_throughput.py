"""End-to-end training throughput: graphs per second and the share of step time spent on data.

Runs the real trainer (:func:`jamun.training.train`: shard reading, graph batching, noise, Kabsch,
forward, backward, Adam) for the ``demo`` and ``paper`` model sizes and batch sizes, read from
config/config.yaml and config/paper.yaml, on synthetic shards: capped peptides built with
jamun.peptides, randomly rotated and jiggled (only the atom counts matter for speed). The first
``--warmup`` steps are excluded; the numbers are those of the metrics row of the remaining steps.

    python benchmarks/train_throughput.py                          # demo and paper, 20 steps each
    python benchmarks/train_throughput.py --sizes demo --steps 50 --threads 1 2
    python benchmarks/train_throughput.py --shards results/shards   # real shards instead

Prints one tab-separated row per size and thread count (and writes them to --out as CSV).
On a busy machine run it with ``OMP_WAIT_POLICY=PASSIVE``: with spinning OpenMP threads and more
runnable threads than cores, two threads measured 6-9x slower than one (see the final report).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mdtraj
import numpy as np
import pandas as pd
import yaml

from jamun.data.shards import write_shards
from jamun.peptides import build_peptide
from jamun.training import train

ROOT = Path(__file__).resolve().parents[1]
SIZE_CONFIGS = {"demo": ROOT / "config" / "config.yaml", "paper": ROOT / "config" / "paper.yaml"}


def synthetic_shards(folder: Path, peptides: list[str], frames: int) -> Path:
    """Shards of ``frames`` jiggled, rotated copies of each built peptide (train and val)."""
    rng = np.random.default_rng(0)
    sources = []
    for peptide in peptides:
        pdb = build_peptide(peptide, folder / peptide / "topology.pdb")
        ref = mdtraj.load(str(pdb))
        q, _ = np.linalg.qr(rng.normal(size=(frames, 3, 3)))
        xyz = np.einsum("fij,aj->fai", q, ref.xyz[0] - ref.xyz[0].mean(0)) + rng.normal(scale=0.01, size=(frames, ref.n_atoms, 3))
        mdtraj.Trajectory(xyz.astype(np.float32), ref.topology).save_xtc(str(folder / peptide / "traj.xtc"))
        sources.append((peptide, folder / peptide / "traj.xtc", pdb))
    for split in ("train", "val"):
        write_shards(split, sources, folder / "shards" / split, frames_per_shard=max(1, frames // 2), seed=0)
    return folder / "shards"


def measure(shards: Path, size: str, steps: int, warmup: int, threads: int, work: Path) -> dict:
    cfg = yaml.safe_load(SIZE_CONFIGS[size].read_text())["train"]
    cfg = {**cfg, "max_steps": warmup + steps, "max_minutes": None, "val_every": warmup, "val_batches": 1,
           "checkpoint_every": warmup + steps, "gpus": 0}  # fmt: skip
    summary = train(shards / "train", work / size, cfg, threads=threads, val_shards=shards / "val")
    row = pd.read_csv(work / size / "metrics.csv").iloc[-1]
    return {
        "size": size, "parameters": summary["n_parameters"], "batch_size": cfg["batch_size"],
        "threads": threads, "steps": steps, "graphs_per_s": row["graphs_per_s"],
        "ms_per_graph": 1000 / row["graphs_per_s"], "data_wait_fraction": row["data_wait_fraction"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZE_CONFIGS), default=["demo", "paper"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--peptides", nargs="+", default=["AA", "GN"], help="synthetic shards from these")
    parser.add_argument("--frames", type=int, default=2000, help="synthetic frames per peptide")
    parser.add_argument("--shards", type=Path, default=None, help="existing shards folder instead")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as CSV here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shards = args.shards or synthetic_shards(work / "data", args.peptides, args.frames)
        rows = [
            measure(shards, size, args.steps, args.warmup, threads, work / f"{threads}")
            for size in args.sizes
            for threads in args.threads
        ]
    table = pd.DataFrame(rows)
    print(table.to_csv(sep="\t", index=False, float_format="%.4g"), end="")
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    sys.exit(main())
