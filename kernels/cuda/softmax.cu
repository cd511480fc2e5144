// Softmax CUDA kernels: outputs are written (=) into fresh contiguous tensors. x is made
// contiguous first and seen as (outer, D, inner), D the softmax dim.
//   inner == 1 (the last dim): rows of D values, cached in registers: a warp per row for
//     D <= 1024, a block of 512 threads per row for D <= 8192; longer rows are read twice
//     by a block (an online max / sum pass, then the write).
//   inner > 1: a thread per (outer, inner) column, neighbouring threads on neighbouring
//     columns so every load of a warp is coalesced; passes down the column for the max, the
//     sum and the write (the CPU twin's order).
// Reductions are fixed trees (no atomics). Exponentials and logs are the full-precision
// expf / logf (exp / log for f64); bf16 computes in f32.
#include "kernels/cuda/nn_util.cuh"
#include "kernels/cuda/softmax.h"

namespace siam::gpu {

using nn::load_vec;
using nn::store_vec;
using nn::Vec;

namespace {

constexpr int kWarpThreads = 256;  // warp path: 8 rows per block
constexpr int kRowThreads = 512;   // block path
constexpr int64_t kWarpRowMax = 1024, kBlockRowMax = 8192;

__device__ inline float exp_(float v) { return expf(v); }
__device__ inline double exp_(double v) { return exp(v); }
__device__ inline float log_(float v) { return logf(v); }
__device__ inline double log_(double v) { return log(v); }

using nn::group_max;
using nn::group_sum;

// x, y: (rows, d = dv * V). A row is held by a group of G threads (a warp, or the block):
// thread q holds vectors q, q + G, ... (K at most).
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kWarp ? kWarpThreads : kRowThreads)
    softmax_rows(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int dv, bool log) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const int G = kWarp ? 32 : blockDim.x;
  const int q0 = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t row = kWarp ? blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5) : int64_t(blockIdx.x);
  if (row >= rows) return;  // the whole warp (warp path) or block leaves together
  const int64_t d = int64_t(dv) * V;
  const T* xr = x + row * d;
  A v[K][V];
  A m = nn::neg_inf<A>();
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int q = q0 + k * G;
    if (q < dv) {
      const Vec<T, V> xv = load_vec<V>(xr + int64_t(q) * V);
#pragma unroll
      for (int l = 0; l < V; ++l) {
        v[k][l] = to_acc(xv.v[l]);
        m = fmax(m, v[k][l]);  // NaN is skipped here, as std::max skips it on the CPU
      }
    }
  }
  m = group_max<A, kWarp>(m, smem);
  A s = 0;
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (q0 + k * G < dv)
#pragma unroll
      for (int l = 0; l < V; ++l) {
        const A e = exp_(v[k][l] - m);
        s += e;
        if (!log) v[k][l] = e;
      }
  s = group_sum<A, kWarp>(s, smem);
  const A lse = m + log_(s);
  T* yr = y + row * d;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int q = q0 + k * G;
    if (q < dv) {
      Vec<T, V> out;
#pragma unroll
      for (int l = 0; l < V; ++l) out.v[l] = from_acc<T>(log ? v[k][l] - lse : v[k][l] / s);
      store_vec<V>(yr + int64_t(q) * V, out);
    }
  }
}

// softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g). Layout as softmax_rows.
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kWarp ? kWarpThreads : kRowThreads)
    softmax_backward_rows(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx, int64_t rows, int dv,
                          bool log) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const int G = kWarp ? 32 : blockDim.x;
  const int q0 = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t row = kWarp ? blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5) : int64_t(blockIdx.x);
  if (row >= rows) return;
  const int64_t d = int64_t(dv) * V;
  const T* gr = g + row * d;
  const T* yr = y + row * d;
  A gv[K][V], yv[K][V];
  A s = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int q = q0 + k * G;
    if (q < dv) {
      const Vec<T, V> a = load_vec<V>(gr + int64_t(q) * V), b = load_vec<V>(yr + int64_t(q) * V);
#pragma unroll
      for (int l = 0; l < V; ++l) {
        gv[k][l] = to_acc(a.v[l]);
        yv[k][l] = to_acc(b.v[l]);
        s += log ? gv[k][l] : gv[k][l] * yv[k][l];
      }
    }
  }
  s = group_sum<A, kWarp>(s, smem);
  T* dr = dx + row * d;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int q = q0 + k * G;
    if (q < dv) {
      Vec<T, V> out;
#pragma unroll
      for (int l = 0; l < V; ++l)
        out.v[l] = from_acc<T>(log ? gv[k][l] - exp_(yv[k][l]) * s : yv[k][l] * (gv[k][l] - s));
      store_vec<V>(dr + int64_t(q) * V, out);
    }
  }
}

