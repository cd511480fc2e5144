// Resize CPU kernels. The forward writes (=) each output as a weighted sum of input taps; the
// backward writes a fresh gradient into which every output adds (+=) its share through the same
// taps. Interpolation is separable: each output row and column has its own taps and weights.
// Work is split over the N*C planes, which never share memory.
#include "kernels/resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/resize.h"

namespace siam::kernels {
namespace {

// Taps along one dim: output o reads input index[o * n + t] with weight[o * n + t], t < n.
struct Taps {
  int n;
  std::vector<int64_t> index;
  std::vector<double> weight;
};

double cubic_near(double x, double a) { return ((a + 2) * x - (a + 3)) * x * x + 1; }   // |x| <= 1
double cubic_far(double x, double a) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; }  // 1 < |x| < 2

// PyTorch's area_pixel_compute_scale / _source_index, then its linear or cubic weights.
Taps axis_taps(Resize mode, int64_t in, int64_t out, bool align_corners) {
  double scale = align_corners ? (out > 1 ? double(in - 1) / double(out - 1) : 0.0) : double(in) / double(out);
  Taps t{mode == Resize::bilinear ? 2 : 4, {}, {}};
  t.index.resize(out * t.n);
  t.weight.resize(out * t.n);
  for (int64_t o = 0; o < out; ++o) {
    double src = align_corners ? scale * double(o) : scale * (double(o) + 0.5) - 0.5;
    int64_t* idx = &t.index[o * t.n];
    double* w = &t.weight[o * t.n];
    if (mode == Resize::bilinear) {
      // Left of the first pixel centre the value is the first pixel's.
      src = std::max(src, 0.0);
      int64_t i0 = static_cast<int64_t>(src);
      double l1 = src - double(i0);
      idx[0] = i0;
      idx[1] = i0 + (i0 < in - 1 ? 1 : 0);
      w[0] = 1.0 - l1;
      w[1] = l1;
    } else {
      constexpr double A = -0.75;
      double f = std::floor(src), x = src - f;
      for (int k = 0; k < 4; ++k) idx[k] = std::clamp<int64_t>(static_cast<int64_t>(f) - 1 + k, 0, in - 1);
      w[0] = cubic_far(x + 1.0, A);
      w[1] = cubic_near(x, A);
      w[2] = cubic_near(1.0 - x, A);
      w[3] = cubic_far(2.0 - x, A);
    }
  }
  return t;
}

Tensor dense(const Tensor& t, const char* op) {
  if (!t.device().is_cpu()) fail(op, ": no ", t.device().str(), " kernel yet");
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

constexpr int64_t kParallelWork = 32768;

// x: (P, H, W) -> y: (P, Ho, Wo)
template <class T>
void interpolate(const T* x, T* y, int64_t P, int64_t H, int64_t W, const Taps& th, const Taps& tw) {
  int64_t Ho = th.index.size() / th.n, Wo = tw.index.size() / tw.n;
#pragma omp parallel for schedule(static) if (P * Ho * Wo > kParallelWork)
  for (int64_t p = 0; p < P; ++p) {
    const T* xp = x + p * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double s = 0;
        for (int i = 0; i < th.n; ++i) {
          const T* row = xp + th.index[oh * th.n + i] * W;
          double r = 0;
          for (int j = 0; j < tw.n; ++j) r += tw.weight[ow * tw.n + j] * row[tw.index[ow * tw.n + j]];
          s += th.weight[oh * th.n + i] * r;
        }
        y[(p * Ho + oh) * Wo + ow] = static_cast<T>(s);
      }
  }
}

// gy: (P, Ho, Wo) -> dx: (P, H, W), zeroed by the caller.
template <class T>
void interpolate_backward(const T* gy, T* dx, int64_t P, int64_t H, int64_t W, const Taps& th, const Taps& tw) {
  int64_t Ho = th.index.size() / th.n, Wo = tw.index.size() / tw.n;
#pragma omp parallel for schedule(static) if (P * Ho * Wo > kParallelWork)
  for (int64_t p = 0; p < P; ++p) {
    T* dp = dx + p * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double g = gy[(p * Ho + oh) * Wo + ow];
        for (int i = 0; i < th.n; ++i) {
          T* row = dp + th.index[oh * th.n + i] * W;
          double gi = g * th.weight[oh * th.n + i];
          for (int j = 0; j < tw.n; ++j) row[tw.index[ow * tw.n + j]] += static_cast<T>(gi * tw.weight[ow * tw.n + j]);
        }
      }
  }
}

}  // namespace

Tensor resize(Resize mode, const Tensor& x_in, int64_t out_h, int64_t out_w, bool align_corners) {
  SIAM_ON_CUDA(x_in, gpu::resize(mode, x_in, out_h, out_w, align_corners));
  Tensor x = dense(x_in, "interpolate");
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Taps th = axis_taps(mode, H, out_h, align_corners), tw = axis_taps(mode, W, out_w, align_corners);
  Tensor y = empty({N, C, out_h, out_w}, {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "interpolate",
                      [&] { interpolate(x.data<scalar_t>(), y.data<scalar_t>(), N * C, H, W, th, tw); });
  return y;
}

Tensor resize_backward(Resize mode, const Tensor& gy_in, const Shape& x_shape, bool align_corners) {
  SIAM_ON_CUDA(gy_in, gpu::resize_backward(mode, gy_in, x_shape, align_corners));
  Tensor gy = dense(gy_in, "interpolate backward");
  Taps th = axis_taps(mode, x_shape[2], gy.size(2), align_corners);
  Taps tw = axis_taps(mode, x_shape[3], gy.size(3), align_corners);
  Tensor dx = zeros(x_shape, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "interpolate backward", [&] {
    interpolate_backward(gy.data<scalar_t>(), dx.data<scalar_t>(), x_shape[0] * x_shape[1], x_shape[2], x_shape[3],
                         th, tw);
  });
  return dx;
}

}  // namespace siam::kernels
