// Normalisation CPU kernels. Every output is written (=) into a fresh tensor; the one
// exception is batch_norm_forward's running statistics, which it updates in place.
// Per-element arithmetic is done in double and rounded once, so f32 results match an f64
// reference to the last bit or two.
#include "kernels/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/norm.h"

namespace siam::kernels {

static Tensor dense(const Tensor& t) {
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

static void require_cpu(const Tensor& t, const char* op) {
  if (!t.device().is_cpu())
    fail(op, ": no ", t.device().str(), " kernel yet (CUDA kernels arrive with the CUDA backend)");
}

template <class T>
static const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// Large tensors only: below this a parallel region costs more than the loop.
constexpr int64_t kParallelMin = 32768;

NormForward batch_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                               const Tensor& running_mean, const Tensor& running_var,
                               bool training, double momentum, double eps) {
  SIAM_ON_CUDA(x, gpu::batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps));
  require_cpu(x, "batch_norm");
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);  // spatial positions per (sample, channel)
  const int64_t m = n * s;                                  // values per channel
  Tensor xc = dense(x), wc = weight.defined() ? dense(weight) : Tensor(),
         bc = bias.defined() ? dense(bias) : Tensor();
  NormForward out{empty(x.shape(), {x.dtype(), x.device()}), empty({c}, {x.dtype(), x.device()}),
                  empty({c}, {x.dtype(), x.device()})};
  SIAM_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] {
    const scalar_t* px = xc.data<scalar_t>();
    const scalar_t* pw = ptr_or_null<scalar_t>(wc);
    const scalar_t* pb = ptr_or_null<scalar_t>(bc);
    // Running statistics are updated where they live, so they may be strided.
    scalar_t* prm = running_mean.defined() ? running_mean.data<scalar_t>() : nullptr;
    scalar_t* prv = running_var.defined() ? running_var.data<scalar_t>() : nullptr;
    const int64_t srm = prm ? running_mean.stride(0) : 0, srv = prv ? running_var.stride(0) : 0;
    scalar_t* py = out.y.data<scalar_t>();
    scalar_t* pmean = out.mean.data<scalar_t>();
    scalar_t* pinv = out.invstd.data<scalar_t>();
    _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
    for (int64_t ch = 0; ch < c; ++ch) {
      double mu, var;
      if (training) {
        // Two passes: the centred sum of squares does not cancel catastrophically.
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) {
          const scalar_t* row = px + (i * c + ch) * s;
          _Pragma("omp simd reduction(+ : sum)")
          for (int64_t k = 0; k < s; ++k) sum += row[k];
        }
        mu = sum / static_cast<double>(m);
        double sq = 0;
        for (int64_t i = 0; i < n; ++i) {
          const scalar_t* row = px + (i * c + ch) * s;
          _Pragma("omp simd reduction(+ : sq)")
          for (int64_t k = 0; k < s; ++k) {
            double d = row[k] - mu;
            sq += d * d;
          }
        }
        var = sq / static_cast<double>(m);
        if (prm) prm[ch * srm] = static_cast<scalar_t>((1 - momentum) * prm[ch * srm] + momentum * mu);
        if (prv) {
          double unbiased = sq / static_cast<double>(m - 1);
          prv[ch * srv] = static_cast<scalar_t>((1 - momentum) * prv[ch * srv] + momentum * unbiased);
        }
      } else {
        mu = prm[ch * srm];
        var = prv[ch * srv];
      }
      const double inv = 1.0 / std::sqrt(var + eps);
      pmean[ch] = static_cast<scalar_t>(mu);
      pinv[ch] = static_cast<scalar_t>(inv);
      const double w = pw ? static_cast<double>(pw[ch]) : 1.0, b = pb ? static_cast<double>(pb[ch]) : 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* xr = px + (i * c + ch) * s;
        scalar_t* yr = py + (i * c + ch) * s;
        _Pragma("omp simd")
        for (int64_t k = 0; k < s; ++k) yr[k] = static_cast<scalar_t>((xr[k] - mu) * inv * w + b);
      }
    }
  });
  return out;
}

