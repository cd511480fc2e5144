#pragma once
// Pieces shared by the normalisation, softmax, pooling and resize CUDA kernels: argument
// checks, layout helpers (dense and channels-last copies made on the device), aligned vector
// loads, deterministic warp / block reductions and a 32-bit fast division for index math.
// Included only by .cu files.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "kernels/cuda/common.cuh"

namespace siam::gpu::nn {

// ---------------------------------------------------------------- checks

// x must be a floating CUDA tensor; every defined tensor in `others` must sit on x's device
// and have x's dtype. A violation names the op, the argument, what was expected and found.
inline void check_args(const char* op, const Tensor& x,
                       std::initializer_list<std::pair<const char*, const Tensor*>> others = {}) {
  if (!x.device().is_cuda()) fail(op, " (CUDA): x is on ", x.device().str(), ", expected a CUDA tensor");
  if (x.dtype() != DType::f32 && x.dtype() != DType::f64 && x.dtype() != DType::bf16)
    fail(op, " (CUDA): expected f32, f64 or bf16, got ", dtype_name(x.dtype()));
  for (const auto& [name, t] : others) {
    if (!t->defined()) continue;
    if (t->device() != x.device())
      fail(op, " (CUDA): ", name, " is on ", t->device().str(), ", expected ", x.device().str(), " like x");
    if (t->dtype() != x.dtype())
      fail(op, " (CUDA): ", name, " is ", dtype_name(t->dtype()), ", expected ", dtype_name(x.dtype()), " like x");
  }
}

// Statistics (means, inverse deviations) are kept in the accumulation type: f32 for bf16.
inline DType stat_dtype(DType t) { return t == DType::bf16 ? DType::f32 : t; }

inline int sm_count(int device) {
  static int cache[64] = {};
  if (device < 0 || device >= 64) device = 0;
  if (cache[device] == 0) {
    int n = 0;
    SIAM_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device] = n > 0 ? n : 1;
  }
  return cache[device];
}

// ---------------------------------------------------------------- layouts

// (N, C, H, W) stored as (N, H, W, C): strides (HWC, 1, WC, C) on every dim longer than 1.
inline bool is_channels_last(const Tensor& t) {
  if (t.dim() != 4) return false;
  const int64_t c = t.size(1), h = t.size(2), w = t.size(3);
  const int64_t want[4] = {h * w * c, 1, w * c, c};
  for (int d = 0; d < 4; ++d)
    if (t.size(d) > 1 && t.stride(d) != want[d]) return false;
  return true;
}

// An uninitialised (N, C, H, W) tensor stored channels-last.
inline Tensor empty_channels_last(const Shape& s, DType dt, Device dev) {
  Tensor base = empty({s[0], s[2], s[3], s[1]}, {dt, dev});
  return base.as_strided(s, {s[2] * s[3] * s[1], 1, s[3] * s[1], s[1]}, 0);
}

template <class E>
__global__ void copy_strided_kernel(E* __restrict__ dst, const E* __restrict__ src, Strided sd, Strided ss,
                                    int64_t n) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x)
    dst[sd.offset(j)] = src[ss.offset(j)];
}

// Copies src into dst (same shape and dtype, any strides, same device), walking dst in its
// memory order (dims by decreasing stride) so the writes are coalesced.
inline void copy_strided(const Tensor& dst, const Tensor& src) {
  SIAM_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), "copy_strided: ", shape_str(dst.shape()),
             " vs ", shape_str(src.shape()));
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int nd = static_cast<int>(dst.dim());
  if (nd > kMaxDims) fail("CUDA kernels take at most ", kMaxDims, " dimensions, got ", nd);
  int perm[kMaxDims];
  for (int d = 0; d < nd; ++d) perm[d] = d;
  for (int a = 1; a < nd; ++a)  // insertion sort: stable, by decreasing dst stride
    for (int b = a; b > 0 && dst.stride(perm[b]) > dst.stride(perm[b - 1]); --b) std::swap(perm[b], perm[b - 1]);
  Strided sd, ss;
  sd.ndim = ss.ndim = nd;
  for (int d = 0; d < nd; ++d) {
    sd.size[d] = ss.size[d] = dst.size(perm[d]);
    sd.stride[d] = dst.stride(perm[d]);
    ss.stride[d] = src.size(perm[d]) == 1 ? 0 : src.stride(perm[d]);
  }
  use_device(dst);
  const unsigned grid = grid_for(n);
  switch (dtype_size(dst.dtype())) {
    case 1: copy_strided_kernel<<<grid, kBlock, 0, stream()>>>(dptr<uint8_t>(dst), dptr<uint8_t>(src), sd, ss, n); break;
    case 2: copy_strided_kernel<<<grid, kBlock, 0, stream()>>>(dptr<uint16_t>(dst), dptr<uint16_t>(src), sd, ss, n); break;
    case 4: copy_strided_kernel<<<grid, kBlock, 0, stream()>>>(dptr<uint32_t>(dst), dptr<uint32_t>(src), sd, ss, n); break;
    case 8: copy_strided_kernel<<<grid, kBlock, 0, stream()>>>(dptr<uint64_t>(dst), dptr<uint64_t>(src), sd, ss, n); break;
    default: fail("copy_strided: unsupported element size ", dtype_size(dst.dtype()));
  }
  SIAM_CUDA_LAUNCHED();
}

// t itself when contiguous, else a contiguous copy made on the device.
inline Tensor dense(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor r = empty(t.shape(), {t.dtype(), t.device()});
  copy_strided(r, t);
  return r;
}

