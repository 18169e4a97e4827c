#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool): build the CUDA extension, run the GPU tests (CUDA and
# compiled Triton, tests/test_mixed_edge.py included), then the benchmarks, most important first:
#   1. search step (bench_search_step.py): fused (deep), fused_sum, eager and hard at the search network
#      (C = 16, 8 cells, 32x32, batch 64): step time, peak memory, bytes saved for backward, the ratios;
#   2. the largest batch of each variant within an 8 GiB budget (bench_search_step.py --max-batch-only);
#   3. the deep-fused edge op (bench_mixed_op.py --ops mixed_edge): fused vs eager vs compiled, GB/s, launches;
#   4. the fused weighted sum (bench_mixed_op.py --ops mixed,gumbel), as in the previous GPU session.
# Everything goes under $OUT: summary.txt (the stages, their exit codes and times), env.txt, build.log,
# tests.log, bench.csv (every benchmark's rows, appended after each config, so a stage cut short keeps what it
# measured), bench_*.md (the tables) and plots/ (when matplotlib is there).
#
# Time: the whole run should take about 6 minutes on an H200. The build (cap 270 s) and the tests (cap 170 s,
# pytest-xdist -n 8, as the GPU image has it: compiling the Triton variants one after another took longer than
# the budget) keep their caps; each benchmark stage then gets its own cap or what is left before DEADLINE seconds
# (default 350) since the start, whichever is less, and is skipped when nothing is left. Stage 4 comes last
# because its figures are already in bench/RESULTS.md.
# torch.compile of the whole supernet is left out of the search step unless GPU_CHECK_COMPILE=1 (compiling the
# supernet takes minutes: give that its own device session, with DEADLINE raised).
# Usage (from the repository root):
#     OUT=/some/dir bash bench/gpu_check.sh
#     OUT=/some/dir DEADLINE=540 GPU_CHECK_COMPILE=1 bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
start=$(date +%s)
DEADLINE=${DEADLINE:-350}
step() { echo "== $(( $(date +%s) - start ))s: $*" | tee -a "$OUT/summary.txt"; }
# cap WANT: seconds for the next stage, at most WANT and at most what is left before DEADLINE (0: none left)
cap() { local left=$(( DEADLINE - ($(date +%s) - start) )); (( left < $1 )) && echo $(( left > 0 ? left : 0 )) || echo "$1"; }
# bench NAME WANT CMD...: runs one benchmark stage under its cap, its output in $OUT/bench_NAME.md
bench() {
    local name=$1 want=$2; shift 2
    local t; t=$(cap "$want")
    if (( t < (want < 15 ? want : 15) )); then step "benchmark $name SKIPPED: ${t}s left before the ${DEADLINE}s deadline"; return; fi
    step "benchmark $name (cap ${t}s)"
    PYTHONUNBUFFERED=1 timeout "$t" "$@" --csv "$OUT/bench.csv" > "$OUT/bench_$name.md" 2>&1
    local rc=$?
    echo "bench $name exit $rc$( (( rc == 124 )) && echo ' (cut at its cap: the rows measured so far are in bench.csv)')" \
        | tee -a "$OUT/summary.txt"
    grep -E "^(Targets|# .*max batch)" "$OUT/bench_$name.md" | tee -a "$OUT/summary.txt"
    (( rc != 0 && rc != 124 )) && tail -15 "$OUT/bench_$name.md" | tee -a "$OUT/summary.txt"
}

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

step "GPU tests (cuda and triton on the GPU; tests/test_mixed_edge.py included)"
timeout 170 python3 -m pytest tests -q -k cuda -p no:cacheprovider -n 8 > "$OUT/tests.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/summary.txt"
tail -3 "$OUT/tests.log" | tee -a "$OUT/summary.txt"
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -40 | tee -a "$OUT/summary.txt"

no_compile=--no-compile
[[ "${GPU_CHECK_COMPILE:-0}" == 1 ]] && no_compile=
bench search_step 90 python3 bench/bench_search_step.py --device cuda --channels 16 --layers 8 --size 32 \
    --batches 64 --reps 10 --no-max-batch $no_compile
bench max_batch 90 python3 bench/bench_search_step.py --device cuda --channels 16 --layers 8 --size 32 \
    --max-batch-only --budget-mb 8192 --variants fused,fused_sum,eager,hard
bench mixed_edge 100 python3 bench/bench_mixed_op.py --device cuda --ops mixed_edge \
    --edge-shapes s1_b64_c16_32x32,s2_b64_c32_32x32,s1_b256_c64_32x32 --dtypes float32 --reps 30
bench mixed_op 100 python3 bench/bench_mixed_op.py --device cuda --ops mixed,gumbel \
    --shapes edge_c16_32x32,b256_c64_32x32 --dtypes float32 --reps 30

if [[ -s "$OUT/bench.csv" ]] && python3 -c "import matplotlib" 2>/dev/null; then
    python3 bench/plot.py "$OUT/bench.csv" --out "$OUT/plots" > /dev/null 2>&1 || echo "plots failed" >> "$OUT/summary.txt"
fi
cat "$OUT"/bench_*.md 2>/dev/null | grep -vE "^#   " | head -200
step "done"
