#!/usr/bin/env bash
# Runs the CUDA checks on the GPU machine from the repo root, with the executables that
# scripts/gpu_bundle.sh gathered into .gpu/. Results go to $OUT (or /tmp/siam-gpu).
#   tests     the CUDA suite (parity of every op, graph capture, kernel tests), JSON + log
#   sanitize  the CUDA suite under compute-sanitizer memcheck
#   bench     kernel benchmarks (GB/s and fraction of copy, TFLOP/s) as JSON
#   all       the three in turn
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
out="${OUT:-/tmp/siam-gpu}"
mkdir -p "$out"
[ -x .gpu/bin/siam_cuda_tests ] || { echo "gpu_check.sh: .gpu/bin missing: run scripts/gpu_bundle.sh on the build machine and carry .gpu" >&2; exit 1; }
# The tests find fixtures under the source path they were built in (/work/main).
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi
# The build used cuDNN 9.19; the GPU machine's system cuDNN is older, PyTorch's wheel has 9.19.
for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export LD_LIBRARY_PATH="$PWD/.gpu/lib:${LD_LIBRARY_PATH:-}"

run_tests() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
  .gpu/bin/siam info | tee -a "$out/gpu.txt"
  .gpu/bin/siam_cuda_tests --gtest_output="json:$out/cuda_tests.json" >"$out/cuda_tests.log" 2>&1
  local rc=$?
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$out/cuda_tests.log" | sort | uniq -c | sort -rn | head -5
  grep -E "^\[  FAILED  \]" "$out/cuda_tests.log" | head -60
  tail -3 "$out/cuda_tests.log"
  return $rc
}
run_sanitize() {
  command -v compute-sanitizer >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
  compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 20 \
    .gpu/bin/siam_cuda_tests >"$out/sanitizer.log" 2>&1
  local rc=$?
  grep -E "ERROR SUMMARY|^\[  (PASSED|FAILED) " "$out/sanitizer.log" | tail -5
  return $rc
}
run_bench() {
  .gpu/bin/siam_bench_cuda --benchmark_format=json --benchmark_out="$out/bench_cuda.json" \
    --benchmark_out_format=json 2>&1 | tail -80
}
case "$mode" in
  tests) run_tests ;;
  sanitize) run_sanitize ;;
  bench) run_bench ;;
  all) run_tests; run_sanitize; run_bench ;;
  *) echo "gpu_check.sh: unknown mode '$mode' (tests, sanitize, bench or all)" >&2; exit 2 ;;
esac
