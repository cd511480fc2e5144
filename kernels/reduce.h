#pragma once
// Reductions (no autograd). `dims` are non-negative, sorted and unique; an empty list means
// every dimension. Outputs are new contiguous tensors with keepdim shape semantics.
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace siam::kernels {

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim);
// Max over one dim: values and i64 indices (first maximal index).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim);

}  // namespace siam::kernels
