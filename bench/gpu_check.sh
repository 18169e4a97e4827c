#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool): build the CUDA extension, run the GPU tests (CUDA
# and compiled Triton), run the op benchmark with GB/s against a copy ceiling and kernel launch counts.
# Writes everything under $OUT; must finish in under 8 minutes (the tests use pytest-xdist, -n 8, as the
# GPU image has it: compiling the Triton variants one after another took longer than the budget). Usage (from the repository root):
#     OUT=/some/dir bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "== $(( $(date +%s) - start ))s: $*" | tee -a "$OUT/summary.txt"; }

step "environment"
{ nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
    > "$OUT/env.txt" 2>&1
tail -1 "$OUT/env.txt" | tee -a "$OUT/summary.txt"

step "build (CUDA kernels forced)"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} SNAS_FAST_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
# --no-deps: the GPU image has its own torch/triton and reaches no package registry
if ! timeout 270 python3 -m pip install --no-deps --no-build-isolation -e . > "$OUT/build.log" 2>&1; then
    step "BUILD FAILED"; tail -40 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
fi
python3 -c "import snas_fast; print('backends:', snas_fast.available_backends())" 2>&1 | tee -a "$OUT/summary.txt"

step "GPU tests (cuda and triton on the GPU)"
timeout 170 python3 -m pytest tests -q -k cuda -p no:cacheprovider -n 8 > "$OUT/tests.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/summary.txt"
tail -3 "$OUT/tests.log" | tee -a "$OUT/summary.txt"
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -40 | tee -a "$OUT/summary.txt"

step "benchmark"
PYTHONUNBUFFERED=1 timeout 130 python3 bench/bench_mixed_op.py --device cuda --shapes edge_c16_32x32,b256_c64_32x32 \
    --dtypes float32 --reps 30 --csv "$OUT/bench.csv" > "$OUT/bench.md" 2>&1
echo "bench exit $?" | tee -a "$OUT/summary.txt"
cat "$OUT/bench.md"
step "done"
