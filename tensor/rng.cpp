#include "tensor/rng.h"

#include <cmath>
#include <numeric>
#include <vector>

namespace siam {

Generator& default_generator() {
  static Generator g(0x5EED);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

// Draws into a host f64 buffer in parallel (each element's words are fixed by its index, so
// the numbers do not depend on the thread count), then converts once to the requested dtype.
template <class F>
static Tensor generate(const Shape& shape, TensorOptions o, F&& value_of) {
  Tensor h = empty(shape, {DType::f64, Device::cpu()});
  double* p = h.data<double>();
  const int64_t n = h.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) p[i] = value_of(i);
  return o.dtype == DType::f64 && o.device.is_cpu() ? h : copy_to(h, o.device, o.dtype);
}

Tensor rand(const Shape& shape, Generator& g, TensorOptions o) {
  const uint64_t seed = g.seed(), off = g.reserve(shape_numel(shape));
  return generate(shape, o, [&](int64_t i) { return static_cast<double>(philox_uniform(seed, off, i)); });
}

// Box-Muller on word pairs (2i, 2i+1): u1 in (0, 1], u2 in [0, 1).
Tensor randn(const Shape& shape, Generator& g, TensorOptions o) {
  const uint64_t seed = g.seed(), off = g.reserve(2 * shape_numel(shape));
  return generate(shape, o, [&](int64_t i) {
    float u1 = 1.0f - philox_uniform(seed, off, 2 * i);
    float u2 = philox_uniform(seed, off, 2 * i + 1);
    return static_cast<double>(std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2));
  });
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& g, TensorOptions o) {
  if (high <= low) fail("randint: empty range [", low, ", ", high, ")");
  int64_t n = shape_numel(shape);
  uint64_t off = g.reserve(2 * n);
  uint64_t span = static_cast<uint64_t>(high - low);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t r = (static_cast<uint64_t>(philox_word(g.seed(), off, 2 * i)) << 32) |
                 philox_word(g.seed(), off, 2 * i + 1);
    v[i] = static_cast<double>(low + static_cast<int64_t>(r % span));
  }
  return from_vector(v, shape, o);
}

// Fisher-Yates driven by the Philox stream.
Tensor randperm(int64_t n, Generator& g, TensorOptions o) {
  std::vector<int64_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  uint64_t off = g.reserve(n);
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(philox_word(g.seed(), off, i) % static_cast<uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return from_vector(std::vector<double>(p.begin(), p.end()), {n}, o);
}

Tensor rand(const Shape& shape, TensorOptions o) { return rand(shape, default_generator(), o); }
Tensor randn(const Shape& shape, TensorOptions o) { return randn(shape, default_generator(), o); }

}  // namespace siam