NormBackward batch_norm_backward(const Tensor& g, const Tensor& x, const Tensor& weight,
                                 const Tensor& mean, const Tensor& invstd, bool training,
                                 std::array<bool, 3> need) {
  SIAM_ON_CUDA(g, gpu::batch_norm_backward(g, x, weight, mean, invstd, training, need));
  require_cpu(g, "batch_norm backward");
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  const double m = static_cast<double>(n * s);
  Tensor gc = dense(g), xc = dense(x), wc = weight.defined() ? dense(weight) : Tensor();
  TensorOptions o{x.dtype(), x.device()};
  NormBackward r{need[0] ? empty(x.shape(), o) : Tensor(), need[1] ? empty({c}, o) : Tensor(),
                 need[2] ? empty({c}, o) : Tensor()};
  SIAM_DISPATCH_FLOAT(x.dtype(), "batch_norm backward", [&] {
    const scalar_t* pg = gc.data<scalar_t>();
    const scalar_t* px = xc.data<scalar_t>();
    const scalar_t* pw = ptr_or_null<scalar_t>(wc);
    const scalar_t* pmean = mean.data<scalar_t>();
    const scalar_t* pinv = invstd.data<scalar_t>();
    scalar_t* pdx = need[0] ? r.dx.data<scalar_t>() : nullptr;
    scalar_t* pdw = need[1] ? r.dweight.data<scalar_t>() : nullptr;
    scalar_t* pdb = need[2] ? r.dbias.data<scalar_t>() : nullptr;
    _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
    for (int64_t ch = 0; ch < c; ++ch) {
      const double mu = pmean[ch], inv = pinv[ch], w = pw ? static_cast<double>(pw[ch]) : 1.0;
      double sum_g = 0, sum_gxhat = 0;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* gr = pg + (i * c + ch) * s;
        const scalar_t* xr = px + (i * c + ch) * s;
        _Pragma("omp simd reduction(+ : sum_g, sum_gxhat)")
        for (int64_t k = 0; k < s; ++k) {
          sum_g += gr[k];
          sum_gxhat += gr[k] * ((xr[k] - mu) * inv);
        }
      }
      if (pdw) pdw[ch] = static_cast<scalar_t>(sum_gxhat);
      if (pdb) pdb[ch] = static_cast<scalar_t>(sum_g);
      if (!pdx) continue;
      // Training: mean and variance are functions of every x of the channel; their
      // derivatives remove the gradient's mean and its projection on xhat.
      const double mean_g = training ? sum_g / m : 0.0, mean_gxhat = training ? sum_gxhat / m : 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* gr = pg + (i * c + ch) * s;
        const scalar_t* xr = px + (i * c + ch) * s;
        scalar_t* dr = pdx + (i * c + ch) * s;
        _Pragma("omp simd")
        for (int64_t k = 0; k < s; ++k) {
          double xhat = (xr[k] - mu) * inv;
          dr[k] = static_cast<scalar_t>(w * inv * (gr[k] - mean_g - xhat * mean_gxhat));
        }
      }
    }
  });
  return r;
}

// The fused twin, written as its definition: batch norm, then the residual add and the ReLU
// applied in place to the fresh output.
NormForward batch_norm_act_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                   const Tensor& running_mean, const Tensor& running_var,
                                   const Tensor& residual, bool relu, bool training, double momentum,
                                   double eps) {
  SIAM_ON_CUDA(x, gpu::batch_norm_act_forward(x, weight, bias, running_mean, running_var, residual, relu,
                                              training, momentum, eps));
  require_cpu(x, "batch_norm_act");
  if (residual.defined() && residual.shape() != x.shape())
    fail("batch_norm_act: residual has shape ", shape_str(residual.shape()), ", expected x's ", shape_str(x.shape()));
  NormForward out = batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps);
  Tensor rc = residual.defined() ? dense(residual) : Tensor();
  SIAM_DISPATCH_FLOAT(x.dtype(), "batch_norm_act", [&] {
    scalar_t* py = out.y.data<scalar_t>();
    const scalar_t* pr = ptr_or_null<scalar_t>(rc);
    const int64_t n = out.y.numel();
    _Pragma("omp parallel for schedule(static) if (n > kParallelMin)")
    for (int64_t i = 0; i < n; ++i) {
      scalar_t v = pr ? static_cast<scalar_t>(py[i] + pr[i]) : py[i];
      py[i] = relu && !(v > scalar_t(0)) ? scalar_t(0) : v;
    }
  });
  return out;
}

// The ReLU's backward (g where y > 0), which is also the residual's gradient, then batch norm's.
NormActBackward batch_norm_act_backward(const Tensor& g, const Tensor& y, const Tensor& x,
                                        const Tensor& weight, const Tensor& mean, const Tensor& invstd,
                                        bool relu, bool training, std::array<bool, 4> need) {
  SIAM_ON_CUDA(g, gpu::batch_norm_act_backward(g, y, x, weight, mean, invstd, relu, training, need));
  require_cpu(g, "batch_norm_act backward");
  Tensor gz = dense(g);
  if (relu) {
    Tensor masked = empty(g.shape(), {g.dtype(), g.device()}), yc = dense(y);
    SIAM_DISPATCH_FLOAT(g.dtype(), "batch_norm_act backward", [&] {
      const scalar_t* pg = gz.data<scalar_t>();
      const scalar_t* py = yc.data<scalar_t>();
      scalar_t* pm = masked.data<scalar_t>();
      const int64_t n = masked.numel();
      _Pragma("omp parallel for schedule(static) if (n > kParallelMin)")
      for (int64_t i = 0; i < n; ++i) pm[i] = py[i] > scalar_t(0) ? pg[i] : scalar_t(0);
    });
    gz = masked;
  }
  NormBackward b = batch_norm_backward(gz, x, weight, mean, invstd, training, {need[0], need[1], need[2]});
  Tensor dres;
  if (need[3]) dres = gz.same(g) ? copy_to(g, g.device(), g.dtype()) : gz;
  return {b.dx, b.dweight, b.dbias, dres};
}

