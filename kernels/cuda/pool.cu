// Pooling CUDA kernels on NCHW tensors (inputs made contiguous first), PyTorch semantics as
// the CPU twin. Forward kernels write (=) a thread per output. The average-pool backwards
// write (=) a thread per input element, which gathers the outputs whose windows hold it; max
// pooling's backward (no window geometry in its signature) adds (+=) each output's gradient
// at its argmax into a zeroed gradient, a warp per plane. Either way each input's terms are
// summed in the CPU twin's order (output row, then column) with no atomics: the same bits run
// to run, and for f32 and f64 the same sums as the CPU's.
#include "kernels/cuda/nn_util.cuh"
#include "kernels/cuda/pool.h"

namespace siam::gpu {

namespace {

// A strided window along one dim: input [b, e), `count` cells in the divisor (padding counted).
struct Span {
  int64_t b, e, count;
};
__host__ __device__ inline Span pool_span(int64_t o, int64_t in, int64_t k, int64_t s, int64_t p) {
  const int64_t start = o * s - p, end = min(start + k, in + p);
  return {max(start, int64_t(0)), min(end, in), end - start};
}
__host__ __device__ inline Span adaptive_span(int64_t o, int64_t in, int64_t out) {
  const int64_t b = o * in / out, e = ((o + 1) * in + out - 1) / out;
  return {b, e, e - b};
}
// The outputs [lo, hi] of a strided pool whose windows hold input i.
__host__ __device__ inline void pool_outputs(int64_t i, int64_t out, int64_t k, int64_t s, int64_t p, int64_t& lo, int64_t& hi) {
  lo = i + p < k ? 0 : (i + p - k) / s + 1;
  hi = min(out - 1, (i + p) / s);
}

struct Geom {
  int64_t P, H, W, Ho, Wo, k, s, p;
};

// x: (P, H, W) -> y, idx: (P, Ho, Wo).
template <class T>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ idx, Geom g) {
  using A = acc_t<T>;
  const int64_t n = g.P * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % g.Wo, t = i / g.Wo, oh = t % g.Ho, pl = t / g.Ho;
    const Span hs = pool_span(oh, g.H, g.k, g.s, g.p), ws = pool_span(ow, g.W, g.k, g.s, g.p);
    const T* xp = x + pl * g.H * g.W;
    A best = nn::neg_inf<A>();
    int64_t arg = hs.b * g.W + ws.b;
    for (int64_t h = hs.b; h < hs.e; ++h)
      for (int64_t w = ws.b; w < ws.e; ++w) {
        const A v = to_acc(xp[h * g.W + w]);
        if (v > best || isnan(v)) {  // NaN wins, as on the CPU
          best = v;
          arg = h * g.W + w;
        }
      }
    y[i] = from_acc<T>(best);
    idx[i] = arg;
  }
}

