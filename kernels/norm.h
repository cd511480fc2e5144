#pragma once
// Normalisation kernels (no autograd), f32 and f64 on the CPU. Inputs may be strided views;
// outputs are new contiguous tensors. Statistics accumulate in double, so f32 results are
// limited by the final rounding, not by the length of the reduction.
#include <array>

#include "tensor/tensor.h"

namespace siam::kernels {

// What a normalisation forward keeps for its backward: the output, and per group (channel
// for batch norm, row for layer norm) the mean and 1/sqrt(var + eps) it normalised with.
struct NormForward {
  Tensor y, mean, invstd;
};
struct NormBackward {
  Tensor dx, dweight, dbias;  // undefined where not asked for
};

// x: (N, C) or (N, C, H, W); weight, bias, running_mean, running_var: (C) or undefined.
// training: batch statistics (biased variance), and running_mean / running_var, when defined,
// are updated in place: r = (1 - momentum) r + momentum s, with the unbiased batch variance.
// Otherwise the running statistics are the normalisation. mean, invstd: (C).
NormForward batch_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                               const Tensor& running_mean, const Tensor& running_var,
                               bool training, double momentum, double eps);
// g: x's shape. training: the statistics came from x, which adds their derivative to dx.
// need: {dx, dweight, dbias}.
NormBackward batch_norm_backward(const Tensor& g, const Tensor& x, const Tensor& weight,
                                 const Tensor& mean, const Tensor& invstd, bool training,
                                 std::array<bool, 3> need);

// x: (..., D) viewed as rows of its last `d` elements (d = D); weight, bias: d elements or
// undefined. mean, invstd: one per row, shape (rows).
NormForward layer_norm_forward(const Tensor& x, int64_t d, const Tensor& weight,
                               const Tensor& bias, double eps);
// g: x's shape; dweight / dbias come back flat (d).
NormBackward layer_norm_backward(const Tensor& g, const Tensor& x, int64_t d, const Tensor& weight,
                                 const Tensor& mean, const Tensor& invstd, std::array<bool, 3> need);

}  // namespace siam::kernels
