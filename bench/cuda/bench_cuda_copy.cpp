// The yardstick of the CUDA benchmarks: device-to-device copy bandwidth on this GPU.
#include "cuda_bench_util.h"

static void BM_cuda_d2d_copy(benchmark::State& state) {
  if (!siam::bench::require_gpu(state)) return;
  double bw = siam::bench::copy_bandwidth();
  size_t n = size_t(256) << 20;
  for (auto _ : state) state.SetIterationTime(2.0 * n / bw);
  state.counters["GB/s"] = bw * 1e-9;
  state.counters["of_copy"] = 1.0;
}
BENCHMARK(BM_cuda_d2d_copy)->UseManualTime()->Iterations(1);
