// Fused optimizer / EMA updates over ResNet-50's parameter list (161 tensors, 25.6M f32
// parameters in torchvision's shapes), and the fused SSL losses at training sizes.
//
// Memory-bound figures count the bytes each update must move per parameter (f32):
//   SGD with momentum  read p, g, buf; write p, buf           20 B
//   LARS               + the norm pass reading p, g again     28 B
//   AdamW              read p, g, m, v; write p, m, v         28 B
//   EMA                read target, source; write target      12 B
// `of_copy` is that bandwidth as a fraction of a device-to-device copy measured in the same
// run. BM_cuda_sgd_per_tensor makes one call per tensor, the launch pattern the multi-tensor
// batches replace.
#include <vector>

#include "cuda_bench_util.h"
#include "kernels/optim.h"
#include "kernels/ssl_loss.h"
#include "nn/resnet.h"
#include "tensor/rng.h"

namespace {

using namespace siam;

const Device kGpu = Device::cuda(0);

std::vector<Shape> resnet50_shapes() {
  static const std::vector<Shape> shapes = [] {
    nn::ResNet net(nn::ResNetConfig{});
    std::vector<Shape> out;
    for (const auto& [name, p] : net.named_parameters()) out.push_back(p.shape());
    return out;
  }();
  return shapes;
}

std::vector<Tensor> filled(double value) {
  std::vector<Tensor> out;
  for (const Shape& s : resnet50_shapes()) {
    Tensor t = empty(s, {DType::f32, kGpu});
    fill_(t, value);
    out.push_back(t);
  }
  return out;
}

double parameter_count() {
  double n = 0;
  for (const Shape& s : resnet50_shapes()) n += static_cast<double>(shape_numel(s));
  return n;
}

void finish(benchmark::State& state, double ms, double bytes_per_param) {
  const double n = parameter_count();
  for (auto _ : state) bench::report_bandwidth(state, ms, bytes_per_param * n);
  state.counters["params"] = n;
  state.counters["tensors"] = static_cast<double>(resnet50_shapes().size());
}

void BM_cuda_sgd_resnet50(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  std::vector<Tensor> p = filled(0.5), g = filled(0.01), buf = filled(0.0);
  kernels::SgdHyper h{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = false};
  finish(state, bench::gpu_ms([&] { kernels::sgd_update(p, g, buf, h); }), 20);
}
BENCHMARK(BM_cuda_sgd_resnet50)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_sgd_per_tensor(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  std::vector<Tensor> p = filled(0.5), g = filled(0.01), buf = filled(0.0);
  kernels::SgdHyper h{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4, .nesterov = false};
  finish(state, bench::gpu_ms([&] {
           for (size_t i = 0; i < p.size(); ++i) kernels::sgd_update({p[i]}, {g[i]}, {buf[i]}, h);
         }),
         20);
}
BENCHMARK(BM_cuda_sgd_per_tensor)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_lars_resnet50(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  std::vector<Tensor> p = filled(0.5), g = filled(0.01), buf = filled(0.0);
  kernels::LarsHyper h{.lr = 0.3, .momentum = 0.9, .weight_decay = 1e-6, .eta = 1e-3, .adapt = true};
  finish(state, bench::gpu_ms([&] { kernels::lars_update(p, g, buf, h); }), 28);
}
BENCHMARK(BM_cuda_lars_resnet50)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_adamw_resnet50(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  std::vector<Tensor> p = filled(0.5), g = filled(0.01), m = filled(0.0), v = filled(0.0);
  std::vector<int64_t> steps(p.size(), 10);
  kernels::AdamWHyper h{.lr = 1e-3, .weight_decay = 0.05};
  finish(state, bench::gpu_ms([&] { kernels::adamw_update(p, g, m, v, steps, h); }), 28);
}
BENCHMARK(BM_cuda_adamw_resnet50)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

void BM_cuda_ema_resnet50(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  std::vector<Tensor> target = filled(0.5), source = filled(0.4);
  finish(state, bench::gpu_ms([&] { kernels::ema_update(target, source, 0.996); }), 12);
}
BENCHMARK(BM_cuda_ema_resnet50)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

// NT-Xent forward + backward, M = 512 rows of d = 128 (SimCLR's pairs, f32 inputs, f64
// arithmetic): 2 M^2 d flops for the forward similarities, 4 M^2 d for the backward's
// similarities and dz.
void BM_cuda_nt_xent_fwd_bwd(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t m = state.range(0), d = state.range(1);
  Generator gen(1);
  Tensor z = copy_to(randn({m, d}, gen), kGpu, DType::f32);
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  const double ms = bench::gpu_ms([&] {
    kernels::NtXentSaved s = kernels::nt_xent_forward(z, Tensor(), 0.1);
    kernels::nt_xent_backward(one, z, Tensor(), s, 0.1);
  });
  for (auto _ : state) bench::report_flops(state, ms, 6.0 * m * m * d);
}
BENCHMARK(BM_cuda_nt_xent_fwd_bwd)->Args({512, 128})->Args({4096, 128})->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

// DINO forward + backward, 2 global + 6 local crops x 64 images x 65536 outputs (f32). Bytes:
// the forward reads student and teacher once each at least, the backward reads both and
// writes d student.
void BM_cuda_dino_fwd_bwd(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const int64_t crops = 8, teacher_crops = 2, b = 64, k = 65536;
  Generator gen(2);
  Tensor x = copy_to(randn({crops * b, k}, gen), kGpu, DType::f32);
  Tensor y = copy_to(randn({teacher_crops * b, k}, gen), kGpu, DType::f32);
  Tensor c = zeros({k}, {DType::f32, kGpu});
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  const double ms = bench::gpu_ms([&] {
    kernels::DinoSaved s = kernels::dino_loss_forward(x, y, c, crops, 0.1, 0.04);
    kernels::dino_loss_backward(one, x, y, c, s, crops, 0.1, 0.04);
  });
  const double bytes = 4.0 * k * ((crops + teacher_crops) * b * 2 + crops * b);
  for (auto _ : state) bench::report_bandwidth(state, ms, bytes);
}
BENCHMARK(BM_cuda_dino_fwd_bwd)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

}  // namespace
