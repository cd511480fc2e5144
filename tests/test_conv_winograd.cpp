// The CPU convolution against a direct loop convolution computed here in double: forward,
// input gradient and weight gradient, over shapes the op fixtures do not reach. The backward
// passes of 3x3 stride-1 kernels run Winograd F(2x2, 3x3) (kernels/cpu/winograd.h), or with
// fewer than 16 channels direct loops in all three passes (kernels/cpu/direct_conv.h), the
// forward pass of stride-1 kernels on wide planes one GEMM per tap ("shifted"), everything
// else im2col with several images per GEMM (kernels/cpu/conv.cpp); the cases cover odd planes
// that leave partial tiles, padding 0 to 2 and unequal, many channels, batches cut into several
// GEMM batches with a short last one, and one and two threads.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/conv.h"
#include "tensor/rng.h"

namespace siam {
namespace {

struct Case {
  int64_t N, C, H, W, O, k, stride, ph, pw;
};

struct Direct {
  std::vector<double> y, dx, dw;
};

// The definition, looped: y = conv(x, w) + b; dx and dw for the output gradient gy.
Direct direct(const Case& c, const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
              const std::vector<double>& gy, int64_t Ho, int64_t Wo) {
  Direct r{std::vector<double>(c.N * c.O * Ho * Wo), std::vector<double>(x.size(), 0.0),
           std::vector<double>(w.size(), 0.0)};
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t o = 0; o < c.O; ++o)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const int64_t yi = ((n * c.O + o) * Ho + oh) * Wo + ow;
          double s = b[o];
          for (int64_t ch = 0; ch < c.C; ++ch)
            for (int64_t i = 0; i < c.k; ++i)
              for (int64_t j = 0; j < c.k; ++j) {
                const int64_t ih = oh * c.stride - c.ph + i, iw = ow * c.stride - c.pw + j;
                if (ih < 0 || ih >= c.H || iw < 0 || iw >= c.W) continue;
                const int64_t xi = ((n * c.C + ch) * c.H + ih) * c.W + iw, wi = ((o * c.C + ch) * c.k + i) * c.k + j;
                s += w[wi] * x[xi];
                r.dx[xi] += w[wi] * gy[yi];
                r.dw[wi] += x[xi] * gy[yi];
              }
          r.y[yi] = s;
        }
  return r;
}

std::vector<double> values(const Tensor& t) {
  Tensor d = t.dtype() == DType::f64 ? t : copy_to(t, t.device(), DType::f64);
  const double* p = d.data<double>();
  return std::vector<double>(p, p + d.numel());
}

// Every element within tol of the reference, relative to the reference's largest magnitude.
void expect_close(const Tensor& got, const std::vector<double>& want, double tol, const std::string& what) {
  std::vector<double> g = values(got);
  ASSERT_EQ(g.size(), want.size()) << what;
  double scale = 1e-30, worst = 0;
  int64_t at = 0;
  for (double v : want) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < g.size(); ++i)
    if (std::abs(g[i] - want[i]) > worst) worst = std::abs(g[i] - want[i]), at = static_cast<int64_t>(i);
  EXPECT_LE(worst / scale, tol) << what << ": element " << at << " is " << g[at] << ", want " << want[at];
}

void check(const Case& c, int threads) {
  const int prev = omp_get_max_threads();
  omp_set_num_threads(threads);
  Generator gen(1234);
  TensorOptions f64{DType::f64, Device::cpu()};
  kernels::ConvGeometry geo{c.stride, c.stride, c.ph, c.pw, 1, 1, 1};
  const int64_t Ho = kernels::conv_out_size(c.H, c.k, c.stride, c.ph, 1);
  const int64_t Wo = kernels::conv_out_size(c.W, c.k, c.stride, c.pw, 1);
  Tensor x = randn({c.N, c.C, c.H, c.W}, gen, f64), w = randn({c.O, c.C, c.k, c.k}, gen, f64),
         b = randn({c.O}, gen, f64), gy = randn({c.N, c.O, Ho, Wo}, gen, f64);
  Direct ref = direct(c, values(x), values(w), values(b), values(gy), Ho, Wo);
  for (DType dt : {DType::f64, DType::f32}) {
    // f32: every term rounds once or twice; sums of up to C * 9 (forward, input gradient) or
    // N * Ho * Wo (weight gradient) terms.
    const double tol = dt == DType::f64 ? 1e-12 : 2e-5;
    auto as = [&](const Tensor& t) { return dt == DType::f64 ? t : copy_to(t, t.device(), dt); };
    std::string what = std::string(dtype_name(dt)) + " N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " " +
                       std::to_string(c.H) + "x" + std::to_string(c.W) + " O" + std::to_string(c.O) + " pad " +
                       std::to_string(c.ph) + "," + std::to_string(c.pw) + " threads " + std::to_string(threads);
    expect_close(kernels::conv2d(as(x), as(w), as(b), geo), ref.y, tol, "forward " + what);
    expect_close(kernels::conv2d_grad_input(as(gy), as(w), x.shape(), geo), ref.dx, tol, "grad input " + what);
    expect_close(kernels::conv2d_grad_weight(as(gy), as(x), w.shape(), geo), ref.dw, tol, "grad weight " + what);
  }
  omp_set_num_threads(prev);
}

