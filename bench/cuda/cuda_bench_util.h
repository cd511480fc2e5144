#pragma once
// Shared by the CUDA benchmarks (bench/cuda/, built only with the CUDA backend): GPU timing
// with events and the device-to-device copy bandwidth of this GPU, measured in the same run,
// so every memory-bound figure is also reported as a fraction of the copy.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "tensor/cuda_runtime.h"

namespace siam::bench {

// Skips the benchmark with the reason when no GPU can be used; true when it may run.
inline bool require_gpu(benchmark::State& state) {
  if (siam::cuda::available()) return true;
  state.SkipWithError(("needs a GPU: " + siam::cuda::unavailable_reason()).c_str());
  return false;
}

// Median milliseconds of `iters` runs of fn on siam's stream, timed with CUDA events, after
// `warmup` runs.
inline double gpu_ms(const std::function<void()>& fn, int iters = 20, int warmup = 3) {
  cudaStream_t s = cudaStreamPerThread;
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> ms;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(a, s);
    fn();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Device-to-device copy bandwidth in bytes/s (read + write counted), 256 MiB, measured once
// per process.
inline double copy_bandwidth() {
  static double bw = [] {
    size_t n = size_t(256) << 20;
    void *src = nullptr, *dst = nullptr;
    cudaMalloc(&src, n);
    cudaMalloc(&dst, n);
    double ms = gpu_ms([&] { cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cudaStreamPerThread); });
    cudaFree(src);
    cudaFree(dst);
    return 2.0 * n / (ms * 1e-3);
  }();
  return bw;
}

// Reports a memory-bound kernel: manual time per iteration, bytes moved (read + write) per
// run as bytes_per_second, and `of_copy`, its bandwidth as a fraction of the copy's.
inline void report_bandwidth(benchmark::State& state, double ms, double bytes) {
  state.SetIterationTime(ms * 1e-3);
  double bw = bytes / (ms * 1e-3);
  state.counters["GB/s"] = bw * 1e-9;
  state.counters["of_copy"] = bw / copy_bandwidth();
}

// Reports a compute-bound kernel: manual time per iteration and TFLOP/s.
inline void report_flops(benchmark::State& state, double ms, double flops) {
  state.SetIterationTime(ms * 1e-3);
  state.counters["TFLOP/s"] = flops / (ms * 1e-3) * 1e-12;
}

}  // namespace siam::bench
