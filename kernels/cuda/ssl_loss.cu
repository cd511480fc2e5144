// Fused NT-Xent and DINO losses on CUDA: the twins of kernels/cpu/ssl_loss.cpp. Every output
// is written (=) into a fresh tensor; nothing accumulates. As on the CPU, dot products,
// exponentials and sums run in double from the inputs (f32, f64 or bf16) and each output is
// rounded to the input dtype once; the backward passes recompute similarities and
// probabilities from the inputs and the saved f64 log-sum-exps. Inputs may be strided views.
// Every reduction is a fixed-order block tree (no atomics): same inputs, same bits. The loss
// stays on the device, and the backward reads its incoming gradient there, so nothing waits
// for the host.
//
// NT-Xent, M rows of D:
//   forward:  prep (block per row: zn, 1/||z||, ||z||^2, |P_i|) -> S = zn zn^T / T (32 x 32
//             tiles, f64) -> row kernel (lse_i, lse_i - mean of the positives) -> loss (1 block)
//   backward: prep -> G = dloss/dS, written by the similarity tiles' epilogue -> dzn = W zn,
//             W = (G + G^T) / T (tiles) -> row kernel through the normalisation -> dz
// DINO, S student and T teacher crops of B images, K outputs:
//   forward:  log-sum-exp of every row (block per row) -> per (image, K-chunk) block: teacher
//             probabilities of the chunk in shared memory, then sum_k v_sk sum_{t != s} q_tk
//             per student crop (one partial per chunk) -> loss (1 block)
//   backward: per (image, K-chunk) block: the same probabilities, then dx elementwise
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ssl_loss.h"

namespace siam::gpu {

using kernels::DinoSaved;
using kernels::NtXentSaved;

namespace {

constexpr double kNormEps = 1e-12;  // F.normalize's eps
constexpr int kRowThreads = 256;
constexpr int kTile = 32;           // similarity / dzn tiles: 32 x 32 outputs per block
constexpr int kTileRows = 8;        // threads per tile: 32 x 8, four outputs each

// ---------------------------------------------------------------- shared helpers

// Sum / max of v over the block, in a fixed order (shuffle tree, then the warps' results in
// warp order); every thread gets the result.
__device__ inline double block_sum(double v) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();  // part may still be read by a previous call
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x + 31) / 32; ++w) s += part[w];
  return s;
}
__device__ inline double block_max(double v) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o /= 2) v = fmax(v, __shfl_down_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  double m = -INFINITY;
  for (int w = 0; w < static_cast<int>(blockDim.x + 31) / 32; ++w) m = fmax(m, part[w]);
  return m;
}

// One rounding from double to T (bf16 through f32, as the conversions in common.cuh do).
template <class T>
__device__ inline T round_to(double v) {
  return from_acc<T>(v);
}

// A 2-D strided view: element (r, c) at p[r s0 + c s1].
template <class T>
struct View2 {
  const T* p;
  int64_t s0, s1;
  __device__ double operator()(int64_t r, int64_t c) const { return static_cast<double>(to_acc(p[r * s0 + c * s1])); }
};
template <class T>
View2<T> view2(const Tensor& t) {
  return {dptr<const T>(t), t.stride(0), t.stride(1)};
}

// The loss's incoming gradient, a scalar on the device in any floating dtype.
enum class ScalarKind : int { f32, f64, bf16 };
struct DeviceScalar {
  const void* p;
  ScalarKind kind;
  __device__ double load() const {
    switch (kind) {
      case ScalarKind::f32: return *static_cast<const float*>(p);
      case ScalarKind::f64: return *static_cast<const double*>(p);
      default: return __bfloat162float(*static_cast<const __nv_bfloat16*>(p));
    }
  }
};
DeviceScalar device_scalar(const Tensor& g, const Tensor& like, const char* op) {
  if (g.numel() != 1 || g.device() != like.device())
    fail(op, ": the loss gradient must be one value on ", like.device().str(), ", got ", shape_str(g.shape()),
         " on ", g.device().str());
  switch (g.dtype()) {
    case DType::f32: return {g.raw_data(), ScalarKind::f32};
    case DType::f64: return {g.raw_data(), ScalarKind::f64};
    case DType::bf16: return {g.raw_data(), ScalarKind::bf16};
    default: fail(op, ": the loss gradient must be f32, f64 or bf16, got ", dtype_name(g.dtype()));
  }
}

void require_cuda(const Tensor& t, const Tensor& like, const char* op, const char* what) {
  if (t.device() != like.device())
    fail(op, ": ", what, " is on ", t.device().str(), ", expected ", like.device().str());
}

void require_saved_lse(const Tensor& t, int64_t n, const Tensor& like, const char* op, const char* what) {
  SIAM_CHECK(t.defined() && t.dtype() == DType::f64 && t.numel() == n && t.is_contiguous() &&
                 t.device() == like.device(),
             op, ": saved ", what, " must be ", n, " contiguous f64 values on ", like.device().str());
}

// ---------------------------------------------------------------- NT-Xent

// The positives of anchor i as weights over j: the bool mask row (any strides), or the one
// SimCLR partner (i + M/2) mod M when mask is null.
struct Positives {
  const uint8_t* mask;
  int64_t s0, s1, m;
  __device__ double weight(int64_t i, int64_t j) const {
    if (mask) return mask[i * s0 + j * s1] ? 1.0 : 0.0;
    return j == (i + m / 2) % m ? 1.0 : 0.0;
  }
};
Positives positives_of(const Tensor& p, int64_t m) {
  if (!p.defined()) return {nullptr, 0, 0, m};
  return {static_cast<const uint8_t*>(p.raw_data()), p.stride(0), p.stride(1), m};
}

// Block per row i: zn[i] = z_i / max(||z_i||, eps), inv[i] = 1 / max(||z_i||, eps),
// sq[i] = ||z_i||^2, count[i] = |P_i|.
template <class T>
__global__ void __launch_bounds__(kRowThreads) nt_prep_kernel(View2<T> z, Positives pos, int64_t d, double* zn,
                                                            double* inv, double* sq, double* count) {
  const int64_t i = blockIdx.x;
  double s = 0, c = 0;
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
    const double v = z(i, k);
    s += v * v;
  }
  for (int64_t j = threadIdx.x; j < pos.m; j += blockDim.x) c += pos.weight(i, j);
  s = block_sum(s);
  c = block_sum(c);
  const double iv = 1.0 / fmax(sqrt(s), kNormEps);
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) zn[i * d + k] = z(i, k) * iv;
  if (threadIdx.x == 0) {
    inv[i] = iv;
    sq[i] = s;
    count[i] = c;
  }
}

// s_ij = zn_i . zn_j / T over a 32 x 32 tile of (i, j), dot products in k order as on the CPU.
// Forward: out = S. Backward (kGrad): out = G, G_ij = dloss/ds_ij =
// scale (exp(s_ij - lse_i) - w_ij / |P_i|) with scale = grad / M, and G_ii = 0.
template <bool kGrad>
__global__ void __launch_bounds__(kTile* kTileRows) nt_similarity_kernel(const double* zn, int64_t m, int64_t d,
                                                                         double temperature, double* out,
                                                                         Positives pos, const double* lse,
                                                                         const double* count, DeviceScalar grad) {
  __shared__ double a[kTile][kTile + 1];  // zn rows i0.., columns k0..
  __shared__ double b[kTile][kTile + 1];  // zn rows j0.., columns k0..
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile, j0 = static_cast<int64_t>(blockIdx.x) * kTile;
  double acc[kTile / kTileRows] = {};
  for (int64_t k0 = 0; k0 < d; k0 += kTile) {
    for (int l = ty; l < kTile; l += kTileRows) {
      const int64_t k = k0 + tx;
      a[l][tx] = (i0 + l < m && k < d) ? zn[(i0 + l) * d + k] : 0.0;
      b[l][tx] = (j0 + l < m && k < d) ? zn[(j0 + l) * d + k] : 0.0;
    }
    __syncthreads();
    const int kn = static_cast<int>(d - k0 < kTile ? d - k0 : kTile);
    for (int kk = 0; kk < kn; ++kk) {
      const double bv = b[tx][kk];
#pragma unroll
      for (int r = 0; r < kTile / kTileRows; ++r) acc[r] += a[ty + r * kTileRows][kk] * bv;
    }
    __syncthreads();
  }
  const int64_t j = j0 + tx;
  if (j >= m) return;
  const double scale = kGrad ? grad.load() / static_cast<double>(m) : 0.0;
#pragma unroll
  for (int r = 0; r < kTile / kTileRows; ++r) {
    const int64_t i = i0 + ty + r * kTileRows;
    if (i >= m) continue;
    const double s = acc[r] / temperature;
    if constexpr (kGrad)
      out[i * m + j] = j == i ? 0.0 : scale * (exp(s - lse[i]) - pos.weight(i, j) / count[i]);
    else
      out[i * m + j] = s;
  }
}

