// CUDA convolution (cuDNN) against the CPU kernels: forward with bias, input, weight and bias
// gradients, over stride, padding, dilation, groups (depthwise too), rectangular and 7x7
// kernels, NCHW and channels-last activations (with the weight in either layout), views that
// cuDNN cannot take as they are; f32 strict, TF32, bf16 and f64.
//
// The reference is the CPU kernel in f64 on the very inputs the GPU gets (rounded to its dtype).
// Errors are bounded relative to `scale`, the same convolution over magnitudes (|x| * |w| +
// |bias|, and likewise for each gradient): error <= s * scale + o * |reference|, with
//   f32   s = 1e-5          FMA only, products summed directly (no FFT / Winograd)
//   TF32  s = 4e-3          inputs rounded to 10 mantissa bits
//   bf16  s = 8e-3, o = 8e-3  f32 accumulation; output, and the forward before its bias, rounded
//                           to 8 bits
//   f64   s = 1e-12
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>

#include "autograd/ops.h"
#include "cuda/cuda_prec_util.h"
#include "kernels/conv.h"
#include "kernels/precision.h"
#include "tensor/cuda_runtime.h"

namespace siam {
namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

using kernels::ConvGeometry;

using test::Prec;
using test::kAllPrec;
using test::prec_name;
using test::prec_dtype;

struct Bound {
  double scale_rel, out_rel;
};
Bound bound_of(Prec p) {
  switch (p) {
    case Prec::f32: return {1e-5, 0};
    case Prec::tf32: return {4e-3, 0};
    case Prec::bf16: return {8e-3, 8e-3};
    case Prec::f64: return {1e-12, 0};
  }
  return {0, 0};
}

// Uniform values in [-1, 1) as an f64 CPU tensor of `shape`, rounded to dt.
Tensor random_values(const Shape& shape, DType dt, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(shape_numel(shape));
  for (double& x : v) x = u(gen);
  return to(to(from_vector(v, shape, {DType::f64}), dt), DType::f64);
}

::testing::AssertionResult within(const Tensor& got, const Tensor& want, const Tensor& scale, Bound b) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.shape()) << ", expected " << shape_str(want.shape());
  std::vector<double> g = copy_to(got, Device::cpu(), DType::f64).to_vector();
  std::vector<double> w = copy_to(want, Device::cpu(), DType::f64).to_vector();
  std::vector<double> s = copy_to(scale, Device::cpu(), DType::f64).to_vector();
  int64_t bad = -1, nbad = 0;
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double excess = std::abs(g[i] - w[i]) - (b.scale_rel * s[i] + b.out_rel * std::abs(w[i]));
    if (std::isnan(g[i]) || excess > 0) {
      ++nbad;
      if (bad < 0 || std::isnan(g[i]) || excess > worst) {
        bad = int64_t(i);
        worst = std::isnan(g[i]) ? INFINITY : excess;
      }
    }
  }
  if (nbad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << nbad << " of " << g.size() << " elements off; worst at flat index " << bad
                                       << ": CUDA " << g[bad] << ", CPU " << w[bad] << ", scale " << s[bad]
                                       << " (bound " << b.scale_rel << " * scale + " << b.out_rel << " * |CPU|)";
}

// t (N, C, H, W) on the CPU -> the same values on the GPU as dtype dt, channels-last (NHWC
// memory) or contiguous.
Tensor to_gpu(const Tensor& t, DType dt, bool channels_last) {
  Device gpu = Device::cuda(0);
  if (!channels_last) return copy_to(t, gpu, dt);
  const Shape& s = t.shape();
  Tensor nhwc = copy_to(contiguous(permute(t, {0, 2, 3, 1})), gpu, dt);
  return nhwc.as_strided(s, {s[2] * s[3] * s[1], 1, s[3] * s[1], s[1]}, 0);
}

bool is_channels_last(const Tensor& t) {
  const Shape& s = t.shape();
  return t.strides() == Shape{s[2] * s[3] * s[1], 1, s[3] * s[1], s[1]};
}

