#pragma once
// Offset arithmetic shared by the elementwise, reduction, index, dropout and copy kernels:
// fast division by runtime sizes, an N-operand strided indexer with dimension coalescing,
// the all-dtype dispatch, and the launchers of elementwise maps (a vectorised path for
// contiguous aligned operands, a strided path for everything else). Included only by .cu
// files.
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace siam::gpu {

// Calls BODY with `scalar_t` bound to the device type of any DTYPE (bf16 = __nv_bfloat16,
// bool = bool, one byte).
#define SIAM_CUDA_DISPATCH_ALL(DTYPE, NAME, ...)                                          \
  [&] {                                                                                   \
    switch (DTYPE) {                                                                      \
      case ::siam::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }          \
      case ::siam::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }         \
      case ::siam::DType::bf16: { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); } \
      case ::siam::DType::i32: { using scalar_t = int32_t; return __VA_ARGS__(); }        \
      case ::siam::DType::i64: { using scalar_t = int64_t; return __VA_ARGS__(); }        \
      case ::siam::DType::u8: { using scalar_t = uint8_t; return __VA_ARGS__(); }         \
      case ::siam::DType::b8: { using scalar_t = bool; return __VA_ARGS__(); }            \
    }                                                                                     \
    ::siam::fail(NAME, ": unsupported dtype");                                            \
  }()

// Unsigned division by a runtime constant through a multiply-high and a shift (Granlund and
// Montgomery): with s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1,
// n / d == (umulhi(n, m) + n) >> s for every n, d < 2^31. A 32-bit hardware division costs
// about twenty instructions; this costs three.
struct FastDiv {
  uint32_t d = 1, m = 1, s = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t div) : d(div) {
    s = 0;
    while ((uint64_t(1) << s) < d) ++s;
    m = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }
  __host__ __device__ inline uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    return (__umulhi(n, m) + n) >> s;
#else
    return static_cast<uint32_t>(((static_cast<uint64_t>(n) * m) >> 32) + n) >> s;
#endif
  }
};

// Division by a size in the kernel's index type: FastDiv for 32-bit indices (element counts
// below 2^31), plain 64-bit division otherwise.
template <class I> struct IDiv;
template <> struct IDiv<uint32_t> {
  FastDiv f;
  uint32_t d = 1;
  IDiv() = default;
  explicit IDiv(int64_t v) : f(static_cast<uint32_t>(v)), d(static_cast<uint32_t>(v)) {}
  __host__ __device__ inline uint32_t div(uint32_t n) const { return f.div(n); }
};
template <> struct IDiv<uint64_t> {
  uint64_t d = 1;
  IDiv() = default;
  explicit IDiv(int64_t v) : d(static_cast<uint64_t>(v)) {}
  __host__ __device__ inline uint64_t div(uint64_t n) const { return n / d; }
};

// A shape with N stride vectors over it (in elements), row-major. coalesce() drops size-1
// dimensions and merges neighbours that every operand walks as one (stride[i] ==
// stride[i+1] * size[i+1]), so a contiguous operand set becomes one dimension and offsets
// cost no division at all.
template <int N> struct Layout {
  Shape shape;
  std::array<Shape, N> strides;
};

template <int N>
inline Layout<N> coalesce(const Shape& shape, const std::array<Shape, N>& strides) {
  Layout<N> r;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!r.shape.empty()) {
      bool merge = true;
      for (int k = 0; k < N; ++k) merge = merge && r.strides[k].back() == strides[k][d] * shape[d];
      if (merge) {
        r.shape.back() *= shape[d];
        for (int k = 0; k < N; ++k) r.strides[k].back() = strides[k][d];
        continue;
      }
    }
    r.shape.push_back(shape[d]);
    for (int k = 0; k < N; ++k) r.strides[k].push_back(strides[k][d]);
  }
  return r;
}

