// Normalisation CUDA kernels: batch norm (plain, and fused with a residual add and a ReLU) and
// layer norm. Outputs and gradients are written (=) into fresh tensors; the one exception is
// batch norm's running statistics, updated in place. No atomics: every reduction is a fixed
// tree or a fixed sequential merge, so the same inputs on the same GPU give the same bits.
// bf16 computes in f32; means and inverse deviations are kept (and returned) in f32 for it.
//
// Batch norm sees x in one of two layouts:
//   planes  contiguous (N, C, S) with S = H*W > 1: channel c is N runs of S values;
//   rows    (R, C), channels innermost: a contiguous (N, C) or (N, C, 1, 1), or an (N, C, H, W)
//           stored channels-last (R = N*H*W), whose y and dx are channels-last too.
// Other strides are copied to contiguous first. A batch-norm training step is three kernels:
//   1. partial moments: block (channel, slice) reduces its slice with Welford / Chan merges
//      (planes), or a block covers a strip of channels over a slice of rows (rows);
//   2. finalize: one thread per channel merges the slices in order (in double), writes mean,
//      invstd, the running-stat update, and the per-channel coefficients of step 3;
//   3. apply: a grid-stride elementwise pass, 16-byte vectors that never straddle a channel.
// The backward is the same shape: per-channel sums of the (ReLU-masked) gradient and of
// gradient * (x - mean), a finalize, and an elementwise pass for dx.
//
// Layer norm: rows of d values, cached in registers: a warp per row for d <= 1024, a block of
// 512 threads per row for d <= 8192, beyond that a block per row that re-reads the row. The
// backward also accumulates the weight / bias gradients per lane (a lane's columns are the
// same in every row it visits), combined per block in a fixed order, then over blocks.
#include "kernels/cuda/nn_util.cuh"
#include "kernels/cuda/norm.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace siam::gpu {

using nn::FastDiv;
using nn::load_vec;
using nn::slice_begin;
using nn::store_vec;
using nn::Vec;

namespace {

constexpr int kThreads = 256;     // batch-norm reductions and layer-norm warp path (8 warps)
constexpr int kRowThreads = 512;  // layer-norm block path

template <class A> __device__ inline A sqrt_(A v);
template <> __device__ inline float sqrt_<float>(float v) { return sqrtf(v); }
template <> __device__ inline double sqrt_<double>(double v) { return sqrt(v); }

// ================================================================ batch norm: moments

// Running mean and M2 of V lanes that share one count (Welford).
template <class A, int V>
struct LaneWelford {
  uint32_t n = 0;
  A mean[V], m2[V];
  __device__ LaneWelford() {
#pragma unroll
    for (int l = 0; l < V; ++l) mean[l] = m2[l] = A(0);
  }
  template <class T>
  __device__ inline void add(const Vec<T, V>& x) {
    ++n;
    const A r = A(1) / A(n);
#pragma unroll
    for (int l = 0; l < V; ++l) {
      const A v = to_acc(x.v[l]), d = v - mean[l];
      mean[l] += d * r;
      m2[l] += d * (v - mean[l]);
    }
  }
};

template <class A>
struct Moments {
  A n, mean, m2;
};

// Chan et al.'s pairwise merge; an empty side (n = 0) leaves the other unchanged.
template <class A>
__device__ inline Moments<A> merge(const Moments<A>& a, const Moments<A>& b) {
  const A n = a.n + b.n;
  if (n == A(0)) return a;
  const A d = b.mean - a.mean, rb = b.n / n;
  return {n, a.mean + d * rb, a.m2 + b.m2 + d * d * a.n * rb};
}

// Block-wide merge in a fixed tree; the result is valid in thread 0.
template <class A>
__device__ inline Moments<A> block_merge(Moments<A> m, Moments<A>* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Moments<A> other{__shfl_down_sync(0xffffffffu, m.n, o), __shfl_down_sync(0xffffffffu, m.mean, o),
                     __shfl_down_sync(0xffffffffu, m.m2, o)};
    if (lane + o < 32) m = merge(m, other);
  }
  if (lane == 0) smem[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < nw ? smem[lane] : Moments<A>{A(0), A(0), A(0)};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      Moments<A> other{__shfl_down_sync(0xffffffffu, m.n, o), __shfl_down_sync(0xffffffffu, m.mean, o),
                       __shfl_down_sync(0xffffffffu, m.m2, o)};
      if (lane + o < 32) m = merge(m, other);
    }
  }
  return m;
}

// x: planes (N, C, S), S % V == 0. Block (c, k) reduces slice k of channel c's N*S/V vectors
// (sample-major) into pmean / pm2[k * C + c].
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    bn_moments_planes(const T* __restrict__ x, uint32_t C, uint32_t S, FastDiv sv_div, uint32_t per_channel,
                      int splits, acc_t<T>* __restrict__ pmean, acc_t<T>* __restrict__ pm2) {
  using A = acc_t<T>;
  __shared__ Moments<A> smem[32];
  const uint32_t c = blockIdx.x, k = blockIdx.y;
  const uint32_t b = static_cast<uint32_t>(slice_begin(k, splits, per_channel));
  const uint32_t e = static_cast<uint32_t>(slice_begin(k + 1, splits, per_channel));
  LaneWelford<A, V> w;
#pragma unroll 4
  for (uint32_t j = b + threadIdx.x; j < e; j += blockDim.x) {
    const uint32_t n = sv_div.div(j), sv = j - n * sv_div.d;
    w.add(load_vec<V>(x + (int64_t(n) * C + c) * S + int64_t(sv) * V));
  }
  Moments<A> m{A(w.n), w.mean[0], w.m2[0]};  // the lanes share the channel: merge them
#pragma unroll
  for (int l = 1; l < V; ++l) m = merge(m, Moments<A>{A(w.n), w.mean[l], w.m2[l]});
  m = block_merge(m, smem);
  if (threadIdx.x == 0) {
    pmean[int64_t(k) * C + c] = m.mean;
    pm2[int64_t(k) * C + c] = m.m2;
  }
}

// x: rows (R, C), C % V == 0. The block's threads are rows_per_iter x cols: `cols` column
// vectors side by side (cols = min(C / V, kThreads)), each column walked by rows_per_iter
// threads. Block (bx, k) covers column vectors [bx * cols, +cols) over row slice k and writes
// pmean / pm2[k * C + channel].
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    bn_moments_rows(const T* __restrict__ x, uint32_t R, uint32_t C, int cols, int splits,
                    acc_t<T>* __restrict__ pmean, acc_t<T>* __restrict__ pm2) {
  using A = acc_t<T>;
  __shared__ A s_mean[kThreads * V], s_m2[kThreads * V];
  __shared__ uint32_t s_n[kThreads];
  const int t = threadIdx.x, cl = t % cols, rl = t / cols, rows_per_iter = kThreads / cols;
  const uint32_t cv = blockIdx.x * cols + cl;
  const bool active = rl < rows_per_iter && cv < C / V;
  const uint32_t r0 = static_cast<uint32_t>(slice_begin(blockIdx.y, splits, R));
  const uint32_t r1 = static_cast<uint32_t>(slice_begin(blockIdx.y + 1, splits, R));
  LaneWelford<A, V> w;
  if (active)
#pragma unroll 4
    for (uint32_t r = r0 + rl; r < r1; r += rows_per_iter) w.add(load_vec<V>(x + int64_t(r) * C + int64_t(cv) * V));
#pragma unroll
  for (int l = 0; l < V; ++l) {
    s_mean[t * V + l] = w.mean[l];
    s_m2[t * V + l] = w.m2[l];
  }
  s_n[t] = w.n;
  __syncthreads();
  if (active && rl == 0) {
    for (int l = 0; l < V; ++l) {
      Moments<A> m{A(s_n[t]), s_mean[t * V + l], s_m2[t * V + l]};
      for (int q = 1; q < rows_per_iter; ++q) {
        const int u = q * cols + cl;
        m = merge(m, Moments<A>{A(s_n[u]), s_mean[u * V + l], s_m2[u * V + l]});
      }
      pmean[int64_t(blockIdx.y) * C + int64_t(cv) * V + l] = m.mean;
      pm2[int64_t(blockIdx.y) * C + int64_t(cv) * V + l] = m.m2;
    }
  }
}

