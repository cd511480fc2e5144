// CPU GEMM and convolution throughput in f32: siam's matmul beside raw cblas_sgemm on the same
// sizes (the gap is siam's overhead), and conv2d forward and backward at ResNet-50 layer shapes.
// Threads follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS; wall-clock time, since work is threaded.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "autograd/ops.h"
#include "kernels/conv.h"

namespace {

using namespace siam;

std::vector<double> values(int64_t n) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = philox_uniform(7, 0, i) - 0.5;
  return v;
}

Tensor filled(const Shape& s) { return from_vector(values(shape_numel(s)), s); }

void set_gflops(benchmark::State& st, double flop) {
  st.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// GEMM sizes {m, n, k}: a square one, then ResNet-50's per-image im2col GEMMs and its classifier.
void gemm_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "n", "k"});
  b->Args({1024, 1024, 1024});
  b->Args({64, 3136, 576});   // layer1 3x3, 56x56
  b->Args({256, 3136, 64});   // layer1 1x1 expand, 56x56
  b->Args({512, 49, 4608});   // layer4 3x3, 7x7
  b->Args({32, 1000, 2048});  // fc, batch 32
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

void BM_matmul(benchmark::State& st) {
  int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  Tensor a = filled({m, k}), b = filled({k, n});
  NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(matmul(a, b).raw_data());
  set_gflops(st, 2.0 * m * n * k);
}
BENCHMARK(BM_matmul)->Apply(gemm_sizes);

void BM_cblas_sgemm(benchmark::State& st) {
  int m = int(st.range(0)), n = int(st.range(1)), k = int(st.range(2));
  std::vector<float> a(size_t(m) * k, 0.25f), b(size_t(k) * n, 0.5f), c(size_t(m) * n);
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  set_gflops(st, 2.0 * m * n * k);
}
BENCHMARK(BM_cblas_sgemm)->Apply(gemm_sizes);

// ResNet-50 convolutions {N, C, H (= W), O, kernel, stride, pad} at small batches, then the
// CPU demo's width-8 small-input ResNet-18 on a batch of 32 pairs of 24-pixel views.
void conv_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "C", "H", "O", "k", "s", "p"});
  b->Args({2, 3, 224, 64, 7, 2, 3});   // stem
  b->Args({4, 64, 56, 64, 3, 1, 1});   // layer1 3x3
  b->Args({4, 256, 56, 64, 1, 1, 0});  // layer1 1x1 reduce
  b->Args({4, 256, 14, 256, 3, 1, 1}); // layer3 3x3
  b->Args({4, 512, 7, 512, 3, 1, 1});  // layer4 3x3
  b->Args({64, 1, 24, 8, 3, 1, 1});    // width 8: stem
  b->Args({64, 8, 24, 8, 3, 1, 1});    // width 8: layer1 3x3
  b->Args({64, 16, 12, 16, 3, 1, 1});  // width 8: layer2 3x3
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

struct ConvCase {
  Shape x, w;
  kernels::ConvGeometry geo;
  double flop;  // multiply-adds of one pass, times 2
};

ConvCase conv_case(const benchmark::State& st) {
  int64_t N = st.range(0), C = st.range(1), H = st.range(2), O = st.range(3), k = st.range(4), s = st.range(5),
          p = st.range(6);
  int64_t Ho = kernels::conv_out_size(H, k, s, p, 1);
  return {{N, C, H, H}, {O, C, k, k}, {s, s, p, p, 1, 1, 1}, 2.0 * N * O * Ho * Ho * C * k * k};
}

void BM_conv2d_forward(benchmark::State& st) {
  ConvCase c = conv_case(st);
  Tensor x = filled(c.x), w = filled(c.w), b = filled({c.w[0]});
  Conv2dParams p{c.geo.stride_h, c.geo.stride_w, c.geo.pad_h, c.geo.pad_w, 1, 1, 1};
  NoGradGuard ng;
  for (auto _ : st) benchmark::DoNotOptimize(conv2d(x, w, b, p).raw_data());
  set_gflops(st, c.flop);
}
BENCHMARK(BM_conv2d_forward)->Apply(conv_shapes);

// Input and weight gradients: two passes of the forward's work.
void BM_conv2d_backward(benchmark::State& st) {
  ConvCase c = conv_case(st);
  Tensor x = filled(c.x), w = filled(c.w);
  Tensor gy = filled(kernels::conv2d(x, w, Tensor(), c.geo).shape());
  for (auto _ : st) {
    benchmark::DoNotOptimize(kernels::conv2d_grad_input(gy, w, c.x, c.geo).raw_data());
    benchmark::DoNotOptimize(kernels::conv2d_grad_weight(gy, x, c.w, c.geo).raw_data());
  }
  set_gflops(st, 2.0 * c.flop);
}
BENCHMARK(BM_conv2d_backward)->Apply(conv_shapes);

}  // namespace
