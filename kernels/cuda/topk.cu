// Row-wise top-k on the GPU: one block per row, k rounds; round j scans the row for the best
// entry strictly after the one chosen in round j - 1 under the (value desc, index asc) order,
// with a block-wide tree reduction (no atomics: bit-identical run to run). O(k N) per row:
// meant for the small k of a nearest-neighbour search (tens), where the scans hit L1/L2.
// Outputs are written (=).
#include <cuda/std/limits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/topk.h"

namespace siam::gpu {

namespace {

constexpr int kTopkBlock = 256;

template <class A>
__device__ inline A rank_key(A v) {
  return v != v ? -cuda::std::numeric_limits<A>::infinity() : v;  // NaN counts as -inf
}

// True when (ka, ia) ranks before (kb, ib); index -1 is "no candidate" and ranks last.
template <class A>
__device__ inline bool before(A ka, int64_t ia, A kb, int64_t ib) {
  if (ia < 0) return false;
  if (ib < 0) return true;
  return ka > kb || (ka == kb && ia < ib);
}

// x: (R, N) with strides (s0, s1); values, indices: (R, k) contiguous.
template <class T>
__global__ void topk_kernel(const T* __restrict__ x, int64_t n, int64_t s0, int64_t s1, int64_t k,
                            T* __restrict__ values, int64_t* __restrict__ indices) {
  using A = acc_t<T>;
  __shared__ A s_key[kTopkBlock];
  __shared__ int64_t s_idx[kTopkBlock];
  const int t = threadIdx.x;
  const T* row = x + static_cast<int64_t>(blockIdx.x) * s0;
  A prev_key = cuda::std::numeric_limits<A>::infinity();
  int64_t prev_idx = -1;  // nothing chosen yet: every entry ranks after it
  for (int64_t j = 0; j < k; ++j) {
    A best_key = -cuda::std::numeric_limits<A>::infinity();
    int64_t best_idx = -1;
    for (int64_t i = t; i < n; i += kTopkBlock) {
      const A v = rank_key(to_acc(row[i * s1]));
      const bool after_prev = v < prev_key || (v == prev_key && i > prev_idx);
      if (after_prev && before(v, i, best_key, best_idx)) {
        best_key = v;
        best_idx = i;
      }
    }
    s_key[t] = best_key;
    s_idx[t] = best_idx;
    __syncthreads();
    for (int s = kTopkBlock / 2; s > 0; s >>= 1) {
      if (t < s && before(s_key[t + s], s_idx[t + s], s_key[t], s_idx[t])) {
        s_key[t] = s_key[t + s];
        s_idx[t] = s_idx[t + s];
      }
      __syncthreads();
    }
    prev_key = s_key[0];
    prev_idx = s_idx[0];
    __syncthreads();  // everyone has read the winner before the next round overwrites it
    if (t == 0) {
      const int64_t o = static_cast<int64_t>(blockIdx.x) * k + j;
      values[o] = row[prev_idx * s1];
      indices[o] = prev_idx;
    }
  }
}

}  // namespace

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k) {
  if (x.dim() != 2) fail("topk: expected a (R, N) tensor, got ", shape_str(x.shape()));
  if (k < 1 || k > x.size(1)) fail("topk: k = ", k, ", expected 1 .. ", x.size(1), " (the row length)");
  if (!x.device().is_cuda()) fail("topk (CUDA): x is on ", x.device().str(), ", expected a CUDA tensor");
  const int64_t rows = x.size(0), n = x.size(1);
  if (rows > 2147483647LL) fail("topk (CUDA): ", rows, " rows, at most 2^31 - 1");
  use_device(x);
  Tensor values = empty({rows, k}, {x.dtype(), x.device()});
  Tensor indices = empty({rows, k}, {DType::i64, x.device()});
  if (rows == 0) return {values, indices};
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "topk", [&] {
    topk_kernel<scalar_t><<<static_cast<unsigned>(rows), kTopkBlock, 0, stream()>>>(
        dptr<const scalar_t>(x), n, x.stride(0), x.stride(1), k, dptr<scalar_t>(values), dptr<int64_t>(indices));
    SIAM_CUDA_LAUNCHED();
  });
  return {values, indices};
}

}  // namespace siam::gpu
