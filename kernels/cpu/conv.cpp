// Convolution CPU kernels: im2col + BLAS GEMM, one GEMM per (image, group). Every function
// writes (=) a fresh output. Inside, col2im adds (+=) column patches into the input gradient and
// the weight gradient accumulates (+=) over images, per thread, before one final sum.
#include "kernels/conv.h"

#include <omp.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "kernels/cpu/blas.h"

namespace siam::kernels {
namespace {

struct Dims {
  int64_t N, C, H, W, O, G, Cg, Og, kh, kw, Ho, Wo;
  int64_t K() const { return Cg * kh * kw; }  // rows of the column matrix: (c, ki, kj)
  int64_t L() const { return Ho * Wo; }       // its columns: output positions
};

Dims dims_of(const Shape& x, const Shape& w, const ConvGeometry& p) {
  Dims d{};
  d.N = x[0], d.C = x[1], d.H = x[2], d.W = x[3];
  d.O = w[0], d.kh = w[2], d.kw = w[3];
  d.G = p.groups, d.Cg = d.C / d.G, d.Og = d.O / d.G;
  d.Ho = conv_out_size(d.H, d.kh, p.stride_h, p.pad_h, p.dil_h);
  d.Wo = conv_out_size(d.W, d.kw, p.stride_w, p.pad_w, p.dil_w);
  if (std::max({d.K(), d.L(), d.Og}) > INT_MAX) fail("conv2d: a GEMM dimension exceeds the BLAS int range");
  return d;
}

// A 1x1 kernel with unit stride and no padding reads each image as its own column matrix.
bool is_pointwise(const Dims& d, const ConvGeometry& p) {
  return d.kh == 1 && d.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// Smallest o >= 0 with o * s >= a.
int64_t first_at_least(int64_t a, int64_t s) { return a <= 0 ? 0 : (a + s - 1) / s; }

// The output columns [lo, hi) whose tap at input column ow * stride + off lies inside [0, W).
std::pair<int64_t, int64_t> valid_cols(const Dims& d, const ConvGeometry& p, int64_t off) {
  int64_t lo = std::min(first_at_least(-off, p.stride_w), d.Wo);
  int64_t hi = std::max(lo, std::min(first_at_least(d.W - off, p.stride_w), d.Wo));
  return {lo, hi};
}

// x: (Cg, H, W) -> col: (K, L), zeros where a tap falls in the padding.
template <class T>
void im2col(const T* x, T* col, const Dims& d, const ConvGeometry& p, bool parallel) {
  const int64_t K = d.K(), L = d.L();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < K; ++r) {
    int64_t c = r / (d.kh * d.kw), ki = r / d.kw % d.kh, kj = r % d.kw;
    int64_t off_h = ki * p.dil_h - p.pad_h, off_w = kj * p.dil_w - p.pad_w;
    auto [lo, hi] = valid_cols(d, p, off_w);
    for (int64_t oh = 0; oh < d.Ho; ++oh) {
      T* o = col + r * L + oh * d.Wo;
      int64_t ih = oh * p.stride_h + off_h;
      if (ih < 0 || ih >= d.H) {
        std::fill(o, o + d.Wo, T(0));
        continue;
      }
      const T* xr = x + (c * d.H + ih) * d.W;
      std::fill(o, o + lo, T(0));
      if (p.stride_w == 1) std::copy(xr + lo + off_w, xr + hi + off_w, o + lo);
      else
        for (int64_t ow = lo; ow < hi; ++ow) o[ow] = xr[ow * p.stride_w + off_w];
      std::fill(o + hi, o + d.Wo, T(0));
    }
  }
}

// col: (K, L) -> dx: (Cg, H, W) (+=). Channels own disjoint rows of col, so they run in parallel.
template <class T>
void col2im(const T* col, T* dx, const Dims& d, const ConvGeometry& p, bool parallel) {
  const int64_t L = d.L();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < d.Cg; ++c) {
    for (int64_t ki = 0; ki < d.kh; ++ki)
      for (int64_t kj = 0; kj < d.kw; ++kj) {
        const T* in = col + ((c * d.kh + ki) * d.kw + kj) * L;
        int64_t off_h = ki * p.dil_h - p.pad_h, off_w = kj * p.dil_w - p.pad_w;
        auto [lo, hi] = valid_cols(d, p, off_w);
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          int64_t ih = oh * p.stride_h + off_h;
          if (ih < 0 || ih >= d.H) continue;
          T* xr = dx + (c * d.H + ih) * d.W;
          const T* ir = in + oh * d.Wo;
          for (int64_t ow = lo; ow < hi; ++ow) xr[ow * p.stride_w + off_w] += ir[ow];
        }
      }
  }
}