struct ConvCase {
  std::string name;
  int64_t N, C, H, W, O, kh, kw;
  ConvGeometry p;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"basic_3x3", 2, 3, 8, 8, 4, 3, 3, {.pad_h = 1, .pad_w = 1}},
      {"odd_stride2", 3, 5, 11, 13, 7, 3, 3, {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1}},
      {"groups3", 2, 6, 9, 9, 9, 3, 3, {.pad_h = 1, .pad_w = 1, .groups = 3}},
      {"depthwise", 2, 8, 10, 10, 8, 3, 3, {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .groups = 8}},
      {"dilation2", 2, 4, 12, 12, 5, 3, 3, {.pad_h = 2, .pad_w = 2, .dil_h = 2, .dil_w = 2}},
      {"pointwise_stride2", 2, 16, 14, 14, 32, 1, 1, {.stride_h = 2, .stride_w = 2}},
      {"stem_7x7", 2, 3, 32, 32, 16, 7, 7, {.stride_h = 2, .stride_w = 2, .pad_h = 3, .pad_w = 3}},
      {"rect", 2, 4, 9, 7, 6, 3, 2, {.stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 0, .dil_h = 1, .dil_w = 2}},
      {"resnet_like", 8, 64, 28, 28, 64, 3, 3, {.pad_h = 1, .pad_w = 1}},
  };
}

enum class Layout { nchw, cl_x, cl_all };  // x (and gy) channels-last; cl_all: the weight too
const char* layout_name(Layout l) { return l == Layout::nchw ? "NCHW" : l == Layout::cl_x ? "channels-last x" : "channels-last x and w"; }

void run_conv_case(const ConvCase& k, Prec p, Layout layout) {
  std::ostringstream what;
  what << k.name << ", " << prec_name(p) << ", " << layout_name(layout);
  SCOPED_TRACE(what.str());
  DType dt = prec_dtype(p);
  kernels::Tf32Guard tf32(p == Prec::tf32);
  const ConvGeometry& g = k.p;
  Shape xs{k.N, k.C, k.H, k.W}, ws{k.O, k.C / g.groups, k.kh, k.kw};
  int64_t Ho = kernels::conv_out_size(k.H, k.kh, g.stride_h, g.pad_h, g.dil_h);
  int64_t Wo = kernels::conv_out_size(k.W, k.kw, g.stride_w, g.pad_w, g.dil_w);
  Shape ys{k.N, k.O, Ho, Wo};
  Tensor x = random_values(xs, dt, 1), w = random_values(ws, dt, 2), b = random_values({k.O}, dt, 3);
  Tensor gy = random_values(ys, dt, 4);
  bool cl = layout != Layout::nchw;
  Tensor gx = to_gpu(x, dt, cl), gw = to_gpu(w, dt, layout == Layout::cl_all), gb = copy_to(b, Device::cuda(0), dt);
  Tensor ggy = to_gpu(gy, dt, cl);
  Bound bound = bound_of(p);

  Tensor y = kernels::conv2d(gx, gw, gb, g);
  EXPECT_TRUE(within(y, kernels::conv2d(x, w, b, g), kernels::conv2d(abs(x), abs(w), abs(b), g), bound)) << "forward";
  bool cl_kept = cl && p != Prec::f64 && k.C > 1 && k.H * k.W > 1;  // f64 and ambiguous shapes run NCHW
  if (cl_kept && k.O > 1 && Ho * Wo > 1) {
    EXPECT_TRUE(is_channels_last(y)) << "forward output strides " << shape_str(y.strides());
  }
  if (!cl) {
    EXPECT_TRUE(y.is_contiguous());
  }

  Tensor dx = kernels::conv2d_grad_input(ggy, gw, xs, g);
  EXPECT_TRUE(within(dx, kernels::conv2d_grad_input(gy, w, xs, g), kernels::conv2d_grad_input(abs(gy), abs(w), xs, g),
                     bound))
      << "input gradient";
  if (!cl) {
    EXPECT_TRUE(dx.is_contiguous());
  }

  Tensor dw = kernels::conv2d_grad_weight(ggy, gx, ws, g);
  EXPECT_TRUE(within(dw, kernels::conv2d_grad_weight(gy, x, ws, g), kernels::conv2d_grad_weight(abs(gy), abs(x), ws, g),
                     bound))
      << "weight gradient";
  EXPECT_TRUE(dw.is_contiguous()) << "the weight gradient must have the parameter's (O, C/g, kH, kW) layout";

  Tensor db = kernels::conv2d_grad_bias(ggy);
  EXPECT_TRUE(within(db, kernels::conv2d_grad_bias(gy), kernels::conv2d_grad_bias(abs(gy)), bound)) << "bias gradient";
}

TEST(CudaConv, MatchesCpu) {
  REQUIRE_GPU();
  for (const ConvCase& k : conv_cases())
    for (Prec p : kAllPrec)
      for (Layout l : {Layout::nchw, Layout::cl_x, Layout::cl_all}) run_conv_case(k, p, l);
}

