#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool): build the CUDA extension, run the GPU tests (CUDA
# and compiled Triton), run the op benchmark with GB/s against a copy ceiling and kernel launch counts.
# Writes everything under $OUT; must finish in under 8 minutes. Usage (from the repository root):
#     OUT=/some/dir bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "== $(( $(date +%s) - start ))s: $*" | tee -a "$OUT/summary.txt"; }

step "environment"
{ nvidia-smi; python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
    > "$OUT/env.txt" 2>&1
tail -1 "$OUT/env.txt" | tee -a "$OUT/summary.txt"

step "build (CUDA kernels forced)"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} SNAS_FAST_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
if ! timeout 300 pip install -e . --no-build-isolation > "$OUT/build.log" 2>&1; then
    step "BUILD FAILED"; tail -40 "$OUT/build.log" | tee -a "$OUT/summary.txt"; exit 1
fi
python -c "import snas_fast; print('backends:', snas_fast.available_backends())" 2>&1 | tee -a "$OUT/summary.txt"

step "GPU tests (cuda and triton on the GPU)"
timeout 240 python -m pytest tests -q -k cuda -p no:cacheprovider > "$OUT/tests.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/summary.txt"
tail -5 "$OUT/tests.log" | tee -a "$OUT/summary.txt"

step "benchmark"
timeout 200 python bench/bench_mixed_op.py --device cuda --shapes edge_c16_32x32,edge_c64_8x8,b256_c64_32x32 \
    --dtypes float32,bfloat16 --reps 30 --csv "$OUT/bench.csv" > "$OUT/bench.md" 2>&1
echo "bench exit $?" | tee -a "$OUT/summary.txt"
cat "$OUT/bench.md"
step "done"