// One thread per channel. Training: merges the `splits` partial moments in order, in double
// (slice k holds (slice_begin(k + 1) - slice_begin(k)) * unit values), and updates the running
// statistics as the CPU twin does; eval: reads them. Writes mean, invstd and the coefficients
// of the apply pass: coef = [mean | invstd * weight | bias], each C long.
template <class T>
__global__ void bn_finalize_moments(const acc_t<T>* __restrict__ pmean, const acc_t<T>* __restrict__ pm2,
                                    int splits, int64_t units, int64_t unit, int64_t C, T* rmean, int64_t srm,
                                    T* rvar, int64_t srv, const T* __restrict__ w, const T* __restrict__ b,
                                    bool training, double momentum, double eps, acc_t<T>* __restrict__ out_mean,
                                    acc_t<T>* __restrict__ out_invstd, acc_t<T>* __restrict__ coef) {
  using A = acc_t<T>;
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double mu, var;
  if (training) {
    double n = 0, mean = 0, m2 = 0;
    for (int k = 0; k < splits; ++k) {
      const double nk = double(slice_begin(k + 1, splits, units) - slice_begin(k, splits, units)) * double(unit);
      if (nk == 0) continue;
      const double tot = n + nk, d = double(pmean[k * C + c]) - mean;
      mean += d * nk / tot;
      m2 += double(pm2[k * C + c]) + d * d * n * nk / tot;
      n = tot;
    }
    mu = mean;
    var = m2 / n;
    if (rmean) rmean[c * srm] = from_acc<T>((1 - momentum) * double(to_acc(rmean[c * srm])) + momentum * mu);
    if (rvar) rvar[c * srv] = from_acc<T>((1 - momentum) * double(to_acc(rvar[c * srv])) + momentum * (m2 / (n - 1)));
  } else {
    mu = double(to_acc(rmean[c * srm]));
    var = double(to_acc(rvar[c * srv]));
  }
  const double inv = 1.0 / sqrt(var + eps);
  out_mean[c] = A(mu);
  out_invstd[c] = A(inv);
  coef[c] = A(mu);
  coef[C + c] = A(inv * (w ? double(to_acc(w[c])) : 1.0));
  coef[2 * C + c] = A(b ? double(to_acc(b[c])) : 0.0);
}

// y = act((x - mean) * scale + shift [+ res]) over nvec vectors of V. Planes: vector i lies in
// row i / (S / V) of the (N*C, S) matrix, channel row % C. Rows: vector i holds channels
// (i % (C / V)) * V + [0, V).
template <class T, int V, bool kRows>
__global__ void __launch_bounds__(kThreads)
    bn_apply(const T* __restrict__ x, const T* __restrict__ res, T* __restrict__ y, const acc_t<T>* __restrict__ coef,
             uint32_t C, FastDiv row_div, FastDiv c_div, uint32_t nvec, bool relu) {
  using A = acc_t<T>;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += gridDim.x * blockDim.x) {
    const Vec<T, V> xv = load_vec<V>(x + int64_t(i) * V);
    Vec<T, V> rv;
    if (res) rv = load_vec<V>(res + int64_t(i) * V);
    Vec<T, V> out;
    if constexpr (kRows) {
      const uint32_t c0 = c_div.mod(i) * V;
      const Vec<A, V> mu = load_vec<V>(coef + c0), sc = load_vec<V>(coef + C + c0), sh = load_vec<V>(coef + 2 * C + c0);
#pragma unroll
      for (int l = 0; l < V; ++l) {
        A v = (to_acc(xv.v[l]) - mu.v[l]) * sc.v[l] + sh.v[l];
        if (res) v += to_acc(rv.v[l]);
        if (relu) v = v > A(0) ? v : A(0);
        out.v[l] = from_acc<T>(v);
      }
    } else {
      const uint32_t c = c_div.mod(row_div.div(i));
      const A mu = coef[c], sc = coef[C + c], sh = coef[2 * C + c];
#pragma unroll
      for (int l = 0; l < V; ++l) {
        A v = (to_acc(xv.v[l]) - mu) * sc + sh;
        if (res) v += to_acc(rv.v[l]);
        if (relu) v = v > A(0) ? v : A(0);
        out.v[l] = from_acc<T>(v);
      }
    }
    store_vec<V>(y + int64_t(i) * V, out);
  }
}

// ================================================================ batch norm: backward

// Planes: block (c, k) sums gz and gz * (x - mean_c) over slice k of channel c into
// psg / psgx[k * C + c]. gz = g masked by y > 0 when relu; written to gz_out when given.
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    bn_grad_planes(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ x,
                   const acc_t<T>* __restrict__ mean, T* __restrict__ gz_out, bool relu, uint32_t C, uint32_t S,
                   FastDiv sv_div, uint32_t per_channel, int splits, acc_t<T>* __restrict__ psg,
                   acc_t<T>* __restrict__ psgx) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const uint32_t c = blockIdx.x, k = blockIdx.y;
  const uint32_t b = static_cast<uint32_t>(slice_begin(k, splits, per_channel));
  const uint32_t e = static_cast<uint32_t>(slice_begin(k + 1, splits, per_channel));
  const A mu = mean[c];
  A sg = 0, sgx = 0;
#pragma unroll 4
  for (uint32_t j = b + threadIdx.x; j < e; j += blockDim.x) {
    const uint32_t n = sv_div.div(j), sv = j - n * sv_div.d;
    const int64_t off = (int64_t(n) * C + c) * S + int64_t(sv) * V;
    const Vec<T, V> gv = load_vec<V>(g + off), xv = load_vec<V>(x + off);
    Vec<T, V> yv;
    if (relu) yv = load_vec<V>(y + off);
    Vec<T, V> zv;
#pragma unroll
    for (int l = 0; l < V; ++l) {
      const A gz = relu && !(to_acc(yv.v[l]) > A(0)) ? A(0) : to_acc(gv.v[l]);
      sg += gz;
      sgx += gz * (to_acc(xv.v[l]) - mu);
      zv.v[l] = from_acc<T>(gz);
    }
    if (gz_out) store_vec<V>(gz_out + off, zv);
  }
  sg = nn::block_sum(sg, smem);
  sgx = nn::block_sum(sgx, smem);
  if (threadIdx.x == 0) {
    psg[int64_t(k) * C + c] = sg;
    psgx[int64_t(k) * C + c] = sgx;
  }
}

