#pragma once
// CUDA twins of kernels/pool.h (same signatures, same results up to summation order).
#include "kernels/pool.h"

namespace siam::gpu {

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);
Tensor max_pool2d_backward(const Tensor& gy, const Tensor& argmax, const Shape& x_shape);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);
Tensor avg_pool2d_backward(const Tensor& gy, const Shape& x_shape, int64_t kernel, int64_t stride, int64_t pad);
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
Tensor adaptive_avg_pool2d_backward(const Tensor& gy, const Shape& x_shape);

}  // namespace siam::gpu
