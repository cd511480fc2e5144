// Softmax CPU kernels: outputs are written (=) into fresh tensors. The tensor is viewed as
// (outer, D, inner) with D the softmax dim; the innermost loop runs over `inner`, which is
// contiguous, so a softmax over a leading dim streams memory instead of striding through it.
// Sums and exponentials are in double and rounded once.
#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/softmax.h"

namespace siam::kernels {

static Tensor dense(const Tensor& t) {
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

static void require_cpu(const Tensor& t, const char* op) {
  if (!t.device().is_cpu())
    fail(op, ": no ", t.device().str(), " kernel yet (CUDA kernels arrive with the CUDA backend)");
}

constexpr int64_t kParallelMin = 32768;

struct Blocks {
  int64_t outer, d, inner;
};

static Blocks blocks_of(const Shape& shape, int64_t dim) {
  int64_t inner = 1;
  for (size_t k = dim + 1; k < shape.size(); ++k) inner *= shape[k];
  int64_t outer = 1;
  for (int64_t k = 0; k < dim; ++k) outer *= shape[k];
  return {outer, shape[dim], inner};
}

Tensor softmax(const Tensor& x, int64_t dim, bool log) {
  SIAM_ON_CUDA(x, gpu::softmax(x, dim, log));
  require_cpu(x, log ? "log_softmax" : "softmax");
  Tensor xc = dense(x);
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  const auto [outer, d, inner] = blocks_of(x.shape(), dim);
  SIAM_DISPATCH_FLOAT(x.dtype(), log ? "log_softmax" : "softmax", [&] {
    const scalar_t* px = xc.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    _Pragma("omp parallel if (x.numel() > kParallelMin)")
    {
      std::vector<double> mx(inner), acc(inner);
      _Pragma("omp for schedule(static)")
      for (int64_t o = 0; o < outer; ++o) {
        const scalar_t* xo = px + o * d * inner;
        scalar_t* yo = py + o * d * inner;
        std::fill(mx.begin(), mx.end(), -std::numeric_limits<double>::infinity());
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < d; ++j)
          for (int64_t i = 0; i < inner; ++i) mx[i] = std::max(mx[i], static_cast<double>(xo[j * inner + i]));
        for (int64_t j = 0; j < d; ++j)
          for (int64_t i = 0; i < inner; ++i) acc[i] += std::exp(xo[j * inner + i] - mx[i]);
        if (log) {
          for (int64_t i = 0; i < inner; ++i) acc[i] = mx[i] + std::log(acc[i]);
          for (int64_t j = 0; j < d; ++j)
            for (int64_t i = 0; i < inner; ++i) yo[j * inner + i] = static_cast<scalar_t>(xo[j * inner + i] - acc[i]);
        } else {
          for (int64_t j = 0; j < d; ++j)
            for (int64_t i = 0; i < inner; ++i)
              yo[j * inner + i] = static_cast<scalar_t>(std::exp(xo[j * inner + i] - mx[i]) / acc[i]);
        }
      }
    }
  });
  return y;
}

Tensor softmax_backward(const Tensor& g, const Tensor& y, int64_t dim, bool log) {
  SIAM_ON_CUDA(g, gpu::softmax_backward(g, y, dim, log));
  require_cpu(g, log ? "log_softmax backward" : "softmax backward");
  Tensor gc = dense(g), yc = dense(y);
  Tensor dx = empty(y.shape(), {y.dtype(), y.device()});
  const auto [outer, d, inner] = blocks_of(y.shape(), dim);
  SIAM_DISPATCH_FLOAT(y.dtype(), log ? "log_softmax backward" : "softmax backward", [&] {
    const scalar_t* pg = gc.data<scalar_t>();
    const scalar_t* py = yc.data<scalar_t>();
    scalar_t* pd = dx.data<scalar_t>();
    _Pragma("omp parallel if (y.numel() > kParallelMin)")
    {
      std::vector<double> acc(inner);
      _Pragma("omp for schedule(static)")
      for (int64_t o = 0; o < outer; ++o) {
        const scalar_t* go = pg + o * d * inner;
        const scalar_t* yo = py + o * d * inner;
        scalar_t* dout = pd + o * d * inner;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < d; ++j)
          for (int64_t i = 0; i < inner; ++i)
            acc[i] += log ? static_cast<double>(go[j * inner + i])
                          : static_cast<double>(go[j * inner + i]) * yo[j * inner + i];
        for (int64_t j = 0; j < d; ++j)
          for (int64_t i = 0; i < inner; ++i) {
            const double gv = go[j * inner + i], yv = yo[j * inner + i];
            dout[j * inner + i] = static_cast<scalar_t>(log ? gv - std::exp(yv) * acc[i] : yv * (gv - acc[i]));
          }
      }
    }
  });
  return dx;
}

}  // namespace siam::kernels
