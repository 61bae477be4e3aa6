#!/usr/bin/env bash
# The GPU path in one go (issue 14), < 10 min on a GPU machine: the device-side loader at the paper's dims,
# bf16 pretraining at the paper's model size with NCCL on every visible GPU, MFU against the measured bf16
# matmul peak, and resume after SIGKILL. Prints one summary (also written to benchmarks/results/gpu_check.txt).
#   bash benchmarks/gpu_check.sh             # on a GPU machine
#   bash benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU at a tiny size (the test suite runs it)
# Exit status: 0 all checks ran and the correctness checks passed, 1 a check failed, 2 no GPU (without --dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python benchmarks/gpu_check.py "$@"