// Online max and sum of exponentials (Milakov and Gimelshein): s is the sum of exp(x - m).
template <class A>
struct MaxSum {
  A m, s;
};
template <class A>
__device__ inline void online_add(MaxSum<A>& t, A x) {
  if (x > t.m) {
    t.s = t.s * exp_(t.m - x) + A(1);
    t.m = x;
  } else {
    t.s += exp_(x - t.m);  // x = NaN, or every value -inf so far: NaN, as on the CPU
  }
}
// The block's (max, sum) in every thread.
template <class A>
__device__ inline MaxSum<A> block_max_sum(MaxSum<A> t, A* smem) {
  const A m = nn::block_max(t.m, smem);
  return {m, nn::block_sum(t.s * exp_(t.m - m), smem)};
}

// Rows too long for registers: a block per row, two passes.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    softmax_rows_loop(const T* __restrict__ x, T* __restrict__ y, int64_t d, bool log) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const T* xr = x + int64_t(blockIdx.x) * d;
  MaxSum<A> t{nn::neg_inf<A>(), A(0)};
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) online_add(t, to_acc(xr[j]));
  t = block_max_sum(t, smem);
  const A lse = t.m + log_(t.s);
  T* yr = y + int64_t(blockIdx.x) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const A v = to_acc(xr[j]);
    yr[j] = from_acc<T>(log ? v - lse : exp_(v - t.m) / t.s);
  }
}

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    softmax_backward_rows_loop(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx, int64_t d,
                               bool log) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const int64_t base = int64_t(blockIdx.x) * d;
  A s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    s += log ? to_acc(g[base + j]) : to_acc(g[base + j]) * to_acc(y[base + j]);
  s = nn::block_sum(s, smem);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const A gv = to_acc(g[base + j]), yv = to_acc(y[base + j]);
    dx[base + j] = from_acc<T>(log ? gv - exp_(yv) * s : yv * (gv - s));
  }
}

// x, y: (outer, d, inner) contiguous, inner > 1; a thread per (o, i) column.
template <class T>
__global__ void softmax_cols(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t d, int64_t inner,
                             bool log) {
  using A = acc_t<T>;
  const int64_t cols = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c - o * inner;
    const int64_t base = o * d * inner + i;
    // Max first, then the sum, as the CPU twin: exact for any values, and the column is
    // read from L2 the second time.
    A m = nn::neg_inf<A>();
    for (int64_t j = 0; j < d; ++j) m = fmax(m, to_acc(x[base + j * inner]));
    A s = 0;
    for (int64_t j = 0; j < d; ++j) s += exp_(to_acc(x[base + j * inner]) - m);
    const A lse = m + log_(s);
    for (int64_t j = 0; j < d; ++j) {
      const A v = to_acc(x[base + j * inner]);
      y[base + j * inner] = from_acc<T>(log ? v - lse : exp_(v - m) / s);
    }
  }
}

template <class T>
__global__ void softmax_backward_cols(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ dx,
                                      int64_t outer, int64_t d, int64_t inner, bool log) {
  using A = acc_t<T>;
  const int64_t cols = outer * inner;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < cols; c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = c / inner, i = c - o * inner;
    const int64_t base = o * d * inner + i;
    A s = 0;
    for (int64_t j = 0; j < d; ++j) {
      const A gv = to_acc(g[base + j * inner]);
      s += log ? gv : gv * to_acc(y[base + j * inner]);
    }
    for (int64_t j = 0; j < d; ++j) {
      const A gv = to_acc(g[base + j * inner]), yv = to_acc(y[base + j * inner]);
      dx[base + j * inner] = from_acc<T>(log ? gv - exp_(yv) * s : yv * (gv - s));
    }
  }
}

struct Blocks {
  int64_t outer, d, inner;
};
Blocks blocks_of(const Shape& shape, int64_t dim) {
  Blocks b{1, shape[dim], 1};
  for (int64_t k = 0; k < dim; ++k) b.outer *= shape[k];
  for (size_t k = dim + 1; k < shape.size(); ++k) b.inner *= shape[k];
  return b;
}

// The vector width of the row kernels: f64 rows are read a value at a time (gradcheck sizes).
template <class T>
int row_vec(int64_t d, std::initializer_list<const void*> ptrs) {
  if constexpr (std::is_same_v<T, double>) return 1;
  else return nn::pick_vec<T>(d, ptrs);
}