// Flat row-major index over a coalesced shape -> element offsets of N operands. Dimensions
// are stored innermost first; the outermost needs no division (its index is what is left).
template <int N, class I> struct OffsetCalc {
  int ndim = 0;
  IDiv<I> size[kMaxDims];
  int64_t stride[kMaxDims][N] = {};

  OffsetCalc() = default;
  explicit OffsetCalc(const Layout<N>& l) {
    ndim = static_cast<int>(l.shape.size());
    if (ndim > kMaxDims)
      fail("CUDA kernels take at most ", kMaxDims, " non-mergeable dimensions, got ", ndim, " (shape ",
           shape_str(l.shape), ")");
    for (int d = 0; d < ndim; ++d) {
      int src = ndim - 1 - d;
      size[d] = IDiv<I>(l.shape[src]);
      for (int k = 0; k < N; ++k) stride[d][k] = l.strides[k][src];
    }
  }

  __device__ inline void get(I flat, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      if (d >= ndim) break;
      I idx = flat;
      if (d + 1 < ndim) {
        I q = size[d].div(flat);
        idx = flat - q * size[d].d;
        flat = q;
      }
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += static_cast<int64_t>(idx) * stride[d][k];
    }
  }
};

// True when n elements can be indexed with 32-bit arithmetic (FastDiv's range).
inline bool fits_u32(int64_t n) { return n < (int64_t(1) << 31); }

// Grid-stride loop over n flat indices; f(flat, offsets) does the element's work.
template <int N, class I, class F>
__global__ void strided_apply_kernel(OffsetCalc<N, I> calc, I n, F f) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    int64_t off[N];
    calc.get(i, off);
    f(static_cast<int64_t>(i), off);
  }
}

// The dims of `shape` reordered by decreasing stride of operand 0 (stable), so that walking
// the result row-major walks operand 0 in memory order: a strided destination (a
// channels-last view, an in-place op on a transposed tensor) is then written coalesced.
template <int N>
inline void order_by_first(Shape& shape, std::array<Shape, N>& strides) {
  const size_t nd = shape.size();
  std::vector<size_t> perm(nd);
  for (size_t d = 0; d < nd; ++d) perm[d] = d;
  for (size_t a = 1; a < nd; ++a)  // insertion sort: stable
    for (size_t b = a; b > 0 && strides[0][perm[b]] > strides[0][perm[b - 1]]; --b) std::swap(perm[b], perm[b - 1]);
  Shape s(nd);
  std::array<Shape, N> st;
  for (int k = 0; k < N; ++k) st[k].resize(nd);
  for (size_t d = 0; d < nd; ++d) {
    s[d] = shape[perm[d]];
    for (int k = 0; k < N; ++k) st[k][d] = strides[k][perm[d]];
  }
  shape = std::move(s);
  strides = std::move(st);
}

// Runs f(flat, offsets[N]) for every element of `shape`, where offsets[k] is the element
// offset of operand k (strides[k]) at row-major index flat. Launches on siam's stream.
// memory_order: walk the elements in operand 0's memory order instead (order_by_first);
// flat is then not the row-major index, so only for an f that does not use it.
template <int N, class F>
void strided_apply(const Shape& shape_in, const std::array<Shape, N>& strides_in, const F& f,
                   bool memory_order = false) {
  const int64_t n = shape_numel(shape_in);
  if (n == 0) return;
  Shape shape = shape_in;
  std::array<Shape, N> strides = strides_in;
  if (memory_order) order_by_first<N>(shape, strides);
  Layout<N> l = coalesce<N>(shape, strides);
  if (fits_u32(n)) {
    strided_apply_kernel<N, uint32_t, F><<<grid_for(n), kBlock, 0, stream()>>>(
        OffsetCalc<N, uint32_t>(l), static_cast<uint32_t>(n), f);
  } else {
    strided_apply_kernel<N, uint64_t, F><<<grid_for(n), kBlock, 0, stream()>>>(
        OffsetCalc<N, uint64_t>(l), static_cast<uint64_t>(n), f);
  }
  SIAM_CUDA_LAUNCHED();
}

// ---------------------------------------------------------------- elementwise maps

// W elements of T loaded or stored as one access (16 bytes for W = 16 / sizeof(T)).
template <class T, int W> struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

template <class T, int K> struct Inputs {
  const T* p[K];
};