// Views cuDNN cannot take as they lie (narrowed width, an offset start) are copied first.
TEST(CudaConv, StridedViews) {
  REQUIRE_GPU();
  kernels::Tf32Guard off(false);
  ConvGeometry g{.pad_h = 1, .pad_w = 1};
  Tensor base = random_values({2, 3, 9, 12}, DType::f32, 5), w = random_values({4, 3, 3, 3}, DType::f32, 6);
  Tensor x = narrow(base, 3, 1, 9);  // (2, 3, 9, 9) with row stride 12, offset 1
  Tensor gbase = copy_to(base, Device::cuda(0), DType::f32);
  Tensor gx = narrow(gbase, 3, 1, 9);
  Tensor y = kernels::conv2d(gx, copy_to(w, Device::cuda(0), DType::f32), Tensor(), g);
  EXPECT_TRUE(within(y, kernels::conv2d(x, w, Tensor(), g), kernels::conv2d(abs(x), abs(w), Tensor(), g),
                     bound_of(Prec::f32)));
  // A bias gradient from a gy whose planes do not merge.
  Tensor gy = narrow(random_values({2, 4, 9, 11}, DType::f32, 7), 3, 2, 9);
  Tensor ggy = narrow(copy_to(random_values({2, 4, 9, 11}, DType::f32, 7), Device::cuda(0), DType::f32), 3, 2, 9);
  EXPECT_TRUE(within(kernels::conv2d_grad_bias(ggy), kernels::conv2d_grad_bias(gy), kernels::conv2d_grad_bias(abs(gy)),
                     bound_of(Prec::f32)));
}

// A large bias-gradient reduction (several blocks per channel): summed in double and rounded
// once, so within one rounding of the f64 result, NCHW and channels-last alike.
TEST(CudaConv, LargeBiasGradient) {
  REQUIRE_GPU();
  Tensor gy = random_values({64, 32, 56, 56}, DType::f32, 8);
  Tensor scale = kernels::conv2d_grad_bias(abs(gy));
  for (bool cl : {false, true})
    for (DType dt : {DType::f32, DType::bf16}) {
      Tensor gyr = to(to(gy, dt), DType::f64);
      Tensor wantr = kernels::conv2d_grad_bias(gyr);
      Tensor got = kernels::conv2d_grad_bias(to_gpu(gyr, dt, cl));
      double one_rounding = dt == DType::f32 ? 1.2e-7 : 8e-3;
      EXPECT_TRUE(within(got, wantr, scale, {1e-12, one_rounding})) << (cl ? "channels-last " : "NCHW ") << dtype_name(dt);
    }
}

// TF32 would round 1 + 2^-12 to 1; strict f32 sums 288 of them exactly.
TEST(CudaConv, StrictF32DoesNotUseTf32) {
  REQUIRE_GPU();
  Device gpu = Device::cuda(0);
  Tensor x = full({2, 32, 8, 8}, 1.0 + std::ldexp(1.0, -12), {DType::f32, gpu});
  Tensor w = full({16, 32, 3, 3}, 1.0, {DType::f32, gpu});
  kernels::Tf32Guard off(false);
  std::vector<double> v = kernels::conv2d(x, w, Tensor(), {}).to_vector();
  double want = 288.0 * (1.0 + std::ldexp(1.0, -12));
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], want) << "element " << i << ": TF32 rounding in strict f32";
}

// Deterministic algorithms come first: the same gradients bit for bit on a second run.
TEST(CudaConv, RepeatsBitForBit) {
  REQUIRE_GPU();
  ConvGeometry g{.pad_h = 1, .pad_w = 1};
  for (DType dt : {DType::f32, DType::bf16})
    for (bool cl : {false, true}) {
      kernels::Tf32Guard tf32(true);
      Tensor x = to_gpu(random_values({16, 64, 28, 28}, dt, 9), dt, cl);
      Tensor gy = to_gpu(random_values({16, 64, 28, 28}, dt, 10), dt, cl);
      Tensor w = to_gpu(random_values({64, 64, 3, 3}, dt, 11), dt, cl);
      auto run = [&] {
        std::vector<double> r = kernels::conv2d_grad_weight(gy, x, {64, 64, 3, 3}, g).to_vector();
        std::vector<double> d = kernels::conv2d_grad_input(gy, w, {16, 64, 28, 28}, g).to_vector();
        r.insert(r.end(), d.begin(), d.end());
        return r;
      };
      EXPECT_EQ(run(), run()) << dtype_name(dt) << (cl ? " channels-last" : " NCHW");
    }
}

}  // namespace
}  // namespace siam