// Block per anchor i: lse[i] = log sum_{k != i} exp(s_ik), row[i] = lse[i] - mean of s_ip over
// the positives p.
__global__ void __launch_bounds__(kRowThreads) nt_row_kernel(const double* s, Positives pos, const double* count,
                                                           double* lse, double* row) {
  const int64_t i = blockIdx.x, m = pos.m;
  const double* si = s + i * m;
  double mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x)
    if (j != i) mx = fmax(mx, si[j]);
  mx = block_max(mx);
  double e = 0, sp = 0;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    if (j != i) e += exp(si[j] - mx);
    sp += pos.weight(i, j) * si[j];
  }
  e = block_sum(e);
  sp = block_sum(sp);
  if (threadIdx.x == 0) {
    const double l = mx + log(e);
    lse[i] = l;
    row[i] = l - sp / count[i];
  }
}

// One block: out = sum_i row[i] / divisor, rounded to T.
template <class T>
__global__ void __launch_bounds__(kRowThreads) mean_kernel(const double* row, int64_t n, double divisor, T* out) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += row[i];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = round_to<T>(s / divisor);
}

// dzn (M, D) = W zn with W_kj = (G_kj + G_jk) / T, over a 32 x 32 tile of (k, c); j runs in
// order and zero weights are skipped, as on the CPU.
__global__ void __launch_bounds__(kTile* kTileRows) nt_dzn_kernel(const double* g, const double* zn, int64_t m,
                                                                  int64_t d, double temperature, double* dzn) {
  __shared__ double gs[kTile][kTile + 1];  // G rows k0.., columns j0.., then the W tile
  __shared__ double gt[kTile][kTile + 1];  // G rows j0.., columns k0..
  __shared__ double zs[kTile][kTile + 1];  // zn rows j0.., columns c0..
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t k0 = static_cast<int64_t>(blockIdx.y) * kTile, c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  double acc[kTile / kTileRows] = {};
  for (int64_t j0 = 0; j0 < m; j0 += kTile) {
    for (int l = ty; l < kTile; l += kTileRows) {
      gs[l][tx] = (k0 + l < m && j0 + tx < m) ? g[(k0 + l) * m + j0 + tx] : 0.0;
      gt[l][tx] = (j0 + l < m && k0 + tx < m) ? g[(j0 + l) * m + k0 + tx] : 0.0;
      zs[l][tx] = (j0 + l < m && c0 + tx < d) ? zn[(j0 + l) * d + c0 + tx] : 0.0;
    }
    __syncthreads();
    for (int l = ty; l < kTile; l += kTileRows) gs[l][tx] = (gs[l][tx] + gt[tx][l]) / temperature;  // W tile
    __syncthreads();
    const int jn = static_cast<int>(m - j0 < kTile ? m - j0 : kTile);
    for (int jj = 0; jj < jn; ++jj) {
      const double zv = zs[jj][tx];
#pragma unroll
      for (int r = 0; r < kTile / kTileRows; ++r) {
        const double w = gs[ty + r * kTileRows][jj];
        if (w != 0) acc[r] += w * zv;
      }
    }
    __syncthreads();
  }
  const int64_t c = c0 + tx;
  if (c >= d) return;
#pragma unroll
  for (int r = 0; r < kTile / kTileRows; ++r) {
    const int64_t k = k0 + ty + r * kTileRows;
    if (k < m) dzn[k * d + c] = acc[r];
  }
}

// Block per row k, through the normalisation: dz = (dzn - zn (zn . dzn)) / ||z||, or dzn / eps
// where the norm was clamped.
template <class T>
__global__ void __launch_bounds__(kRowThreads) nt_dz_kernel(const double* zn, const double* dzn, const double* inv,
                                                          const double* sq, int64_t d, T* out) {
  const int64_t k = blockIdx.x;
  const double* a = zn + k * d;
  const double* b = dzn + k * d;
  T* o = out + k * d;
  if (sq[k] > kNormEps * kNormEps) {
    double proj = 0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) proj += a[c] * b[c];
    proj = block_sum(proj);
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
      o[c] = round_to<T>((b[c] - a[c] * proj) * inv[k]);
  } else {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) o[c] = round_to<T>(b[c] / kNormEps);
  }
}

struct NtPrep {
  Tensor zn, inv, sq, count;  // (M, D), (M), (M), (M) f64
};

NtPrep nt_prep(const Tensor& z, const Positives& pos) {
  const int64_t m = z.size(0), d = z.size(1);
  const TensorOptions f64{DType::f64, z.device()};
  NtPrep p{empty({m, d}, f64), empty({m}, f64), empty({m}, f64), empty({m}, f64)};
  SIAM_CUDA_DISPATCH_FLOAT(z.dtype(), "nt_xent", [&] {
    nt_prep_kernel<scalar_t><<<static_cast<unsigned>(m), kRowThreads, 0, stream()>>>(
        view2<scalar_t>(z), pos, d, dptr<double>(p.zn), dptr<double>(p.inv), dptr<double>(p.sq),
        dptr<double>(p.count));
    SIAM_CUDA_LAUNCHED();
  });
  return p;
}

dim3 tiles(int64_t cols, int64_t rows) {
  const int64_t gx = (cols + kTile - 1) / kTile, gy = (rows + kTile - 1) / kTile;
  if (gy > 65535) fail("nt_xent: ", rows, " rows exceed the CUDA kernel's grid (at most ", 65535 * kTile, ")");
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

void nt_check(const Tensor& z, const Tensor& positives, const char* op) {
  SIAM_CHECK(z.dim() == 2 && z.size(0) >= 2, op, " kernel: z ", shape_str(z.shape()));
  const int64_t m = z.size(0);
  if (m > INT32_MAX) fail(op, ": ", m, " rows exceed the CUDA kernel's grid");
  if (positives.defined()) {
    require_cuda(positives, z, op, "the positive mask");
    SIAM_CHECK(positives.dtype() == DType::b8 && positives.shape() == (Shape{m, m}), op, " kernel: mask");
  } else {
    SIAM_CHECK(m % 2 == 0, op, " kernel: pairs need an even M, got ", m);
  }
}

// ---------------------------------------------------------------- DINO

struct DinoShape {
  int64_t s, t, b, k, pairs;
};

DinoShape dino_shape(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t student_crops) {
  SIAM_CHECK(student.dim() == 2 && teacher.dim() == 2 && student_crops > 0, "dino kernel shapes");
  DinoShape sh{student_crops, 0, student.size(0) / student_crops, student.size(1), 0};
  SIAM_CHECK(sh.b > 0 && sh.s * sh.b == student.size(0) && teacher.size(0) % sh.b == 0 &&
                 teacher.size(1) == sh.k && center.numel() == sh.k,
             "dino kernel shapes");
  sh.t = teacher.size(0) / sh.b;
  SIAM_CHECK(sh.t >= 1 && sh.t <= sh.s, "dino kernel: ", sh.t, " teacher crops, ", sh.s, " student crops");
  sh.pairs = sh.t * sh.s - sh.t;
  SIAM_CHECK(sh.pairs > 0, "dino kernel: no student-teacher pair");
  return sh;
}

void dino_devices(const Tensor& student, const Tensor& teacher, const Tensor& center, const char* op) {
  require_cuda(teacher, student, op, "the teacher");
  require_cuda(center, student, op, "the center");
  SIAM_CHECK(teacher.dtype() == student.dtype() && center.dtype() == student.dtype(), op,
             " kernel: student, teacher and center dtypes differ");
}

// The center's K values, any layout.
template <class T>
struct Center {
  const T* p;
  bool contiguous;
  Strided at;
  __device__ double operator()(int64_t k) const {
    return static_cast<double>(to_acc(p[contiguous ? k : at.offset(k)]));
  }
};
template <class T>
Center<T> center_of(const Tensor& c) {
  return {dptr<const T>(c), c.is_contiguous(), c.is_contiguous() ? Strided{} : strided_as(c, c.shape())};
}

// K-chunk of the per-(image, chunk) kernels: the T teacher probabilities of a chunk sit in
// 40 KiB of shared memory (dynamic and static together must stay under the 48 KiB a launch
// gets without opting in).
constexpr int64_t kDinoSmem = 40 * 1024;
constexpr int kDinoThreads = 256;
int64_t dino_chunk(const DinoShape& sh, const char* op) {
  int64_t kc = kDinoSmem / static_cast<int64_t>(sizeof(double)) / sh.t;
  if (kc < 32) fail(op, ": ", sh.t, " teacher crops exceed the CUDA kernel's shared memory (at most ", kDinoSmem / 8 / 32, ")");
  kc = kc / 32 * 32;
  return kc < sh.k ? kc : sh.k;
}

// Block per row: teacher rows r < T B (lse of (y - c) / tau_t), then student rows (lse of
// x / tau_s). Two passes over the row: its max, then the sum of exp(v - max).
template <class T>
__global__ void __launch_bounds__(kRowThreads) dino_lse_kernel(View2<T> x, View2<T> y, Center<T> c, int64_t k,
                                                             int64_t teacher_rows, double tau_s, double tau_t,
                                                             double* slse, double* tlse) {
  const int64_t r = blockIdx.x;
  const bool teacher = r < teacher_rows;
  const int64_t row = teacher ? r : r - teacher_rows;
  auto v = [&](int64_t j) { return teacher ? (y(row, j) - c(j)) / tau_t : x(row, j) / tau_s; };
  double mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) mx = fmax(mx, v(j));
  mx = block_max(mx);
  double e = 0;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) e += exp(v(j) - mx);
  e = block_sum(e);
  if (threadIdx.x == 0) (teacher ? tlse : slse)[row] = mx + log(e);
}