// Rows: the thread layout of bn_moments_rows; writes psg / psgx[k * C + channel].
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    bn_grad_rows(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ x,
                 const acc_t<T>* __restrict__ mean, T* __restrict__ gz_out, bool relu, uint32_t R, uint32_t C,
                 int cols, int splits, acc_t<T>* __restrict__ psg, acc_t<T>* __restrict__ psgx) {
  using A = acc_t<T>;
  __shared__ A s_g[kThreads * V], s_gx[kThreads * V];
  const int t = threadIdx.x, cl = t % cols, rl = t / cols, rows_per_iter = kThreads / cols;
  const uint32_t cv = blockIdx.x * cols + cl;
  const bool active = rl < rows_per_iter && cv < C / V;
  const uint32_t r0 = static_cast<uint32_t>(slice_begin(blockIdx.y, splits, R));
  const uint32_t r1 = static_cast<uint32_t>(slice_begin(blockIdx.y + 1, splits, R));
  A sg[V], sgx[V], mu[V];
#pragma unroll
  for (int l = 0; l < V; ++l) {
    sg[l] = sgx[l] = A(0);
    mu[l] = active ? mean[cv * V + l] : A(0);
  }
  if (active) {
#pragma unroll 4
    for (uint32_t r = r0 + rl; r < r1; r += rows_per_iter) {
      const int64_t off = int64_t(r) * C + int64_t(cv) * V;
      const Vec<T, V> gv = load_vec<V>(g + off), xv = load_vec<V>(x + off);
      Vec<T, V> yv;
      if (relu) yv = load_vec<V>(y + off);
      Vec<T, V> zv;
#pragma unroll
      for (int l = 0; l < V; ++l) {
        const A gz = relu && !(to_acc(yv.v[l]) > A(0)) ? A(0) : to_acc(gv.v[l]);
        sg[l] += gz;
        sgx[l] += gz * (to_acc(xv.v[l]) - mu[l]);
        zv.v[l] = from_acc<T>(gz);
      }
      if (gz_out) store_vec<V>(gz_out + off, zv);
    }
  }
#pragma unroll
  for (int l = 0; l < V; ++l) {
    s_g[t * V + l] = sg[l];
    s_gx[t * V + l] = sgx[l];
  }
  __syncthreads();
  if (active && rl == 0) {
    for (int l = 0; l < V; ++l) {
      A a = s_g[t * V + l], bx = s_gx[t * V + l];
      for (int q = 1; q < rows_per_iter; ++q) {
        a += s_g[(q * cols + cl) * V + l];
        bx += s_gx[(q * cols + cl) * V + l];
      }
      psg[int64_t(blockIdx.y) * C + int64_t(cv) * V + l] = a;
      psgx[int64_t(blockIdx.y) * C + int64_t(cv) * V + l] = bx;
    }
  }
}

// One thread per channel: sums the slices in order (double), writes dweight = sum(gz * xhat)
// and dbias = sum(gz), and the dx coefficients coef = [w * invstd | mean(gz) | invstd *
// mean(gz * xhat)] (the last two 0 in eval mode): dx = c0 * ((gz - c1) - (x - mean) * c2).
template <class T>
__global__ void bn_finalize_grad(const acc_t<T>* __restrict__ psg, const acc_t<T>* __restrict__ psgx, int splits,
                                 int64_t C, const acc_t<T>* __restrict__ invstd, const T* __restrict__ w, double m,
                                 bool training, T* __restrict__ dweight, T* __restrict__ dbias,
                                 acc_t<T>* __restrict__ coef) {
  using A = acc_t<T>;
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sg = 0, sgx = 0;
  for (int k = 0; k < splits; ++k) {
    sg += double(psg[k * C + c]);
    sgx += double(psgx[k * C + c]);
  }
  const double inv = double(invstd[c]), sgxhat = sgx * inv;
  if (dweight) dweight[c] = from_acc<T>(sgxhat);
  if (dbias) dbias[c] = from_acc<T>(sg);
  coef[c] = A((w ? double(to_acc(w[c])) : 1.0) * inv);
  coef[C + c] = training ? A(sg / m) : A(0);
  coef[2 * C + c] = training ? A(inv * sgxhat / m) : A(0);
}

// dx = c0 * ((gz - c1) - (x - mean) * c2), gz read from gz_in (when the reduction wrote it)
// or made from g and y. Indexing as bn_apply.
template <class T, int V, bool kRows>
__global__ void __launch_bounds__(kThreads)
    bn_backward_apply(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ gz_in,
                      const T* __restrict__ x, T* __restrict__ dx, const acc_t<T>* __restrict__ mean,
                      const acc_t<T>* __restrict__ coef, bool relu, uint32_t C, FastDiv row_div, FastDiv c_div,
                      uint32_t nvec) {
  using A = acc_t<T>;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += gridDim.x * blockDim.x) {
    const int64_t off = int64_t(i) * V;
    const Vec<T, V> xv = load_vec<V>(x + off);
    Vec<T, V> gv, yv;
    const bool mask = relu && !gz_in;
    gv = load_vec<V>((gz_in ? gz_in : g) + off);
    if (mask) yv = load_vec<V>(y + off);
    Vec<T, V> out;
    if constexpr (kRows) {
      const uint32_t c0 = c_div.mod(i) * V;
      const Vec<A, V> mu = load_vec<V>(mean + c0), k0 = load_vec<V>(coef + c0), k1 = load_vec<V>(coef + C + c0),
                      k2 = load_vec<V>(coef + 2 * C + c0);
#pragma unroll
      for (int l = 0; l < V; ++l) {
        const A gz = mask && !(to_acc(yv.v[l]) > A(0)) ? A(0) : to_acc(gv.v[l]);
        out.v[l] = from_acc<T>(k0.v[l] * ((gz - k1.v[l]) - (to_acc(xv.v[l]) - mu.v[l]) * k2.v[l]));
      }
    } else {
      const uint32_t c = c_div.mod(row_div.div(i));
      const A mu = mean[c], k0 = coef[c], k1 = coef[C + c], k2 = coef[2 * C + c];
#pragma unroll
      for (int l = 0; l < V; ++l) {
        const A gz = mask && !(to_acc(yv.v[l]) > A(0)) ? A(0) : to_acc(gv.v[l]);
        out.v[l] = from_acc<T>(k0 * ((gz - k1) - (to_acc(xv.v[l]) - mu) * k2));
      }
    }
    store_vec<V>(dx + off, out);
  }
}

// ================================================================ batch norm: host side

// How x is walked: see the top of the file.
struct BnPlan {
  Tensor x;                    // x itself, or a contiguous copy
  bool rows = false;           // channels innermost
  bool channels_last = false;  // (N, C, H, W) stored NHWC: y and dx are made NHWC too
  int64_t N = 0, C = 0, S = 1, R = 0;
};

BnPlan bn_plan(const Tensor& x) {
  BnPlan p;
  p.N = x.size(0);
  p.C = x.size(1);
  p.S = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  if (!x.is_contiguous() && nn::is_channels_last(x)) {
    p.x = x;
    p.rows = p.channels_last = true;
    p.R = p.N * p.S;
  } else {
    p.x = nn::dense(x);
    p.rows = p.S == 1;
    p.R = p.N;
  }
  return p;
}

// A tensor of x's shape (residual, g, y) in the plan's memory layout.
Tensor conform(const BnPlan& p, const Tensor& t) { return p.channels_last ? nn::channels_last(t) : nn::dense(t); }
Tensor empty_for(const BnPlan& p, const Tensor& x) {
  return p.channels_last ? nn::empty_channels_last(x.shape(), x.dtype(), x.device())
                         : empty(x.shape(), {x.dtype(), x.device()});
}

constexpr int64_t kMax32 = 2147483647LL;  // 32-bit index math in the kernels, with headroom