// Calls body(item, scratch, inner_parallel) for items [0, n), item = image * G + group. Shared
// out (cpu::share_gemms), each thread runs whole items with its own scratch; otherwise the items
// run in order and parallelise inside (im2col loops, BLAS threads).
template <class T, class F>
void for_items(int64_t n, int64_t scratch, bool share, F body) {
  if (share) {
    cpu::BlasSingleThread one;
#pragma omp parallel
    {
      std::vector<T> buf(scratch);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) body(i, buf.data(), false);
    }
  } else {
    std::vector<T> buf(scratch);
    for (int64_t i = 0; i < n; ++i) body(i, buf.data(), true);
  }
}

// x: (N, C, H, W), w: (O, K), bias: (O) or null -> y: (N, O, L)
template <class T>
void forward(const T* x, const T* w, const T* bias, T* y, const Dims& d, const ConvGeometry& p) {
  const int64_t K = d.K(), L = d.L();
  bool pw = is_pointwise(d, p);
  bool share = cpu::share_gemms(d.N * d.G, d.Og, L, K);
  for_items<T>(d.N * d.G, pw ? 0 : K * L, share, [&](int64_t i, T* col, bool inner) {
    int64_t n = i / d.G, g = i % d.G;
    const T* xg = x + (n * d.C + g * d.Cg) * d.H * d.W;
    T* yg = y + (n * d.O + g * d.Og) * L;
    if (!pw) im2col(xg, col, d, p, inner);
    if (bias)
      for (int64_t o = 0; o < d.Og; ++o) std::fill(yg + o * L, yg + (o + 1) * L, bias[g * d.Og + o]);
    cpu::blas_gemm(false, false, d.Og, L, K, 1.0, w + g * d.Og * K, K, pw ? xg : col, L, bias ? 1.0 : 0.0, yg, L);
  });
}

// gy: (N, O, L), w: (O, K) -> dx: (N, C, H, W), zeroed by the caller unless pointwise.
template <class T>
void grad_input(const T* gy, const T* w, T* dx, const Dims& d, const ConvGeometry& p) {
  const int64_t K = d.K(), L = d.L();
  bool pw = is_pointwise(d, p);
  bool share = cpu::share_gemms(d.N * d.G, K, L, d.Og);
  for_items<T>(d.N * d.G, pw ? 0 : K * L, share, [&](int64_t i, T* col, bool inner) {
    int64_t n = i / d.G, g = i % d.G;
    T* dxg = dx + (n * d.C + g * d.Cg) * d.H * d.W;
    cpu::blas_gemm(true, false, K, L, d.Og, 1.0, w + g * d.Og * K, K, gy + (n * d.O + g * d.Og) * L, L, 0.0,
                   pw ? dxg : col, L);
    if (!pw) col2im(col, dxg, d, p, inner);
  });
}

