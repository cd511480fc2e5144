#pragma once
// Counter-based RNG: Philox 4x32-10 keyed by a 64-bit seed. Word w of the stream for
// (seed, offset) is lane (w % 4) of philox(counter = offset + w / 4, key = seed), so CPU and
// GPU produce the same numbers for the same (seed, offset) with no state to carry but two
// integers. A Generator hands out disjoint ranges of counters.
#include <array>
#include <cstdint>

#include "tensor/tensor.h"

namespace siam {

#if defined(__CUDACC__)
#define SIAM_HD __host__ __device__ __forceinline__
#else
#define SIAM_HD inline
#endif

SIAM_HD void philox4x32(uint32_t ctr[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * ctr[0];
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * ctr[2];
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ k0;
    uint32_t n1 = static_cast<uint32_t>(p1);
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ k1;
    uint32_t n3 = static_cast<uint32_t>(p0);
    ctr[0] = n0; ctr[1] = n1; ctr[2] = n2; ctr[3] = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// The 32-bit word number `word` of the stream starting at counter block `offset`.
SIAM_HD uint32_t philox_word(uint64_t seed, uint64_t offset, uint64_t word) {
  uint64_t block = offset + word / 4;
  uint32_t c[4] = {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u};
  philox4x32(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return c[word % 4];
}

// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
SIAM_HD float philox_uniform(uint64_t seed, uint64_t offset, uint64_t word) {
  return static_cast<float>(philox_word(seed, offset, word) >> 8) * (1.0f / 16777216.0f);
}

class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves `words` 32-bit words; returns the counter block they start at.
  uint64_t reserve(uint64_t words) {
    uint64_t start = offset_;
    offset_ += (words + 3) / 4;
    return start;
  }

 private:
  uint64_t seed_, offset_;
};

// The process-wide default generator (seeded by manual_seed).
Generator& default_generator();
void manual_seed(uint64_t seed);

// Random factories (f32 by default; values drawn from the Philox stream).
Tensor rand(const Shape& shape, Generator& g, TensorOptions o = {});   // U[0, 1)
Tensor randn(const Shape& shape, Generator& g, TensorOptions o = {});  // N(0, 1), Box-Muller
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& g,
               TensorOptions o = {DType::i64});
Tensor randperm(int64_t n, Generator& g, TensorOptions o = {DType::i64});
Tensor rand(const Shape& shape, TensorOptions o = {});
Tensor randn(const Shape& shape, TensorOptions o = {});

}  // namespace siam
