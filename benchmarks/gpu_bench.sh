#!/usr/bin/env bash
# Speed benchmark on a CUDA GPU: writes benchmarks/results/speed_cuda.{md,json,png}.
#
#   bash benchmarks/gpu_bench.sh                 # from any directory, in the project's environment
#   bash benchmarks/gpu_bench.sh --models dncnn  # extra options go to benchmarks/speed.py
#
# First runs the CUDA tests of the fast path (CUDA graphs vs. the eager loop, bf16/fp16, patches,
# fallbacks): the graph runner has only been exercised on a GPU by this script. Then times every
# registered model at 256x256 in four modes (eager fp32, graphs fp32, AMP, AMP + CUDA graphs) next
# to the paper's V100 figures, plus one whole adapt-and-export job per model.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to PyTorch')"
python -m pytest tests/test_cuda_graphs.py -q -rs
python benchmarks/speed.py --device cuda --all --steps 50 --repeats 7 --warmup 5 "$@"
