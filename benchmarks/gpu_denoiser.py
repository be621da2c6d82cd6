"""GPU forward throughput of the paper-size denoiser (8.2M parameters): fp32, TF32 and bf16 autocast.

Capped ALA-ALA heavy atoms (15 per graph, sigma = 0.04 nm noise), batches of 64 / 256 / 1024 /
4096 graphs, xhat under ``torch.no_grad`` including graph construction (radius graph: torch_cluster
if importable, else the cdist fallback; set JAMUN_RADIUS_BACKEND to force one). Measured on an
H200: 27.5 / 19.9 / 16.7 us per graph fp32 / TF32 / bf16 at batch 4096 (benchmarks/README.md).

    python benchmarks/gpu_denoiser.py [--batch-sizes 64 256 1024 4096] [--out gpu.tsv]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch

from jamun.data.radius import resolve_backend
from jamun.model import Denoiser

sys.path.insert(0, str(Path(__file__).parent))
from denoiser_throughput import C, SIGMA, SIZES, noisy_batch, peptide_structure  # noqa: E402


def microseconds_per_graph(denoiser: Denoiser, graph, y: torch.Tensor, dtype: str, repeats: int) -> float:
    """CUDA-event timing of ``repeats`` forward passes after two warm-up passes."""
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"  # fp32 means fp32
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for _ in range(2):
            denoiser.xhat(y, graph)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(repeats):
            denoiser.xhat(y, graph)
        end.record()
        torch.cuda.synchronize()
    return 1e3 * start.elapsed_time(end) / repeats / graph.num_graphs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256, 1024, 4096])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "tf32", "bf16"],
                        choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--peptide", default="AA")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, help="also write the rows here (tsv)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_denoiser.py needs a CUDA device; torch.cuda.is_available() is False")

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        features, positions = peptide_structure(args.peptide, Path(folder))
    denoiser = Denoiser({"sigma_nm": SIGMA, **SIZES["paper"]}, C).cuda().eval()
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, radius backend {resolve_backend()}, "
          f"{denoiser.num_parameters():,} parameters, {features.num_atoms} atoms/graph", file=sys.stderr)  # fmt: skip
    rows = ["dtype\tbatch\tus_per_graph\tgraphs_per_s\tpeak_gib"]
    print(rows[0], flush=True)
    for dtype in args.dtypes:
        for batch_size in args.batch_sizes:
            torch.cuda.reset_peak_memory_stats()
            graph, _, y = noisy_batch(features, positions, batch_size, "cuda")
            us = microseconds_per_graph(denoiser, graph, y, dtype, args.repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30
            rows.append(f"{dtype}\t{batch_size}\t{us:.1f}\t{1e6 / us:.0f}\t{peak:.1f}")
            print(rows[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
