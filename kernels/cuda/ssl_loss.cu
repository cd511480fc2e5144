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
