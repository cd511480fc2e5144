// Dropout CUDA kernels, the twins of kernels/cpu/dropout.cpp: outputs are written (=) into
// fresh tensors. The keep decision of element i is philox_uniform(seed, offset, i) >= p,
// computed with tensor/rng.h's Philox compiled for the device, so the masks equal the CPU's
// bit for bit; the kept values are x * scale in the tensor's type (f32 in f32, as on the
// CPU, so f32 outputs are bit-identical too; bf16 in f32 then rounded).
//
// Launch strategy: dropout gives each thread four consecutive elements, the four words of one
// Philox block (element i is word i of the stream: block offset + i / 4, lane i % 4), read
// as one 4-element access when x is contiguous and aligned, else through the strided
// indexer. drop_path draws the N per-sample factors in a small kernel, then scales every
// element by its sample's factor.
#include "kernels/cuda/dropout.h"

#include <type_traits>

#include "kernels/cuda/strided_iter.cuh"
#include "tensor/rng.h"

namespace siam::gpu {

namespace {

// p = 1 keeps nothing; its infinite scale is never applied.
double keep_scale(double p) { return p < 1.0 ? 1.0 / (1.0 - p) : 0.0; }

// Lane j of a Philox block as philox_uniform maps it: 24 bits, exact in f32.
__device__ inline bool keeps_word(uint32_t w, double p) {
  return static_cast<double>(static_cast<float>(w >> 8) * (1.0f / 16777216.0f)) >= p;
}

template <class T, class I, bool kVec>
__global__ void dropout_kernel(const T* x, T* y, OffsetCalc<1, I> calc, int64_t n, uint64_t seed, uint64_t offset,
                               double p, acc_t<T> scale) {
  const int64_t groups = (n + 3) / 4;
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t block = offset + static_cast<uint64_t>(g);
    uint32_t c[4] = {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u};
    philox4x32(c, k0, k1);
    const int64_t i0 = 4 * g;
    if (kVec && i0 + 4 <= n) {
      const Pack<T, 4> v = reinterpret_cast<const Pack<T, 4>*>(x)[g];
      Pack<T, 4> r;
#pragma unroll
      for (int j = 0; j < 4; ++j) r.v[j] = keeps_word(c[j], p) ? from_acc<T>(to_acc(v.v[j]) * scale) : from_acc<T>(acc_t<T>(0));
      reinterpret_cast<Pack<T, 4>*>(y)[g] = r;
      continue;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = i0 + j;
      if (i >= n) break;
      int64_t off[1];
      calc.get(static_cast<I>(i), off);
      y[i] = keeps_word(c[j], p) ? from_acc<T>(to_acc(x[off[0]]) * scale) : from_acc<T>(acc_t<T>(0));
    }
  }
}

template <class A>
__global__ void drop_path_factors_kernel(A* f, int64_t n, uint64_t seed, uint64_t offset, double p, A scale) {
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < n;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x)
    f[s] = static_cast<double>(philox_uniform(seed, offset, static_cast<uint64_t>(s))) >= p ? scale : A(0);
}

// y[i] = x[i] * f[i / per_sample]: a multiplication, as on the CPU (a dropped sample's
// inf or NaN stays NaN).
template <class T, class I>
__global__ void drop_path_kernel(const T* x, T* y, OffsetCalc<1, I> calc, IDiv<I> per_sample, const acc_t<T>* f, I n) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<I>(gridDim.x) * blockDim.x) {
    int64_t off[1];
    calc.get(i, off);
    y[i] = from_acc<T>(to_acc(x[off[0]]) * f[per_sample.div(i)]);
  }
}

}  // namespace

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  require_same_device("dropout", x, {});
  use_device(x);
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  const int64_t n = x.numel();
  if (n == 0) return y;
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "dropout", [&] {
    using T = scalar_t;
    const acc_t<T> scale = static_cast<acc_t<T>>(keep_scale(p));
    Layout<1> l = coalesce<1>(x.shape(), {x.strides()});
    const bool vec = x.is_contiguous() && reinterpret_cast<uintptr_t>(x.raw_data()) % (4 * sizeof(T)) == 0;
    const unsigned grid = grid_for((n + 3) / 4);
    auto go = [&](auto zero) {
      using I = decltype(zero);
      if (vec)
        dropout_kernel<T, I, true><<<grid, kBlock, 0, stream()>>>(dptr<T>(x), dptr<T>(y), OffsetCalc<1, I>(l), n, seed,
                                                                  offset, p, scale);
      else
        dropout_kernel<T, I, false><<<grid, kBlock, 0, stream()>>>(dptr<T>(x), dptr<T>(y), OffsetCalc<1, I>(l), n,
                                                                   seed, offset, p, scale);
    };
    if (fits_u32(n)) go(uint32_t{});
    else go(uint64_t{});
    SIAM_CUDA_LAUNCHED();
  });
  return y;
}

Tensor drop_path(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  require_same_device("drop_path", x, {});
  SIAM_CHECK(x.dim() >= 1, "drop_path on a 0-d tensor");
  use_device(x);
  const int64_t samples = x.size(0);
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t per_sample = n / samples;
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "drop_path", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    Tensor f = empty({samples}, {std::is_same_v<A, double> ? DType::f64 : DType::f32, x.device()});
    const A scale = static_cast<A>(keep_scale(p));
    drop_path_factors_kernel<A><<<grid_for(samples), kBlock, 0, stream()>>>(dptr<A>(f), samples, seed, offset, p, scale);
    SIAM_CUDA_LAUNCHED();
    Layout<1> l = coalesce<1>(x.shape(), {x.strides()});
    auto go = [&](auto zero) {
      using I = decltype(zero);
      drop_path_kernel<T, I><<<grid_for(n), kBlock, 0, stream()>>>(dptr<T>(x), dptr<T>(y), OffsetCalc<1, I>(l),
                                                                   IDiv<I>(per_sample), dptr<A>(f), static_cast<I>(n));
    };
    if (fits_u32(n)) go(uint32_t{});
    else go(uint64_t{});
    SIAM_CUDA_LAUNCHED();
  });
  return y;
}

}  // namespace siam::gpu
