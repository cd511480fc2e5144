// Optimizer and EMA updates on CUDA: the twins of kernels/cpu/optim.cpp. Every kernel
// overwrites (=) its parameters and state (momentum buffers, moments, EMA targets) in place;
// gradients and sources are only read. The per-element arithmetic is the CPU's, expression for
// expression, with the hyper-parameters rounded to the tensor's dtype on the host as the CPU
// rounds them, so the two agree to the last bit except where the compilers contract a
// multiply-add differently (nvcc and GCC both form FMAs here; which product each fuses can
// differ, a difference of at most one rounding per operation).
//
// Multi-tensor launches: a list is cut into batches of up to kMaxTensors tensors whose
// pointers, sizes and per-tensor scalars travel by value as one kernel argument (under 4 KiB,
// the limit on every toolkit and device). Each block of a launch updates one chunk of kChunk
// elements of one tensor, finding its tensor by binary search over the batch's chunk offsets.
// No pointer array is copied to the device, nothing is read back: an update is a handful of
// launches on siam's stream and can be captured into a CUDA graph. The values a launch takes
// (learning rate, AdamW's bias corrections from the host step counts) are frozen into a
// captured graph, as for any kernel argument.
//
// LARS needs per-tensor norms before any element moves: a multi-tensor pass writes one
// (||p||^2, ||d||^2) partial per chunk (fixed-order block reduction in double), a second
// launch sums each tensor's partials in chunk order and writes its trust ratio to device
// memory, and the update reads it there. Same inputs, same bits, run to run.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/optim.h"

