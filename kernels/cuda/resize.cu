// Resize CUDA kernels (bilinear, bicubic; align_corners either way) on NCHW tensors, inputs
// made contiguous first. Source coordinates, tap indices and weights are computed per thread
// in double with the CPU twin's formulas (PyTorch's area_pixel_compute_source_index, A = -0.75
// cubic, border-clamped taps). The forward writes (=) a thread per output. The backward
// writes (=) a thread per input element, which gathers from the outputs whose taps reach it:
// along each dim the first and last tap indices never decrease with the output index, so
// those outputs form a range, found by binary search. No atomics: the same bits run to run.
#include "kernels/cuda/nn_util.cuh"
#include "kernels/cuda/resize.h"

namespace siam::gpu {

namespace {

struct Axis {
  int64_t in, out;
  double scale;  // the CPU twin's scale, computed once on the host
};

Axis axis(int64_t in, int64_t out, bool align_corners) {
  return {in, out, align_corners ? (out > 1 ? double(in - 1) / double(out - 1) : 0.0) : double(in) / double(out)};
}

struct Taps {
  int64_t idx[4];
  double w[4];
};

__host__ __device__ inline double cubic_near(double x, double a) { return ((a + 2) * x - (a + 3)) * x * x + 1; }
__host__ __device__ inline double cubic_far(double x, double a) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; }

// Taps of output o along an axis: n = 2 (bilinear) or 4 (bicubic).
template <bool kCubic>
__host__ __device__ inline Taps taps(const Axis& ax, int64_t o, bool align_corners) {
  Taps t;
  double src = align_corners ? ax.scale * double(o) : ax.scale * (double(o) + 0.5) - 0.5;
  if constexpr (!kCubic) {
    src = fmax(src, 0.0);  // left of the first pixel centre the value is the first pixel's
    const int64_t i0 = static_cast<int64_t>(src);
    const double l1 = src - double(i0);
    t.idx[0] = i0;
    t.idx[1] = i0 + (i0 < ax.in - 1 ? 1 : 0);
    t.w[0] = 1.0 - l1;
    t.w[1] = l1;
  } else {
    constexpr double kA = -0.75;
    const double f = floor(src), x = src - f;
    for (int k = 0; k < 4; ++k) t.idx[k] = min(max(static_cast<int64_t>(f) - 1 + k, int64_t(0)), ax.in - 1);
    t.w[0] = cubic_far(x + 1.0, kA);
    t.w[1] = cubic_near(x, kA);
    t.w[2] = cubic_near(1.0 - x, kA);
    t.w[3] = cubic_far(2.0 - x, kA);
  }
  return t;
}

template <bool kCubic> constexpr int kTaps = kCubic ? 4 : 2;

// x: (P, H, W) -> y: (P, Ho, Wo)
template <class T, bool kCubic>
__global__ void resize_forward(const T* __restrict__ x, T* __restrict__ y, int64_t P, Axis ah, Axis aw, bool align) {
  using A = acc_t<T>;
  const int64_t n = P * ah.out * aw.out;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow = i % aw.out, t = i / aw.out, oh = t % ah.out, pl = t / ah.out;
    const Taps th = taps<kCubic>(ah, oh, align), tw = taps<kCubic>(aw, ow, align);
    const T* xp = x + pl * ah.in * aw.in;
    A s = 0;
#pragma unroll
    for (int a = 0; a < kTaps<kCubic>; ++a) {
      const T* row = xp + th.idx[a] * aw.in;
      A r = 0;
#pragma unroll
      for (int b = 0; b < kTaps<kCubic>; ++b) r += A(tw.w[b]) * to_acc(row[tw.idx[b]]);
      s += A(th.w[a]) * r;
    }
    y[i] = from_acc<T>(s);
  }
}

// The outputs [lo, hi) along an axis whose taps reach input i: the taps of output o span
// [idx[0], idx[n - 1]], both non-decreasing in o.
template <bool kCubic>
__host__ __device__ inline void reaching(const Axis& ax, int64_t i, bool align, int64_t& lo, int64_t& hi) {
  int64_t a = 0, b = ax.out;  // first o with last tap >= i
  while (a < b) {
    const int64_t m = (a + b) / 2;
    if (taps<kCubic>(ax, m, align).idx[kTaps<kCubic> - 1] >= i) b = m;
    else a = m + 1;
  }
  lo = a;
  b = ax.out;  // first o with first tap > i
  while (a < b) {
    const int64_t m = (a + b) / 2;
    if (taps<kCubic>(ax, m, align).idx[0] > i) b = m;
    else a = m + 1;
  }
  hi = a;
}

