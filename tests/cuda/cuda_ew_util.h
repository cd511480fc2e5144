#pragma once
// Helpers of the CUDA-vs-CPU kernel tests of the elementwise, reduction, index, dropout and
// copy families: random host tensors, GPU copies and views, and comparisons that name the
// worst element.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "tensor/cuda_runtime.h"
#include "tensor/rng.h"

namespace siam::test::ew {

#ifndef REQUIRE_GPU
#define REQUIRE_GPU() \
  if (!::siam::cuda::available()) GTEST_SKIP() << "needs a GPU: " << ::siam::cuda::unavailable_reason()
#endif

inline const Device kGpu = Device::cuda(0);

// N(0, scale^2) values on the host, rounded to dt.
inline Tensor host_randn(const Shape& shape, DType dt, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  Tensor x = randn(shape, g, {DType::f64});
  if (scale != 1.0) {
    double* p = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] *= scale;
  }
  return copy_to(x, Device::cpu(), dt);
}

inline Tensor gpu(const Tensor& t) { return copy_to(t, kGpu, t.dtype()); }
inline Tensor host(const Tensor& t) { return copy_to(t, Device::cpu(), t.dtype()); }

// A GPU tensor equal to t that starts `shift` elements past an aligned address (a view into
// a larger buffer), for the unaligned paths.
inline Tensor gpu_shifted(const Tensor& t, int64_t shift) {
  Tensor buf = zeros({t.numel() + shift}, {t.dtype(), kGpu});
  Tensor v = buf.as_strided(t.shape(), contiguous_strides(t.shape()), shift);
  copy_(v, t);
  return v;
}

// The bytes of t's elements in row-major order.
inline std::vector<unsigned char> bytes_of(const Tensor& t) {
  Tensor h = copy_to(t, Device::cpu(), t.dtype());
  std::vector<unsigned char> b(h.nbytes());
  if (!b.empty()) std::memcpy(b.data(), h.raw_data(), b.size());
  return b;
}

// got and want (any devices, any dtypes) agree elementwise within atol + rtol |want|; NaN
// only where want is NaN. The failure names the worst element.
inline ::testing::AssertionResult near(const Tensor& got, const Tensor& want, double rtol, double atol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.shape()) << ", expected " << shape_str(want.shape());
  std::vector<double> g = got.to_vector(), w = want.to_vector();
  int64_t worst = -1, bad = 0;
  double worst_excess = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    bool ok;
    double excess = 0;
    if (std::isnan(w[i])) ok = std::isnan(g[i]);
    else if (std::isinf(w[i])) ok = g[i] == w[i];
    else {
      excess = std::fabs(g[i] - w[i]) - (atol + rtol * std::fabs(w[i]));
      ok = excess <= 0;
    }
    if (!ok) {
      ++bad;
      if (worst < 0 || excess > worst_excess || std::isnan(excess)) {
        worst = static_cast<int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(10);
  os << bad << " of " << g.size() << " elements differ (rtol " << rtol << ", atol " << atol << "); worst: flat index "
     << worst << ": got " << g[worst] << ", expected " << w[worst] << " (shape " << shape_str(want.shape()) << ")";
  return ::testing::AssertionFailure() << os.str();
}

// Bit-identical elements (same dtype, same shape).
inline ::testing::AssertionResult same_bits(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape() || got.dtype() != want.dtype())
    return ::testing::AssertionFailure() << "got " << shape_str(got.shape()) << " " << dtype_name(got.dtype())
                                         << ", expected " << shape_str(want.shape()) << " " << dtype_name(want.dtype());
  std::vector<unsigned char> g = bytes_of(got), w = bytes_of(want);
  const size_t es = dtype_size(want.dtype());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < g.size(); i += es)
    if (std::memcmp(&g[i], &w[i], es) != 0) {
      if (first < 0) first = static_cast<int64_t>(i / es);
      ++bad;
    }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::vector<double> gv = got.to_vector(), wv = want.to_vector();
  std::ostringstream os;
  os.precision(10);
  os << bad << " of " << g.size() / es << " elements differ in their bits; first: flat index " << first << ": got "
     << gv[first] << ", expected " << wv[first] << " (" << dtype_name(want.dtype()) << ", shape "
     << shape_str(want.shape()) << ")";
  return ::testing::AssertionFailure() << os.str();
}

}  // namespace siam::test::ew