// The reduction grid of a plan for vectors of V: grid (gx, splits), `units` slice units per
// channel (vectors for planes, rows for rows) of `unit` values each, `cols` for rows.
struct BnGrid {
  int64_t gx = 0, splits = 0, units = 0, unit = 1;
  int cols = 0;
};

BnGrid bn_grid(const BnPlan& p, int V, int device, const char* op) {
  BnGrid gr;
  const int64_t target = 8LL * nn::sm_count(device);  // a full wave of 256-thread blocks
  if (p.rows) {
    const int64_t cv = p.C / V;
    gr.cols = static_cast<int>(std::min<int64_t>(cv, kThreads));
    const int64_t rows_per_iter = kThreads / gr.cols;
    gr.gx = (cv + gr.cols - 1) / gr.cols;
    gr.units = p.R;
    gr.unit = 1;
    const int64_t most = std::max<int64_t>(1, p.R / (rows_per_iter * 8));
    gr.splits = std::clamp<int64_t>((target + gr.gx - 1) / gr.gx, 1, std::min<int64_t>(most, 65535));
    if (p.R > kMax32 || p.C > kMax32) fail(op, " (CUDA): ", p.R, " rows of ", p.C, " channels exceed the 2^31 index range");
  } else {
    gr.gx = p.C;
    gr.units = p.N * p.S / V;
    gr.unit = V;
    const int64_t most = std::max<int64_t>(1, gr.units / (kThreads * 4));
    gr.splits = std::clamp<int64_t>((target + p.C - 1) / p.C, 1, std::min<int64_t>(most, 65535));
    if (gr.units > kMax32 || p.C > kMax32 || p.S > kMax32)
      fail(op, " (CUDA): ", p.N * p.S, " values per channel exceed the 2^31 index range");
  }
  if (gr.units == 0) gr.splits = 0;
  return gr;
}

template <class T>
void bn_forward_t(const char* op, const BnPlan& p, const Tensor& res, const Tensor& y, const Tensor& weight,
                  const Tensor& bias, const Tensor& rm, const Tensor& rv, bool relu, bool training, double momentum,
                  double eps, const Tensor& mean, const Tensor& invstd) {
  using A = acc_t<T>;
  const int dev = p.x.device().index;
  const T* px = dptr<T>(p.x);
  const T* pr = res.defined() ? dptr<T>(res) : nullptr;
  T* py = dptr<T>(y);
  const int V = nn::pick_vec<T>(p.rows ? p.C : p.S, {px, pr, py});
  BnGrid gr = bn_grid(p, V, dev, op);
  if (!training) gr.splits = 0;
  Tensor part = empty({std::max<int64_t>(1, 2 * gr.splits * p.C)}, {mean.dtype(), mean.device()});
  Tensor coef = empty({3 * p.C}, {mean.dtype(), mean.device()});
  A* pmean = dptr<A>(part);
  A* pm2 = pmean + gr.splits * p.C;
  const int64_t numel = p.x.numel();
  if (numel / V > kMax32) fail(op, " (CUDA): ", numel, " values exceed the 2^31 vector index range");
  nn::dispatch_vec<T>(V, [&](auto vc) {
    constexpr int Vc = decltype(vc)::value;
    if (gr.splits > 0) {
      dim3 grid(static_cast<unsigned>(gr.gx), static_cast<unsigned>(gr.splits));
      if (p.rows)
        bn_moments_rows<T, Vc><<<grid, kThreads, 0, stream()>>>(px, uint32_t(p.R), uint32_t(p.C), gr.cols,
                                                                 int(gr.splits), pmean, pm2);
      else
        bn_moments_planes<T, Vc><<<grid, kThreads, 0, stream()>>>(px, uint32_t(p.C), uint32_t(p.S),
                                                                   FastDiv(uint32_t(p.S / Vc)), uint32_t(gr.units),
                                                                   int(gr.splits), pmean, pm2);
      SIAM_CUDA_LAUNCHED();
    }
    bn_finalize_moments<T><<<grid_for(p.C), kBlock, 0, stream()>>>(
        pmean, pm2, int(gr.splits), gr.units, gr.unit, p.C, rm.defined() ? dptr<T>(rm) : nullptr,
        rm.defined() ? rm.stride(0) : 0, rv.defined() ? dptr<T>(rv) : nullptr, rv.defined() ? rv.stride(0) : 0,
        weight.defined() ? dptr<T>(weight) : nullptr, bias.defined() ? dptr<T>(bias) : nullptr, training, momentum,
        eps, dptr<A>(mean), dptr<A>(invstd), dptr<A>(coef));
    SIAM_CUDA_LAUNCHED();
    const uint32_t nvec = static_cast<uint32_t>(numel / Vc);
    if (nvec == 0) return;
    if (p.rows)
      bn_apply<T, Vc, true><<<grid_for(nvec), kThreads, 0, stream()>>>(
          px, pr, py, dptr<A>(coef), uint32_t(p.C), FastDiv(1), FastDiv(uint32_t(p.C / Vc)), nvec, relu);
    else
      bn_apply<T, Vc, false><<<grid_for(nvec), kThreads, 0, stream()>>>(
          px, pr, py, dptr<A>(coef), uint32_t(p.C), FastDiv(uint32_t(p.S / Vc)), FastDiv(uint32_t(p.C)), nvec, relu);
    SIAM_CUDA_LAUNCHED();
  });
}

template <class T>
void bn_backward_t(const char* op, const BnPlan& p, const Tensor& g, const Tensor& y, const Tensor& weight,
                   const Tensor& mean, const Tensor& invstd, bool relu, bool training, const Tensor& dx,
                   const Tensor& dweight, const Tensor& dbias, const Tensor& dres) {
  using A = acc_t<T>;
  const int dev = p.x.device().index;
  const T* px = dptr<T>(p.x);
  const T* pg = dptr<T>(g);
  const T* py = relu ? dptr<T>(y) : nullptr;
  T* pdx = dx.defined() ? dptr<T>(dx) : nullptr;
  T* pres = dres.defined() ? dptr<T>(dres) : nullptr;
  const int V = nn::pick_vec<T>(p.rows ? p.C : p.S, {px, pg, py, pdx, pres});
  // Sums are needed for dweight / dbias, for a training dx, and to write the residual's gradient.
  const bool reduce = dweight.defined() || dbias.defined() || dres.defined() || (pdx && training);
  BnGrid gr = bn_grid(p, V, dev, op);
  if (!reduce) gr.splits = 0;
  Tensor part = empty({std::max<int64_t>(1, 2 * gr.splits * p.C)}, {mean.dtype(), mean.device()});
  Tensor coef = empty({3 * p.C}, {mean.dtype(), mean.device()});
  A* psg = dptr<A>(part);
  A* psgx = psg + gr.splits * p.C;
  const int64_t numel = p.x.numel();
  if (numel / V > kMax32) fail(op, " (CUDA): ", numel, " values exceed the 2^31 vector index range");
  const double m = double(p.N * p.S);
  nn::dispatch_vec<T>(V, [&](auto vc) {
    constexpr int Vc = decltype(vc)::value;
    if (gr.splits > 0) {
      dim3 grid(static_cast<unsigned>(gr.gx), static_cast<unsigned>(gr.splits));
      if (p.rows)
        bn_grad_rows<T, Vc><<<grid, kThreads, 0, stream()>>>(pg, py, px, dptr<A>(mean), pres, relu, uint32_t(p.R),
                                                              uint32_t(p.C), gr.cols, int(gr.splits), psg, psgx);
      else
        bn_grad_planes<T, Vc><<<grid, kThreads, 0, stream()>>>(pg, py, px, dptr<A>(mean), pres, relu, uint32_t(p.C),
                                                                uint32_t(p.S), FastDiv(uint32_t(p.S / Vc)),
                                                                uint32_t(gr.units), int(gr.splits), psg, psgx);
      SIAM_CUDA_LAUNCHED();
    }
    bn_finalize_grad<T><<<grid_for(p.C), kBlock, 0, stream()>>>(
        psg, psgx, int(gr.splits), p.C, dptr<A>(invstd), weight.defined() ? dptr<T>(weight) : nullptr, m, training,
        dweight.defined() ? dptr<T>(dweight) : nullptr, dbias.defined() ? dptr<T>(dbias) : nullptr, dptr<A>(coef));
    SIAM_CUDA_LAUNCHED();
    const uint32_t nvec = static_cast<uint32_t>(numel / Vc);
    if (!pdx || nvec == 0) return;
    if (p.rows)
      bn_backward_apply<T, Vc, true><<<grid_for(nvec), kThreads, 0, stream()>>>(
          pg, py, pres, px, pdx, dptr<A>(mean), dptr<A>(coef), relu, uint32_t(p.C), FastDiv(1),
          FastDiv(uint32_t(p.C / Vc)), nvec);
    else
      bn_backward_apply<T, Vc, false><<<grid_for(nvec), kThreads, 0, stream()>>>(
          pg, py, pres, px, pdx, dptr<A>(mean), dptr<A>(coef), relu, uint32_t(p.C), FastDiv(uint32_t(p.S / Vc)),
          FastDiv(uint32_t(p.C)), nvec);
    SIAM_CUDA_LAUNCHED();
  });
}