namespace siam::gpu {

using kernels::AdamWHyper;
using kernels::LarsHyper;
using kernels::SgdHyper;

namespace {

constexpr int kThreads = 256;
// Elements per block: 64 KiB of f32 per list, a multiple of 4 * kThreads so every thread's
// group of four stays aligned from one chunk to the next.
constexpr int64_t kChunk = 1 << 14;
constexpr int kMaxTensors = 48;
static_assert(kChunk % (4 * kThreads) == 0, "chunks hold whole groups of four per thread");

// One launch's tensors. N lists (parameter, gradient, state...) of `count` tensors.
template <int N>
struct Batch {
  void* ptr[N][kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t chunk_begin[kMaxTensors + 1];  // first block of each tensor; [count] = blocks in the launch
  int32_t index[kMaxTensors];            // the tensor's position in the caller's list
  double scalar[2][kMaxTensors];         // per-tensor values (AdamW: step size, sqrt of bias correction 2)
  int32_t count;
  int32_t chunk_base;  // blocks of the earlier batches of the same call (LARS partials)
};
static_assert(sizeof(Batch<4>) + 128 <= 4096, "a batch and its op must fit the 4 KiB kernel-argument limit");

template <int N>
__device__ inline int tensor_of_block(const Batch<N>& b, int block) {
  int lo = 0, hi = b.count;  // chunk_begin[lo] <= block < chunk_begin[hi]
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (b.chunk_begin[mid] <= block) lo = mid;
    else hi = mid;
  }
  return lo;
}

__device__ inline void load4(const float* p, float (&r)[4]) {
  float4 v = *reinterpret_cast<const float4*>(p);
  r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
}
__device__ inline void load4(const double* p, double (&r)[4]) {
  double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
  r[0] = a.x, r[1] = a.y, r[2] = b.x, r[3] = b.y;
}
__device__ inline void store4(float* p, const float (&r)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(r[0], r[1], r[2], r[3]);
}
__device__ inline void store4(double* p, const double (&r)[4]) {
  reinterpret_cast<double2*>(p)[0] = make_double2(r[0], r[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(r[2], r[3]);
}

// The element loop of one block: v[N] holds one element of each list; op.apply updates it in
// place, and the lists in Op::kStores (bit i = list i) are written back. Groups of four with
// 16-byte vector accesses when every list's chunk is 16-byte aligned, else one at a time.
template <int N, class T, class Op>
__device__ inline void for_each_element(T* const (&p)[N], int64_t n, const Op& op, const typename Op::Ctx& ctx) {
  bool aligned = true;
#pragma unroll
  for (int i = 0; i < N; ++i) aligned = aligned && (reinterpret_cast<uintptr_t>(p[i]) % 16 == 0);
  int64_t vec_end = aligned ? n / 4 * 4 : 0;
  for (int64_t k = 4 * static_cast<int64_t>(threadIdx.x); k < vec_end; k += 4 * blockDim.x) {
    T r[N][4];
#pragma unroll
    for (int i = 0; i < N; ++i) load4(p[i] + k, r[i]);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      T v[N];
#pragma unroll
      for (int i = 0; i < N; ++i) v[i] = r[i][e];
      op.apply(v, ctx);
#pragma unroll
      for (int i = 0; i < N; ++i) r[i][e] = v[i];
    }
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (Op::kStores & (1 << i)) store4(p[i] + k, r[i]);
  }
  for (int64_t k = vec_end + threadIdx.x; k < n; k += blockDim.x) {
    T v[N];
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] = p[i][k];
    op.apply(v, ctx);
#pragma unroll
    for (int i = 0; i < N; ++i)
      if (Op::kStores & (1 << i)) p[i][k] = v[i];
  }
}

template <int N, class T, class Op>
__global__ void __launch_bounds__(kThreads) update_kernel(const __grid_constant__ Batch<N> b, const Op op) {
  const int t = tensor_of_block(b, blockIdx.x);
  const int64_t start = static_cast<int64_t>(blockIdx.x - b.chunk_begin[t]) * kChunk;
  const int64_t n = min(kChunk, b.numel[t] - start);
  T* p[N];
#pragma unroll
  for (int i = 0; i < N; ++i) p[i] = static_cast<T*>(b.ptr[i][t]) + start;
  for_each_element(p, n, op, op.context(b, t));
}

// ---------------------------------------------------------------- the updates, per element

struct NoCtx {};

// v = {p, g} or {p, g, buf}.
template <class T, bool kMomentum>
struct SgdOp {
  static constexpr int kStores = kMomentum ? 0b101 : 0b001;
  using Ctx = NoCtx;
  T wd, m, neg_lr;
  bool nesterov;
  template <int N> __device__ Ctx context(const Batch<N>&, int) const { return {}; }
  __device__ void apply(T (&v)[kMomentum ? 3 : 2], const Ctx&) const {
    T d = v[1] + wd * v[0];
    if constexpr (kMomentum) {
      v[2] = v[2] * m + d;
      d = nesterov ? d + m * v[2] : v[2];
    }
    v[0] = v[0] + neg_lr * d;
  }
};

// v = {p, g, buf}; the trust ratio of each tensor (as a T value held in a double) is in
// ratio[index], or 1 everywhere when ratio is null.
template <class T>
struct LarsOp {
  static constexpr int kStores = 0b101;
  struct Ctx { T q; };
  T wd, m, neg_lr;
  const double* ratio;
  template <int N> __device__ Ctx context(const Batch<N>& b, int t) const {
    return {ratio ? static_cast<T>(ratio[b.index[t]]) : T(1)};
  }
  __device__ void apply(T (&v)[3], const Ctx& c) const {
    T d = (v[1] + wd * v[0]) * c.q;
    v[2] = v[2] * m + d;
    v[0] = v[0] + neg_lr * v[2];
  }
};

// v = {p, g, exp_avg, exp_avg_sq}; the batch's scalars: step size and sqrt(1 - beta2^t).
template <class T>
struct AdamWOp {
  static constexpr int kStores = 0b1101;
  struct Ctx { T neg_step, bc2; };
  T decay, b1, b2, one_b1, one_b2, eps;
  template <int N> __device__ Ctx context(const Batch<N>& b, int t) const {
    return {static_cast<T>(-b.scalar[0][t]), static_cast<T>(b.scalar[1][t])};
  }
  __device__ void apply(T (&v)[4], const Ctx& c) const {
    const T g = v[1];
    v[0] = v[0] * decay;
    v[2] = v[2] * b1 + one_b1 * g;
    v[3] = v[3] * b2 + one_b2 * g * g;
    T denom = sqrt(v[3]) / c.bc2 + eps;
    v[0] = v[0] + c.neg_step * (v[2] / denom);
  }
};

// v = {target, source}.
template <class T>
struct EmaOp {
  static constexpr int kStores = 0b01;
  using Ctx = NoCtx;
  T mm, one_m;
  template <int N> __device__ Ctx context(const Batch<N>&, int) const { return {}; }
  __device__ void apply(T (&v)[2], const Ctx&) const { v[0] = v[0] * mm + one_m * v[1]; }
};

// ---------------------------------------------------------------- LARS norms

// Sum of v over the block, deterministic (fixed shuffle tree, then the warps' sums in order);
// the result is valid in thread 0.
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // warp_sums may still be read by a previous call
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) s += warp_sums[w];
  return s;
}