// Loads q_t of image b over the chunk [k0, k0 + kn) into shared memory: q[t kn + kk].
template <class T>
__device__ inline void dino_teacher_chunk(View2<T> y, const Center<T>& c, const double* tlse, int64_t nt, int64_t nb,
                                          int64_t b, int64_t k0, int64_t kn, double tau_t, double* q) {
  for (int64_t t = 0; t < nt; ++t) {
    const double l = tlse[t * nb + b];
    for (int64_t kk = threadIdx.x; kk < kn; kk += blockDim.x)
      q[t * kn + kk] = exp((y(t * nb + b, k0 + kk) - c(k0 + kk)) / tau_t - l);
  }
  __syncthreads();
}

// sum_{t != s} q_tk in t order, as on the CPU.
__device__ inline double dino_qsum(const double* q, int64_t nt, int64_t s, int64_t kn, int64_t kk) {
  double qs = 0;
  for (int64_t t = 0; t < nt; ++t)
    if (t != s) qs += q[t * kn + kk];
  return qs;
}

// Block per (chunk, image b): partial[(s B + b) chunks + chunk] = sum over the chunk of
// v_sk sum_{t != s} q_tk, v = x / tau_s.
template <class T>
__global__ void __launch_bounds__(kDinoThreads) dino_dot_kernel(View2<T> x, View2<T> y, Center<T> c,
                                                              const double* tlse, DinoShape sh, int64_t kc,
                                                              double tau_s, double tau_t, double* partial) {
  extern __shared__ double q[];
  const int64_t chunk = blockIdx.x, chunks = gridDim.x, b = blockIdx.y;
  const int64_t k0 = chunk * kc, kn = sh.k - k0 < kc ? sh.k - k0 : kc;
  dino_teacher_chunk(y, c, tlse, sh.t, sh.b, b, k0, kn, tau_t, q);
  for (int64_t s = 0; s < sh.s; ++s) {
    const int64_t r = s * sh.b + b;
    double acc = 0;
    for (int64_t kk = threadIdx.x; kk < kn; kk += blockDim.x)
      acc += dino_qsum(q, sh.t, s, kn, kk) * (x(r, k0 + kk) / tau_s);
    acc = block_sum(acc);
    if (threadIdx.x == 0) partial[r * chunks + chunk] = acc;
  }
}

// One block: loss = sum over student rows r = (s, b) of (terms_s lse_r - sum of r's chunk
// partials) / (pairs B), terms_s = the number of teacher crops t != s.
template <class T>
__global__ void __launch_bounds__(kRowThreads) dino_loss_kernel(const double* slse, const double* partial,
                                                              int64_t chunks, DinoShape sh, T* out) {
  double total = 0;
  for (int64_t r = threadIdx.x; r < sh.s * sh.b; r += blockDim.x) {
    const int64_t s = r / sh.b;
    double dot = 0;
    for (int64_t c = 0; c < chunks; ++c) dot += partial[r * chunks + c];
    const double terms = static_cast<double>(s < sh.t ? sh.t - 1 : sh.t);
    total += terms * slse[r] - dot;
  }
  total = block_sum(total);
  if (threadIdx.x == 0)
    out[0] = round_to<T>(total / static_cast<double>(sh.pairs * sh.b));
}

// Block per (chunk, image b): dx_sk = grad / (pairs B) / tau_s (terms_s p_sk - sum_{t != s} q_tk).
template <class T>
__global__ void __launch_bounds__(kDinoThreads) dino_backward_kernel(View2<T> x, View2<T> y, Center<T> c,
                                                                   const double* slse, const double* tlse,
                                                                   DinoShape sh, int64_t kc, double tau_s,
                                                                   double tau_t, DeviceScalar grad, T* dx) {
  extern __shared__ double q[];
  const int64_t chunk = blockIdx.x, b = blockIdx.y;
  const int64_t k0 = chunk * kc, kn = sh.k - k0 < kc ? sh.k - k0 : kc;
  const double scale = grad.load() / static_cast<double>(sh.pairs * sh.b) / tau_s;
  dino_teacher_chunk(y, c, tlse, sh.t, sh.b, b, k0, kn, tau_t, q);
  for (int64_t s = 0; s < sh.s; ++s) {
    const int64_t r = s * sh.b + b;
    const double terms = static_cast<double>(s < sh.t ? sh.t - 1 : sh.t);
    const double l = slse[r];
    for (int64_t kk = threadIdx.x; kk < kn; kk += blockDim.x) {
      const double p = exp(x(r, k0 + kk) / tau_s - l);
      dx[r * sh.k + k0 + kk] = round_to<T>(scale * (terms * p - dino_qsum(q, sh.t, s, kn, kk)));
    }
  }
}

dim3 dino_grid(const DinoShape& sh, int64_t kc, const char* op) {
  const int64_t chunks = (sh.k + kc - 1) / kc;
  if (sh.b > 65535) fail(op, ": ", sh.b, " images per crop exceed the CUDA kernel's grid (at most 65535)");
  return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(sh.b));
}

}  // namespace

// ---------------------------------------------------------------- entry points

