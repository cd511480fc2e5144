// The host block cache behind tensor storage (tensor/host_alloc.h).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "tensor/host_alloc.h"
#include "tensor/tensor.h"

using namespace siam;

TEST(HostAlloc, SizeClasses) {
  EXPECT_EQ(host::size_class(1), 64u);
  EXPECT_EQ(host::size_class(1000), 1024u);
  const size_t mib = size_t(1) << 20;
  EXPECT_EQ(host::size_class(mib), mib);
  EXPECT_EQ(host::size_class(mib + 1), mib + mib / 8);
  for (size_t n : {mib + 12345, 3 * mib + 7, 25690112 + size_t(64), size_t(100) * mib + 1}) {
    const size_t c = host::size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LE(c, n + n / 8 + 64) << n;
    EXPECT_EQ(c % 64, 0u);
    EXPECT_EQ(host::size_class(c), c) << "a class is its own class";
  }
}

TEST(HostAlloc, LargeBlocksAreReusedAndAligned) {
  if (host::max_cached_bytes() < (size_t(64) << 20)) GTEST_SKIP() << "host cache disabled (SIAM_HOST_CACHE_MB)";
  host::empty_cache();
  const size_t n = (size_t(5) << 20) + 100;
  void* a = host::alloc(n);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  std::memset(a, 1, n);  // the whole request is usable
  const host::CacheStats s0 = host::cache_stats();
  host::release(a, n);
  EXPECT_EQ(host::cache_stats().cached_bytes, s0.cached_bytes + host::size_class(n));
  // A request of the same class gets the block back; one of another class does not.
  void* b = host::alloc(n - 50);
  EXPECT_EQ(b, a);
  EXPECT_EQ(host::cache_stats().hits, s0.hits + 1);
  void* c = host::alloc(2 * n);
  EXPECT_NE(c, a);
  std::memset(c, 2, 2 * n);
  host::release(b, n - 50);
  host::release(c, 2 * n);
  host::empty_cache();
  EXPECT_EQ(host::cache_stats().cached_bytes, 0u);
}

TEST(HostAlloc, TensorsReuseFreedStorage) {
  if (host::max_cached_bytes() < (size_t(64) << 20)) GTEST_SKIP() << "host cache disabled (SIAM_HOST_CACHE_MB)";
  host::empty_cache();
  const void* first = nullptr;
  {
    Tensor t = full({1024, 1024}, 3.0, {DType::f32, Device::cpu()});
    first = t.raw_data();
  }
  Tensor u = full({1024, 1024}, 5.0, {DType::f32, Device::cpu()});
  EXPECT_EQ(u.raw_data(), first);
  const float* p = u.data<float>();
  for (int64_t i = 0; i < u.numel(); i += 4097) ASSERT_EQ(p[i], 5.0f);  // written whole, no stale values
}

TEST(HostAlloc, SmallBlocksBypassTheCache) {
  const host::CacheStats s0 = host::cache_stats();
  void* p = host::alloc(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  host::release(p, 1000);
  const host::CacheStats s1 = host::cache_stats();
  EXPECT_EQ(s1.cached_bytes, s0.cached_bytes);
  EXPECT_EQ(s1.hits + s1.misses, s0.hits + s0.misses);
}