// gy, idx: (P, L = Ho * Wo) -> acc: (P, HW), zeroed by the caller. The backward is given no
// window geometry, so it scatters like the CPU twin, deterministically: a warp walks a plane's
// outputs 32 at a time in order; lanes of a batch that hit the same input are grouped
// (__match_any_sync) and their lowest lane adds the group's values in lane order. So every
// input receives its contributions in the CPU's order, with no atomics.
template <class T, class S>
__global__ void max_pool_backward_planes(const T* __restrict__ gy, const int64_t* __restrict__ idx, S* __restrict__ acc,
                                         int64_t P, int64_t HW, int64_t L) {
  using A = acc_t<T>;
  constexpr int kWarps = kBlock / 32;
  __shared__ A vals[kWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  for (int64_t pl = blockIdx.x * int64_t(kWarps) + warp; pl < P; pl += warps) {
    S* dp = acc + pl * HW;
    for (int64_t base = 0; base < L; base += 32) {
      const int64_t l = base + lane;
      const bool valid = l < L;
      const long long tgt = valid ? static_cast<long long>(idx[pl * L + l]) : -1;
      vals[warp][lane] = valid ? to_acc(gy[pl * L + l]) : A(0);
      const unsigned peers = __match_any_sync(0xffffffffu, tgt);
      __syncwarp();
      if (valid && tgt >= 0 && tgt < HW && lane == __ffs(peers) - 1) {
        A a = to_acc(dp[tgt]);
        for (unsigned m = peers; m != 0; m &= m - 1) a += vals[warp][__ffs(m) - 1];
        dp[tgt] = from_acc<S>(a);
      }
      __syncwarp();  // the next batch reuses vals and may read what this one wrote
    }
  }
}

template <class T>
__global__ void cast_from_f32(const float* __restrict__ src, T* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_acc<T>(src[i]);
}

// Window means: strided (count_include_pad) when adaptive is false, else adaptive windows.
template <class T, bool kAdaptive>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y, Geom g) {
  using A = acc_t<T>;
  const int64_t n = g.P * g.Ho * g.Wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % g.Wo, t = i / g.Wo, oh = t % g.Ho, pl = t / g.Ho;
    const Span hs = kAdaptive ? adaptive_span(oh, g.H, g.Ho) : pool_span(oh, g.H, g.k, g.s, g.p);
    const Span ws = kAdaptive ? adaptive_span(ow, g.W, g.Wo) : pool_span(ow, g.W, g.k, g.s, g.p);
    const T* xp = x + pl * g.H * g.W;
    A s = 0;
    for (int64_t h = hs.b; h < hs.e; ++h)
      for (int64_t w = ws.b; w < ws.e; ++w) s += to_acc(xp[h * g.W + w]);
    y[i] = from_acc<T>(s / A(hs.count * ws.count));
  }
}

template <class T, bool kAdaptive>
__global__ void avg_pool_backward(const T* __restrict__ gy, T* __restrict__ dx, Geom g) {
  using A = acc_t<T>;
  const int64_t n = g.P * g.H * g.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = i % g.W, t = i / g.W, h = t % g.H, pl = t / g.H;
    int64_t oh0, oh1, ow0, ow1;
    if constexpr (kAdaptive) {
      // Window o = [floor(o in / out), ceil((o + 1) in / out)) holds i exactly for
      // floor(i out / in) <= o < ceil((i + 1) out / in); the span test below confirms it.
      oh0 = h * g.Ho / g.H;
      oh1 = min(g.Ho - 1, ((h + 1) * g.Ho + g.H - 1) / g.H - 1);
      ow0 = w * g.Wo / g.W;
      ow1 = min(g.Wo - 1, ((w + 1) * g.Wo + g.W - 1) / g.W - 1);
    } else {
      pool_outputs(h, g.Ho, g.k, g.s, g.p, oh0, oh1);
      pool_outputs(w, g.Wo, g.k, g.s, g.p, ow0, ow1);
    }
    A acc = 0;
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      const Span hs = kAdaptive ? adaptive_span(oh, g.H, g.Ho) : pool_span(oh, g.H, g.k, g.s, g.p);
      if (h < hs.b || h >= hs.e) continue;
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const Span ws = kAdaptive ? adaptive_span(ow, g.W, g.Wo) : pool_span(ow, g.W, g.k, g.s, g.p);
        if (w < ws.b || w >= ws.e) continue;
        // The CPU divides each output's gradient in the tensor's dtype, then adds.
        acc += to_acc(from_acc<T>(to_acc(gy[(pl * g.Ho + oh) * g.Wo + ow]) / A(hs.count * ws.count)));
      }
    }
    dx[i] = from_acc<T>(acc);
  }
}