NtXentSaved nt_xent_forward(const Tensor& z, const Tensor& positives, double temperature) {
  nt_check(z, positives, "nt_xent");
  use_device(z);
  const int64_t m = z.size(0);
  const TensorOptions f64{DType::f64, z.device()};
  const Positives pos = positives_of(positives, m);
  NtPrep p = nt_prep(z, pos);
  Tensor s = empty({m, m}, f64), row = empty({m}, f64);
  NtXentSaved out{empty({}, {z.dtype(), z.device()}), empty({m}, f64)};
  nt_similarity_kernel<false><<<tiles(m, m), dim3(kTile, kTileRows), 0, stream()>>>(
      dptr<double>(p.zn), m, z.size(1), temperature, dptr<double>(s), pos, nullptr, nullptr, DeviceScalar{});
  SIAM_CUDA_LAUNCHED();
  nt_row_kernel<<<static_cast<unsigned>(m), kRowThreads, 0, stream()>>>(dptr<double>(s), pos, dptr<double>(p.count),
                                                                         dptr<double>(out.lse), dptr<double>(row));
  SIAM_CUDA_LAUNCHED();
  SIAM_CUDA_DISPATCH_FLOAT(z.dtype(), "nt_xent", [&] {
    mean_kernel<scalar_t><<<1, kRowThreads, 0, stream()>>>(dptr<double>(row), m, static_cast<double>(m),
                                                           dptr<scalar_t>(out.loss));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

Tensor nt_xent_backward(const Tensor& grad, const Tensor& z, const Tensor& positives, const NtXentSaved& saved,
                        double temperature) {
  nt_check(z, positives, "nt_xent backward");
  use_device(z);
  const int64_t m = z.size(0), d = z.size(1);
  require_saved_lse(saved.lse, m, z, "nt_xent backward", "lse");
  const DeviceScalar g = device_scalar(grad, z, "nt_xent backward");
  const Positives pos = positives_of(positives, m);
  NtPrep p = nt_prep(z, pos);
  const TensorOptions f64{DType::f64, z.device()};
  Tensor gm = empty({m, m}, f64), dzn = empty({m, d}, f64);
  Tensor dz = empty(z.shape(), {z.dtype(), z.device()});
  nt_similarity_kernel<true><<<tiles(m, m), dim3(kTile, kTileRows), 0, stream()>>>(
      dptr<double>(p.zn), m, d, temperature, dptr<double>(gm), pos, dptr<double>(saved.lse), dptr<double>(p.count), g);
  SIAM_CUDA_LAUNCHED();
  nt_dzn_kernel<<<tiles(d, m), dim3(kTile, kTileRows), 0, stream()>>>(dptr<double>(gm), dptr<double>(p.zn), m, d,
                                                                       temperature, dptr<double>(dzn));
  SIAM_CUDA_LAUNCHED();
  SIAM_CUDA_DISPATCH_FLOAT(z.dtype(), "nt_xent backward", [&] {
    nt_dz_kernel<scalar_t><<<static_cast<unsigned>(m), kRowThreads, 0, stream()>>>(
        dptr<double>(p.zn), dptr<double>(dzn), dptr<double>(p.inv), dptr<double>(p.sq), d, dptr<scalar_t>(dz));
    SIAM_CUDA_LAUNCHED();
  });
  return dz;
}

DinoSaved dino_loss_forward(const Tensor& student, const Tensor& teacher, const Tensor& center,
                            int64_t student_crops, double student_temp, double teacher_temp) {
  const DinoShape sh = dino_shape(student, teacher, center, student_crops);
  dino_devices(student, teacher, center, "dino_loss");
  use_device(student);
  const TensorOptions f64{DType::f64, student.device()};
  DinoSaved out{empty({}, {student.dtype(), student.device()}), empty({sh.s * sh.b}, f64), empty({sh.t * sh.b}, f64)};
  const int64_t kc = dino_chunk(sh, "dino_loss");
  const dim3 grid = dino_grid(sh, kc, "dino_loss");
  const int64_t rows = (sh.s + sh.t) * sh.b;
  if (rows > INT32_MAX) fail("dino_loss: ", rows, " rows exceed the CUDA kernel's grid");
  Tensor partial = empty({sh.s * sh.b * static_cast<int64_t>(grid.x)}, f64);
  SIAM_CUDA_DISPATCH_FLOAT(student.dtype(), "dino_loss", [&] {
    const View2<scalar_t> x = view2<scalar_t>(student), y = view2<scalar_t>(teacher);
    const Center<scalar_t> c = center_of<scalar_t>(center);
    dino_lse_kernel<scalar_t><<<static_cast<unsigned>(rows), kRowThreads, 0, stream()>>>(
        x, y, c, sh.k, sh.t * sh.b, student_temp, teacher_temp, dptr<double>(out.student_lse),
        dptr<double>(out.teacher_lse));
    SIAM_CUDA_LAUNCHED();
    dino_dot_kernel<scalar_t><<<grid, kDinoThreads, sh.t * kc * sizeof(double), stream()>>>(
        x, y, c, dptr<double>(out.teacher_lse), sh, kc, student_temp, teacher_temp, dptr<double>(partial));
    SIAM_CUDA_LAUNCHED();
    dino_loss_kernel<scalar_t><<<1, kRowThreads, 0, stream()>>>(dptr<double>(out.student_lse), dptr<double>(partial),
                                                                grid.x, sh, dptr<scalar_t>(out.loss));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

Tensor dino_loss_backward(const Tensor& grad, const Tensor& student, const Tensor& teacher, const Tensor& center,
                          const DinoSaved& saved, int64_t student_crops, double student_temp, double teacher_temp) {
  const DinoShape sh = dino_shape(student, teacher, center, student_crops);
  dino_devices(student, teacher, center, "dino_loss backward");
  use_device(student);
  require_saved_lse(saved.student_lse, sh.s * sh.b, student, "dino_loss backward", "student_lse");
  require_saved_lse(saved.teacher_lse, sh.t * sh.b, student, "dino_loss backward", "teacher_lse");
  const DeviceScalar g = device_scalar(grad, student, "dino_loss backward");
  Tensor dx = empty(student.shape(), {student.dtype(), student.device()});
  const int64_t kc = dino_chunk(sh, "dino_loss backward");
  const dim3 grid = dino_grid(sh, kc, "dino_loss backward");
  SIAM_CUDA_DISPATCH_FLOAT(student.dtype(), "dino_loss backward", [&] {
    dino_backward_kernel<scalar_t><<<grid, kDinoThreads, sh.t * kc * sizeof(double), stream()>>>(
        view2<scalar_t>(student), view2<scalar_t>(teacher), center_of<scalar_t>(center),
        dptr<double>(saved.student_lse), dptr<double>(saved.teacher_lse), sh, kc, student_temp, teacher_temp, g,
        dptr<scalar_t>(dx));
    SIAM_CUDA_LAUNCHED();
  });
  return dx;
}

}  // namespace siam::gpu

// ================================================================ InfoNCE, BYOL / SimSiam, VICReg, Barlow
// Twins of the CPU kernels' second half, step for step: the inputs are copied once to
// contiguous f64 device buffers (copy_to), every sum runs in double, and each output is rounded
// to the input dtype once. The GEMM-shaped parts (InfoNCE's queue logits and their gradients,
// the (D, D) covariance / cross-correlation matrices and their products with the embeddings)
// go to kernels::gemm in f64 (cuBLASLt; run-to-run reproducible on one GPU with one
// configuration, which CudaSslLoss.NewLossesDeterministic checks). The rest are
// hand-written kernels of three shapes, none with atomics:
//   row kernels     one block per row, fixed-order block_sum (norms, dots, log-sum-exps, the
//                   off-diagonal sums of the (D, D) matrices' rows);
//   column kernels  one thread per column looping over the N rows in order (batch means and
//                   variances, centring, the batch-norm and centring backward passes);
//   final kernels   one block folding the per-row partials in a fixed order into the () outputs.
// The loss's incoming gradient is read on the device (DeviceScalar), never on the host, so a
// training step stays capturable into a CUDA graph.
//   InfoNCE    forward:  normalise q, k (rows) -> pos = qn.kn/T (rows) -> neg = qn queue^T / T
//                        (GEMM) -> lse and lse - pos per row -> mean (final)
//              backward: the same parts -> G = g/N (softmax - onehot) in place of neg (rows)
//                        -> dqn = G queue / T (GEMM) + g0 kn / T, through the norm (rows);
//                        dk through the norm (rows); dqueue = G^T qn / T (GEMM)
//   Cosine     forward:  cos per (row, direction) (rows, grid (N, 2)) -> loss (final)
//              backward: dp per (row, direction) (rows)
//   VICReg     forward:  (x - y)^2 per row -> centre + column sums of squares (columns) ->
//                        C = xc^T xc / (N - 1) (GEMM) -> off-diagonal row sums (rows) -> terms (final)
//              backward: per branch: centre -> C (GEMM), diagonal zeroed and scaled by g ->
//                        xc C_off (GEMM) -> variance hinge, centring and invariance (columns)
//   Barlow     forward:  standardise (columns) -> C = zh1^T zh2 / N (GEMM) -> per-row (C_ii - 1)^2
//                        and off-diagonal sums (rows) -> terms (final)
//              backward: the same C -> H = dloss/dC in place -> zh2 H^T / N, zh1 H / N (GEMMs)
//                        -> batch norm's backward (columns)
#include "kernels/gemm.h"

namespace siam::gpu {

using kernels::BarlowTerms;
using kernels::CosineMode;
using kernels::InfoNceGrads;
using kernels::InfoNceSaved;
using kernels::VicregTerms;
using kernels::VicregWeights;

namespace {

constexpr int kColThreads = 256;
constexpr double kVicregEps = 1e-4;
constexpr double kBarlowEps = 1e-5;

TensorOptions f64_on(const Tensor& t) { return {DType::f64, t.device()}; }
Tensor f64_copy(const Tensor& t) { return copy_to(t, t.device(), DType::f64); }

unsigned rows_grid(int64_t n, const char* op) {
  if (n > INT32_MAX) fail(op, ": ", n, " rows exceed the CUDA kernel's grid");
  return static_cast<unsigned>(n);
}
unsigned cols_grid(int64_t d) { return static_cast<unsigned>((d + kColThreads - 1) / kColThreads); }

// a and b: 2-D, same shape, dtype and CUDA device; a floating dtype the kernels dispatch on.
void require_pair_cuda(const Tensor& a, const Tensor& b, const char* op, const char* na, const char* nb) {
  if (a.dim() != 2 || a.shape() != b.shape())
    fail(op, ": ", nb, " must have ", na, "'s shape ", shape_str(a.shape()), ", got ", shape_str(b.shape()));
  if (a.dtype() != b.dtype())
    fail(op, ": ", nb, " is ", dtype_name(b.dtype()), " but ", na, " is ", dtype_name(a.dtype()));
  require_cuda(b, a, op, nb);
  if (a.dtype() != DType::f32 && a.dtype() != DType::f64 && a.dtype() != DType::bf16)
    fail(op, ": expected f32, f64 or bf16 inputs, got ", dtype_name(a.dtype()));
  if (a.size(0) < 1 || a.size(1) < 1) fail(op, ": needs non-empty (N, D) inputs, got ", shape_str(a.shape()));
}

// Block per row, in place: x_i /= max(||x_i||, eps); inv[i] = 1 / max(||x_i||, eps), sq[i] = ||x_i||^2.
__global__ void __launch_bounds__(kRowThreads) normalize_rows_kernel(double* x, int64_t d, double eps, double* inv,
                                                                   double* sq) {
  double* r = x + static_cast<int64_t>(blockIdx.x) * d;
  double s = 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) s += r[c] * r[c];
  s = block_sum(s);
  const double iv = 1.0 / fmax(sqrt(s), eps);
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) r[c] *= iv;
  if (threadIdx.x == 0) {
    inv[blockIdx.x] = iv;
    sq[blockIdx.x] = s;
  }
}

// Block per row: out[i] = scale a_i . b_i.
__global__ void __launch_bounds__(kRowThreads) row_dot_kernel(const double* a, const double* b, int64_t d,
                                                            double scale, double* out) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * d;
  double s = 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) s += a[o + c] * b[o + c];
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s * scale;
}

// ---------------------------------------------------------------- InfoNCE

// Block per row i: lse[i] = log(exp(pos_i) + sum_j exp(neg_ij)), row[i] = lse[i] - pos_i.
__global__ void __launch_bounds__(kRowThreads) infonce_lse_kernel(const double* pos, const double* neg, int64_t kq,
                                                                double* lse, double* row) {
  const int64_t i = blockIdx.x;
  const double* r = neg + i * kq;
  double mx = pos[i];
  for (int64_t j = threadIdx.x; j < kq; j += blockDim.x) mx = fmax(mx, r[j]);
  mx = block_max(mx);
  double e = 0;
  for (int64_t j = threadIdx.x; j < kq; j += blockDim.x) e += exp(r[j] - mx);
  e = block_sum(e) + exp(pos[i] - mx);
  if (threadIdx.x == 0) {
    const double l = mx + log(e);
    lse[i] = l;
    row[i] = l - pos[i];
  }
}

// Block per row i, with s = grad / N: g0[i] = s (exp(pos_i - lse_i) - 1), and in place of the
// negative logits G_ij = s exp(neg_ij - lse_i).
__global__ void __launch_bounds__(kRowThreads) infonce_grad_kernel(const double* pos, double* neg, int64_t kq,
                                                                 const double* lse, DeviceScalar grad, int64_t n,
                                                                 double* g0) {
  const int64_t i = blockIdx.x;
  const double s = grad.load() / static_cast<double>(n), l = lse[i];
  double* r = neg + i * kq;
  for (int64_t j = threadIdx.x; j < kq; j += blockDim.x) r[j] = s * exp(r[j] - l);
  if (threadIdx.x == 0) g0[i] = s * (exp(pos[i] - l) - 1.0);
}

// Block per row i through normalize(): dxn = (base_i if given) + coef_i src_i scale, then
// dx = (dxn - xn (xn . dxn)) inv_i, or dxn / eps where the norm was clamped.
template <class T>
__global__ void __launch_bounds__(kRowThreads) normalize_backward_kernel(const double* xn, const double* base,
                                                                       const double* coef, const double* src,
                                                                       double scale, const double* inv,
                                                                       const double* sq, int64_t d, double eps,
                                                                       T* out) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * d;
  const double cf = coef[blockIdx.x] * scale;
  auto dxn = [&](int64_t c) { return (base ? base[o + c] : 0.0) + cf * src[o + c]; };
  if (sq[blockIdx.x] >= eps * eps) {
    double proj = 0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) proj += xn[o + c] * dxn(c);
    proj = block_sum(proj);
    const double iv = inv[blockIdx.x];
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) out[o + c] = round_to<T>((dxn(c) - xn[o + c] * proj) * iv);
  } else {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) out[o + c] = round_to<T>(dxn(c) / eps);
  }
}

