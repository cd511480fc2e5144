// Op cases: matmul, linear, conv2d, pooling, resizing. PyTorch twins with the same names:
// tools/reference/cases_linalg.py. Tolerances (f32 vs the f64 PyTorch reference):
//  kDot    - f32 BLAS dot products: each output sums up to ~100 products (conv weight gradients
//            the most), rounding at each step; outputs near zero by cancellation need the atol.
//  kMax    - max pooling copies values; where windows overlap, their gradients add in f32.
//  kMean   - window sums of up to a dozen f32 terms, then one division.
//  kResize - taps weighted and summed in double, rounded once (forward); the backward adds a
//            few f32 contributions per input cell.
// Below the table: the shape errors users see.
#include <gtest/gtest.h>

#include "op_harness.h"

namespace siam::test {
namespace {

const char* kDot = "f32 dot products of up to ~100 terms, rounded at each step";
const char* kMax = "values copied exactly; overlapping windows add gradients in f32";
const char* kMean = "f32 sums of up to a dozen terms and one division";
const char* kResize = "double-accumulated taps rounded once to f32; backward adds a few f32 terms per cell";

OpCase dot(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kDot, 1e-5, 1e-5); }
OpCase mean(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kMean, 1e-6, 1e-6); }
OpCase resize(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kResize, 1e-6, 1e-6); }

using V = const std::vector<Tensor>&;

Tensor bias_of(V x) { return x.size() > 2 ? x[2] : Tensor(); }
OpFn conv(Conv2dParams p) {
  return [p](V x) { return conv2d(x[0], x[1], bias_of(x), p); };
}

OpTable table({
    dot("matmul_2d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_1d_2d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_2d_1d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_1d_1d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_batched", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_broadcast_batch", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_3d_2d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_2d_3d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_1d_3d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_3d_1d", [](V x) { return matmul(x[0], x[1]); }),
    dot("matmul_transposed", [](V x) { return matmul(transpose(x[0], 0, 1), transpose(x[1], 0, 1)); }),
    dot("matmul_batched_transposed", [](V x) { return matmul(transpose(x[0], 1, 2), transpose(x[1], 1, 2)); }),
    dot("matmul_permuted_3d_2d", [](V x) { return matmul(permute(x[0], {1, 0, 2}), x[1]); }),

    dot("linear_bias", [](V x) { return linear(x[0], x[1], x[2]); }),
    dot("linear_nobias", [](V x) { return linear(x[0], x[1]); }),
    dot("linear_3d", [](V x) { return linear(x[0], x[1], x[2]); }),
    dot("linear_1d", [](V x) { return linear(x[0], x[1], x[2]); }),

    dot("conv2d_plain", conv({})),
    dot("conv2d_stride2_pad", conv({.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1})),
    dot("conv2d_dilation2", conv({.pad_h = 1, .pad_w = 1, .dil_h = 2, .dil_w = 2})),
    dot("conv2d_groups2", conv({.pad_h = 1, .pad_w = 1, .groups = 2})),
    dot("conv2d_depthwise", conv({.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .groups = 3})),
    dot("conv2d_nobias", conv({.pad_h = 1, .pad_w = 1})),
    dot("conv2d_1x1", conv({})),
    dot("conv2d_1x1_stride2", conv({.stride_h = 2, .stride_w = 2})),
    dot("conv2d_rect", conv({.stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 0, .dil_h = 1, .dil_w = 2})),

    op_case("max_pool2d_k3s2p1", [](V x) { return max_pool2d(x[0], 3, 2, 1); }, kMax, 1e-6, 1e-6),
    op_case("max_pool2d_k2", [](V x) { return max_pool2d(x[0], 2, 2); }, kMax, 1e-6, 1e-6),
    op_case("max_pool2d_overlap", [](V x) { return max_pool2d(x[0], 3, 1); }, kMax, 1e-6, 1e-6),
    mean("avg_pool2d_k3s2p1", [](V x) { return avg_pool2d(x[0], 3, 2, 1); }),
    mean("avg_pool2d_k2", [](V x) { return avg_pool2d(x[0], 2, 2); }),
    mean("adaptive_avg_pool2d_5x7_3x2", [](V x) { return adaptive_avg_pool2d(x[0], 3, 2); }),
    mean("adaptive_avg_pool2d_1x1", [](V x) { return adaptive_avg_pool2d(x[0], 1, 1); }),
    mean("adaptive_avg_pool2d_up", [](V x) { return adaptive_avg_pool2d(x[0], 5, 4); }),

    resize("bilinear_up", [](V x) { return interpolate_bilinear(x[0], 7, 9, false); }),
    resize("bilinear_down", [](V x) { return interpolate_bilinear(x[0], 4, 5, false); }),
    resize("bilinear_up_align", [](V x) { return interpolate_bilinear(x[0], 7, 9, true); }),
    resize("bilinear_down_align", [](V x) { return interpolate_bilinear(x[0], 4, 5, true); }),
    resize("bicubic_up", [](V x) { return interpolate_bicubic(x[0], 7, 9, false); }),
    resize("bicubic_down", [](V x) { return interpolate_bicubic(x[0], 4, 5, false); }),
    resize("bicubic_up_align", [](V x) { return interpolate_bicubic(x[0], 7, 9, true); }),
    resize("bicubic_down_align", [](V x) { return interpolate_bicubic(x[0], 4, 5, true); }),
});

