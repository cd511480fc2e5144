// GEMM (cuBLASLt) and convolution (cuDNN) throughput through siam's kernel entry points, at the
// shapes of the fast path: ViT-S/16 at batch 256 (197 tokens, width 384, 6 heads of 64), the
// ResNet-50 SSL projector (2048 wide, batch 512), and ResNet-50's convolutions at batch 256 and
// 224 px, channels-last. Each in f32 strict, TF32 and bf16. TFLOP/s counts 2 flops per
// multiply-add; the label names the shape and precision.
#include <string>

#include "cuda_bench_util.h"
#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/precision.h"
#include "tensor/tensor.h"

namespace {

using namespace siam;

enum Prec { kF32, kTf32, kBf16 };
const char* prec_label(int64_t p) { return p == kF32 ? "f32-strict" : p == kTf32 ? "tf32" : "bf16"; }
DType prec_dtype(int64_t p) { return p == kBf16 ? DType::bf16 : DType::f32; }

// A constant-filled tensor on the GPU (values do not change GEMM or convolution speed).
Tensor filled(const Shape& s, DType dt) {
  Tensor t = empty(s, {dt, Device::cuda(0)});
  fill_(t, 0.01);
  return t;
}

// (N, C, H, W) with channels-last memory.
Tensor filled_channels_last(const Shape& s, DType dt) {
  Tensor mem = filled({s[0], s[2], s[3], s[1]}, dt);
  return mem.as_strided(s, {s[2] * s[3] * s[1], 1, s[3] * s[1], s[1]}, 0);
}

struct GemmShape {
  const char* name;
  int64_t batch, m, n, k;
  bool tb;  // b stored (n, k): a linear layer's weight, or k in q @ k^T
};
const GemmShape kGemm[] = {
    {"vit_qkv_50432x384x1152", 1, 256 * 197, 1152, 384, true},
    {"vit_mlp_fc1_50432x384x1536", 1, 256 * 197, 1536, 384, true},
    {"vit_mlp_fc2_50432x1536x384", 1, 256 * 197, 384, 1536, true},
    {"vit_attn_qk_1536x197x197x64", 256 * 6, 197, 197, 64, true},
    {"vit_attn_av_1536x197x64x197", 256 * 6, 197, 64, 197, false},
    {"projector_512x2048x2048", 1, 512, 2048, 2048, true},
};

void BM_gemm(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const GemmShape& s = kGemm[state.range(0)];
  int64_t prec = state.range(1);
  DType dt = prec_dtype(prec);
  kernels::Tf32Guard tf32(prec == kTf32);
  Tensor a = filled({s.batch, s.m, s.k}, dt);
  Tensor b = filled(s.tb ? Shape{s.batch, s.n, s.k} : Shape{s.batch, s.k, s.n}, dt);
  Tensor c = empty({s.batch, s.m, s.n}, {dt, Device::cuda(0)});
  auto fn = [&] { kernels::gemm(false, s.tb, 1.0, a, b, 0.0, c); };
  for (auto _ : state) bench::report_flops(state, bench::gpu_ms(fn), 2.0 * s.batch * s.m * s.n * s.k);
  state.SetLabel(std::string(s.name) + " " + prec_label(prec));
}
BENCHMARK(BM_gemm)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {kF32, kTf32, kBf16}})->UseManualTime()->Iterations(1);

// The fused fast-path linear layer: ViT MLP fc1 with bias and GELU in cuBLASLt's epilogue.
void BM_linear_gelu(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  int64_t prec = state.range(0), rows = 256 * 197, k = 384, n = 1536;
  DType dt = prec_dtype(prec);
  kernels::Tf32Guard tf32(prec == kTf32);
  Tensor x = filled({rows, k}, dt), w = filled({n, k}, dt), bias = filled({n}, dt);
  auto fn = [&] { kernels::linear_epilogue(x, w, bias, kernels::Epilogue::gelu_tanh); };
  for (auto _ : state) bench::report_flops(state, bench::gpu_ms(fn), 2.0 * rows * n * k);
  state.SetLabel(std::string("vit_mlp_fc1_bias_gelu ") + prec_label(prec));
}
BENCHMARK(BM_linear_gelu)->DenseRange(kF32, kBf16)->UseManualTime()->Iterations(1);

struct ConvShape {
  const char* name;
  int64_t N, C, H, W, O, k, stride, pad;
};
const ConvShape kConv[] = {
    {"stem_7x7s2_3to64_224px", 256, 3, 224, 224, 64, 7, 2, 3},
    {"layer1_3x3_64to64_56px", 256, 64, 56, 56, 64, 3, 1, 1},
    {"layer3_3x3_256to256_14px", 256, 256, 14, 14, 256, 3, 1, 1},
    {"layer3_1x1_1024to256_14px", 256, 1024, 14, 14, 256, 1, 1, 0},
};
enum Pass { kForward, kGradInput, kGradWeight };
const char* pass_label(int64_t p) { return p == kForward ? "forward" : p == kGradInput ? "grad_input" : "grad_weight"; }

void BM_conv(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const ConvShape& s = kConv[state.range(0)];
  int64_t pass = state.range(1), prec = state.range(2);
  DType dt = prec_dtype(prec);
  kernels::Tf32Guard tf32(prec == kTf32);
  kernels::ConvGeometry g{s.stride, s.stride, s.pad, s.pad, 1, 1, 1};
  int64_t Ho = kernels::conv_out_size(s.H, s.k, s.stride, s.pad, 1), Wo = kernels::conv_out_size(s.W, s.k, s.stride, s.pad, 1);
  Shape xs{s.N, s.C, s.H, s.W}, ws{s.O, s.C, s.k, s.k};
  Tensor x = filled_channels_last(xs, dt), w = filled_channels_last(ws, dt);
  Tensor gy = filled_channels_last({s.N, s.O, Ho, Wo}, dt);
  auto fn = [&] {
    if (pass == kForward) kernels::conv2d(x, w, Tensor(), g);
    else if (pass == kGradInput) kernels::conv2d_grad_input(gy, w, xs, g);
    else kernels::conv2d_grad_weight(gy, x, ws, g);
  };
  double flops = 2.0 * s.N * s.O * Ho * Wo * s.C * s.k * s.k;
  for (auto _ : state) bench::report_flops(state, bench::gpu_ms(fn), flops);
  state.SetLabel(std::string(s.name) + " " + pass_label(pass) + " " + prec_label(prec) + " channels-last");
}
BENCHMARK(BM_conv)
    ->ArgsProduct({{0, 1, 2, 3}, {kForward, kGradInput, kGradWeight}, {kF32, kTf32, kBf16}})
    ->UseManualTime()
    ->Iterations(1);

}  // namespace