struct InfoNceParts {
  Tensor qn, kn, queue, neg, qinv, qsq, kinv, ksq, pos;
};

InfoNceParts infonce_parts(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature) {
  const int64_t n = q.size(0), d = q.size(1), kq = queue.size(0);
  const TensorOptions f64 = f64_on(q);
  InfoNceParts p{f64_copy(q),       f64_copy(k),       f64_copy(queue),   empty({n, kq}, f64), empty({n}, f64),
                 empty({n}, f64),   empty({n}, f64),   empty({n}, f64),   empty({n}, f64)};
  const unsigned rows = rows_grid(n, "info_nce");
  normalize_rows_kernel<<<rows, kRowThreads, 0, stream()>>>(dptr<double>(p.qn), d, kNormEps, dptr<double>(p.qinv),
                                                            dptr<double>(p.qsq));
  SIAM_CUDA_LAUNCHED();
  normalize_rows_kernel<<<rows, kRowThreads, 0, stream()>>>(dptr<double>(p.kn), d, kNormEps, dptr<double>(p.kinv),
                                                            dptr<double>(p.ksq));
  SIAM_CUDA_LAUNCHED();
  row_dot_kernel<<<rows, kRowThreads, 0, stream()>>>(dptr<double>(p.qn), dptr<double>(p.kn), d, 1.0 / temperature,
                                                     dptr<double>(p.pos));
  SIAM_CUDA_LAUNCHED();
  if (kq > 0) kernels::gemm(false, true, 1.0 / temperature, p.qn, p.queue, 0.0, p.neg);
  return p;
}

void infonce_check(const Tensor& q, const Tensor& k, const Tensor& queue, const char* op) {
  require_pair_cuda(q, k, op, "q", "k");
  require_cuda(queue, q, op, "queue");
  if (queue.dim() != 2 || queue.size(1) != q.size(1) || queue.dtype() != q.dtype())
    fail(op, ": queue must be (K, ", q.size(1), ") ", dtype_name(q.dtype()), ", got ", shape_str(queue.shape()), " ",
         dtype_name(queue.dtype()));
}

// ---------------------------------------------------------------- BYOL / SimSiam