// One block per chunk of (p, g): partial[2 (chunk_base + block) + {0, 1}] = sum p^2, sum d^2 in
// double, d = g + wd p rounded to T as the update computes it.
template <class T>
__global__ void __launch_bounds__(kThreads) lars_partial_kernel(const __grid_constant__ Batch<2> b, T wd,
                                                                double* partial) {
  const int t = tensor_of_block(b, blockIdx.x);
  const int64_t start = static_cast<int64_t>(blockIdx.x - b.chunk_begin[t]) * kChunk;
  const int64_t n = min(kChunk, b.numel[t] - start);
  const T* p = static_cast<const T*>(b.ptr[0][t]) + start;
  const T* g = static_cast<const T*>(b.ptr[1][t]) + start;
  double pp = 0, dd = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
    const T pk = p[k];
    const T d = g[k] + wd * pk;
    pp += static_cast<double>(pk) * static_cast<double>(pk);
    dd += static_cast<double>(d) * static_cast<double>(d);
  }
  pp = block_sum(pp);
  dd = block_sum(dd);
  if (threadIdx.x == 0) {
    partial[2 * (b.chunk_base + blockIdx.x)] = pp;
    partial[2 * (b.chunk_base + blockIdx.x) + 1] = dd;
  }
}

// One warp per tensor of the batch: sums its chunks' partials (lane-strided, then a fixed
// shuffle tree) and writes ratio[index] = eta ||p|| / ||d|| in T, or 1 when a norm is 0.
template <class T>
__global__ void lars_ratio_kernel(const __grid_constant__ Batch<2> b, T eta, const double* partial, double* ratio) {
  const int t = blockIdx.x;
  double pp = 0, dd = 0;
  for (int c = b.chunk_begin[t] + static_cast<int>(threadIdx.x); c < b.chunk_begin[t + 1]; c += 32) {
    pp += partial[2 * (b.chunk_base + c)];
    dd += partial[2 * (b.chunk_base + c) + 1];
  }
  for (int o = 16; o > 0; o /= 2) {
    pp += __shfl_down_sync(0xffffffffu, pp, o);
    dd += __shfl_down_sync(0xffffffffu, dd, o);
  }
  if (threadIdx.x == 0) {
    const T pn = static_cast<T>(sqrt(pp)), dn = static_cast<T>(sqrt(dd));
    T q = T(1);
    if (pn > T(0) && dn > T(0)) q = eta * pn / dn;
    ratio[b.index[t]] = static_cast<double>(q);
  }
}

// ---------------------------------------------------------------- host side

// The same checks as the CPU entry points, plus one device for the whole call.
void check_params(const char* name, const std::vector<Tensor>& params) {
  const Device dev = params.front().device();
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    if (p.device() != dev)
      fail(name, ": parameter ", i, " is on ", p.device().str(), ", parameter 0 on ", dev.str(),
           "; one update takes the parameters of one device");
    if (!p.is_contiguous()) fail(name, ": parameter ", i, " ", shape_str(p.shape()), " is not contiguous");
    if (p.dtype() != DType::f32 && p.dtype() != DType::f64)
      fail(name, ": parameter ", i, " is ", dtype_name(p.dtype()),
           ", expected f32 or f64 (bf16 training keeps f32 master weights)");
  }
}