Tensor batch_norm_channel_sums(const Tensor& x, const Tensor& centre) {
  SIAM_ON_CUDA(x, gpu::batch_norm_channel_sums(x, centre));
  require_cpu(x, "batch_norm_channel_sums");
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  Tensor xc = dense(x), cc = centre.defined() ? dense(centre) : Tensor();
  Tensor out = empty({c}, {DType::f64, x.device()});
  double* po = out.data<double>();
  SIAM_DISPATCH_FLOAT(x.dtype(), "batch_norm_channel_sums", [&] {
    const scalar_t* px = xc.data<scalar_t>();
    const scalar_t* pc = ptr_or_null<scalar_t>(cc);
    _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
    for (int64_t ch = 0; ch < c; ++ch) {
      double acc = 0;
      const double mu = pc ? static_cast<double>(pc[ch]) : 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* row = px + (i * c + ch) * s;
        if (pc) {
          _Pragma("omp simd reduction(+ : acc)")
          for (int64_t k = 0; k < s; ++k) {
            const double d = row[k] - mu;
            acc += d * d;
          }
        } else {
          _Pragma("omp simd reduction(+ : acc)")
          for (int64_t k = 0; k < s; ++k) acc += row[k];
        }
      }
      po[ch] = acc;
    }
  });
  return out;
}

void batch_norm_sync_dx_(const Tensor& dx, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, const Tensor& sums, double count) {
  SIAM_ON_CUDA(dx, gpu::batch_norm_sync_dx_(dx, x, weight, mean, invstd, sums, count));
  require_cpu(dx, "batch_norm_sync_dx_");
  SIAM_CHECK(dx.is_contiguous() && dx.shape() == x.shape(), "batch_norm_sync_dx_: dx must be contiguous with x's shape");
  const int64_t n = x.size(0), c = x.size(1);
  const int64_t s = n * c == 0 ? 0 : x.numel() / (n * c);
  Tensor xc = dense(x), wc = weight.defined() ? dense(weight) : Tensor(), sc = dense(sums);
  SIAM_DISPATCH_FLOAT(x.dtype(), "batch_norm_sync_dx_", [&] {
    scalar_t* pd = dx.data<scalar_t>();
    const scalar_t* px = xc.data<scalar_t>();
    const scalar_t* pw = ptr_or_null<scalar_t>(wc);
    const scalar_t* pmean = mean.data<scalar_t>();
    const scalar_t* pinv = invstd.data<scalar_t>();
    const double* psum = sc.data<double>();
    _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
    for (int64_t ch = 0; ch < c; ++ch) {
      const double mu = pmean[ch], inv = pinv[ch], w = pw ? static_cast<double>(pw[ch]) : 1.0;
      const double a = w * inv * psum[ch] / count, b = w * inv * psum[c + ch] / count;
      for (int64_t i = 0; i < n; ++i) {
        const scalar_t* xr = px + (i * c + ch) * s;
        scalar_t* dr = pd + (i * c + ch) * s;
        _Pragma("omp simd")
        for (int64_t k = 0; k < s; ++k) dr[k] = static_cast<scalar_t>(dr[k] - a - (xr[k] - mu) * inv * b);
      }
    }
  });
}