// Block per (row b, direction): the direction's (p, z) = (p1, z2) or (p2, z1). cos = p.z /
// (max(||p||, eps) max(||z||, eps)). Without `dp` it stores cos[dir N + b]; with it, it writes
// the row of dp_dir = dcos (zn - pn cos) / max(||p||, eps), or dcos zn / eps where a clamped
// norm blocks the gradient (`blocked`, normalize()'s behaviour).
template <class T>
__global__ void __launch_bounds__(kRowThreads) cosine_rows_kernel(View2<T> p1, View2<T> p2, View2<T> z1,
                                                                View2<T> z2, int64_t d, double eps, bool blocked,
                                                                double* cos_out, DeviceScalar grad, double coef,
                                                                T* dp1, T* dp2) {
  const int64_t b = blockIdx.x, n = gridDim.x;
  const int dir = blockIdx.y;
  const View2<T>& p = dir == 0 ? p1 : p2;
  const View2<T>& z = dir == 0 ? z2 : z1;
  double sp = 0, sz = 0, dot = 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const double pv = p(b, c), zv = z(b, c);
    sp += pv * pv;
    sz += zv * zv;
    dot += pv * zv;
  }
  sp = block_sum(sp);
  sz = block_sum(sz);
  dot = block_sum(dot);
  const double ip = 1.0 / fmax(sqrt(sp), eps), iz = 1.0 / fmax(sqrt(sz), eps);
  const double cos = dot * ip * iz;
  if (cos_out) {
    if (threadIdx.x == 0) cos_out[dir * n + b] = cos;
    return;
  }
  const double dcos = grad.load() * coef / static_cast<double>(n);
  T* o = (dir == 0 ? dp1 : dp2) + b * d;
  if (blocked && sp < eps * eps) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) o[c] = round_to<T>(dcos * z(b, c) * iz / eps);
  } else {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
      o[c] = round_to<T>(dcos * (z(b, c) * iz - p(b, c) * ip * cos) * ip);
  }
}

// One block: the loss from the 2 N cosines.
template <class T>
__global__ void __launch_bounds__(kRowThreads) cosine_loss_kernel(const double* cos, int64_t n, bool byol, T* out) {
  double s[2];
  for (int dir = 0; dir < 2; ++dir) {
    double a = 0;
    for (int64_t b = threadIdx.x; b < n; b += blockDim.x) a += byol ? 2.0 - 2.0 * cos[dir * n + b] : cos[dir * n + b];
    s[dir] = block_sum(a) / static_cast<double>(n);
  }
  if (threadIdx.x == 0) out[0] = round_to<T>(byol ? s[0] + s[1] : -0.5 * (s[0] + s[1]));
}

void cosine_check(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, const char* op) {
  require_pair_cuda(p1, p2, op, "p1", "p2");
  require_pair_cuda(p1, z1, op, "p1", "z1");
  require_pair_cuda(p1, z2, op, "p1", "z2");
  if (p1.size(0) > INT32_MAX) fail(op, ": ", p1.size(0), " rows exceed the CUDA kernel's grid");
}

// ---------------------------------------------------------------- VICReg / Barlow shared kernels

// Block per row: out[b] = sum_c (x_bc - y_bc)^2.
__global__ void __launch_bounds__(kRowThreads) sqdiff_rows_kernel(const double* x, const double* y, int64_t d,
                                                                double* out) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * d;
  double s = 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const double e = x[o + c] - y[o + c];
    s += e * e;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// Thread per column, in place: x -= mean_b x; colsq = sum_b xc^2. With `standardize`, then
// x *= rstd = 1 / sqrt(colsq / N + kBarlowEps), stored in colsq's place.
__global__ void __launch_bounds__(kColThreads) center_columns_kernel(double* x, int64_t n, int64_t d, bool standardize,
                                                                   double* colsq) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  double m = 0;
  for (int64_t b = 0; b < n; ++b) m += x[b * d + c];
  m /= static_cast<double>(n);
  double s = 0;
  for (int64_t b = 0; b < n; ++b) {
    const double v = x[b * d + c] - m;
    x[b * d + c] = v;
    s += v * v;
  }
  if (!standardize) {
    colsq[c] = s;
    return;
  }
  const double r = 1.0 / sqrt(s / static_cast<double>(n) + kBarlowEps);
  for (int64_t b = 0; b < n; ++b) x[b * d + c] *= r;
  colsq[c] = r;
}

// Block per row i of c (D, D): off[i] = sum_{j != i} c_ij^2, diag[i] = (c_ii - 1)^2 when given.
__global__ void __launch_bounds__(kRowThreads) offdiag_rows_kernel(const double* c, int64_t d, double* off,
                                                                 double* diag) {
  const int64_t i = blockIdx.x;
  const double* r = c + i * d;
  double s = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    if (j != i) s += r[j] * r[j];
  s = block_sum(s);
  if (threadIdx.x == 0) {
    off[i] = s;
    if (diag) diag[i] = (r[i] - 1.0) * (r[i] - 1.0);
  }
}

// Grid-stride over c (D, D) in place: VICReg (barlow = false): 0 on the diagonal, g c_ij off it;
// Barlow: H = 2 g (w_on (c_ii - 1) on the diagonal, w_off c_ij off it).
__global__ void __launch_bounds__(kBlock) dloss_dc_kernel(double* c, int64_t d, DeviceScalar grad, bool barlow,
                                                         double w_on, double w_off) {
  const double g = grad.load();
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < d * d;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool on = e / d == e % d;
    if (barlow)
      c[e] = on ? 2.0 * g * w_on * (c[e] - 1.0) : 2.0 * g * w_off * c[e];
    else
      c[e] = on ? 0.0 : g * c[e];
  }
}

// One block: VICReg's four () outputs from the per-row / per-column partials.
template <class T>
__global__ void __launch_bounds__(kRowThreads) vicreg_final_kernel(const double* sqdiff, int64_t n,
                                                                 const double* colsq_x, const double* colsq_y,
                                                                 const double* off_x, const double* off_y, int64_t d,
                                                                 VicregWeights w, T* loss, T* inv, T* var, T* cov) {
  double a = 0;
  for (int64_t b = threadIdx.x; b < n; b += blockDim.x) a += sqdiff[b];
  const double invariance = block_sum(a) / static_cast<double>(n * d);
  double h[2];
  const double* colsq[2] = {colsq_x, colsq_y};
  for (int s = 0; s < 2; ++s) {
    double t = 0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x)
      t += fmax(0.0, 1.0 - sqrt(colsq[s][c] / static_cast<double>(n - 1) + kVicregEps));
    h[s] = block_sum(t) / static_cast<double>(d);
  }
  double o[2];
  const double* off[2] = {off_x, off_y};
  for (int s = 0; s < 2; ++s) {
    double t = 0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) t += off[s][c];
    o[s] = block_sum(t) / static_cast<double>(d);
  }
  if (threadIdx.x == 0) {
    const double variance = 0.5 * h[0] + 0.5 * h[1], covariance = o[0] + o[1];
    loss[0] = round_to<T>(w.invariance * invariance + w.variance * variance + w.covariance * covariance);
    inv[0] = round_to<T>(invariance);
    var[0] = round_to<T>(variance);
    cov[0] = round_to<T>(covariance);
  }
}

// Thread per column of one VICReg branch: a = dxc (the covariance part, g included) + the
// variance hinge's -g w_var xc / (2 D (N - 1) std) where 1 - std > 0; then the centring's
// backward a - mean_b a and the invariance term's sign g w_inv 2 (x - y) / (N D).
template <class T>
__global__ void __launch_bounds__(kColThreads) vicreg_grad_kernel(const double* dxc, const double* xc,
                                                                const double* colsq, const double* x,
                                                                const double* y, int64_t n, int64_t d,
                                                                DeviceScalar grad, VicregWeights w, double sign,
                                                                T* out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  const double g = grad.load(), nm1 = static_cast<double>(n - 1);
  const double sd = sqrt(colsq[c] / nm1 + kVicregEps);
  const double coef = 1.0 - sd > 0 ? -g * w.variance / (2.0 * static_cast<double>(d) * nm1 * sd) : 0.0;
  auto a = [&](int64_t b) { return (dxc ? dxc[b * d + c] : 0.0) + coef * xc[b * d + c]; };
  double m = 0;
  for (int64_t b = 0; b < n; ++b) m += a(b);
  m /= static_cast<double>(n);
  const double ic = sign * 2.0 * g * w.invariance / static_cast<double>(n * d);
  for (int64_t b = 0; b < n; ++b) out[b * d + c] = round_to<T>(a(b) - m + ic * (x[b * d + c] - y[b * d + c]));
}

