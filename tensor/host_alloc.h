#pragma once
// Host memory for tensor storage. Large blocks (1 MiB and up) are kept in a cache when freed and
// handed out again for a request of the same size class: a training step frees and reallocates
// the same activation and gradient sizes every step, and fresh memory from the OS costs a page
// fault and a page zeroing per 4 KiB (measured: a quarter of the kernel time of a CPU SimCLR
// step). Size classes are the request rounded up to 1/8 of its power-of-two range, so a block
// is reused only for requests within 12.5% of its size. The cache holds at most
// max_cached_bytes() of free blocks (SIAM_HOST_CACHE_MB, default 2048; 0 turns the cache off);
// past that, freed blocks go back to the OS. Small blocks go to malloc as they are.
#include <cstddef>
#include <cstdint>

namespace siam::host {

void* alloc(size_t nbytes);              // 64-byte aligned, nbytes > 0; null when out of memory
void release(void* p, size_t nbytes);    // nbytes: as passed to alloc

struct CacheStats {
  size_t cached_bytes = 0;  // free blocks held now
  uint64_t hits = 0;        // requests served from the cache
  uint64_t misses = 0;      // large requests that had to allocate
};
CacheStats cache_stats();
size_t max_cached_bytes();
void empty_cache();  // frees every cached block
size_t size_class(size_t nbytes);  // the block size a request of nbytes gets

}  // namespace siam::host
