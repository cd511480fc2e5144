#pragma once
// Indexing kernels (no autograd), CPU. Index tensors are i64; `dim` is non-negative and
// indices are checked against the indexed size (siam::Error naming the op and the index).
// The selecting kernels copy any dtype; the accumulating ones (the backward of the
// selecting ones) take f32 and f64.
#include "tensor/tensor.h"

namespace siam::kernels {

// x: (..., D, ...) with D at dim, index: (K) -> (..., K, ...), written (=) into a new tensor.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// dst[..., index[k], ...] += src[..., k, ...] (accumulates, repeated indices add up).
// dst: contiguous (..., D, ...), src: (..., K, ...), index: (K).
void index_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);

// out[p] = x[p with p[dim] replaced by index[p]], written (=) into a new tensor of index's
// shape. index: x's rank, index.size(d) <= x.size(d) for every d != dim.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// dst[p with p[dim] replaced by index[p]] += src[p] (accumulates). dst: contiguous; src and
// index: the same shape, index.size(d) <= dst.size(d) for every d != dim.
void scatter_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);

}  // namespace siam::kernels