// One block: Barlow's three () outputs from the per-row partials.
template <class T>
__global__ void __launch_bounds__(kRowThreads) barlow_final_kernel(const double* on_rows, const double* off_rows,
                                                                 int64_t d, double lambda, T* loss, T* on, T* off) {
  double a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    a += on_rows[i];
    b += off_rows[i];
  }
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) {
    loss[0] = round_to<T>(a + lambda * b);
    on[0] = round_to<T>(a);
    off[0] = round_to<T>(b);
  }
}

// Thread per column: batch norm's backward dz = rstd (dzh - mean_b dzh - zh mean_b (dzh zh)).
template <class T>
__global__ void __launch_bounds__(kColThreads) bn_backward_kernel(const double* dzh, const double* zh,
                                                                const double* rstd, int64_t n, int64_t d, T* out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  double m1 = 0, m2 = 0;
  for (int64_t b = 0; b < n; ++b) {
    m1 += dzh[b * d + c];
    m2 += dzh[b * d + c] * zh[b * d + c];
  }
  const double nd = static_cast<double>(n);
  m1 /= nd;
  m2 /= nd;
  for (int64_t b = 0; b < n; ++b) out[b * d + c] = round_to<T>(rstd[c] * (dzh[b * d + c] - m1 - zh[b * d + c] * m2));
}

void pair_check(const Tensor& a, const Tensor& b, const char* op, const char* na, const char* nb) {
  require_pair_cuda(a, b, op, na, nb);
  if (a.size(0) < 2) fail(op, ": needs a batch of at least 2, got ", a.size(0));
  if (a.size(0) > INT32_MAX || a.size(1) > INT32_MAX) fail(op, ": ", shape_str(a.shape()), " exceeds the CUDA kernels' grid");
}

// Centres (or standardises) x (N, D) f64 in place; returns the column sums of squares (or rstd).
Tensor center_columns(Tensor& x, bool standardize) {
  const int64_t n = x.size(0), d = x.size(1);
  Tensor colsq = empty({d}, f64_on(x));
  center_columns_kernel<<<cols_grid(d), kColThreads, 0, stream()>>>(dptr<double>(x), n, d, standardize,
                                                                    dptr<double>(colsq));
  SIAM_CUDA_LAUNCHED();
  return colsq;
}

// Per-row off-diagonal sums of squares of c (D, D) (and (c_ii - 1)^2 into diag when given).
Tensor offdiag_rows(const Tensor& c, const Tensor& diag) {
  const int64_t d = c.size(0);
  Tensor off = empty({d}, f64_on(c));
  offdiag_rows_kernel<<<static_cast<unsigned>(d), kRowThreads, 0, stream()>>>(
      dptr<double>(c), d, dptr<double>(off), diag.defined() ? dptr<double>(diag) : nullptr);
  SIAM_CUDA_LAUNCHED();
  return off;
}

void dloss_dc(Tensor& c, const DeviceScalar& g, bool barlow, double w_on, double w_off) {
  const int64_t d = c.size(0);
  dloss_dc_kernel<<<grid_for(d * d), kBlock, 0, stream()>>>(dptr<double>(c), d, g, barlow, w_on, w_off);
  SIAM_CUDA_LAUNCHED();
}

}  // namespace

// ---------------------------------------------------------------- entry points: InfoNCE

