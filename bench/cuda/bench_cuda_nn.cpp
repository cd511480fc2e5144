// Memory-bound normalisation and softmax kernels on the GPU: GB/s and the fraction of the
// device-to-device copy measured in the same run (the target: 70% or more of the copy for
// batch norm + ReLU, layer norm and softmax).
//
// Bytes are what the kernels move (reads + writes), counted per pass:
//   batch norm + ReLU forward (training): statistics read x; the apply pass reads x (and the
//     residual) and writes y: 3 N values (4 N with the residual). The least any training
//     forward can move is 2 N (3 N), reported as `of_copy_ideal`.
//   batch norm + ReLU backward: the sums read g, y, x; the dx pass reads g, y, x and writes
//     dx: 7 N values. With the residual the sums also write its gradient (the masked g), which
//     the dx pass reads instead of g and y: 7 N again. Ideal: 4 N (g, y, x, dx), 5 N with the
//     residual's gradient.
//   layer norm forward: x read once, y written (2 N); backward: g, x read, dx written (3 N).
//   softmax forward: 2 N; backward: g, y read, dx written (3 N).
// Statistics, per-row values and parameter-gradient partials are small and not counted.
#include "cuda_bench_util.h"
#include "kernels/norm.h"
#include "kernels/softmax.h"
#include "tensor/tensor.h"

namespace {

using namespace siam;

const Device kGpu = Device::cuda(0);

DType dtype_arg(int64_t v) { return v ? DType::bf16 : DType::f32; }

// An (N, C, H, W) device tensor filled with `value`, stored NCHW or channels-last.
Tensor filled(const Shape& s, DType dt, bool channels_last, double value) {
  if (!channels_last) return full(s, value, {dt, kGpu});
  Tensor base = full({s[0], s[2], s[3], s[1]}, value, {dt, kGpu});
  return base.as_strided(s, {s[2] * s[3] * s[1], 1, s[3] * s[1], s[1]}, 0);
}

std::string label(DType dt, bool channels_last, bool residual) {
  return std::string(dtype_name(dt)) + (channels_last ? " NHWC" : " NCHW") + (residual ? " +residual" : "");
}

// args: N, C, H, W, bf16, channels_last, residual
void BM_batch_norm_relu_forward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const Shape s{state.range(0), state.range(1), state.range(2), state.range(3)};
  const DType dt = dtype_arg(state.range(4));
  const bool cl = state.range(5), res = state.range(6);
  Tensor x = filled(s, dt, cl, 0.5), r = res ? filled(s, dt, cl, 0.25) : Tensor();
  // Constant x still exercises every pass: the statistics of a constant channel are valid.
  Tensor w = full({s[1]}, 1.0, {dt, kGpu}), b = full({s[1]}, 0.1, {dt, kGpu});
  Tensor rm = full({s[1]}, 0.0, {dt, kGpu}), rv = full({s[1]}, 1.0, {dt, kGpu});
  const double n = static_cast<double>(x.numel()) * dtype_size(dt);
  for (auto _ : state) {
    double ms = bench::gpu_ms([&] { kernels::batch_norm_act_forward(x, w, b, rm, rv, r, true, true, 0.1, 1e-5); });
    bench::report_bandwidth(state, ms, (res ? 4 : 3) * n);
    state.counters["of_copy_ideal"] = (res ? 3 : 2) * n / (ms * 1e-3) / bench::copy_bandwidth();
  }
  state.SetLabel(label(dt, cl, res));
}

void BM_batch_norm_relu_backward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const Shape s{state.range(0), state.range(1), state.range(2), state.range(3)};
  const DType dt = dtype_arg(state.range(4));
  const bool cl = state.range(5), res = state.range(6);
  Tensor x = filled(s, dt, cl, 0.5), g = filled(s, dt, cl, 0.125);
  Tensor w = full({s[1]}, 1.0, {dt, kGpu}), b = full({s[1]}, 0.1, {dt, kGpu});
  kernels::NormForward f = kernels::batch_norm_act_forward(x, w, b, Tensor(), Tensor(), Tensor(), true, true, 0.1, 1e-5);
  const double n = static_cast<double>(x.numel()) * dtype_size(dt);
  for (auto _ : state) {
    double ms = bench::gpu_ms([&] {
      kernels::batch_norm_act_backward(g, f.y, x, w, f.mean, f.invstd, true, true, {true, true, true, res});
    });
    bench::report_bandwidth(state, ms, 7 * n);
    state.counters["of_copy_ideal"] = (res ? 5 : 4) * n / (ms * 1e-3) / bench::copy_bandwidth();
  }
  state.SetLabel(label(dt, cl, res));
}

