// Memory-bound CUDA kernels of the elementwise, reduction, copy and dropout families, in GB/s
// and as a fraction of this GPU's device-to-device copy (of_copy), at ResNet-50 sizes: the
// first stage's activations, 256 x 256 x 56 x 56 (205M elements; 822 MB in f32).
//   add          y = a + b, same shape (the vectorised path): 3 streams
//   add_bias     y = a + b with b (1, C, 1, 1) (the strided path): 2 streams
//   relu_bwd     dx = g * (x > 0): 3 streams
//   sum_nhw      sum over (N, H, W) of NCHW: the batch-norm reduction, 1 stream
//   sum_nhwc     the same on a channels-last tensor (the column kernel), 1 stream
//   transpose    contiguous copy of an 8192 x 8192 transposed view: 2 streams
//   nchw_nhwc    NCHW -> NHWC permute copy of 64 x 256 x 56 x 56: 2 streams
//   dropout      p = 0.1 over 64M elements: 2 streams
// Bytes count each stream once (the minimum any kernel must move).
#include "cuda_bench_util.h"

#include "autograd/ops.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace {

using namespace siam;

const Device kGpu = Device::cuda(0);
const Shape kAct = {256, 256, 56, 56};

DType dtype_arg(const benchmark::State& state) { return state.range(0) == 0 ? DType::f32 : DType::bf16; }

// +-1 at random, made on the device.
Tensor signs(const Shape& s, DType dt) {
  Tensor d = kernels::dropout(ones(s, {dt, kGpu}), 0.5, 1, 0);  // 0 or 2
  return kernels::unary(kernels::Unary::add_scalar, d, -1.0);
}

void label(benchmark::State& state, DType dt) { state.SetLabel(dtype_name(dt)); }

void BM_cuda_add(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor a = full(kAct, 1.5, {dt, kGpu}), b = full(kAct, 0.25, {dt, kGpu});
  double ms = bench::gpu_ms([&] { kernels::binary(kernels::Binary::add, a, b); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 3.0 * a.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_add)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_add_bias(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor a = full(kAct, 1.5, {dt, kGpu}), b = full({1, kAct[1], 1, 1}, 0.25, {dt, kGpu});
  double ms = bench::gpu_ms([&] { kernels::binary(kernels::Binary::add, a, b); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 2.0 * a.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_add_bias)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_relu_backward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor x = signs(kAct, dt), g = full(kAct, 0.5, {dt, kGpu});
  Tensor y = kernels::unary(kernels::Unary::relu, x);
  double ms = bench::gpu_ms([&] { kernels::unary_backward(kernels::Unary::relu, g, x, y); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 3.0 * x.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_relu_backward)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_sum_nhw(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor x = signs(kAct, dt);
  double ms = bench::gpu_ms([&] { kernels::sum(x, {0, 2, 3}, false); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 1.0 * x.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_sum_nhw)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_sum_nhwc(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor x = signs({kAct[0], kAct[2], kAct[3], kAct[1]}, dt);
  double ms = bench::gpu_ms([&] { kernels::sum(x, {0, 1, 2}, false); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 1.0 * x.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_sum_nhwc)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_transpose_copy(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor x = full({8192, 8192}, 1.0, {dt, kGpu});
  Tensor xt = transpose(x, 0, 1);
  double ms = bench::gpu_ms([&] { contiguous(xt); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 2.0 * x.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_transpose_copy)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_nchw_to_nhwc(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor x = full({64, 256, 56, 56}, 1.0, {dt, kGpu});
  Tensor p = permute(x, {0, 2, 3, 1});
  double ms = bench::gpu_ms([&] { contiguous(p); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 2.0 * x.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_nchw_to_nhwc)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

void BM_cuda_dropout(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const DType dt = dtype_arg(state);
  Tensor x = full({int64_t(1) << 26}, 1.0, {dt, kGpu});
  uint64_t offset = 0;
  double ms = bench::gpu_ms([&] { kernels::dropout(x, 0.1, 7, offset += (x.numel() + 3) / 4); });
  for (auto _ : state) bench::report_bandwidth(state, ms, 2.0 * x.nbytes());
  label(state, dt);
}
BENCHMARK(BM_cuda_dropout)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

}  // namespace