// Per-channel parameters must be (C) on x's device with x's dtype; running stats may be strided.
void check_channel_param(const char* op, const char* what, const Tensor& t, int64_t C) {
  if (t.defined() && (t.dim() != 1 || t.size(0) != C))
    fail(op, " (CUDA): ", what, " must have shape [", C, "], got ", shape_str(t.shape()));
}

// mean / invstd of a forward: (C) or (rows), stat_dtype(x), on x's device, contiguous.
void check_stats(const char* op, const Tensor& x, const Tensor& mean, const Tensor& invstd, int64_t n) {
  const DType want = nn::stat_dtype(x.dtype());
  for (const Tensor* t : {&mean, &invstd}) {
    const char* what = t == &mean ? "mean" : "invstd";
    if (!t->defined()) fail(op, " (CUDA): ", what, " is undefined");
    if (t->device() != x.device()) fail(op, " (CUDA): ", what, " is on ", t->device().str(), ", expected ", x.device().str());
    if (t->dtype() != want)
      fail(op, " (CUDA): ", what, " is ", dtype_name(t->dtype()), ", expected ", dtype_name(want), " for a ",
           dtype_name(x.dtype()), " input");
    if (t->numel() != n) fail(op, " (CUDA): ", what, " has ", t->numel(), " values, expected ", n);
  }
}

kernels::NormForward bn_forward(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& rm, const Tensor& rv, const Tensor& residual, bool relu, bool training,
                                double momentum, double eps) {
  nn::check_args(op, x, {{"weight", &weight}, {"bias", &bias}, {"running_mean", &rm}, {"running_var", &rv},
                         {"residual", &residual}});
  if (x.dim() != 2 && x.dim() != 4) fail(op, " (CUDA): expected x of shape (N, C) or (N, C, H, W), got ", shape_str(x.shape()));
  const int64_t C = x.size(1);
  check_channel_param(op, "weight", weight, C);
  check_channel_param(op, "bias", bias, C);
  check_channel_param(op, "running_mean", rm, C);
  check_channel_param(op, "running_var", rv, C);
  if (!training && !(rm.defined() && rv.defined()))
    fail(op, " (CUDA): evaluation mode normalises with the running statistics, but one is undefined");
  if (residual.defined() && residual.shape() != x.shape())
    fail(op, " (CUDA): residual has shape ", shape_str(residual.shape()), ", expected x's ", shape_str(x.shape()));
  use_device(x);
  BnPlan p = bn_plan(x);
  Tensor res = residual.defined() ? conform(p, residual) : Tensor();
  const TensorOptions so{nn::stat_dtype(x.dtype()), x.device()};
  kernels::NormForward out{empty_for(p, x), empty({C}, so), empty({C}, so)};
  if (C == 0) return out;
  Tensor w = weight.defined() ? nn::dense(weight) : Tensor(), b = bias.defined() ? nn::dense(bias) : Tensor();
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    bn_forward_t<scalar_t>(op, p, res, out.y, w, b, rm, rv, relu, training, momentum, eps, out.mean, out.invstd);
  });
  return out;
}

kernels::NormActBackward bn_backward(const char* op, const Tensor& g, const Tensor& y, const Tensor& x,
                                     const Tensor& weight, const Tensor& mean, const Tensor& invstd, bool relu,
                                     bool training, std::array<bool, 4> need) {
  nn::check_args(op, x, {{"g", &g}, {"y", &y}, {"weight", &weight}});
  if (x.dim() != 2 && x.dim() != 4) fail(op, " (CUDA): expected x of shape (N, C) or (N, C, H, W), got ", shape_str(x.shape()));
  if (g.shape() != x.shape()) fail(op, " (CUDA): g has shape ", shape_str(g.shape()), ", expected x's ", shape_str(x.shape()));
  if (relu && (!y.defined() || y.shape() != x.shape()))
    fail(op, " (CUDA): the ReLU mask needs y of x's shape ", shape_str(x.shape()));
  const int64_t C = x.size(1);
  check_channel_param(op, "weight", weight, C);
  check_stats(op, x, mean, invstd, C);
  use_device(x);
  BnPlan p = bn_plan(x);
  Tensor gd = conform(p, g), yd = relu ? conform(p, y) : Tensor();
  const TensorOptions o{x.dtype(), x.device()};
  kernels::NormActBackward r{need[0] ? empty_for(p, x) : Tensor(), need[1] ? empty({C}, o) : Tensor(),
                             need[2] ? empty({C}, o) : Tensor(), need[3] ? empty_for(p, x) : Tensor()};
  if (C == 0 || !(need[0] || need[1] || need[2] || need[3])) return r;
  Tensor w = weight.defined() ? nn::dense(weight) : Tensor();
  Tensor mc = nn::dense_aligned(mean, 32), ic = nn::dense(invstd);  // mean: vector loads on the rows path
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    bn_backward_t<scalar_t>(op, p, gd, yd, w, mc, ic, relu, training, r.dx, r.dweight, r.dbias, r.dresidual);
  });
  return r;
}

// ================================================================ layer norm

// A row of d = dv * V values held by a group of G threads (a warp, or the block): thread q
// holds vectors q, q + G, ..., up to K of them. Sums over the group are butterflies (warp) or
// block_sum (nn::group_sum); both leave the same value in every thread.
using nn::group_sum;