// The op's siam::Error message contains `want`.
template <class F>
void expect_error(F f, const std::string& want) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << want << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << "message: " << e.what();
  }
}

TEST(LinalgErrors, ShapeMismatchesNameTheShapes) {
  Tensor a = zeros({2, 3}), b = zeros({4, 5});
  expect_error([&] { matmul(a, b); }, "matmul: [2, 3] @ [4, 5]: inner dimensions 3 and 4 differ");
  expect_error([&] { matmul(zeros({2, 2, 3}), zeros({3, 3, 4})); }, "matmul: batch dims of [2, 2, 3] and [3, 3, 4]");
  expect_error([&] { linear(zeros({2, 5}), zeros({3, 4})); }, "linear: input [2, 5] has 5 features, weight [3, 4] expects 4");
  expect_error([&] { linear(zeros({2, 4}), zeros({3, 4}), zeros({2})); }, "linear: bias [2] does not match the 3 outputs");
  expect_error([&] { conv2d(zeros({1, 3, 5, 5}), zeros({2, 4, 3, 3}), Tensor(), {}); },
               "conv2d: input has 3 channels, weight expects 4 (groups 1)");
  expect_error([&] { conv2d(zeros({1, 4, 5, 5}), zeros({3, 2, 3, 3}), Tensor(), {.groups = 2}); },
               "conv2d: 3 output channels do not divide into 2 groups");
  expect_error([&] { conv2d(zeros({1, 1, 2, 2}), zeros({1, 1, 3, 3}), Tensor(), {}); },
               "smaller than the dilated kernel 3x3");
  expect_error([&] { max_pool2d(zeros({1, 4, 4}), 2, 2); }, "max_pool2d: expected a 4-D input (N, C, H, W), got [1, 4, 4]");
  expect_error([&] { avg_pool2d(zeros({1, 1, 4, 4}), 2, 2, 2); }, "avg_pool2d: padding 2 exceeds half the kernel size 2");
  expect_error([&] { interpolate_bilinear(zeros({1, 1, 4, 4}), 0, 3); }, "interpolate_bilinear: output size 0x3");
}

TEST(LinalgErrors, DtypeMismatch) {
  expect_error([&] { matmul(zeros({2, 2}), zeros({2, 2}, {DType::f64})); }, "matmul: dtype mismatch, f32 and f64");
}

}  // namespace
}  // namespace siam::test