// args: rows, d, bf16
void BM_layer_norm_forward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t rows = state.range(0), d = state.range(1);
  const DType dt = dtype_arg(state.range(2));
  Tensor x = full({rows, d}, 0.5, {dt, kGpu}), w = full({d}, 1.0, {dt, kGpu}), b = full({d}, 0.0, {dt, kGpu});
  const double n = static_cast<double>(x.numel()) * dtype_size(dt);
  for (auto _ : state) {
    double ms = bench::gpu_ms([&] { kernels::layer_norm_forward(x, d, w, b, 1e-6); });
    bench::report_bandwidth(state, ms, 2 * n);
  }
  state.SetLabel(dtype_name(dt));
}

void BM_layer_norm_backward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t rows = state.range(0), d = state.range(1);
  const DType dt = dtype_arg(state.range(2));
  Tensor x = full({rows, d}, 0.5, {dt, kGpu}), g = full({rows, d}, 0.25, {dt, kGpu}), w = full({d}, 1.0, {dt, kGpu});
  kernels::NormForward f = kernels::layer_norm_forward(x, d, w, Tensor(), 1e-6);
  const double n = static_cast<double>(x.numel()) * dtype_size(dt);
  for (auto _ : state) {
    double ms = bench::gpu_ms([&] { kernels::layer_norm_backward(g, x, d, w, f.mean, f.invstd, {true, true, true}); });
    bench::report_bandwidth(state, ms, 3 * n);
  }
  state.SetLabel(dtype_name(dt));
}

// args: rows, d, bf16
void BM_softmax_forward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t rows = state.range(0), d = state.range(1);
  const DType dt = dtype_arg(state.range(2));
  Tensor x = full({rows, d}, 0.5, {dt, kGpu});
  const double n = static_cast<double>(x.numel()) * dtype_size(dt);
  for (auto _ : state) {
    double ms = bench::gpu_ms([&] { kernels::softmax(x, 1, false); });
    bench::report_bandwidth(state, ms, 2 * n);
  }
  state.SetLabel(dtype_name(dt));
}

void BM_softmax_backward(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t rows = state.range(0), d = state.range(1);
  const DType dt = dtype_arg(state.range(2));
  Tensor y = full({rows, d}, 1.0 / static_cast<double>(d), {dt, kGpu}), g = full({rows, d}, 0.5, {dt, kGpu});
  const double n = static_cast<double>(y.numel()) * dtype_size(dt);
  for (auto _ : state) {
    double ms = bench::gpu_ms([&] { kernels::softmax_backward(g, y, 1, false); });
    bench::report_bandwidth(state, ms, 3 * n);
  }
  state.SetLabel(dtype_name(dt));
}

// ResNet-50 at batch 256: stage 1 (64 and 256 channels at 56x56) and stage 3 (1024 at 14x14).
void bn_args(benchmark::internal::Benchmark* b) {
  for (int64_t bf16 : {1, 0})
    for (int64_t cl : {0, 1}) {
      b->Args({256, 64, 56, 56, bf16, cl, 0});
      b->Args({256, 256, 56, 56, bf16, cl, 0});
      b->Args({256, 256, 56, 56, bf16, cl, 1});  // a block's last BN: + residual, then ReLU
      b->Args({256, 1024, 14, 14, bf16, cl, 0});
      b->Args({256, 1024, 14, 14, bf16, cl, 1});
    }
}

// ViT-S/16 at batch 256: 197 tokens of 384; attention softmax over 6 heads x 197 rows of 197.
void ln_args(benchmark::internal::Benchmark* b) {
  for (int64_t bf16 : {1, 0}) b->Args({256 * 197, 384, bf16});
}
void softmax_args(benchmark::internal::Benchmark* b) {
  for (int64_t bf16 : {1, 0}) {
    b->Args({256 * 6 * 197, 197, bf16});
    b->Args({65536, 1000, bf16});  // a classifier's logits
  }
}

BENCHMARK(BM_batch_norm_relu_forward)->Apply(bn_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_batch_norm_relu_backward)->Apply(bn_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer_norm_forward)->Apply(ln_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer_norm_backward)->Apply(ln_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_forward)->Apply(softmax_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_backward)->Apply(softmax_args)->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
