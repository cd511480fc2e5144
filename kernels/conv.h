#pragma once
// 2-D convolution (cross-correlation, as PyTorch) on NCHW tensors; no autograd. f32 and f64 on
// the CPU (im2col + GEMM); f32, f64 and bf16 on CUDA (cuDNN), where NCHW-contiguous and
// channels-last inputs are both taken as they lie (kernels/cuda/conv.h says which layout each
// output has). Shapes are validated by the caller (autograd/ops_conv.cpp).
#include "tensor/tensor.h"

namespace siam::kernels {

struct ConvGeometry {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
};

// Output extent along one dim; needs in + 2 pad >= dil (k - 1) + 1.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  return (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
}

// x: (N, C, H, W), w: (O, C/groups, kH, kW), bias: (O) or undefined -> y: (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvGeometry& p);
// gy: (N, O, Ho, Wo) -> dx: x_shape
Tensor conv2d_grad_input(const Tensor& gy, const Tensor& w, const Shape& x_shape, const ConvGeometry& p);
// gy: (N, O, Ho, Wo), x: (N, C, H, W) -> dw: w_shape
Tensor conv2d_grad_weight(const Tensor& gy, const Tensor& x, const Shape& w_shape, const ConvGeometry& p);
// gy: (N, O, Ho, Wo) -> db: (O)
Tensor conv2d_grad_bias(const Tensor& gy);

}  // namespace siam::kernels
