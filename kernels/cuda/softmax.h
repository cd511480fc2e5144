#pragma once
// CUDA twins of kernels/softmax.h (same signatures, same results up to summation order).
#include "kernels/softmax.h"

namespace siam::gpu {

Tensor softmax(const Tensor& x, int64_t dim, bool log);
Tensor softmax_backward(const Tensor& g, const Tensor& y, int64_t dim, bool log);

}  // namespace siam::gpu