void check_list(const char* name, const std::vector<Tensor>& params, const std::vector<Tensor>& other,
                const char* what) {
  if (other.size() != params.size()) fail(name, ": ", params.size(), " parameters but ", other.size(), " ", what);
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    const Tensor& o = other[i];
    if (o.shape() != p.shape() || o.dtype() != p.dtype() || o.device() != p.device())
      fail(name, ": ", what, " ", i, " is ", shape_str(o.shape()), " ", dtype_name(o.dtype()), " on ",
           o.device().str(), ", its parameter is ", shape_str(p.shape()), " ", dtype_name(p.dtype()), " on ",
           p.device().str());
    if (!o.is_contiguous()) fail(name, ": ", what, " ", i, " is not contiguous");
  }
}

// Cuts the tensors `which` (positions in the lists, all of one dtype, numel > 0) into batches.
// `scalars(i, s0, s1)` gives tensor i's two per-tensor values, when the update has them.
template <int N, class Scalars>
std::vector<Batch<N>> make_batches(const std::vector<const std::vector<Tensor>*>& lists,
                                   const std::vector<size_t>& which, Scalars scalars) {
  std::vector<Batch<N>> out;
  int64_t base = 0;
  for (size_t i : which) {
    if (out.empty() || out.back().count == kMaxTensors) {
      if (!out.empty()) base += out.back().chunk_begin[out.back().count];
      out.emplace_back();
      Batch<N>& b = out.back();
      b.count = 0;
      b.chunk_base = static_cast<int32_t>(base);
      b.chunk_begin[0] = 0;
    }
    Batch<N>& b = out.back();
    const int s = b.count;
    for (int l = 0; l < N; ++l) b.ptr[l][s] = (*lists[l])[i].raw_data();
    b.numel[s] = (*lists[0])[i].numel();
    b.index[s] = static_cast<int32_t>(i);
    scalars(i, b.scalar[0][s], b.scalar[1][s]);
    const int64_t end = b.chunk_begin[s] + (b.numel[s] + kChunk - 1) / kChunk;
    if (base + end > INT32_MAX) fail("optimizer update: more than 2^31 chunks of ", kChunk, " elements in one call");
    b.chunk_begin[s + 1] = static_cast<int32_t>(end);
    b.count = s + 1;
  }
  return out;
}

auto no_scalars = [](size_t, double& a, double& b) { a = 0, b = 0; };

// Positions of the non-empty tensors of dtype dt.
std::vector<size_t> of_dtype(const std::vector<Tensor>& params, DType dt) {
  std::vector<size_t> out;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].dtype() == dt && params[i].numel() > 0) out.push_back(i);
  return out;
}

template <int N, class T, class Op>
void launch_updates(const std::vector<Batch<N>>& batches, const Op& op) {
  for (const Batch<N>& b : batches) {
    update_kernel<N, T, Op><<<b.chunk_begin[b.count], kThreads, 0, stream()>>>(b, op);
    SIAM_CUDA_LAUNCHED();
  }
}

// Calls body.template operator()<T>(which) for the f32 tensors, then the f64 ones.
template <class Body>
void per_dtype(const std::vector<Tensor>& params, Body body) {
  for (DType dt : {DType::f32, DType::f64}) {
    std::vector<size_t> which = of_dtype(params, dt);
    if (which.empty()) continue;
    if (dt == DType::f32) body.template operator()<float>(which);
    else body.template operator()<double>(which);
  }
}

}  // namespace

void sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& bufs,
                const SgdHyper& h) {
  if (params.empty()) return;
  check_params("sgd", params);
  check_list("sgd", params, grads, "gradients");
  const bool momentum = h.momentum != 0;
  if (momentum) check_list("sgd", params, bufs, "momentum buffers");
  use_device(params.front());
  per_dtype(params, [&]<class T>(const std::vector<size_t>& which) {
    if (momentum) {
      SgdOp<T, true> op{T(h.weight_decay), T(h.momentum), T(-h.lr), h.nesterov};
      launch_updates<3, T>(make_batches<3>({&params, &grads, &bufs}, which, no_scalars), op);
    } else {
      SgdOp<T, false> op{T(h.weight_decay), T(h.momentum), T(-h.lr), h.nesterov};
      launch_updates<2, T>(make_batches<2>({&params, &grads}, which, no_scalars), op);
    }
  });
}

