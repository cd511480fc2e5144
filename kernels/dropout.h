#pragma once
// Dropout kernels (no autograd), f32 and f64 on the CPU. The mask is never stored: it is a
// pure function of (seed, offset, element), so the backward re-applies the same kernel to
// the gradient. Outputs are new contiguous tensors of x's shape.
#include <cstdint>

#include "tensor/tensor.h"

namespace siam::kernels {

// y[i] = x[i] / (1 - p) where philox_uniform(seed, offset, i) >= p, else 0; i is the
// row-major element index. p in [0, 1].
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset);
// The same with one draw per sample: i is the index along dim 0, shared by the sample's
// elements. x: (N, ...).
Tensor drop_path(const Tensor& x, double p, uint64_t seed, uint64_t offset);

}  // namespace siam::kernels
