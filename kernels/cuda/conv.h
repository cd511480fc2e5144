#pragma once
// CUDA twins of kernels/conv.h on cuDNN, same signatures and values. Reached through SIAM_ON_CUDA
// in kernels/cpu/conv.cpp. Inputs may be NCHW-contiguous or channels-last (NHWC memory behind
// the (N, C, H, W) shape); y and dx come channels-last when the activation they follow (x for
// conv2d, gy for the input gradient) is, contiguous otherwise; dw and db are always contiguous.
#include "kernels/conv.h"

namespace siam::gpu {

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const kernels::ConvGeometry& p);
Tensor conv2d_grad_input(const Tensor& gy, const Tensor& w, const Shape& x_shape, const kernels::ConvGeometry& p);
Tensor conv2d_grad_weight(const Tensor& gy, const Tensor& x, const Shape& w_shape, const kernels::ConvGeometry& p);
Tensor conv2d_grad_bias(const Tensor& gy);

}  // namespace siam::gpu