// Runs max_pool_backward_planes into dx, zeroed first; bf16 sums in an f32 plane, rounded once.
template <class T>
void max_pool_scatter(const T* gy, const int64_t* idx, const Tensor& dx, unsigned grid, int64_t P, int64_t HW, int64_t L) {
  SIAM_CUDA_CHECK(cudaMemsetAsync(dx.raw_data(), 0, dx.nbytes(), stream()));
  max_pool_backward_planes<T, T><<<grid, kBlock, 0, stream()>>>(gy, idx, dptr<T>(dx), P, HW, L);
  SIAM_CUDA_LAUNCHED();
}
template <>
void max_pool_scatter<__nv_bfloat16>(const __nv_bfloat16* gy, const int64_t* idx, const Tensor& dx, unsigned grid,
                                     int64_t P, int64_t HW, int64_t L) {
  Tensor acc = empty(dx.shape(), {DType::f32, dx.device()});
  SIAM_CUDA_CHECK(cudaMemsetAsync(acc.raw_data(), 0, acc.nbytes(), stream()));
  max_pool_backward_planes<__nv_bfloat16, float><<<grid, kBlock, 0, stream()>>>(gy, idx, dptr<float>(acc), P, HW, L);
  SIAM_CUDA_LAUNCHED();
  cast_from_f32<__nv_bfloat16><<<grid_for(dx.numel()), kBlock, 0, stream()>>>(dptr<float>(acc),
                                                                             dptr<__nv_bfloat16>(dx), dx.numel());
  SIAM_CUDA_LAUNCHED();
}

void check_4d(const char* op, const Tensor& t, const char* what) {
  if (t.dim() != 4) fail(op, " (CUDA): ", what, " must be (N, C, H, W), got ", shape_str(t.shape()));
}

Geom geom(const Shape& x, const Shape& y, int64_t k, int64_t s, int64_t p) {
  return {x[0] * x[1], x[2], x[3], y[2], y[3], k, s, p};
}

}  // namespace

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  const char* op = "max_pool2d";
  nn::check_args(op, x);
  check_4d(op, x, "x");
  use_device(x);
  const int64_t Ho = kernels::pool_out_size(x.size(2), kernel, stride, pad);
  const int64_t Wo = kernels::pool_out_size(x.size(3), kernel, stride, pad);
  const Shape ys{x.size(0), x.size(1), Ho, Wo};
  Tensor y = empty(ys, {x.dtype(), x.device()}), idx = empty(ys, {DType::i64, x.device()});
  if (y.numel() == 0) return {y, idx};
  Tensor xd = nn::dense(x);
  const Geom g = geom(x.shape(), ys, kernel, stride, pad);
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    max_pool_forward<scalar_t><<<grid_for(y.numel()), kBlock, 0, stream()>>>(dptr<scalar_t>(xd), dptr<scalar_t>(y),
                                                                             dptr<int64_t>(idx), g);
  });
  SIAM_CUDA_LAUNCHED();
  return {y, idx};
}

Tensor max_pool2d_backward(const Tensor& gy, const Tensor& argmax, const Shape& x_shape) {
  const char* op = "max_pool2d backward";
  nn::check_args(op, gy);
  check_4d(op, gy, "gy");
  if (argmax.dtype() != DType::i64 || argmax.device() != gy.device() || argmax.shape() != gy.shape())
    fail(op, " (CUDA): argmax must be i64 ", shape_str(gy.shape()), " on ", gy.device().str(), ", got ",
         dtype_name(argmax.dtype()), " ", shape_str(argmax.shape()), " on ", argmax.device().str());
  if (x_shape.size() != 4) fail(op, " (CUDA): x_shape must have 4 dims, got ", shape_str(x_shape));
  use_device(gy);
  Tensor dx = empty(x_shape, {gy.dtype(), gy.device()});
  if (dx.numel() == 0) return dx;
  Tensor gd = nn::dense(gy), id = nn::dense(argmax);
  const int64_t P = x_shape[0] * x_shape[1], HW = x_shape[2] * x_shape[3], L = gy.size(2) * gy.size(3);
  const unsigned grid = grid_for(P * 32);  // a warp per plane
  SIAM_CUDA_DISPATCH_FLOAT(gy.dtype(), op, [&] {
    max_pool_scatter<scalar_t>(dptr<scalar_t>(gd), dptr<int64_t>(id), dx, grid, P, HW, L);
  });
  SIAM_CUDA_LAUNCHED();
  return dx;
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  const char* op = "avg_pool2d";
  nn::check_args(op, x);
  check_4d(op, x, "x");
  use_device(x);
  const Shape ys{x.size(0), x.size(1), kernels::pool_out_size(x.size(2), kernel, stride, pad),
                 kernels::pool_out_size(x.size(3), kernel, stride, pad)};
  Tensor y = empty(ys, {x.dtype(), x.device()});
  if (y.numel() == 0) return y;
  Tensor xd = nn::dense(x);
  const Geom g = geom(x.shape(), ys, kernel, stride, pad);
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    avg_pool_forward<scalar_t, false><<<grid_for(y.numel()), kBlock, 0, stream()>>>(dptr<scalar_t>(xd),
                                                                                    dptr<scalar_t>(y), g);
  });
  SIAM_CUDA_LAUNCHED();
  return y;
}

