#pragma once
// CUDA twins of kernels/topk.h (same signatures, same results).
#include "kernels/topk.h"

namespace siam::gpu {

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k);

}  // namespace siam::gpu
