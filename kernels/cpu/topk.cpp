// Row-wise top-k on the CPU: a partial selection per row (nth_element, then a sort of the k
// chosen), rows in parallel. Outputs are written (=).
#include "kernels/topk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/topk.h"

namespace siam::kernels {

namespace {

template <class T>
void topk_rows(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int64_t* indices) {
#pragma omp parallel
  {
    std::vector<int64_t> idx(n);
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = x + r * n;
      auto key = [row](int64_t i) { return std::isnan(row[i]) ? -std::numeric_limits<T>::infinity() : row[i]; };
      auto better = [&key](int64_t a, int64_t b) {
        const T ka = key(a), kb = key(b);
        return ka > kb || (ka == kb && a < b);
      };
      std::iota(idx.begin(), idx.end(), int64_t{0});
      if (k < n) std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), better);
      std::sort(idx.begin(), idx.begin() + k, better);
      for (int64_t j = 0; j < k; ++j) {
        values[r * k + j] = row[idx[j]];
        indices[r * k + j] = idx[j];
      }
    }
  }
}

}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k) {
  if (x.dim() != 2) fail("topk: expected a (R, N) tensor, got ", shape_str(x.shape()));
  if (k < 1 || k > x.size(1)) fail("topk: k = ", k, ", expected 1 .. ", x.size(1), " (the row length)");
  SIAM_ON_CUDA(x, gpu::topk(x, k));
  if (!x.device().is_cpu()) fail("topk: no ", x.device().str(), " kernel in this build");
  const Tensor xc = x.is_contiguous() ? x : copy_to(x, x.device(), x.dtype());
  const int64_t rows = x.size(0), n = x.size(1);
  Tensor values = empty({rows, k}, {x.dtype()});
  Tensor indices = empty({rows, k}, {DType::i64});
  SIAM_DISPATCH_FLOAT(x.dtype(), "topk", [&] {
    topk_rows(xc.data<scalar_t>(), rows, n, k, values.data<scalar_t>(), indices.data<int64_t>());
  });
  return {values, indices};
}

}  // namespace siam::kernels