// x, y: (rows, d) contiguous; w, b: (d) or null. mean, invstd: (rows).
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kWarp ? kThreads : kRowThreads)
    ln_forward_rows(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                T* __restrict__ y, acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ invstd,
                                int64_t rows, int dv, double eps) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const int G = kWarp ? 32 : blockDim.x;
  const int q0 = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t row = kWarp ? blockIdx.x * int64_t(blockDim.x >> 5) + (threadIdx.x >> 5) : int64_t(blockIdx.x);
  if (row >= rows) return;  // a whole warp (warp path) or the whole block leaves together
  const int64_t d = int64_t(dv) * V;
  const T* xr = x + row * d;
  A v[K][V];
  A s = 0;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int q = q0 + k * G;
    if (q < dv) {
      const Vec<T, V> xv = load_vec<V>(xr + int64_t(q) * V);
#pragma unroll
      for (int l = 0; l < V; ++l) {
        v[k][l] = to_acc(xv.v[l]);
        s += v[k][l];
      }
    }
  }
  const A mu = group_sum<A, kWarp>(s, smem) / A(d);
  A sq = 0;
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (q0 + k * G < dv)
#pragma unroll
      for (int l = 0; l < V; ++l) sq += (v[k][l] - mu) * (v[k][l] - mu);
  const A inv = A(1) / sqrt_(group_sum<A, kWarp>(sq, smem) / A(d) + A(eps));
  if (q0 == 0) {
    mean[row] = mu;
    invstd[row] = inv;
  }
  T* yr = y + row * d;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int q = q0 + k * G;
    if (q < dv) {
      Vec<T, V> wv, bv, out;
      if (w) wv = load_vec<V>(w + int64_t(q) * V);
      if (b) bv = load_vec<V>(b + int64_t(q) * V);
#pragma unroll
      for (int l = 0; l < V; ++l) {
        A o = (v[k][l] - mu) * inv;
        if (w) o *= to_acc(wv.v[l]);
        if (b) o += to_acc(bv.v[l]);
        out.v[l] = from_acc<T>(o);
      }
      store_vec<V>(yr + int64_t(q) * V, out);
    }
  }
}

// Rows too long for registers: a block per row, three passes over the row.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    ln_forward_loop(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                    acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ invstd, int64_t d, double eps) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  A s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += to_acc(xr[j]);
  const A mu = nn::block_sum(s, smem) / A(d);
  A sq = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const A t = to_acc(xr[j]) - mu;
    sq += t * t;
  }
  const A inv = A(1) / sqrt_(nn::block_sum(sq, smem) / A(d) + A(eps));
  if (threadIdx.x == 0) {
    mean[row] = mu;
    invstd[row] = inv;
  }
  T* yr = y + row * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    A o = (to_acc(xr[j]) - mu) * inv;
    if (w) o *= to_acc(w[j]);
    if (b) o += to_acc(b[j]);
    yr[j] = from_acc<T>(o);
  }
}

// Backward over rows, a group (warp or block) per row, groups striding over the rows:
//   dx = invstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = g * w, xhat = (x - mean) * invstd;
// and, when pdw is given, the block's share of dweight = sum(g * xhat), dbias = sum(g) over its
// rows, written to pdw / pdb[blockIdx.x * d + j] (warps of a block combined in warp order).
// Dynamic shared memory: 2 * d accumulators on the warp path.
template <class T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kWarp ? kThreads : kRowThreads)
    ln_backward_rows(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                                 const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                                 T* __restrict__ dx, acc_t<T>* __restrict__ pdw, acc_t<T>* __restrict__ pdb,
                                 int64_t rows, int dv) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  extern __shared__ __align__(16) unsigned char dyn_smem[];
  const int G = kWarp ? 32 : blockDim.x;
  const int q0 = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const int gpb = kWarp ? (blockDim.x >> 5) : 1;
  const int64_t group = int64_t(blockIdx.x) * gpb + (kWarp ? (threadIdx.x >> 5) : 0);
  const int64_t groups = int64_t(gridDim.x) * gpb;
  const int64_t d = int64_t(dv) * V;
  A aw[K][V], ab[K][V];  // this thread's columns of dweight / dbias
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int l = 0; l < V; ++l) aw[k][l] = ab[k][l] = A(0);
  for (int64_t row = group; row < rows; row += groups) {
    const T* gr = g + row * d;
    const T* xr = x + row * d;
    const A mu = mean[row], inv = invstd[row];
    A gv[K][V], xh[K][V];  // g, then g * w once the param sums have taken g
    A s1 = 0, s2 = 0;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int q = q0 + k * G;
      if (q < dv) {
        const Vec<T, V> a = load_vec<V>(gr + int64_t(q) * V), bx = load_vec<V>(xr + int64_t(q) * V);
        Vec<T, V> wt;
        if (w) wt = load_vec<V>(w + int64_t(q) * V);  // re-read per row: an L1 hit
#pragma unroll
        for (int l = 0; l < V; ++l) {
          const A gval = to_acc(a.v[l]);
          xh[k][l] = (to_acc(bx.v[l]) - mu) * inv;
          if (pdw) {
            aw[k][l] += gval * xh[k][l];
            ab[k][l] += gval;
          }
          gv[k][l] = w ? gval * to_acc(wt.v[l]) : gval;
          s1 += gv[k][l];
          s2 += gv[k][l] * xh[k][l];
        }
      }
    }
    if (dx) {
      const A m1 = group_sum<A, kWarp>(s1, smem) / A(d), m2 = group_sum<A, kWarp>(s2, smem) / A(d);
      T* dr = dx + row * d;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const int q = q0 + k * G;
        if (q < dv) {
          Vec<T, V> out;
#pragma unroll
          for (int l = 0; l < V; ++l) out.v[l] = from_acc<T>(inv * (gv[k][l] - m1 - xh[k][l] * m2));
          store_vec<V>(dr + int64_t(q) * V, out);
        }
      }
    }
  }
  if (!pdw) return;
  if constexpr (kWarp) {
    // Warps of the block add their columns into shared memory one after another.
    A* sw = reinterpret_cast<A*>(dyn_smem);
    A* sb = sw + d;
    const int warp = threadIdx.x >> 5;
    for (int wi = 0; wi < gpb; ++wi) {
      if (warp == wi) {
#pragma unroll
        for (int k = 0; k < K; ++k) {
          const int q = q0 + k * G;
          if (q < dv)
#pragma unroll
            for (int l = 0; l < V; ++l) {
              const int64_t j = int64_t(q) * V + l;
              sw[j] = wi == 0 ? aw[k][l] : sw[j] + aw[k][l];
              sb[j] = wi == 0 ? ab[k][l] : sb[j] + ab[k][l];
            }
        }
      }
      __syncthreads();
    }
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      pdw[int64_t(blockIdx.x) * d + j] = sw[j];
      pdb[int64_t(blockIdx.x) * d + j] = sb[j];
    }
  } else {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int q = q0 + k * G;
      if (q < dv)
#pragma unroll
        for (int l = 0; l < V; ++l) {
          const int64_t j = int64_t(q) * V + l;
          pdw[int64_t(blockIdx.x) * d + j] = aw[k][l];
          pdb[int64_t(blockIdx.x) * d + j] = ab[k][l];
        }
    }
  }
}

// dx for rows too long for registers: a block per row, two passes.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    ln_backward_loop(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                     const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd, T* __restrict__ dx,
                     int64_t d) {
  using A = acc_t<T>;
  __shared__ A smem[32];
  const int64_t row = blockIdx.x;
  const T* gr = g + row * d;
  const T* xr = x + row * d;
  const A mu = mean[row], inv = invstd[row];
  A s1 = 0, s2 = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const A gw = to_acc(gr[j]) * (w ? to_acc(w[j]) : A(1));
    s1 += gw;
    s2 += gw * ((to_acc(xr[j]) - mu) * inv);
  }
  const A m1 = nn::block_sum(s1, smem) / A(d), m2 = nn::block_sum(s2, smem) / A(d);
  T* dr = dx + row * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const A gw = to_acc(gr[j]) * (w ? to_acc(w[j]) : A(1));
    dr[j] = from_acc<T>(inv * (gw - m1 - (to_acc(xr[j]) - mu) * inv * m2));
  }
}

