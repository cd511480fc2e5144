#pragma once
// Softmax kernels (no autograd), f32 and f64 on the CPU. x may be a strided view; outputs
// are new contiguous tensors of x's shape. `dim` is non-negative.
#include "tensor/tensor.h"

namespace siam::kernels {

// y = exp(x - max) / sum(exp(x - max)) along dim, or its log (log = true), computed as
// x - max - log(sum(...)) so large logits neither overflow nor lose the log's precision.
Tensor softmax(const Tensor& x, int64_t dim, bool log);
// g, y: the output's gradient and the forward's output y (x's shape).
// softmax: dx = y * (g - sum(g * y)); log_softmax: dx = g - exp(y) * sum(g).
Tensor softmax_backward(const Tensor& g, const Tensor& y, int64_t dim, bool log);

}  // namespace siam::kernels
