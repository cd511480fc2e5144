#pragma once
// Strided, broadcasting iteration for CPU kernels. The output is contiguous with shape
// `shape`; each operand carries its own strides over that shape (0 on a broadcast dim).
// Work is split into rows of the innermost dimension, rows shared out by OpenMP.
#include <omp.h>

#include <algorithm>
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
// N operands. Rows are independent, so f may run in parallel. Dims that every operand walks
// contiguously are merged first (a contiguous tensor is one long row), and long rows are cut
// into pieces so that all threads get work; f sees each piece as a row of its own.
template <size_t N, class F>
void for_each_row(const Shape& shape_in, const std::array<Shape, N>& strides_in, F&& f) {
  const int64_t total = shape_numel(shape_in);
  if (total == 0) return;
  Shape shape;
  std::array<Shape, N> strides;
  for (size_t d = 0; d < shape_in.size(); ++d) {
    if (shape_in[d] == 1) continue;
    bool merge = !shape.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = strides[k].back() == strides_in[k][d] * shape_in[d];
    if (merge) {
      shape.back() *= shape_in[d];
      for (size_t k = 0; k < N; ++k) strides[k].back() = strides_in[k][d];
    } else {
      shape.push_back(shape_in[d]);
      for (size_t k = 0; k < N; ++k) strides[k].push_back(strides_in[k][d]);
    }
  }
  if (shape.empty()) {
    shape.push_back(1);
    for (size_t k = 0; k < N; ++k) strides[k].push_back(0);
  }
  const int64_t nd = static_cast<int64_t>(shape.size());
  const int64_t inner = shape[nd - 1], rows = total / inner;
  std::array<int64_t, N> inner_st{};
  for (size_t k = 0; k < N; ++k) inner_st[k] = strides[k][nd - 1];
  constexpr int64_t kParallelMin = 32768;
  const bool parallel = total > kParallelMin;
  // Pieces per row: a few per thread when there are fewer rows than that, none under 1024
  // elements, and piece boundaries on multiples of 16 elements.
  int64_t pieces = 1;
  if (parallel) {
    const int64_t want = 4 * static_cast<int64_t>(omp_get_max_threads());
    if (rows < want) pieces = std::max<int64_t>(1, std::min((want + rows - 1) / rows, inner / 1024));
  }
  const int64_t piece = ((inner + pieces - 1) / pieces + 15) & ~int64_t(15);
  pieces = (inner + piece - 1) / piece;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t item = 0; item < rows * pieces; ++item) {
    const int64_t r = item / pieces, c0 = item % pieces * piece;
    std::array<int64_t, N> off{};
    int64_t rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      int64_t i = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * strides[k][d];
    }
    for (size_t k = 0; k < N; ++k) off[k] += c0 * inner_st[k];
    f(off, inner_st, std::min(piece, inner - c0));
  }
}

}  // namespace siam::kernels::cpu
