"""Paper-size sampler throughput on one CUDA GPU: µs per sample at 32-4096 chains (issue 4).

Prepared for a GPU session; not run on the 2-core CPU machines. Same measurement as
``sampler_throughput.py`` (raw batched forward vs a full ``sample_peptide`` run with XTC writing)
with the paper-size model (config/paper.yaml, ≈ 8M parameters) on ALA-ALA. The paper reports
2.2 ms/sample on an A100; our goal is ≤ 20 µs/sample on one H100/H200.

Usage (≈ 2-4 min on an H100 with the defaults)::

    python benchmarks/gpu_sampler.py --csv gpu_sampler.csv
    python benchmarks/gpu_sampler.py --chains 32 4096 --seconds 5
"""

from __future__ import annotations

import sys

import torch

from sampler_throughput import run

if __name__ == "__main__":
    if not torch.cuda.is_available() and "--device" not in sys.argv:
        sys.exit("gpu_sampler.py needs a CUDA device (or pass --device cpu for a dry run)")
    run(default_chains=(32, 128, 512, 1024, 2048, 4096), default_size="paper", default_device="cuda")