Tensor avg_pool2d_backward(const Tensor& gy, const Shape& x_shape, int64_t kernel, int64_t stride, int64_t pad) {
  const char* op = "avg_pool2d backward";
  nn::check_args(op, gy);
  check_4d(op, gy, "gy");
  if (x_shape.size() != 4) fail(op, " (CUDA): x_shape must have 4 dims, got ", shape_str(x_shape));
  use_device(gy);
  Tensor dx = empty(x_shape, {gy.dtype(), gy.device()});
  if (dx.numel() == 0) return dx;
  Tensor gd = nn::dense(gy);
  const Geom g = geom(x_shape, gy.shape(), kernel, stride, pad);
  SIAM_CUDA_DISPATCH_FLOAT(gy.dtype(), op, [&] {
    avg_pool_backward<scalar_t, false><<<grid_for(dx.numel()), kBlock, 0, stream()>>>(dptr<scalar_t>(gd),
                                                                                      dptr<scalar_t>(dx), g);
  });
  SIAM_CUDA_LAUNCHED();
  return dx;
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  const char* op = "adaptive_avg_pool2d";
  nn::check_args(op, x);
  check_4d(op, x, "x");
  use_device(x);
  const Shape ys{x.size(0), x.size(1), out_h, out_w};
  Tensor y = empty(ys, {x.dtype(), x.device()});
  if (y.numel() == 0) return y;
  Tensor xd = nn::dense(x);
  const Geom g = geom(x.shape(), ys, 0, 1, 0);
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    avg_pool_forward<scalar_t, true><<<grid_for(y.numel()), kBlock, 0, stream()>>>(dptr<scalar_t>(xd),
                                                                                   dptr<scalar_t>(y), g);
  });
  SIAM_CUDA_LAUNCHED();
  return y;
}

Tensor adaptive_avg_pool2d_backward(const Tensor& gy, const Shape& x_shape) {
  const char* op = "adaptive_avg_pool2d backward";
  nn::check_args(op, gy);
  check_4d(op, gy, "gy");
  if (x_shape.size() != 4) fail(op, " (CUDA): x_shape must have 4 dims, got ", shape_str(x_shape));
  use_device(gy);
  Tensor dx = empty(x_shape, {gy.dtype(), gy.device()});
  if (dx.numel() == 0) return dx;
  Tensor gd = nn::dense(gy);
  const Geom g = geom(x_shape, gy.shape(), 0, 1, 0);
  SIAM_CUDA_DISPATCH_FLOAT(gy.dtype(), op, [&] {
    avg_pool_backward<scalar_t, true><<<grid_for(dx.numel()), kBlock, 0, stream()>>>(dptr<scalar_t>(gd),
                                                                                     dptr<scalar_t>(dx), g);
  });
  SIAM_CUDA_LAUNCHED();
  return dx;
}

}  // namespace siam::gpu
