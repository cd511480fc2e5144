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

Tensor rand(const Shape& shape, Generator& g, TensorOptions o) {
  int64_t n = shape_numel(shape);
  uint64_t off = g.reserve(n);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = philox_uniform(g.seed(), off, i);
  return from_vector(v, shape, o);
}

// Box-Muller on word pairs (2i, 2i+1): u1 in (0, 1], u2 in [0, 1).
Tensor randn(const Shape& shape, Generator& g, TensorOptions o) {
  int64_t n = shape_numel(shape);
  uint64_t off = g.reserve(2 * n);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    float u1 = 1.0f - philox_uniform(g.seed(), off, 2 * i);
    float u2 = philox_uniform(g.seed(), off, 2 * i + 1);
    v[i] = std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864f * u2);
  }
  return from_vector(v, shape, o);
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
