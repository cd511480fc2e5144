#pragma once
// Normalisation kernels (no autograd), f32 and f64 on the CPU; f32, f64 and bf16 on CUDA.
// Inputs may be strided views; outputs are new contiguous tensors (on CUDA a channels-last x
// gives channels-last y and dx). Statistics accumulate in double on the CPU, so f32 results
// are limited by the final rounding, not by the length of the reduction. The saved mean and
// invstd have x's dtype, except f32 for a bf16 x (CUDA).
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

// Batch norm fused with a residual add and a ReLU, the memory-bound tail of a ResNet block:
// y = act(batch_norm(x) + residual), act = ReLU when `relu`, else the identity. residual: x's
// shape or undefined. Statistics and running-stat updates as batch_norm_forward.
NormForward batch_norm_act_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                   const Tensor& running_mean, const Tensor& running_var,
                                   const Tensor& residual, bool relu, bool training, double momentum,
                                   double eps);
struct NormActBackward {
  Tensor dx, dweight, dbias, dresidual;  // undefined where not asked for
};
// g: y's gradient; y: the forward's output, read only when `relu` (the mask y > 0); x, weight,
// mean, invstd as batch_norm_backward. dresidual is the masked gradient itself.
// need: {dx, dweight, dbias, dresidual}.
NormActBackward batch_norm_act_backward(const Tensor& g, const Tensor& y, const Tensor& x,
                                        const Tensor& weight, const Tensor& mean, const Tensor& invstd,
                                        bool relu, bool training, std::array<bool, 4> need);

// SyncBN's pieces (autograd/ops_dist.cpp reduces them across processes):
// per-channel sums over every dimension but 1, the sum of x when `centre` is undefined, else
// the sum of (x - centre)^2 with centre (C) in x's dtype. x: (N, C) or (N, C, H, W). Returns (C) f64
// on x's device.
Tensor batch_norm_channel_sums(const Tensor& x, const Tensor& centre);
// The statistics' part of the training-mode backward, in place (-=) on dx, which holds the
// evaluation-form dx = w invstd g: dx -= w invstd (sum_g + x_hat sum_gxhat) / count, with
// x_hat = (x - mean) invstd and sums (2C) f64 = [sum_g, sum_gxhat] over every process's values.
// dx: x's shape, contiguous; weight (C) or undefined; mean, invstd (C) in x's dtype.
void batch_norm_sync_dx_(const Tensor& dx, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, const Tensor& sums, double count);

// x: (..., D) viewed as rows of its last `d` elements (d = D); weight, bias: d elements or
// undefined. mean, invstd: one per row, shape (rows).
NormForward layer_norm_forward(const Tensor& x, int64_t d, const Tensor& weight,
                               const Tensor& bias, double eps);
// g: x's shape; dweight / dbias come back flat (d).
NormBackward layer_norm_backward(const Tensor& g, const Tensor& x, int64_t d, const Tensor& weight,
                                 const Tensor& mean, const Tensor& invstd, std::array<bool, 3> need);

}  // namespace siam::kernels
