#include "nn/init.h"

#include "autograd/ops.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace siam::nn::init {

// t = u * scale + shift, u a fresh f64 tensor of t's shape, in double and rounded once into t.
// A dense f32 or f64 t on the CPU is written directly, without the tensor ops' temporaries and
// the generic per-element copy; the product and the sum stay two roundings (two loops, so no
// fused multiply-add), which keeps the values those ops give.
static void assign_scaled(const Tensor& t, const Tensor& u, double scale, double shift) {
  if (!t.device().is_cpu() || !t.is_contiguous() || (t.dtype() != DType::f32 && t.dtype() != DType::f64)) {
    copy_(t, add(mul(u, scale), shift));
    return;
  }
  double* pu = u.data<double>();
  const int64_t n = t.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t k = 0; k < n; ++k) pu[k] *= scale;
  auto run = [&](auto* pt) {
    using T = std::remove_pointer_t<decltype(pt)>;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t k = 0; k < n; ++k) pt[k] = static_cast<T>(pu[k] + shift);
  };
  if (t.dtype() == DType::f32) run(t.data<float>());
  else run(t.data<double>());
}

void uniform_(const Tensor& t, double lo, double hi, Generator& g) {
  assign_scaled(t, rand(t.shape(), g, {DType::f64}), hi - lo, lo);
}

void normal_(const Tensor& t, double mean, double std, Generator& g) {
  assign_scaled(t, randn(t.shape(), g, {DType::f64}), std, mean);
}

void trunc_normal_(const Tensor& t, double std, Generator& g, double a, double b) {
  auto cdf = [](double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); };
  const double lo = cdf(a / std), hi = cdf(b / std);
  Tensor u = rand(t.shape(), g, {DType::f64});
  double* p = u.data<double>();
  const int64_t n = u.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t k = 0; k < n; ++k) {
    double q = std::clamp(2 * (lo + (hi - lo) * p[k]) - 1, -1 + 1e-12, 1 - 1e-12);  // in (2 lo - 1, 2 hi - 1)
    // erfinv(q) by Newton's method on erf, which converges in a few steps in double.
    double y = 0;
    for (int i = 0; i < 60; ++i) {
      double err = std::erf(y) - q;
      if (std::abs(err) < 1e-15) break;
      y -= err / (2 / std::sqrt(M_PI) * std::exp(-y * y));
    }
    p[k] = std::clamp(std * std::sqrt(2.0) * y, a, b);
  }
  copy_(t, u);
}

void constant_(const Tensor& t, double v) { fill_(t, v); }

int64_t fan_in(const Tensor& w) {
  SIAM_CHECK(w.dim() >= 2, "fan_in of a ", w.dim(), "-D tensor");
  return w.numel() / w.size(0);
}

int64_t fan_out(const Tensor& w) {
  SIAM_CHECK(w.dim() >= 2, "fan_out of a ", w.dim(), "-D tensor");
  return w.numel() / w.size(1);
}

void kaiming_normal_fan_out_(const Tensor& w, Generator& g) {
  normal_(w, 0, std::sqrt(2.0 / static_cast<double>(fan_out(w))), g);
}

void default_weight_(const Tensor& w, Generator& g) {
  double bound = 1.0 / std::sqrt(static_cast<double>(fan_in(w)));
  uniform_(w, -bound, bound, g);
}

void default_bias_(const Tensor& b, int64_t fan_in, Generator& g) {
  double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0;
  uniform_(b, -bound, bound, g);
}

}  // namespace siam::nn::init