InfoNceSaved info_nce_forward(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature) {
  infonce_check(q, k, queue, "info_nce");
  use_device(q);
  const int64_t n = q.size(0), kq = queue.size(0);
  InfoNceParts p = infonce_parts(q, k, queue, temperature);
  InfoNceSaved out{empty({}, {q.dtype(), q.device()}), empty({n}, f64_on(q))};
  Tensor row = empty({n}, f64_on(q));
  infonce_lse_kernel<<<rows_grid(n, "info_nce"), kRowThreads, 0, stream()>>>(
      dptr<double>(p.pos), dptr<double>(p.neg), kq, dptr<double>(out.lse), dptr<double>(row));
  SIAM_CUDA_LAUNCHED();
  SIAM_CUDA_DISPATCH_FLOAT(q.dtype(), "info_nce", [&] {
    mean_kernel<scalar_t><<<1, kRowThreads, 0, stream()>>>(dptr<double>(row), n, static_cast<double>(n),
                                                           dptr<scalar_t>(out.loss));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

InfoNceGrads info_nce_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& queue,
                               const InfoNceSaved& saved, double temperature, std::array<bool, 3> need) {
  infonce_check(q, k, queue, "info_nce backward");
  use_device(q);
  const int64_t n = q.size(0), d = q.size(1), kq = queue.size(0);
  require_saved_lse(saved.lse, n, q, "info_nce backward", "lse");
  const DeviceScalar g = device_scalar(grad, q, "info_nce backward");
  InfoNceParts p = infonce_parts(q, k, queue, temperature);
  const unsigned rows = rows_grid(n, "info_nce backward");
  Tensor g0 = empty({n}, f64_on(q));
  infonce_grad_kernel<<<rows, kRowThreads, 0, stream()>>>(dptr<double>(p.pos), dptr<double>(p.neg), kq,
                                                          dptr<double>(saved.lse), g, n, dptr<double>(g0));
  SIAM_CUDA_LAUNCHED();
  InfoNceGrads out;
  if (need[0]) {
    Tensor dqn;
    if (kq > 0) {
      dqn = empty({n, d}, f64_on(q));
      kernels::gemm(false, false, 1.0 / temperature, p.neg, p.queue, 0.0, dqn);
    }
    out.dq = empty(q.shape(), {q.dtype(), q.device()});
    SIAM_CUDA_DISPATCH_FLOAT(q.dtype(), "info_nce backward", [&] {
      normalize_backward_kernel<scalar_t><<<rows, kRowThreads, 0, stream()>>>(
          dptr<double>(p.qn), dqn.defined() ? dptr<double>(dqn) : nullptr, dptr<double>(g0), dptr<double>(p.kn),
          1.0 / temperature, dptr<double>(p.qinv), dptr<double>(p.qsq), d, kNormEps, dptr<scalar_t>(out.dq));
      SIAM_CUDA_LAUNCHED();
    });
  }
  if (need[1]) {
    out.dk = empty(k.shape(), {k.dtype(), k.device()});
    SIAM_CUDA_DISPATCH_FLOAT(k.dtype(), "info_nce backward", [&] {
      normalize_backward_kernel<scalar_t><<<rows, kRowThreads, 0, stream()>>>(
          dptr<double>(p.kn), nullptr, dptr<double>(g0), dptr<double>(p.qn), 1.0 / temperature,
          dptr<double>(p.kinv), dptr<double>(p.ksq), d, kNormEps, dptr<scalar_t>(out.dk));
      SIAM_CUDA_LAUNCHED();
    });
  }
  if (need[2]) {
    Tensor du = zeros({kq, d}, f64_on(q));
    if (kq > 0) kernels::gemm(true, false, 1.0 / temperature, p.neg, p.qn, 0.0, du);
    out.dqueue = copy_to(du, queue.device(), queue.dtype());
  }
  return out;
}

// ---------------------------------------------------------------- entry points: BYOL / SimSiam

Tensor cosine_regression_forward(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2,
                                 CosineMode mode) {
  cosine_check(p1, p2, z1, z2, "cosine_regression");
  use_device(p1);
  const int64_t n = p1.size(0), d = p1.size(1);
  const bool byol = mode == CosineMode::byol;
  Tensor cos = empty({2 * n}, f64_on(p1));
  Tensor loss = empty({}, {p1.dtype(), p1.device()});
  SIAM_CUDA_DISPATCH_FLOAT(p1.dtype(), "cosine_regression", [&] {
    cosine_rows_kernel<scalar_t><<<dim3(static_cast<unsigned>(n), 2), kRowThreads, 0, stream()>>>(
        view2<scalar_t>(p1), view2<scalar_t>(p2), view2<scalar_t>(z1), view2<scalar_t>(z2), d,
        byol ? 1e-12 : 1e-8, byol, dptr<double>(cos), DeviceScalar{}, 0.0, nullptr, nullptr);
    SIAM_CUDA_LAUNCHED();
    cosine_loss_kernel<scalar_t><<<1, kRowThreads, 0, stream()>>>(dptr<double>(cos), n, byol,
                                                                  dptr<scalar_t>(loss));
    SIAM_CUDA_LAUNCHED();
  });
  return loss;
}

std::array<Tensor, 2> cosine_regression_backward(const Tensor& grad, const Tensor& p1, const Tensor& p2,
                                                 const Tensor& z1, const Tensor& z2, CosineMode mode) {
  cosine_check(p1, p2, z1, z2, "cosine_regression backward");
  use_device(p1);
  const int64_t n = p1.size(0), d = p1.size(1);
  const bool byol = mode == CosineMode::byol;
  const DeviceScalar g = device_scalar(grad, p1, "cosine_regression backward");
  std::array<Tensor, 2> out{empty({n, d}, {p1.dtype(), p1.device()}), empty({n, d}, {p1.dtype(), p1.device()})};
  SIAM_CUDA_DISPATCH_FLOAT(p1.dtype(), "cosine_regression backward", [&] {
    cosine_rows_kernel<scalar_t><<<dim3(static_cast<unsigned>(n), 2), kRowThreads, 0, stream()>>>(
        view2<scalar_t>(p1), view2<scalar_t>(p2), view2<scalar_t>(z1), view2<scalar_t>(z2), d,
        byol ? 1e-12 : 1e-8, byol, nullptr, g, byol ? -2.0 : -0.5, dptr<scalar_t>(out[0]), dptr<scalar_t>(out[1]));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

// ---------------------------------------------------------------- entry points: VICReg

VicregTerms vicreg_forward(const Tensor& x, const Tensor& y, VicregWeights w) {
  pair_check(x, y, "vicreg_loss", "x", "y");
  use_device(x);
  const int64_t n = x.size(0), d = x.size(1);
  const TensorOptions f64 = f64_on(x), o{x.dtype(), x.device()};
  Tensor xd = f64_copy(x), yd = f64_copy(y), sqdiff = empty({n}, f64);
  sqdiff_rows_kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream()>>>(dptr<double>(xd), dptr<double>(yd), d,
                                                                             dptr<double>(sqdiff));
  SIAM_CUDA_LAUNCHED();
  Tensor colsq[2], off[2];
  Tensor* branch[2] = {&xd, &yd};
  for (int s = 0; s < 2; ++s) {
    colsq[s] = center_columns(*branch[s], false);
    Tensor c = empty({d, d}, f64);
    kernels::gemm(true, false, 1.0 / static_cast<double>(n - 1), *branch[s], *branch[s], 0.0, c);
    off[s] = offdiag_rows(c, Tensor());
  }
  VicregTerms out{empty({}, o), empty({}, o), empty({}, o), empty({}, o)};
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "vicreg_loss", [&] {
    vicreg_final_kernel<scalar_t><<<1, kRowThreads, 0, stream()>>>(
        dptr<double>(sqdiff), n, dptr<double>(colsq[0]), dptr<double>(colsq[1]), dptr<double>(off[0]),
        dptr<double>(off[1]), d, w, dptr<scalar_t>(out.loss), dptr<scalar_t>(out.invariance),
        dptr<scalar_t>(out.variance), dptr<scalar_t>(out.covariance));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

std::array<Tensor, 2> vicreg_backward(const Tensor& grad, const Tensor& x, const Tensor& y, VicregWeights w) {
  pair_check(x, y, "vicreg_loss backward", "x", "y");
  use_device(x);
  const int64_t n = x.size(0), d = x.size(1);
  const TensorOptions f64 = f64_on(x);
  const DeviceScalar g = device_scalar(grad, x, "vicreg_loss backward");
  Tensor xd = f64_copy(x), yd = f64_copy(y);
  std::array<Tensor, 2> out;
  for (int s = 0; s < 2; ++s) {
    Tensor xc = f64_copy(s == 0 ? x : y);
    Tensor colsq = center_columns(xc, false);
    Tensor dxc;
    if (w.covariance != 0) {  // 4 w_cov / ((N - 1) D) xc (g C_off)
      Tensor c = empty({d, d}, f64);
      kernels::gemm(true, false, 1.0 / static_cast<double>(n - 1), xc, xc, 0.0, c);
      dloss_dc(c, g, false, 0.0, 0.0);
      dxc = empty({n, d}, f64);
      kernels::gemm(false, false, 4.0 * w.covariance / (static_cast<double>(n - 1) * static_cast<double>(d)), xc, c,
                    0.0, dxc);
    }
    out[s] = empty({n, d}, {x.dtype(), x.device()});
    SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "vicreg_loss backward", [&] {
      vicreg_grad_kernel<scalar_t><<<cols_grid(d), kColThreads, 0, stream()>>>(
          dxc.defined() ? dptr<double>(dxc) : nullptr, dptr<double>(xc), dptr<double>(colsq), dptr<double>(xd),
          dptr<double>(yd), n, d, g, w, s == 0 ? 1.0 : -1.0, dptr<scalar_t>(out[s]));
      SIAM_CUDA_LAUNCHED();
    });
  }
  return out;
}

// ---------------------------------------------------------------- entry points: Barlow Twins

BarlowTerms barlow_forward(const Tensor& z1, const Tensor& z2, double lambda) {
  pair_check(z1, z2, "barlow_twins_loss", "z1", "z2");
  use_device(z1);
  const int64_t n = z1.size(0), d = z1.size(1);
  const TensorOptions f64 = f64_on(z1), o{z1.dtype(), z1.device()};
  Tensor zh1 = f64_copy(z1), zh2 = f64_copy(z2);
  center_columns(zh1, true);
  center_columns(zh2, true);
  Tensor c = empty({d, d}, f64), on = empty({d}, f64);
  kernels::gemm(true, false, 1.0 / static_cast<double>(n), zh1, zh2, 0.0, c);
  Tensor off = offdiag_rows(c, on);
  BarlowTerms out{empty({}, o), empty({}, o), empty({}, o)};
  SIAM_CUDA_DISPATCH_FLOAT(z1.dtype(), "barlow_twins_loss", [&] {
    barlow_final_kernel<scalar_t><<<1, kRowThreads, 0, stream()>>>(dptr<double>(on), dptr<double>(off), d, lambda,
                                                                   dptr<scalar_t>(out.loss), dptr<scalar_t>(out.on_diag),
                                                                   dptr<scalar_t>(out.off_diag));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

std::array<Tensor, 2> barlow_backward(const Tensor& grad, const Tensor& z1, const Tensor& z2, double w_on,
                                      double w_off) {
  pair_check(z1, z2, "barlow_twins_loss backward", "z1", "z2");
  use_device(z1);
  const int64_t n = z1.size(0), d = z1.size(1);
  const TensorOptions f64 = f64_on(z1);
  const DeviceScalar g = device_scalar(grad, z1, "barlow_twins_loss backward");
  Tensor zh1 = f64_copy(z1), zh2 = f64_copy(z2);
  Tensor rstd1 = center_columns(zh1, true), rstd2 = center_columns(zh2, true);
  Tensor h = empty({d, d}, f64);
  kernels::gemm(true, false, 1.0 / static_cast<double>(n), zh1, zh2, 0.0, h);
  dloss_dc(h, g, true, w_on, w_off);
  Tensor dzh1 = empty({n, d}, f64), dzh2 = empty({n, d}, f64);
  kernels::gemm(false, true, 1.0 / static_cast<double>(n), zh2, h, 0.0, dzh1);   // zh2 H^T / N
  kernels::gemm(false, false, 1.0 / static_cast<double>(n), zh1, h, 0.0, dzh2);  // zh1 H / N
  std::array<Tensor, 2> out{empty({n, d}, {z1.dtype(), z1.device()}), empty({n, d}, {z1.dtype(), z1.device()})};
  SIAM_CUDA_DISPATCH_FLOAT(z1.dtype(), "barlow_twins_loss backward", [&] {
    bn_backward_kernel<scalar_t><<<cols_grid(d), kColThreads, 0, stream()>>>(
        dptr<double>(dzh1), dptr<double>(zh1), dptr<double>(rstd1), n, d, dptr<scalar_t>(out[0]));
    SIAM_CUDA_LAUNCHED();
    bn_backward_kernel<scalar_t><<<cols_grid(d), kColThreads, 0, stream()>>>(
        dptr<double>(dzh2), dptr<double>(zh2), dptr<double>(rstd2), n, d, dptr<scalar_t>(out[1]));
    SIAM_CUDA_LAUNCHED();
  });
  return out;
}

}  // namespace siam::gpu
