#pragma once
// CUDA twins of kernels/reduce.h (same signatures and semantics), in kernels/cuda/reduce.cu.
// f32, f64 and bf16 (accumulated in f32). Deterministic: no atomics, fixed reduction trees.
#include "kernels/reduce.h"

namespace siam::gpu {

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim);

}  // namespace siam::gpu