// Launches the row kernels for (rows, d): `warp(V, K)`, `block(K)` or `loop()` by row length.
template <class T, class Warp, class Block, class Loop>
void by_row_length(const char* op, int64_t d, std::initializer_list<const void*> ptrs, Warp&& warp, Block&& block,
                   Loop&& loop) {
  if (d <= kWarpRowMax) {
    nn::dispatch_vec<T>(row_vec<T>(d, ptrs), [&](auto vc) {
      constexpr int V = decltype(vc)::value;
      const int dv = static_cast<int>(d / V);
      if (!nn::dispatch_k<V, 1, 32>(nn::next_pow2((dv + 31) / 32), [&](auto kc) { warp(vc, kc, dv); }))
        fail(op, " (CUDA): no register tile for rows of ", d);
    });
  } else if (d <= kBlockRowMax) {
    if (!nn::dispatch_k<1, 4, 16>(nn::next_pow2((d + kRowThreads - 1) / kRowThreads), [&](auto kc) { block(kc); }))
      fail(op, " (CUDA): no register tile for rows of ", d);
  } else {
    loop();
  }
  SIAM_CUDA_LAUNCHED();
}

void check_dim(const char* op, const Tensor& t, int64_t dim) {
  if (dim < 0 || dim >= t.dim()) fail(op, " (CUDA): dim ", dim, " out of range for ", t.dim(), " dimensions");
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  nn::check_args(op, x);
  check_dim(op, x, dim);
  use_device(x);
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  if (x.numel() == 0) return y;
  Tensor xd = nn::dense(x);
  const Blocks bl = blocks_of(x.shape(), dim);
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    using T = scalar_t;
    const T* px = dptr<T>(xd);
    T* py = dptr<T>(y);
    if (bl.inner > 1) {
      softmax_cols<T><<<grid_for(bl.outer * bl.inner), kBlock, 0, stream()>>>(px, py, bl.outer, bl.d, bl.inner, log);
      SIAM_CUDA_LAUNCHED();
      return;
    }
    const int64_t rows = bl.outer, d = bl.d;
    if (rows > 2147483647LL) fail(op, " (CUDA): ", rows, " rows exceed 2^31");
    by_row_length<T>(
        op, d, {px, py},
        [&](auto vc, auto kc, int dv) {
          constexpr int V = decltype(vc)::value, K = decltype(kc)::value;
          const int64_t blocks = (rows + kWarpThreads / 32 - 1) / (kWarpThreads / 32);
          softmax_rows<T, V, K, true><<<unsigned(blocks), kWarpThreads, 0, stream()>>>(px, py, rows, dv, log);
        },
        [&](auto kc) {
          constexpr int K = decltype(kc)::value;
          softmax_rows<T, 1, K, false><<<unsigned(rows), kRowThreads, 0, stream()>>>(px, py, rows, int(d), log);
        },
        [&] { softmax_rows_loop<T><<<unsigned(rows), kRowThreads, 0, stream()>>>(px, py, d, log); });
  });
  return y;
}

Tensor softmax_backward(const Tensor& g, const Tensor& y, int64_t dim, bool log) {
  const char* op = log ? "log_softmax backward" : "softmax backward";
  nn::check_args(op, y, {{"g", &g}});
  check_dim(op, y, dim);
  if (g.shape() != y.shape()) fail(op, " (CUDA): g has shape ", shape_str(g.shape()), ", expected y's ", shape_str(y.shape()));
  use_device(y);
  Tensor dx = empty(y.shape(), {y.dtype(), y.device()});
  if (y.numel() == 0) return dx;
  Tensor gd = nn::dense(g), yd = nn::dense(y);
  const Blocks bl = blocks_of(y.shape(), dim);
  SIAM_CUDA_DISPATCH_FLOAT(y.dtype(), op, [&] {
    using T = scalar_t;
    const T* pg = dptr<T>(gd);
    const T* py = dptr<T>(yd);
    T* pd = dptr<T>(dx);
    if (bl.inner > 1) {
      softmax_backward_cols<T><<<grid_for(bl.outer * bl.inner), kBlock, 0, stream()>>>(pg, py, pd, bl.outer, bl.d,
                                                                                        bl.inner, log);
      SIAM_CUDA_LAUNCHED();
      return;
    }
    const int64_t rows = bl.outer, d = bl.d;
    if (rows > 2147483647LL) fail(op, " (CUDA): ", rows, " rows exceed 2^31");
    by_row_length<T>(
        op, d, {pg, py, pd},
        [&](auto vc, auto kc, int dv) {
          constexpr int V = decltype(vc)::value, K = decltype(kc)::value;
          const int64_t blocks = (rows + kWarpThreads / 32 - 1) / (kWarpThreads / 32);
          softmax_backward_rows<T, V, K, true><<<unsigned(blocks), kWarpThreads, 0, stream()>>>(pg, py, pd, rows, dv, log);
        },
        [&](auto kc) {
          constexpr int K = decltype(kc)::value;
          softmax_backward_rows<T, 1, K, false><<<unsigned(rows), kRowThreads, 0, stream()>>>(pg, py, pd, rows, int(d),
                                                                                            log);
        },
        [&] { softmax_backward_rows_loop<T><<<unsigned(rows), kRowThreads, 0, stream()>>>(pg, py, pd, d, log); });
  });
  return dx;
}

}  // namespace siam::gpu
