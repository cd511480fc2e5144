#pragma once
// Strided, broadcasting iteration for CPU kernels. The output is contiguous with shape
// `shape`; each operand carries its own strides over that shape (0 on a broadcast dim).
// Work is split into rows of the innermost dimension, rows shared out by OpenMP.
#include <array>
#include <vector>

#include "tensor/tensor.h"

namespace siam::kernels::cpu {

// Strides of `t` seen through a broadcast to `shape` (0 on broadcast dims).
inline Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  int64_t off = static_cast<int64_t>(shape.size()) - t.dim();
  for (int64_t i = 0; i < t.dim(); ++i)
    st[off + i] = t.shape()[i] == 1 && shape[off + i] != 1 ? 0 : t.strides()[i];
  return st;
}

// Calls f(row_offsets, inner_strides, inner_len) for each row; offsets are in elements for
// N operands. Rows are independent, so f may run in parallel.
template <size_t N, class F>
void for_each_row(const Shape& shape, const std::array<Shape, N>& strides, F&& f) {
  int64_t nd = static_cast<int64_t>(shape.size());
  int64_t inner = nd ? shape[nd - 1] : 1;
  int64_t total = shape_numel(shape);
  if (total == 0) return;
  int64_t rows = total / inner;
  std::array<int64_t, N> inner_st{};
  for (size_t k = 0; k < N; ++k) inner_st[k] = nd ? strides[k][nd - 1] : 0;
#pragma omp parallel for schedule(static) if (total > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> off{};
    int64_t rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t i = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * strides[k][d];
    }
    f(off, inner_st, inner);
  }
}

}  // namespace siam::kernels::cpu
