#include "tensor/host_alloc.h"

#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace siam::host {
namespace {

constexpr size_t kLarge = size_t(1) << 20;  // blocks from here on are cached

size_t read_limit() {
  const char* e = std::getenv("SIAM_HOST_CACHE_MB");
  if (!e || !*e) return size_t(2048) << 20;
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(e, &end, 10);
  return end && *end == '\0' ? size_t(mb) << 20 : size_t(2048) << 20;
}

struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free;  // size class -> free blocks
  size_t cached = 0, limit = read_limit();
  uint64_t hits = 0, misses = 0;
  ~Cache() { clear(); }
  void clear() {
    for (auto& [size, blocks] : free)
      for (void* p : blocks) std::free(p);
    free.clear();
    cached = 0;
  }
};

// Never destroyed before the last tensor: function-local static, leaked on purpose so that
// tensors freed by other static destructors still find it.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

}  // namespace

size_t size_class(size_t n) {
  n = (n + 63) / 64 * 64;
  if (n < kLarge) return n;
  size_t top = size_t(1) << (63 - __builtin_clzll(n));  // largest power of two <= n
  const size_t step = top / 8;
  return (n + step - 1) / step * step;
}

size_t max_cached_bytes() { return cache().limit; }

void* alloc(size_t nbytes) {
  const size_t size = size_class(nbytes);
  if (size >= kLarge) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free.find(size);
    if (it != c.free.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.cached -= size;
      ++c.hits;
      return p;
    }
    ++c.misses;
  }
  return std::aligned_alloc(64, size);
}

void release(void* p, size_t nbytes) {
  if (!p) return;
  const size_t size = size_class(nbytes);
  if (size >= kLarge) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.cached + size <= c.limit) {
      c.free[size].push_back(p);
      c.cached += size;
      return;
    }
  }
  std::free(p);
}

CacheStats cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.cached, c.hits, c.misses};
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.clear();
}

}  // namespace siam::host