// Weight with which output o reads input i (clamped taps may repeat an index: summed).
template <bool kCubic>
__host__ __device__ inline double weight_of(const Axis& ax, int64_t o, int64_t i, bool align) {
  const Taps t = taps<kCubic>(ax, o, align);
  double w = 0;
  for (int k = 0; k < kTaps<kCubic>; ++k)
    if (t.idx[k] == i) w += t.w[k];
  return w;
}

// gy: (P, Ho, Wo) -> dx: (P, H, W)
template <class T, bool kCubic>
__global__ void resize_backward(const T* __restrict__ gy, T* __restrict__ dx, int64_t P, Axis ah, Axis aw, bool align) {
  using A = acc_t<T>;
  const int64_t n = P * ah.in * aw.in;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t iw = i % aw.in, t = i / aw.in, ih = t % ah.in, pl = t / ah.in;
    int64_t h0, h1, w0, w1;
    reaching<kCubic>(ah, ih, align, h0, h1);
    reaching<kCubic>(aw, iw, align, w0, w1);
    const T* gp = gy + pl * ah.out * aw.out;
    A acc = 0;
    for (int64_t oh = h0; oh < h1; ++oh) {
      const A wh = A(weight_of<kCubic>(ah, oh, ih, align));
      A r = 0;
      for (int64_t ow = w0; ow < w1; ++ow) r += A(weight_of<kCubic>(aw, ow, iw, align)) * to_acc(gp[oh * aw.out + ow]);
      acc += wh * r;
    }
    dx[i] = from_acc<T>(acc);
  }
}

void check_4d(const char* op, const Tensor& t, const char* what) {
  if (t.dim() != 4) fail(op, " (CUDA): ", what, " must be (N, C, H, W), got ", shape_str(t.shape()));
}

}  // namespace

Tensor resize(kernels::Resize mode, const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  const char* op = "interpolate";
  nn::check_args(op, x);
  check_4d(op, x, "x");
  use_device(x);
  Tensor y = empty({x.size(0), x.size(1), out_h, out_w}, {x.dtype(), x.device()});
  if (y.numel() == 0) return y;
  if (x.size(2) < 1 || x.size(3) < 1) fail(op, " (CUDA): input ", shape_str(x.shape()), " has an empty plane");
  Tensor xd = nn::dense(x);
  const Axis ah = axis(x.size(2), out_h, align_corners), aw = axis(x.size(3), out_w, align_corners);
  const int64_t P = x.size(0) * x.size(1);
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), op, [&] {
    using T = scalar_t;
    if (mode == kernels::Resize::bicubic)
      resize_forward<T, true><<<grid_for(y.numel()), kBlock, 0, stream()>>>(dptr<T>(xd), dptr<T>(y), P, ah, aw,
                                                                            align_corners);
    else
      resize_forward<T, false><<<grid_for(y.numel()), kBlock, 0, stream()>>>(dptr<T>(xd), dptr<T>(y), P, ah, aw,
                                                                             align_corners);
  });
  SIAM_CUDA_LAUNCHED();
  return y;
}

Tensor resize_backward(kernels::Resize mode, const Tensor& gy, const Shape& x_shape, bool align_corners) {
  const char* op = "interpolate backward";
  nn::check_args(op, gy);
  check_4d(op, gy, "gy");
  if (x_shape.size() != 4) fail(op, " (CUDA): x_shape must have 4 dims, got ", shape_str(x_shape));
  use_device(gy);
  Tensor dx = empty(x_shape, {gy.dtype(), gy.device()});
  if (dx.numel() == 0) return dx;
  if (gy.numel() == 0) {
    SIAM_CUDA_CHECK(cudaMemsetAsync(dx.raw_data(), 0, dx.nbytes(), stream()));
    return dx;
  }
  Tensor gd = nn::dense(gy);
  const Axis ah = axis(x_shape[2], gy.size(2), align_corners), aw = axis(x_shape[3], gy.size(3), align_corners);
  const int64_t P = x_shape[0] * x_shape[1];
  SIAM_CUDA_DISPATCH_FLOAT(gy.dtype(), op, [&] {
    using T = scalar_t;
    if (mode == kernels::Resize::bicubic)
      resize_backward<T, true><<<grid_for(dx.numel()), kBlock, 0, stream()>>>(dptr<T>(gd), dptr<T>(dx), P, ah, aw,
                                                                              align_corners);
    else
      resize_backward<T, false><<<grid_for(dx.numel()), kBlock, 0, stream()>>>(dptr<T>(gd), dptr<T>(dx), P, ah, aw,
                                                                               align_corners);
  });
  SIAM_CUDA_LAUNCHED();
  return dx;
}

}  // namespace siam::gpu