NormForward layer_norm_forward(const Tensor& x, int64_t d, const Tensor& weight,
                               const Tensor& bias, double eps) {
  SIAM_ON_CUDA(x, gpu::layer_norm_forward(x, d, weight, bias, eps));
  require_cpu(x, "layer_norm");
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  Tensor xc = dense(x), wc = weight.defined() ? dense(weight) : Tensor(),
         bc = bias.defined() ? dense(bias) : Tensor();
  TensorOptions o{x.dtype(), x.device()};
  NormForward out{empty(x.shape(), o), empty({rows}, o), empty({rows}, o)};
  SIAM_DISPATCH_FLOAT(x.dtype(), "layer_norm", [&] {
    const scalar_t* px = xc.data<scalar_t>();
    const scalar_t* pw = ptr_or_null<scalar_t>(wc);
    const scalar_t* pb = ptr_or_null<scalar_t>(bc);
    scalar_t* py = out.y.data<scalar_t>();
    scalar_t* pmean = out.mean.data<scalar_t>();
    scalar_t* pinv = out.invstd.data<scalar_t>();
    _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
    for (int64_t r = 0; r < rows; ++r) {
      const scalar_t* xr = px + r * d;
      double sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += xr[j];
      const double mu = sum / static_cast<double>(d);
      double sq = 0;
      for (int64_t j = 0; j < d; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
      const double inv = 1.0 / std::sqrt(sq / static_cast<double>(d) + eps);
      pmean[r] = static_cast<scalar_t>(mu);
      pinv[r] = static_cast<scalar_t>(inv);
      scalar_t* yr = py + r * d;
      for (int64_t j = 0; j < d; ++j) {
        double v = (xr[j] - mu) * inv;
        if (pw) v *= pw[j];
        if (pb) v += pb[j];
        yr[j] = static_cast<scalar_t>(v);
      }
    }
  });
  return out;
}

NormBackward layer_norm_backward(const Tensor& g, const Tensor& x, int64_t d, const Tensor& weight,
                                 const Tensor& mean, const Tensor& invstd, std::array<bool, 3> need) {
  SIAM_ON_CUDA(g, gpu::layer_norm_backward(g, x, d, weight, mean, invstd, need));
  require_cpu(g, "layer_norm backward");
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  Tensor gc = dense(g), xc = dense(x), wc = weight.defined() ? dense(weight) : Tensor();
  TensorOptions o{x.dtype(), x.device()};
  NormBackward r{need[0] ? empty(x.shape(), o) : Tensor(), need[1] ? empty({d}, o) : Tensor(),
                 need[2] ? empty({d}, o) : Tensor()};
  SIAM_DISPATCH_FLOAT(x.dtype(), "layer_norm backward", [&] {
    const scalar_t* pg = gc.data<scalar_t>();
    const scalar_t* px = xc.data<scalar_t>();
    const scalar_t* pw = ptr_or_null<scalar_t>(wc);
    const scalar_t* pmean = mean.data<scalar_t>();
    const scalar_t* pinv = invstd.data<scalar_t>();
    if (need[0]) {
      scalar_t* pdx = r.dx.data<scalar_t>();
      _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
      for (int64_t row = 0; row < rows; ++row) {
        const scalar_t* gr = pg + row * d;
        const scalar_t* xr = px + row * d;
        const double mu = pmean[row], inv = pinv[row];
        double sum_gw = 0, sum_gwxhat = 0;
        for (int64_t j = 0; j < d; ++j) {
          double gw = pw ? gr[j] * static_cast<double>(pw[j]) : gr[j];
          sum_gw += gw;
          sum_gwxhat += gw * ((xr[j] - mu) * inv);
        }
        const double mean_gw = sum_gw / static_cast<double>(d), mean_gwxhat = sum_gwxhat / static_cast<double>(d);
        scalar_t* dr = pdx + row * d;
        for (int64_t j = 0; j < d; ++j) {
          double gw = pw ? gr[j] * static_cast<double>(pw[j]) : gr[j];
          double xhat = (xr[j] - mu) * inv;
          dr[j] = static_cast<scalar_t>(inv * (gw - mean_gw - xhat * mean_gwxhat));
        }
      }
    }
    if (need[1] || need[2]) {
      // Sums over rows per column. Threads own disjoint column blocks, so there is no race and
      // no per-thread buffer; each block still reads rows sequentially within its columns.
      scalar_t* pdw = need[1] ? r.dweight.data<scalar_t>() : nullptr;
      scalar_t* pdb = need[2] ? r.dbias.data<scalar_t>() : nullptr;
      constexpr int64_t kBlock = 64;
      const int64_t blocks = (d + kBlock - 1) / kBlock;
      _Pragma("omp parallel for schedule(static) if (x.numel() > kParallelMin)")
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t j0 = blk * kBlock, j1 = std::min(d, j0 + kBlock);
        double acc_w[kBlock] = {}, acc_b[kBlock] = {};
        for (int64_t row = 0; row < rows; ++row) {
          const scalar_t* gr = pg + row * d;
          const scalar_t* xr = px + row * d;
          const double mu = pmean[row], inv = pinv[row];
          for (int64_t j = j0; j < j1; ++j) {
            acc_w[j - j0] += gr[j] * ((xr[j] - mu) * inv);
            acc_b[j - j0] += gr[j];
          }
        }
        for (int64_t j = j0; j < j1; ++j) {
          if (pdw) pdw[j] = static_cast<scalar_t>(acc_w[j - j0]);
          if (pdb) pdb[j] = static_cast<scalar_t>(acc_b[j - j0]);
        }
      }
    }
  });
  return r;
}

}  // namespace siam::kernels