// gy: (N, O, L), x: (N, C, H, W) -> dw: (O, K)
template <class T>
void grad_weight(const T* gy, const T* x, T* dw, const Dims& d, const ConvGeometry& p) {
  const int64_t K = d.K(), L = d.L(), size = d.O * K, items = d.N * d.G;
  bool pw = is_pointwise(d, p);
  auto accumulate = [&](int64_t i, T* col, bool inner, T* acc) {
    int64_t n = i / d.G, g = i % d.G;
    const T* xg = x + (n * d.C + g * d.Cg) * d.H * d.W;
    if (!pw) im2col(xg, col, d, p, inner);
    cpu::blas_gemm(false, true, d.Og, K, L, 1.0, gy + (n * d.O + g * d.Og) * L, L, pw ? xg : col, L, 1.0,
                   acc + g * d.Og * K, K);
  };
  if (!cpu::share_gemms(items, d.Og, K, L)) {
    std::fill(dw, dw + size, T(0));
    std::vector<T> col(pw ? 0 : K * L);
    for (int64_t i = 0; i < items; ++i) accumulate(i, col.data(), true, dw);
    return;
  }
  // Images of one group all add into the same slice of dw: each thread sums its share apart.
  int nt = omp_get_max_threads();
  std::vector<T> partial(size_t(nt) * size, T(0));
  cpu::BlasSingleThread one;
#pragma omp parallel num_threads(nt)
  {
    std::vector<T> col(pw ? 0 : K * L);
    T* acc = partial.data() + size_t(omp_get_thread_num()) * size;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < items; ++i) accumulate(i, col.data(), false, acc);
  }
#pragma omp parallel for schedule(static) if (size * nt > 32768)
  for (int64_t e = 0; e < size; ++e) {
    T s = 0;
    for (int t = 0; t < nt; ++t) s += partial[size_t(t) * size + e];
    dw[e] = s;
  }
}

// gy: (N, O, L) -> db: (O), summed in double.
template <class T>
void grad_bias(const T* gy, T* db, int64_t N, int64_t O, int64_t L) {
#pragma omp parallel for schedule(static) if (N * O * L > 32768)
  for (int64_t o = 0; o < O; ++o) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* r = gy + (n * O + o) * L;
      for (int64_t l = 0; l < L; ++l) s += r[l];
    }
    db[o] = static_cast<T>(s);
  }
}

Tensor dense(const Tensor& t) {
  if (!t.device().is_cpu()) fail("conv2d: no ", t.device().str(), " kernel yet");
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, const ConvGeometry& p) {
  Tensor x = dense(x_in), w = dense(w_in), bias = bias_in.defined() ? dense(bias_in) : Tensor();
  Dims d = dims_of(x.shape(), w.shape(), p);
  Tensor y = empty({d.N, d.O, d.Ho, d.Wo}, {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    forward(x.data<scalar_t>(), w.data<scalar_t>(), bias.defined() ? bias.data<scalar_t>() : nullptr,
            y.data<scalar_t>(), d, p);
  });
  return y;
}

Tensor conv2d_grad_input(const Tensor& gy_in, const Tensor& w_in, const Shape& x_shape, const ConvGeometry& p) {
  Tensor gy = dense(gy_in), w = dense(w_in);
  Dims d = dims_of(x_shape, w.shape(), p);
  Tensor dx = is_pointwise(d, p) ? empty(x_shape, {gy.dtype(), gy.device()}) : zeros(x_shape, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "conv2d backward",
                      [&] { grad_input(gy.data<scalar_t>(), w.data<scalar_t>(), dx.data<scalar_t>(), d, p); });
  return dx;
}

Tensor conv2d_grad_weight(const Tensor& gy_in, const Tensor& x_in, const Shape& w_shape, const ConvGeometry& p) {
  Tensor gy = dense(gy_in), x = dense(x_in);
  Dims d = dims_of(x.shape(), w_shape, p);
  Tensor dw = empty(w_shape, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "conv2d backward",
                      [&] { grad_weight(gy.data<scalar_t>(), x.data<scalar_t>(), dw.data<scalar_t>(), d, p); });
  return dw;
}

Tensor conv2d_grad_bias(const Tensor& gy_in) {
  Tensor gy = dense(gy_in);
  Tensor db = empty({gy.size(1)}, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "conv2d backward", [&] {
    grad_bias(gy.data<scalar_t>(), db.data<scalar_t>(), gy.size(0), gy.size(1), gy.size(2) * gy.size(3));
  });
  return db;
}

}  // namespace siam::kernels