// dweight / dbias partial sums for rows too long for registers: block (bx, k) gives each of
// its threads one column j and sums rows of slice k into pdw / pdb[k * d + j].
template <class T>
__global__ void ln_param_cols(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                              const acc_t<T>* __restrict__ invstd, int64_t rows, int64_t d, int splits,
                              acc_t<T>* __restrict__ pdw, acc_t<T>* __restrict__ pdb) {
  using A = acc_t<T>;
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  const int64_t r0 = slice_begin(blockIdx.y, splits, rows), r1 = slice_begin(blockIdx.y + 1, splits, rows);
  A aw = 0, ab = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const A gv = to_acc(g[r * d + j]);
    aw += gv * ((to_acc(x[r * d + j]) - mean[r]) * invstd[r]);
    ab += gv;
  }
  pdw[int64_t(blockIdx.y) * d + j] = aw;
  pdb[int64_t(blockIdx.y) * d + j] = ab;
}

// dweight[j] = sum over the P partials in order (double); same for dbias.
template <class T>
__global__ void ln_param_finalize(const acc_t<T>* __restrict__ pdw, const acc_t<T>* __restrict__ pdb, int64_t parts,
                                  int64_t d, T* __restrict__ dweight, T* __restrict__ dbias) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  double sw = 0, sb = 0;
  for (int64_t p = 0; p < parts; ++p) {
    sw += double(pdw[p * d + j]);
    sb += double(pdb[p * d + j]);
  }
  if (dweight) dweight[j] = from_acc<T>(sw);
  if (dbias) dbias[j] = from_acc<T>(sb);
}

constexpr int64_t kWarpRowMax = 1024;    // warp per row up to this many values
constexpr int64_t kBlockRowMax = 8192;   // block per row with registers up to this many

// The vector width of the row kernels: f64 rows are read a value at a time (gradcheck sizes).
template <class T>
int row_vec(int64_t d, std::initializer_list<const void*> ptrs) {
  if constexpr (std::is_same_v<T, double>) return 1;
  else return nn::pick_vec<T>(d, ptrs);
}

template <class T>
void ln_forward_t(const Tensor& x, const Tensor& w, const Tensor& b, int64_t d, double eps, const kernels::NormForward& out) {
  using A = acc_t<T>;
  const int64_t rows = x.numel() / d;
  const T* px = dptr<T>(x);
  const T* pw = w.defined() ? dptr<T>(w) : nullptr;
  const T* pb = b.defined() ? dptr<T>(b) : nullptr;
  T* py = dptr<T>(out.y);
  A* pm = dptr<A>(out.mean);
  A* pi = dptr<A>(out.invstd);
  if (d <= kWarpRowMax) {
    const int V = row_vec<T>(d, {px, pw, pb, py});
    nn::dispatch_vec<T>(V, [&](auto vc) {
      constexpr int Vc = decltype(vc)::value;
      const int dv = static_cast<int>(d / Vc);
      if (!nn::dispatch_k<Vc, 1, 32>(nn::next_pow2((dv + 31) / 32), [&](auto kc) {
        constexpr int K = decltype(kc)::value;
        const int64_t blocks = (rows + kThreads / 32 - 1) / (kThreads / 32);
        ln_forward_rows<T, Vc, K, true><<<unsigned(blocks), kThreads, 0, stream()>>>(px, pw, pb, py, pm, pi, rows, dv, eps);
      }))
        fail("layer_norm (CUDA): no register tile for rows of ", d);
    });
  } else if (d <= kBlockRowMax) {
    if (!nn::dispatch_k<1, 4, 16>(nn::next_pow2((d + kRowThreads - 1) / kRowThreads), [&](auto kc) {
      constexpr int K = decltype(kc)::value;
      ln_forward_rows<T, 1, K, false><<<unsigned(rows), kRowThreads, 0, stream()>>>(px, pw, pb, py, pm, pi, rows,
                                                                                      int(d), eps);
    }))
        fail("layer_norm (CUDA): no register tile for rows of ", d);
  } else {
    ln_forward_loop<T><<<unsigned(rows), kRowThreads, 0, stream()>>>(px, pw, pb, py, pm, pi, d, eps);
  }
  SIAM_CUDA_LAUNCHED();
}

template <class T>
void ln_backward_t(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd, int64_t d,
                   const kernels::NormBackward& r) {
  using A = acc_t<T>;
  const int64_t rows = x.numel() / d;
  const int dev = x.device().index;
  const T* pg = dptr<T>(g);
  const T* px = dptr<T>(x);
  const T* pw = w.defined() ? dptr<T>(w) : nullptr;
  const A* pm = dptr<A>(mean);
  const A* pi = dptr<A>(invstd);
  T* pdx = r.dx.defined() ? dptr<T>(r.dx) : nullptr;
  const bool params = r.dweight.defined() || r.dbias.defined();
  // The row kernels stride over the rows with the blocks that fit on the GPU at once; each
  // block leaves one partial row of dweight / dbias.
  int64_t parts = 0;
  Tensor part;
  auto launch = [&](auto kernel, int threads, size_t smem, int64_t groups_per_block, int dv) {
    int per_sm = 0;
    SIAM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
    const int64_t blocks = std::min<int64_t>((rows + groups_per_block - 1) / groups_per_block,
                                             int64_t(std::max(per_sm, 1)) * nn::sm_count(dev));
    if (params) {
      parts = blocks;
      part = empty({2 * parts * d}, {mean.dtype(), mean.device()});
    }
    A* pdw = params ? dptr<A>(part) : nullptr;
    kernel<<<unsigned(blocks), threads, smem, stream()>>>(pg, px, pw, pm, pi, pdx, pdw, params ? pdw + parts * d : nullptr,
                                                          rows, dv);
    SIAM_CUDA_LAUNCHED();
  };
  if (d <= kWarpRowMax) {
    const int V = row_vec<T>(d, {pg, px, pw, pdx});
    nn::dispatch_vec<T>(V, [&](auto vc) {
      constexpr int Vc = decltype(vc)::value;
      const int dv = static_cast<int>(d / Vc);
      if (!nn::dispatch_k<Vc, 1, 32>(nn::next_pow2((dv + 31) / 32), [&](auto kc) {
            constexpr int K = decltype(kc)::value;
            launch(ln_backward_rows<T, Vc, K, true>, kThreads, params ? 2 * d * sizeof(A) : 0, kThreads / 32, dv);
          }))
        fail("layer_norm (CUDA): no register tile for rows of ", d);
    });
  } else if (d <= kBlockRowMax) {
    if (!nn::dispatch_k<1, 4, 16>(nn::next_pow2((d + kRowThreads - 1) / kRowThreads), [&](auto kc) {
          constexpr int K = decltype(kc)::value;
          launch(ln_backward_rows<T, 1, K, false>, kRowThreads, 0, 1, int(d));
        }))
      fail("layer_norm (CUDA): no register tile for rows of ", d);
  } else {
    if (pdx) {
      ln_backward_loop<T><<<unsigned(rows), kRowThreads, 0, stream()>>>(pg, px, pw, pm, pi, pdx, d);
      SIAM_CUDA_LAUNCHED();
    }
    if (params) {
      const int64_t gx = (d + kBlock - 1) / kBlock;
      const int64_t splits = std::clamp<int64_t>(8LL * nn::sm_count(dev) / gx, 1, std::min<int64_t>(rows, 65535));
      parts = splits;
      part = empty({2 * parts * d}, {mean.dtype(), mean.device()});
      ln_param_cols<T><<<dim3(unsigned(gx), unsigned(splits)), kBlock, 0, stream()>>>(
          pg, px, pm, pi, rows, d, int(splits), dptr<A>(part), dptr<A>(part) + splits * d);
      SIAM_CUDA_LAUNCHED();
    }
  }
  if (params) {
    ln_param_finalize<T><<<grid_for(d), kBlock, 0, stream()>>>(
        dptr<A>(part), dptr<A>(part) + parts * d, parts, d, r.dweight.defined() ? dptr<T>(r.dweight) : nullptr,
        r.dbias.defined() ? dptr<T>(r.dbias) : nullptr);
    SIAM_CUDA_LAUNCHED();
  }
}

