"""CPU throughput of the JAMUN denoiser: graphs per second, forward only and forward + backward.

Sizes: ``demo`` (the config defaults, 32x0e + 8x1e, 3 layers) and ``paper`` (120x0e + 32x1e,
4 layers, radial_hidden 74: 8.2M parameters). Structures: capped peptides built with
jamun.peptides (heavy atoms only), each graph with fresh noise sigma = 0.04 nm.

    python benchmarks/denoiser_throughput.py                       # full grid, eager
    python benchmarks/denoiser_throughput.py --compile             # also torch.compile (~90 s)
    python benchmarks/denoiser_throughput.py --sizes demo --batch-sizes 1 32 256 --peptides AA
    python benchmarks/denoiser_throughput.py --sizes demo --tensor-product uvu   # channel-wise product

Prints one tab-separated row per case (and writes them to --out if given).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mdtraj
import torch

from jamun.data.graph import GraphBatch, TopologyFeatures, batch_graphs, center_positions, topology_features
from jamun.model import Denoiser
from jamun.peptides import build_peptide

SIGMA = 0.04
C = 0.3  # nm^2, typical of capped dipeptides; only scales c_in and the cutoff in scaled units
SIZES = {
    "demo": {"hidden_irreps": "32x0e + 8x1e", "num_layers": 3, "radial_hidden": 32},
    "paper": {"hidden_irreps": "120x0e + 32x1e", "num_layers": 4, "radial_hidden": 74},
}


def peptide_structure(sequence: str, folder: Path) -> tuple[TopologyFeatures, torch.Tensor]:
    """(TopologyFeatures, heavy-atom positions (n, 3) nm) of a freshly built capped peptide."""
    built = mdtraj.load(build_peptide(sequence, folder / f"{sequence}.pdb"))
    features = topology_features(built.topology)
    return features, torch.tensor(built.xyz[0][features.heavy_atom_indices])


def noisy_batch(
    features: TopologyFeatures, positions: torch.Tensor, batch_size: int, device: str
) -> tuple[GraphBatch, torch.Tensor, torch.Tensor]:
    """Graph, centred clean x and centred noisy y for ``batch_size`` copies of one peptide."""
    graph = batch_graphs([features] * batch_size).to(device)
    x = positions.to(device).repeat(batch_size, 1)
    y = x + SIGMA * torch.randn_like(x)
    return graph, center_positions(x, graph)[0], center_positions(y, graph)[0]


def seconds_per_call(step, min_seconds: float, max_calls: int) -> float:
    """Median wall time of ``step()`` after one warm-up call."""
    step()
    times: list[float] = []
    while len(times) < max_calls and (sum(times) < min_seconds or len(times) < 3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--peptides", nargs="+", default=["AA", "WW"], help="one-letter sequences (default AA WW)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 64, 256])
    parser.add_argument("--modes", nargs="+", default=["forward", "backward"], choices=["forward", "backward"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd networks (slow to compile)")
    parser.add_argument("--tensor-product", default="uvw", choices=["uvw", "uvu"], help="model.tensor_product")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time each case at least this long")
    parser.add_argument("--max-calls", type=int, default=20)
    parser.add_argument("--max-atoms", type=int, default=4000, help="skip paper-size backward cases with more atoms")
    parser.add_argument("--out", type=Path, help="also write the rows here (tsv)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as folder:
        structures = {sequence: peptide_structure(sequence, Path(folder)) for sequence in args.peptides}
    header = "size\tparameters\tpeptide\tatoms\tcompiled\tmode\tbatch\tgraphs_per_s\tms_per_graph"
    rows = [header]
    print(f"# torch {torch.__version__}, {args.threads} threads, tensor product {args.tensor_product}", file=sys.stderr)
    print(header, flush=True)
    for size in args.sizes:
        for compiled in [False, True] if args.compile else [False]:
            torch.manual_seed(0)
            denoiser = Denoiser({"sigma_nm": SIGMA, **SIZES[size], "tensor_product": args.tensor_product}, C)
            if compiled:
                denoiser.network.compile(dynamic=True)
            for sequence, (features, positions) in structures.items():
                for mode in args.modes:
                    for batch_size in args.batch_sizes:
                        if mode == "backward" and size == "paper" and batch_size * features.num_atoms > args.max_atoms:
                            continue  # activations of several GB; see --max-atoms
                        graph, x, y = noisy_batch(features, positions, batch_size, "cpu")

                        def step() -> None:
                            if mode == "forward":
                                with torch.no_grad():
                                    denoiser.xhat(y, graph)
                            else:
                                denoiser.zero_grad(set_to_none=True)
                                denoiser.loss(x, y, graph).backward()

                        seconds = seconds_per_call(step, args.min_seconds, args.max_calls)
                        row = (
                            f"{size}\t{denoiser.num_parameters()}\t{sequence}\t{features.num_atoms}\t{compiled}\t"
                            f"{mode}\t{batch_size}\t{batch_size / seconds:.1f}\t{1e3 * seconds / batch_size:.3f}"
                        )
                        rows.append(row)
                        print(row, flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