template <class F, class T, int W, int K, size_t... I>
__device__ inline T call_lane(const F& f, const Pack<T, W> (&x)[K], int j, std::index_sequence<I...>) {
  return f(x[I].v[j]...);
}
template <class F, class T, int K, size_t... I>
__device__ inline T call_at(const F& f, const Inputs<T, K>& in, int64_t i, std::index_sequence<I...>) {
  return f(in.p[I][i]...);
}

// out[i] = f(in_0[i], ..., in_{K-1}[i]) over contiguous arrays, W elements per access, with
// a scalar tail. out may alias an input (in-place ops): each element is read, then written,
// by the same thread.
template <class T, int K, int W, class F>
__global__ void map_contiguous_kernel(F f, T* out, Inputs<T, K> in, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nv = n / W;
  for (int64_t v = tid; v < nv; v += step) {
    Pack<T, W> x[K];
#pragma unroll
    for (int k = 0; k < K; ++k) x[k] = reinterpret_cast<const Pack<T, W>*>(in.p[k])[v];
    Pack<T, W> y;
#pragma unroll
    for (int j = 0; j < W; ++j) y.v[j] = call_lane<F, T, W, K>(f, x, j, std::make_index_sequence<K>{});
    reinterpret_cast<Pack<T, W>*>(out)[v] = y;
  }
  for (int64_t i = nv * W + tid; i < n; i += step) out[i] = call_at<F, T, K>(f, in, i, std::make_index_sequence<K>{});
}

template <class T, int K, class F> struct StridedMap {
  F f;
  T* out;
  Inputs<T, K> in;
  __device__ inline void operator()(int64_t, const int64_t (&off)[K + 1]) const {
    out[off[0]] = eval(off, std::make_index_sequence<K>{});
  }
  template <size_t... I>
  __device__ inline T eval(const int64_t (&off)[K + 1], std::index_sequence<I...>) const {
    return f(in.p[I][off[I + 1]]...);
  }
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// out = f(in...) elementwise over `shape`. out_strides and in_strides are the operands'
// strides seen through `shape` (0 on broadcast dims). When every operand is contiguous over
// the whole shape and 16-byte aligned, the vectorised kernel runs; otherwise the strided one.
template <class T, int K, class F>
void launch_map(const F& f, T* out, const Shape& shape, const Shape& out_strides,
                const std::array<const T*, K>& in, const std::array<Shape, K>& in_strides) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const Shape cs = contiguous_strides(shape);
  bool contiguous = true, aligned = aligned16(out);
  auto dense = [&](const Shape& st) {
    for (size_t d = 0; d < shape.size(); ++d)
      if (shape[d] != 1 && st[d] != cs[d]) return false;
    return true;
  };
  contiguous = dense(out_strides);
  Inputs<T, K> ptrs;
  for (int k = 0; k < K; ++k) {
    ptrs.p[k] = in[k];
    contiguous = contiguous && dense(in_strides[k]);
    aligned = aligned && aligned16(in[k]);
  }
  if (contiguous) {
    constexpr int W = 16 / sizeof(T);
    if (aligned) {
      map_contiguous_kernel<T, K, W, F><<<grid_for((n + W - 1) / W), kBlock, 0, stream()>>>(f, out, ptrs, n);
    } else {
      map_contiguous_kernel<T, K, 1, F><<<grid_for(n), kBlock, 0, stream()>>>(f, out, ptrs, n);
    }
    SIAM_CUDA_LAUNCHED();
    return;
  }
  std::array<Shape, K + 1> st;
  st[0] = out_strides;
  for (int k = 0; k < K; ++k) st[k + 1] = in_strides[k];
  strided_apply<K + 1>(shape, st, StridedMap<T, K, F>{f, out, ptrs}, true);
}

// Every tensor on `ref`'s CUDA device, else a siam::Error naming the op.
inline void require_same_device(const char* op, const Tensor& ref, std::initializer_list<const Tensor*> others) {
  if (!ref.device().is_cuda()) fail(op, ": expected a CUDA tensor, got one on ", ref.device().str());
  for (const Tensor* t : others)
    if (t->device() != ref.device())
      fail(op, ": expected every tensor on ", ref.device().str(), ", got one on ", t->device().str());
}

}  // namespace siam::gpu
