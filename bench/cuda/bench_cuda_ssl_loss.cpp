// The fused InfoNCE, BYOL / SimSiam, VICReg and Barlow Twins losses (forward + backward, f32
// inputs, f64 arithmetic) at their methods' training sizes. The GEMM-shaped parts dominate and
// run in f64, so the figure is TFLOP/s counted over those GEMMs only:
//   InfoNCE  N = 256, D = 128, K = 65536: forward qn queue^T, backward recomputes it, then
//            G queue and G^T qn: 4 x 2 N K D
//   VICReg   N = 256 (per GPU in the official run), D = 8192: forward C(x), C(y); backward
//            C(x), C(y) again and xc C_off for both: 6 x 2 N D^2
//   Barlow   N = 256, D = 8192: forward C; backward C, zh2 H^T and zh1 H: 4 x 2 N D^2
// The cosine regression (BYOL, N = 512, D = 256, two directions) is memory-bound: it reads the
// four inputs twice (forward and backward) and writes dp1, dp2.
#include <vector>

#include "cuda_bench_util.h"
#include "kernels/ssl_loss.h"
#include "tensor/rng.h"

namespace {

using namespace siam;
const Device kGpu = Device::cuda(0);

void BM_cuda_info_nce_fwd_bwd(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t n = 256, d = 128, k = 65536;
  Generator gen(1);
  Tensor q = copy_to(randn({n, d}, gen), kGpu, DType::f32), key = copy_to(randn({n, d}, gen), kGpu, DType::f32);
  Tensor queue = copy_to(randn({k, d}, gen), kGpu, DType::f32);
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  const double ms = bench::gpu_ms([&] {
    kernels::InfoNceSaved s = kernels::info_nce_forward(q, key, queue, 0.2);
    kernels::info_nce_backward(one, q, key, queue, s, 0.2, {true, false, false});
  });
  for (auto _ : state) bench::report_flops(state, ms, 3.0 * 2.0 * n * k * d);  // dqueue not asked
}
BENCHMARK(BM_cuda_info_nce_fwd_bwd)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_byol_fwd_bwd(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t n = 512, d = 256;
  Generator gen(2);
  std::vector<Tensor> x;
  for (int i = 0; i < 4; ++i) x.push_back(copy_to(randn({n, d}, gen), kGpu, DType::f32));
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  const double ms = bench::gpu_ms([&] {
    kernels::cosine_regression_forward(x[0], x[1], x[2], x[3], kernels::CosineMode::byol);
    kernels::cosine_regression_backward(one, x[0], x[1], x[2], x[3], kernels::CosineMode::byol);
  });
  for (auto _ : state) bench::report_bandwidth(state, ms, 4.0 * n * d * (4 + 4 + 2));
}
BENCHMARK(BM_cuda_byol_fwd_bwd)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_vicreg_fwd_bwd(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t n = state.range(0), d = state.range(1);
  Generator gen(3);
  Tensor x = copy_to(randn({n, d}, gen), kGpu, DType::f32), y = copy_to(randn({n, d}, gen), kGpu, DType::f32);
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  const double ms = bench::gpu_ms(
      [&] {
        kernels::vicreg_forward(x, y, {25, 25, 1});
        kernels::vicreg_backward(one, x, y, {25, 25, 1});
      },
      5, 1);
  for (auto _ : state) bench::report_flops(state, ms, 6.0 * 2.0 * n * d * d);
}
BENCHMARK(BM_cuda_vicreg_fwd_bwd)->Args({256, 2048})->Args({256, 8192})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_barlow_fwd_bwd(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t n = state.range(0), d = state.range(1);
  Generator gen(4);
  Tensor z1 = copy_to(randn({n, d}, gen), kGpu, DType::f32), z2 = copy_to(randn({n, d}, gen), kGpu, DType::f32);
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  const double ms = bench::gpu_ms(
      [&] {
        kernels::barlow_forward(z1, z2, 0.0051);
        kernels::barlow_backward(one, z1, z2, 1.0, 0.0051);
      },
      5, 1);
  for (auto _ : state) bench::report_flops(state, ms, 4.0 * 2.0 * n * d * d);
}
BENCHMARK(BM_cuda_barlow_fwd_bwd)->Args({256, 2048})->Args({256, 8192})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

}  // namespace
