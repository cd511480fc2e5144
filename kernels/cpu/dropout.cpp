// Dropout CPU kernels: outputs are written (=) into fresh tensors.
#include "kernels/dropout.h"

#include <array>
#include <vector>

#include "kernels/cpu/iter.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/dropout.h"
#include "tensor/rng.h"

namespace siam::kernels {

static void require_cpu(const Tensor& t, const char* op) {
  if (!t.device().is_cpu())
    fail(op, ": no ", t.device().str(), " kernel yet (CUDA kernels arrive with the CUDA backend)");
}

// p = 1 keeps nothing; its infinite scale is never applied.
static double keep_scale(double p) { return p < 1.0 ? 1.0 / (1.0 - p) : 0.0; }

static bool keeps(uint64_t seed, uint64_t offset, uint64_t i, double p) {
  return static_cast<double>(philox_uniform(seed, offset, i)) >= p;
}

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  SIAM_ON_CUDA(x, gpu::dropout(x, p, seed, offset));
  require_cpu(x, "dropout");
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    const scalar_t scale = static_cast<scalar_t>(keep_scale(p));
    std::array<Shape, 2> st{contiguous_strides(x.shape()), x.strides()};
    // y is contiguous, so its offset is the element's row-major index.
    cpu::for_each_row<2>(x.shape(), st, [&](auto off, auto in, int64_t n) {
      for (int64_t k = 0; k < n; ++k) {
        const uint64_t i = static_cast<uint64_t>(off[0] + k);
        py[i] = keeps(seed, offset, i, p) ? px[off[1] + k * in[1]] * scale : scalar_t(0);
      }
    });
  });
  return y;
}

Tensor drop_path(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  SIAM_ON_CUDA(x, gpu::drop_path(x, p, seed, offset));
  require_cpu(x, "drop_path");
  SIAM_CHECK(x.dim() >= 1, "drop_path on a 0-d tensor");
  const int64_t n = x.size(0);
  const int64_t per_sample = n == 0 ? 0 : x.numel() / n;
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "drop_path", [&] {
    std::vector<scalar_t> factor(n);
    const scalar_t scale = static_cast<scalar_t>(keep_scale(p));
    for (int64_t s = 0; s < n; ++s) factor[s] = keeps(seed, offset, s, p) ? scale : scalar_t(0);
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    std::array<Shape, 2> st{contiguous_strides(x.shape()), x.strides()};
    cpu::for_each_row<2>(x.shape(), st, [&](auto off, auto in, int64_t len) {
      for (int64_t k = 0; k < len; ++k) py[off[0] + k] = px[off[1] + k * in[1]] * factor[(off[0] + k) / per_sample];
    });
  });
  return y;
}

}  // namespace siam::kernels