TEST(ConvCpu, WinogradMatchesDirect) {
  // Winograd (backward) needs 16 or more input and output channels (kernels/cpu/conv.cpp).
  const std::vector<Case> cases = {
      {1, 16, 1, 1, 16, 3, 1, 1, 1},   // a single value: one tile, all padding but its centre
      {2, 16, 5, 5, 17, 3, 1, 1, 1},   // odd plane: the last tile row and column are half outside
      {2, 17, 6, 7, 16, 3, 1, 0, 0},   // no padding
      {3, 16, 4, 6, 16, 3, 1, 2, 2},   // padding 2: the input gradient runs with padding 0
      {2, 16, 7, 5, 18, 3, 1, 1, 0},   // unequal padding
      {2, 16, 2, 9, 16, 3, 1, 1, 2},   // two rows
      {37, 16, 4, 4, 24, 3, 1, 1, 1},  // many images: several GEMM batches, the last one short
      {5, 40, 7, 7, 33, 3, 1, 1, 1},   // channel counts that are no power of two
  };
  for (const Case& c : cases)
    for (int threads : {1, 2}) check(c, threads);
}

TEST(ConvCpu, ShiftedGemmMatchesDirect) {
  // The shifted forward needs planes 24 or more wide and 16 or more input channels.
  const std::vector<Case> cases = {
      {3, 16, 5, 24, 8, 3, 1, 1, 1},   // 3x3, padding 1
      {2, 17, 4, 27, 5, 3, 1, 0, 0},   // no padding: the grid is narrower than the plane
      {2, 16, 6, 27, 4, 5, 1, 2, 1},   // 5x5, unequal padding
      {2, 16, 3, 30, 4, 1, 1, 0, 0},   // 1x1: taken by im2col's pointwise path instead
  };
  for (const Case& c : cases)
    for (int threads : {1, 2}) check(c, threads);
}

TEST(ConvCpu, FewChannelLoopsMatchDirect) {
  // 3x3 stride 1 with at most 15 channels on both sides: output rows go in chunks of 16 floats
  // (8 doubles) and a last chunk of 8 floats; rows are rounded up to 8 values.
  const std::vector<Case> cases = {
      {4, 8, 24, 24, 8, 3, 1, 1, 1},   // a width-8 ResNet's first stage on 24-pixel views
      {3, 1, 7, 5, 8, 3, 1, 1, 1},     // its 1-channel stem; a row narrower than one vector
      {1, 3, 1, 1, 5, 3, 1, 1, 1},     // a single value: all taps but the centre in the padding
      {2, 8, 5, 9, 3, 3, 1, 0, 0},     // no padding; output channels not a multiple of 4
      {2, 4, 6, 17, 7, 3, 1, 2, 2},    // padding 2 (the input gradient runs with none): 19 columns
      {5, 15, 4, 4, 15, 3, 1, 1, 0},   // the most channels the loops take; unequal padding
      {3, 6, 3, 33, 5, 3, 1, 1, 2},    // 35 columns: two whole chunks and a short one
  };
  for (const Case& c : cases)
    for (int threads : {1, 2}) check(c, threads);
}

TEST(ConvCpu, BatchedIm2colMatchesDirect) {
  const std::vector<Case> cases = {
      {37, 6, 4, 4, 10, 3, 2, 1, 1},   // stride 2: im2col, several GEMM batches
      {21, 5, 7, 5, 8, 1, 2, 0, 0},    // 1x1 stride 2
      {9, 3, 9, 9, 4, 5, 1, 2, 2},     // 5x5
      {30, 4, 3, 3, 6, 1, 1, 0, 0},    // 1x1 stride 1 (pointwise) batched
      {7, 3, 5, 6, 20, 3, 1, 1, 1},    // 3x3 stride 1 with too few channels for Winograd
  };
  for (const Case& c : cases)
    for (int threads : {1, 2}) check(c, threads);
}

}  // namespace
}  // namespace siam
