#pragma once
// 2-D pooling on NCHW tensors (no autograd), PyTorch semantics with ceil_mode off. f32 and f64
// on the CPU. Square windows; shapes are validated by the caller (autograd/ops_conv.cpp).
#include <utility>

#include "tensor/tensor.h"

namespace siam::kernels {

// Output extent along one dim; needs in + 2 pad >= kernel.
inline int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

// Max over each window, padding ignored (as -inf).
// x: (N, C, H, W) -> y: (N, C, Ho, Wo) and argmax: i64 (N, C, Ho, Wo), the flat index into the
// H*W plane of the first maximal element (NaN wins, as in PyTorch).
std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);
// gy: (N, C, Ho, Wo), argmax: (N, C, Ho, Wo) -> dx: x_shape
Tensor max_pool2d_backward(const Tensor& gy, const Tensor& argmax, const Shape& x_shape);

// Mean over each window, zero padding counted in the divisor (count_include_pad).
// x: (N, C, H, W) -> y: (N, C, Ho, Wo)
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);
// gy: (N, C, Ho, Wo) -> dx: x_shape
Tensor avg_pool2d_backward(const Tensor& gy, const Shape& x_shape, int64_t kernel, int64_t stride, int64_t pad);

// Output cell o averages input [floor(o in / out), ceil((o + 1) in / out)) along each dim.
// x: (N, C, H, W) -> y: (N, C, out_h, out_w)
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// gy: (N, C, out_h, out_w) -> dx: x_shape
Tensor adaptive_avg_pool2d_backward(const Tensor& gy, const Shape& x_shape);

}  // namespace siam::kernels