void lars_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& bufs,
                 const LarsHyper& h) {
  if (params.empty()) return;
  check_params("lars", params);
  check_list("lars", params, grads, "gradients");
  check_list("lars", params, bufs, "momentum buffers");
  use_device(params.front());
  const Device dev = params.front().device();
  per_dtype(params, [&]<class T>(const std::vector<size_t>& which) {
    Tensor ratio;  // (len(params)) f64 trust ratios, as T values; only `which` are written and read
    if (h.adapt) {
      std::vector<Batch<2>> norm_batches = make_batches<2>({&params, &grads}, which, no_scalars);
      const Batch<2>& last = norm_batches.back();
      const int64_t chunks = last.chunk_base + last.chunk_begin[last.count];
      Tensor partial = empty({2 * chunks}, {DType::f64, dev});
      ratio = empty({static_cast<int64_t>(params.size())}, {DType::f64, dev});
      for (const Batch<2>& b : norm_batches) {
        lars_partial_kernel<T><<<b.chunk_begin[b.count], kThreads, 0, stream()>>>(b, T(h.weight_decay),
                                                                                    dptr<double>(partial));
        SIAM_CUDA_LAUNCHED();
      }
      for (const Batch<2>& b : norm_batches) {
        lars_ratio_kernel<T><<<b.count, 32, 0, stream()>>>(b, T(h.eta), dptr<double>(partial), dptr<double>(ratio));
        SIAM_CUDA_LAUNCHED();
      }
    }
    LarsOp<T> op{T(h.weight_decay), T(h.momentum), T(-h.lr), h.adapt ? dptr<double>(ratio) : nullptr};
    launch_updates<3, T>(make_batches<3>({&params, &grads, &bufs}, which, no_scalars), op);
  });
}

void adamw_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                  const std::vector<int64_t>& steps, const AdamWHyper& h) {
  SIAM_CHECK(steps.size() == params.size(), "adamw: ", steps.size(), " step counts for ", params.size(),
             " parameters");
  if (params.empty()) return;
  check_params("adamw", params);
  check_list("adamw", params, grads, "gradients");
  check_list("adamw", params, exp_avgs, "first moments");
  check_list("adamw", params, exp_avg_sqs, "second moments");
  for (int64_t s : steps) SIAM_CHECK(s >= 1, "adamw: step count ", s);
  use_device(params.front());
  // Bias corrections in double on the host, as the CPU kernel (and torch.optim) computes them.
  auto corrections = [&](size_t i, double& step_size, double& bc2_sqrt) {
    const double t = static_cast<double>(steps[i]);
    step_size = h.lr / (1 - std::pow(h.beta1, t));
    bc2_sqrt = std::sqrt(1 - std::pow(h.beta2, t));
  };
  per_dtype(params, [&]<class T>(const std::vector<size_t>& which) {
    AdamWOp<T> op{T(1 - h.lr * h.weight_decay), T(h.beta1), T(h.beta2), T(1 - h.beta1), T(1 - h.beta2), T(h.eps)};
    launch_updates<4, T>(make_batches<4>({&params, &grads, &exp_avgs, &exp_avg_sqs}, which, corrections), op);
  });
}

void ema_update(const std::vector<Tensor>& targets, const std::vector<Tensor>& sources, double m) {
  if (targets.empty()) return;
  check_params("ema", targets);
  check_list("ema", targets, sources, "sources");
  use_device(targets.front());
  per_dtype(targets, [&]<class T>(const std::vector<size_t>& which) {
    EmaOp<T> op{T(m), T(1 - m)};
    launch_updates<2, T>(make_batches<2>({&targets, &sources}, which, no_scalars), op);
  });
}

}  // namespace siam::gpu
