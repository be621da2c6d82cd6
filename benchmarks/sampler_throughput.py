"""Sampler throughput against the raw batched denoiser forward pass (issue 4).

For each chain count B the script times (a) ``Denoiser.xhat`` on a batch of B ALA-ALA graphs and
(b) a complete ``sample_peptide`` run with B chains (integrator, non-finite checks, XTC writing).
The walk costs one forward pass per step plus one initial call, so

    ratio          = sampler samples/s / forward samples/s          (end to end, ≤ steps/(steps+1))
    ratio_per_call = forward time × (steps + 1) / sampler wall time  (overhead per forward pass)
    in_forward     = share of the sampler's wall time spent inside xhat calls

``in_forward`` is timed on the walk's own states, so it is immune to the walk moving atoms into or
out of the radius cutoff (which changes the forward cost); the ratios compare with a separate
forward timing and so also show machine noise.

The target is ratio ≥ 0.9. The model is randomly initialised (throughput does not depend on the
weights); C only rescales the input.

Usage::

    python benchmarks/sampler_throughput.py                      # demo model, CPU, 1..512 chains
    python benchmarks/sampler_throughput.py --chains 1 8 --seconds 2 --threads 1 --csv out.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import tempfile
import time
from pathlib import Path

import mdtraj
import torch
import yaml

import jamun.model
from jamun.data.graph import TopologyFeatures, batch_graphs, topology_features
from jamun.model import Denoiser, load, save
from jamun.peptides import build_peptide
from jamun.sampling import sample_peptide

CONFIGS = {"demo": "config/config.yaml", "paper": "config/paper.yaml"}  # model sizes from the shipped configs
ROOT = Path(__file__).resolve().parents[1]
C_NM2 = 0.25  # a typical mean squared pair distance of capped dipeptides; only scales the input


def prepare(workdir: Path, size: str, sequence: str = "AA") -> tuple[Path, Path, TopologyFeatures, torch.Tensor]:
    """Build the peptide and save a random model of ``size``: (system_pdb, model_path, features, x0)."""
    system_pdb = build_peptide(sequence, workdir / f"{sequence}.pdb")
    train_cfg = yaml.safe_load((ROOT / CONFIGS[size]).read_text())["train"]
    torch.manual_seed(0)
    model_path = save(Denoiser(train_cfg, C=C_NM2), workdir / f"{size}.ckpt")
    system = mdtraj.load(str(system_pdb))
    features = topology_features(system.topology)
    return system_pdb, model_path, features, torch.from_numpy(system.xyz[0, features.heavy_atom_indices])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_seconds(denoiser: Denoiser, features: TopologyFeatures, x0: torch.Tensor, chains: int,
                    min_seconds: float) -> float:
    """Mean wall time of one ``xhat`` call on ``chains`` noisy copies (after one warm-up call)."""
    device = next(denoiser.parameters()).device
    graph = batch_graphs([features] * chains).to(device)
    y = (x0 + denoiser.sigma * torch.randn(chains, *x0.shape)).reshape(-1, 3).to(device)
    with torch.no_grad():  # not inference_mode: the energy output differentiates inside
        denoiser.xhat(y, graph)
        synchronize(device)
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < min_seconds:
            denoiser.xhat(y, graph)
            synchronize(device)
            calls += 1
    return (time.perf_counter() - start) / calls


@contextlib.contextmanager
def timed_forward(device: torch.device):
    """While active, models from ``jamun.model.load`` add their xhat wall time to the yielded list."""
    real_load, spent = jamun.model.load, [0.0]

    def load_timed(*args, **kwargs):
        denoiser = real_load(*args, **kwargs)
        xhat = denoiser.xhat

        def timed(y, graph):
            start = time.perf_counter()
            out = xhat(y, graph)
            synchronize(device)
            spent[0] += time.perf_counter() - start
            return out

        denoiser.xhat = timed
        return denoiser

    jamun.model.load = load_timed
    try:
        yield spent
    finally:
        jamun.model.load = real_load


def measure(chains: int, system_pdb: Path, model_path: Path, features: TopologyFeatures, x0: torch.Tensor,
            *, seconds: float, min_steps: int, device: str, workdir: Path) -> dict[str, float]:
    """One table row: forward and sampler throughput at ``chains`` chains."""
    forward = forward_seconds(load(model_path, map_location=device), features, x0, chains, seconds)
    steps = max(min_steps, round(seconds / forward))
    with timed_forward(torch.device(device)) as spent:
        info = sample_peptide("AA", system_pdb, model_path, workdir / f"samples_{chains}", chains=chains,
                              steps=steps, device=device, progress=False)
    forward_rate = chains / forward
    return {
        "chains": chains,
        "steps": steps,
        "forward_ms": 1e3 * forward,
        "forward_samples_per_s": forward_rate,
        "sampler_samples_per_s": info["samples_per_second"],
        "us_per_sample": 1e6 / info["samples_per_second"],
        "ratio": info["samples_per_second"] / forward_rate,
        "ratio_per_call": forward * (steps + 1) / info["wall_seconds"],
        "in_forward": spent[0] / info["wall_seconds"],
    }


def print_table(rows: list[dict[str, float]], header: str) -> None:
    print(header)
    print("| chains | steps | forward ms | forward samples/s | sampler samples/s | µs/sample | ratio "
          "| ratio per call | in forward |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['chains']} | {r['steps']} | {r['forward_ms']:.2f} | {r['forward_samples_per_s']:.1f} | "
              f"{r['sampler_samples_per_s']:.1f} | {r['us_per_sample']:.1f} | {r['ratio']:.3f} | "
              f"{r['ratio_per_call']:.3f} | {r['in_forward']:.3f} |")


def run(argv: list[str] | None = None, *, default_chains=(1, 8, 32, 128, 512), default_size="demo",
        default_device="cpu") -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, nargs="+", default=list(default_chains))
    parser.add_argument("--size", choices=sorted(CONFIGS), default=default_size)
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--seconds", type=float, default=5.0, help="target sampler wall time per row")
    parser.add_argument("--min-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--tf32", action="store_true", help="CUDA matrix products in TF32 (forward and sampler)")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        system_pdb, model_path, features, x0 = prepare(workdir, args.size)
        for chains in args.chains:
            rows.append(measure(chains, system_pdb, model_path, features, x0, seconds=args.seconds,
                                min_steps=args.min_steps, device=args.device, workdir=workdir))
            print(f"chains {chains}: {rows[-1]['sampler_samples_per_s']:.1f} samples/s", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    precision = "TF32" if args.tf32 else "fp32"
    print_table(rows, f"{args.size} model on ALA-ALA, {name}, {precision}, torch {torch.__version__}")
    if args.csv is not None:
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    run()
