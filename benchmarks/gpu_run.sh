#!/usr/bin/env bash
# The one GPU session of issue 19 (benchmarks/gpu_run.py says what it runs). On the device machine,
# from the repository root, with the wheels in .whl/ and the payload in .gpu_payload/:
#   bash benchmarks/gpu_run.sh
# Rehearsal on CPU with the tiny CI config (benchmarks/README.md):
#   PYTHON=.venv/bin/python OUT=/tmp/rehearsal GPU_RUN_ARGS="--device cpu --config config/ci.yaml \
#     --variants benchmarks/gpu_rehearsal_variants.yaml --deadline-minutes 3 --reserve-minutes 1.5" \
#     bash benchmarks/gpu_run.sh
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_run_out}
mkdir -p "$OUT"
# The GPU image lacks mdtraj, deeptime and (for test MD) OpenMM and pdbfixer: install the carried
# wheels beside it.
if ! "$PYTHON" -c "import mdtraj, deeptime" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import torch; from jamun.provenance import package_versions as v; print('cuda', torch.cuda.is_available(), v())"
    nproc
    # shellcheck disable=SC2086  # GPU_RUN_ARGS is a list of options
    "$PYTHON" benchmarks/gpu_run.py run --out "$OUT" ${GPU_RUN_ARGS:-}
} 2>&1 | tee "$OUT/gpu_run.log"
