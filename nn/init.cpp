#include "nn/init.h"

#include <algorithm>
#include <cmath>

namespace siam::nn::init {

void uniform_(const Tensor& t, double lo, double hi, Generator& g) {
  std::vector<double> u = rand(t.shape(), g, {DType::f64}).to_vector();
  for (double& x : u) x = lo + (hi - lo) * x;
  copy_(t, from_vector(u, t.shape(), {DType::f64}));
}

void normal_(const Tensor& t, double mean, double std, Generator& g) {
  std::vector<double> v = randn(t.shape(), g, {DType::f64}).to_vector();
  for (double& x : v) x = mean + std * x;
  copy_(t, from_vector(v, t.shape(), {DType::f64}));
}

void trunc_normal_(const Tensor& t, double std, Generator& g, double a, double b) {
  auto cdf = [](double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))); };
  double lo = cdf(a / std), hi = cdf(b / std);
  std::vector<double> u = rand(t.shape(), g, {DType::f64}).to_vector();
  for (double& x : u) {
    double p = 2 * (lo + (hi - lo) * x) - 1;  // uniform in [2 lo - 1, 2 hi - 1]
    p = std::clamp(p, -1 + 1e-12, 1 - 1e-12);
    // erfinv by Newton on erf, from a good start: converges in a few steps in double.
    double y = 0;
    for (int i = 0; i < 60; ++i) {
      double err = std::erf(y) - p;
      if (std::abs(err) < 1e-15) break;
      y -= err / (2 / std::sqrt(M_PI) * std::exp(-y * y));
    }
    x = std::clamp(std * std::sqrt(2.0) * y, a, b);
  }
  copy_(t, from_vector(u, t.shape(), {DType::f64}));
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
