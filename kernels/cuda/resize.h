#pragma once
// CUDA twins of kernels/resize.h (same signatures, same results up to summation order).
#include "kernels/resize.h"

namespace siam::gpu {

Tensor resize(kernels::Resize mode, const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners);
Tensor resize_backward(kernels::Resize mode, const Tensor& gy, const Shape& x_shape, bool align_corners);

}  // namespace siam::gpu
