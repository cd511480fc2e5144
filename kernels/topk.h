#pragma once
// Row-wise top-k selection (no autograd): the exact nearest-neighbour search of the pair
// miner selects each query's best matches from a block of similarities with it.
#include <cstdint>
#include <utility>

#include "tensor/tensor.h"

namespace siam::kernels {

// x: (R, N) -> values (R, k) in x's dtype and indices (R, k) i64, written (=) into new
// contiguous tensors. Each row lists its k largest entries, best first, under one strict
// total order, so the result never depends on the selection algorithm: a larger value ranks
// first, equal values rank the lower column first, and NaN counts as -inf. 1 <= k <= N.
// CPU: f32 and f64; CUDA: f32, f64 and bf16.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k);

}  // namespace siam::kernels