void check_ln(const char* op, const Tensor& x, int64_t d, const Tensor& weight, const Tensor& bias) {
  if (d <= 0 || x.numel() % d != 0) fail(op, " (CUDA): d = ", d, " does not divide x's ", x.numel(), " values");
  if (x.numel() / d > kMax32) fail(op, " (CUDA): ", x.numel() / d, " rows exceed 2^31");
  for (const Tensor* t : {&weight, &bias})
    if (t->defined() && t->numel() != d)
      fail(op, " (CUDA): ", t == &weight ? "weight" : "bias", " has ", t->numel(), " values, expected d = ", d);
}

}  // namespace

// ================================================================ entry points

kernels::NormForward batch_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                        const Tensor& running_mean, const Tensor& running_var, bool training,
                                        double momentum, double eps) {
  return bn_forward("batch_norm", x, weight, bias, running_mean, running_var, Tensor(), false, training, momentum, eps);
}

kernels::NormForward batch_norm_act_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                            const Tensor& running_mean, const Tensor& running_var,
                                            const Tensor& residual, bool relu, bool training, double momentum,
                                            double eps) {
  return bn_forward("batch_norm_act", x, weight, bias, running_mean, running_var, residual, relu, training, momentum,
                    eps);
}

kernels::NormBackward batch_norm_backward(const Tensor& g, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                          const Tensor& invstd, bool training, std::array<bool, 3> need) {
  kernels::NormActBackward r = bn_backward("batch_norm backward", g, Tensor(), x, weight, mean, invstd, false,
                                           training, {need[0], need[1], need[2], false});
  return {r.dx, r.dweight, r.dbias};
}

kernels::NormActBackward batch_norm_act_backward(const Tensor& g, const Tensor& y, const Tensor& x,
                                                 const Tensor& weight, const Tensor& mean, const Tensor& invstd,
                                                 bool relu, bool training, std::array<bool, 4> need) {
  return bn_backward("batch_norm_act backward", g, y, x, weight, mean, invstd, relu, training, need);
}

kernels::NormForward layer_norm_forward(const Tensor& x, int64_t d, const Tensor& weight, const Tensor& bias,
                                        double eps) {
  const char* op = "layer_norm";
  nn::check_args(op, x, {{"weight", &weight}, {"bias", &bias}});
  check_ln(op, x, d, weight, bias);
  use_device(x);
  const int64_t rows = x.numel() / d;
  const TensorOptions so{nn::stat_dtype(x.dtype()), x.device()};
  kernels::NormForward out{empty(x.shape(), {x.dtype(), x.device()}), empty({rows}, so), empty({rows}, so)};
  if (rows == 0) return out;
  Tensor xd = nn::dense(x), w = weight.defined() ? nn::dense(weight) : Tensor(),
         b = bias.defined() ? nn::dense(bias) : Tensor();
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] { ln_forward_t<scalar_t>(xd, w, b, d, eps, out); });
  return out;
}

kernels::NormBackward layer_norm_backward(const Tensor& g, const Tensor& x, int64_t d, const Tensor& weight,
                                          const Tensor& mean, const Tensor& invstd, std::array<bool, 3> need) {
  const char* op = "layer_norm backward";
  nn::check_args(op, x, {{"g", &g}, {"weight", &weight}});
  check_ln(op, x, d, weight, Tensor());
  if (g.shape() != x.shape()) fail(op, " (CUDA): g has shape ", shape_str(g.shape()), ", expected x's ", shape_str(x.shape()));
  const int64_t rows = x.numel() / d;
  check_stats(op, x, mean, invstd, rows);
  use_device(x);
  const TensorOptions o{x.dtype(), x.device()};
  kernels::NormBackward r{need[0] ? empty(x.shape(), o) : Tensor(), need[1] ? empty({d}, o) : Tensor(),
                          need[2] ? empty({d}, o) : Tensor()};
  if (!(need[0] || need[1] || need[2])) return r;
  if (rows == 0) {
    for (const Tensor& t : {r.dweight, r.dbias})
      if (t.defined()) SIAM_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), 0, t.nbytes(), stream()));
    return r;
  }
  Tensor gd = nn::dense(g), xd = nn::dense(x), w = weight.defined() ? nn::dense(weight) : Tensor();
  Tensor mc = nn::dense(mean), ic = nn::dense(invstd);
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] { ln_backward_t<scalar_t>(gd, xd, w, mc, ic, d, r); });
  return r;
}

// SyncBN's pieces, composed from the reduction and elementwise kernels (each one a CUDA kernel
// already): a fused twin of the CPU loops is for when a GPU can measure it.
namespace {
// A (C) tensor seen as (1, C) or (1, C, 1, 1), to broadcast over x's channel dimension.
Tensor per_channel(const Tensor& t, const Tensor& x) {
  Shape cs(static_cast<size_t>(x.dim()), 1);
  cs[1] = x.size(1);
  const Tensor d = t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
  return d.as_strided(cs, contiguous_strides(cs), d.offset());
}
}  // namespace

Tensor batch_norm_channel_sums(const Tensor& x, const Tensor& centre) {
  std::vector<int64_t> dims{0};
  for (int64_t i = 2; i < x.dim(); ++i) dims.push_back(i);
  Tensor v = x;
  if (centre.defined()) {
    const Tensor d = kernels::binary(kernels::Binary::sub, x, per_channel(centre, x));
    v = kernels::binary(kernels::Binary::mul, d, d);
  }
  return copy_to(kernels::sum(v, dims, false), x.device(), DType::f64);
}

void batch_norm_sync_dx_(const Tensor& dx, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, const Tensor& sums, double count) {
  using kernels::Binary;
  const int64_t c = x.size(1);
  const Tensor sd = sums.is_contiguous() ? sums : copy_to(sums, sums.device(), sums.dtype());
  const Tensor sg = copy_to(sd.as_strided({c}, {1}, sd.offset()), x.device(), x.dtype()),
               sgx = copy_to(sd.as_strided({c}, {1}, sd.offset() + c), x.device(), x.dtype());
  Tensor wi = weight.defined() ? kernels::binary(Binary::mul, weight, invstd) : invstd;
  const Tensor a = kernels::unary(kernels::Unary::mul_scalar, kernels::binary(Binary::mul, wi, sg), 1.0 / count);
  const Tensor b = kernels::unary(kernels::Unary::mul_scalar,
                                  kernels::binary(Binary::mul, kernels::binary(Binary::mul, wi, invstd), sgx), 1.0 / count);
  const Tensor centred = kernels::binary(Binary::sub, x, per_channel(mean, x));
  const Tensor corr =
      kernels::binary(Binary::add, kernels::binary(Binary::mul, centred, per_channel(b, x)), per_channel(a, x));
  kernels::add_inplace(dx, corr, -1.0);
}

}  // namespace siam::gpu