// t itself when contiguous and aligned to `bytes`, else a fresh (pool-aligned) copy: for small
// per-channel tensors read with vector loads.
inline Tensor dense_aligned(const Tensor& t, size_t bytes) {
  if (t.is_contiguous() && reinterpret_cast<uintptr_t>(t.raw_data()) % bytes == 0) return t;
  Tensor r = empty(t.shape(), {t.dtype(), t.device()});
  copy_strided(r, t);
  return r;
}

// t itself when channels-last, else a channels-last copy.
inline Tensor channels_last(const Tensor& t) {
  if (is_channels_last(t)) return t;
  Tensor r = empty_channels_last(t.shape(), t.dtype(), t.device());
  copy_strided(r, t);
  return r;
}

// ---------------------------------------------------------------- vectors

// V elements loaded or stored with one instruction; the address must be aligned to the size.
template <class T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

template <int V, class T>
__device__ inline Vec<T, V> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, V>*>(p);
}
template <int V, class T>
__device__ inline void store_vec(T* p, const Vec<T, V>& v) {
  *reinterpret_cast<Vec<T, V>*>(p) = v;
}

// Widest vector (16 bytes) for a dtype.
template <class T> constexpr int kMaxVec = static_cast<int>(16 / sizeof(T));

inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The widest V (a power of two, at most kMaxVec<T>) that divides n and to which every non-null
// pointer is aligned (V * sizeof(T) bytes).
template <class T>
inline int pick_vec(int64_t n, std::initializer_list<const void*> ptrs) {
  for (int v = kMaxVec<T>; v > 1; v /= 2) {
    bool ok = n % v == 0;
    for (const void* p : ptrs) ok = ok && (p == nullptr || aligned(p, v * sizeof(T)));
    if (ok) return v;
  }
  return 1;
}

// Calls f(std::integral_constant<int, V>{}) for a V that pick_vec<T> returned.
template <class T, class F>
inline void dispatch_vec(int v, F&& f) {
  if constexpr (kMaxVec<T> >= 8)
    if (v == 8) return f(std::integral_constant<int, 8>{});
  if constexpr (kMaxVec<T> >= 4)
    if (v == 4) return f(std::integral_constant<int, 4>{});
  if (v == 2) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 1>{});
}

// Calls f(std::integral_constant<int, K>{}) for K = k, a power of two in [KMin, KMax] with
// K * V <= 32: the per-thread register tile of the row kernels (K vectors of V values).
// Returns false (and calls nothing) for a k outside that set.
template <int V, int KMin, int KMax, class F>
[[nodiscard]] inline bool dispatch_k(int k, F&& f) {
  bool done = false;
  auto one = [&](auto kc) {
    constexpr int K = decltype(kc)::value;
    if constexpr (K >= KMin && K <= KMax && K * V <= 32)
      if (k == K) {
        f(kc);
        done = true;
      }
  };
  one(std::integral_constant<int, 1>{});
  one(std::integral_constant<int, 2>{});
  one(std::integral_constant<int, 4>{});
  one(std::integral_constant<int, 8>{});
  one(std::integral_constant<int, 16>{});
  one(std::integral_constant<int, 32>{});
  return done;
}

inline int next_pow2(int64_t n) {
  int k = 1;
  while (k < n) k *= 2;
  return k;
}

// ---------------------------------------------------------------- reductions

template <class A> __device__ inline A neg_inf();
template <> __device__ inline float neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ inline double neg_inf<double>() { return -__longlong_as_double(0x7ff0000000000000LL); }

// Butterfly sums and maxima: every lane ends with the same, bit-identical value (IEEE addition
// is commutative, and each level combines the same pair on both sides).
template <class A>
__device__ inline A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A>
__device__ inline A warp_max(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max, the result returned to every thread. `smem` holds 32 values; the
// block size is a multiple of 32. Fixed order: the same inputs give the same bits.
template <class A>
__device__ inline A block_sum(A v, A* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < nw ? smem[lane] : A(0);
  return warp_sum(v);
}
template <class A>
__device__ inline A block_max(A v, A* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < nw ? smem[lane] : neg_inf<A>();
  return warp_max(v);
}

// The sum / max over a group of threads that holds one row: a warp (kWarp) or the whole block.
// Both leave the same value in every thread of the group.
template <class A, bool kWarp>
__device__ inline A group_sum(A v, A* smem) {
  if constexpr (kWarp) return warp_sum(v);
  else return block_sum(v, smem);
}
template <class A, bool kWarp>
__device__ inline A group_max(A v, A* smem) {
  if constexpr (kWarp) return warp_max(v);
  else return block_max(v, smem);
}

// ---------------------------------------------------------------- index math

// n / d and n % d for 32-bit n by a multiply and a shift (Granlund and Montgomery, "Division
// by invariant integers using multiplication", 1994, with the 33-bit sum done in 64 bits):
// exact for every n < 2^32 and 1 <= d < 2^32.
struct FastDiv {
  uint32_t d = 1, m = 1, l = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t div) : d(div) {
    if (div == 0) div = d = 1;  // only reached for empty tensors, whose loops never run
    l = 0;
    while ((uint64_t(1) << l) < div) ++l;
    m = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << l) - div)) / div + 1);
  }
  __host__ __device__ inline uint32_t div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    uint32_t hi = __umulhi(n, m);
#else
    uint32_t hi = static_cast<uint32_t>((uint64_t(n) * m) >> 32);
#endif
    return static_cast<uint32_t>((uint64_t(hi) + n) >> l);
  }
  __host__ __device__ inline uint32_t mod(uint32_t n) const { return n - div(n) * d; }
};

// The k-th of `parts` near-equal slices of [0, n): [slice_begin(k), slice_begin(k + 1)).
__host__ __device__ inline int64_t slice_begin(int64_t k, int64_t parts, int64_t n) {
  return n / parts * k + (k < n % parts ? k : n % parts);
}

}  // namespace siam::gpu::nn
