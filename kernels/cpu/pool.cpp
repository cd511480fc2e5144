// Pooling CPU kernels. Forward kernels write (=) fresh outputs; backward kernels write a fresh
// gradient, into which each output's share is added (+=) because windows may overlap.
// Work is split over the N*C planes, which never share memory.
#include "kernels/pool.h"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/pool.h"

namespace siam::kernels {
namespace {

// One output index's window along one dim: input [begin, end), `count` cells in the divisor.
struct Span {
  int64_t begin, end, count;
};

// Windows of a strided pool; count includes the padding a window covers (count_include_pad).
std::vector<Span> pool_spans(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad) {
  std::vector<Span> s(out);
  for (int64_t o = 0; o < out; ++o) {
    int64_t start = o * stride - pad, end = std::min(start + kernel, in + pad);
    s[o] = {std::max<int64_t>(start, 0), std::min(end, in), end - start};
  }
  return s;
}

std::vector<Span> adaptive_spans(int64_t in, int64_t out) {
  std::vector<Span> s(out);
  for (int64_t o = 0; o < out; ++o) {
    int64_t begin = o * in / out, end = ((o + 1) * in + out - 1) / out;
    s[o] = {begin, end, end - begin};
  }
  return s;
}

Tensor dense(const Tensor& t, const char* op) {
  if (!t.device().is_cpu()) fail(op, ": no ", t.device().str(), " kernel yet");
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

constexpr int64_t kParallelWork = 32768;

// x: (P, H, W) -> y: (P, Ho, Wo), each output the window sum over its divisor.
template <class T>
void window_mean(const T* x, T* y, int64_t P, int64_t H, int64_t W, const std::vector<Span>& hs,
                 const std::vector<Span>& ws) {
  int64_t Ho = hs.size(), Wo = ws.size();
#pragma omp parallel for schedule(static) if (P * H * W > kParallelWork)
  for (int64_t p = 0; p < P; ++p) {
    const T* xp = x + p * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        T s = 0;
        for (int64_t h = hs[oh].begin; h < hs[oh].end; ++h)
          for (int64_t w = ws[ow].begin; w < ws[ow].end; ++w) s += xp[h * W + w];
        y[(p * Ho + oh) * Wo + ow] = s / static_cast<T>(hs[oh].count * ws[ow].count);
      }
  }
}

// gy: (P, Ho, Wo) -> dx: (P, H, W), zeroed by the caller.
template <class T>
void window_mean_backward(const T* gy, T* dx, int64_t P, int64_t H, int64_t W, const std::vector<Span>& hs,
                          const std::vector<Span>& ws) {
  int64_t Ho = hs.size(), Wo = ws.size();
#pragma omp parallel for schedule(static) if (P * H * W > kParallelWork)
  for (int64_t p = 0; p < P; ++p) {
    T* dp = dx + p * H * W;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        T g = gy[(p * Ho + oh) * Wo + ow] / static_cast<T>(hs[oh].count * ws[ow].count);
        for (int64_t h = hs[oh].begin; h < hs[oh].end; ++h)
          for (int64_t w = ws[ow].begin; w < ws[ow].end; ++w) dp[h * W + w] += g;
      }
  }
}

Tensor mean_forward(const char* op, const Tensor& x_in, const std::vector<Span>& hs, const std::vector<Span>& ws) {
  Tensor x = dense(x_in, op);
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = empty({N, C, int64_t(hs.size()), int64_t(ws.size())}, {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), op, [&] { window_mean(x.data<scalar_t>(), y.data<scalar_t>(), N * C, H, W, hs, ws); });
  return y;
}

Tensor mean_backward(const char* op, const Tensor& gy_in, const Shape& x_shape, const std::vector<Span>& hs,
                     const std::vector<Span>& ws) {
  Tensor gy = dense(gy_in, op);
  Tensor dx = zeros(x_shape, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), op, [&] {
    window_mean_backward(gy.data<scalar_t>(), dx.data<scalar_t>(), x_shape[0] * x_shape[1], x_shape[2], x_shape[3],
                         hs, ws);
  });
  return dx;
}

}  // namespace

std::pair<Tensor, Tensor> max_pool2d(const Tensor& x_in, int64_t kernel, int64_t stride, int64_t pad) {
  SIAM_ON_CUDA(x_in, gpu::max_pool2d(x_in, kernel, stride, pad));
  Tensor x = dense(x_in, "max_pool2d");
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t Ho = pool_out_size(H, kernel, stride, pad), Wo = pool_out_size(W, kernel, stride, pad);
  auto hs = pool_spans(H, Ho, kernel, stride, pad), ws = pool_spans(W, Wo, kernel, stride, pad);
  Tensor y = empty({N, C, Ho, Wo}, {x.dtype(), x.device()});
  Tensor idx = empty({N, C, Ho, Wo}, {DType::i64, x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "max_pool2d", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    int64_t* pi = idx.data<int64_t>();
    _Pragma("omp parallel for schedule(static) if (N * C * H * W > kParallelWork)")
    for (int64_t p = 0; p < N * C; ++p) {
      const scalar_t* xp = px + p * H * W;
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          scalar_t best = -std::numeric_limits<scalar_t>::infinity();
          int64_t arg = hs[oh].begin * W + ws[ow].begin;
          for (int64_t h = hs[oh].begin; h < hs[oh].end; ++h)
            for (int64_t w = ws[ow].begin; w < ws[ow].end; ++w) {
              scalar_t v = xp[h * W + w];
              if (v > best || std::isnan(v)) {
                best = v;
                arg = h * W + w;
              }
            }
          py[(p * Ho + oh) * Wo + ow] = best;
          pi[(p * Ho + oh) * Wo + ow] = arg;
        }
    }
  });
  return {y, idx};
}

Tensor max_pool2d_backward(const Tensor& gy_in, const Tensor& argmax, const Shape& x_shape) {
  SIAM_ON_CUDA(gy_in, gpu::max_pool2d_backward(gy_in, argmax, x_shape));
  Tensor gy = dense(gy_in, "max_pool2d backward"), idx = dense(argmax, "max_pool2d backward");
  Tensor dx = zeros(x_shape, {gy.dtype(), gy.device()});
  int64_t P = x_shape[0] * x_shape[1], HW = x_shape[2] * x_shape[3], L = gy.size(2) * gy.size(3);
  SIAM_DISPATCH_FLOAT(gy.dtype(), "max_pool2d backward", [&] {
    const scalar_t* pg = gy.data<scalar_t>();
    const int64_t* pi = idx.data<int64_t>();
    scalar_t* pd = dx.data<scalar_t>();
    _Pragma("omp parallel for schedule(static) if (P * HW > kParallelWork)")
    for (int64_t p = 0; p < P; ++p)
      for (int64_t l = 0; l < L; ++l) pd[p * HW + pi[p * L + l]] += pg[p * L + l];
  });
  return dx;
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  SIAM_ON_CUDA(x, gpu::avg_pool2d(x, kernel, stride, pad));
  int64_t H = x.size(2), W = x.size(3);
  return mean_forward("avg_pool2d", x, pool_spans(H, pool_out_size(H, kernel, stride, pad), kernel, stride, pad),
                      pool_spans(W, pool_out_size(W, kernel, stride, pad), kernel, stride, pad));
}

Tensor avg_pool2d_backward(const Tensor& gy, const Shape& x_shape, int64_t kernel, int64_t stride, int64_t pad) {
  SIAM_ON_CUDA(gy, gpu::avg_pool2d_backward(gy, x_shape, kernel, stride, pad));
  return mean_backward("avg_pool2d backward", gy, x_shape, pool_spans(x_shape[2], gy.size(2), kernel, stride, pad),
                       pool_spans(x_shape[3], gy.size(3), kernel, stride, pad));
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  SIAM_ON_CUDA(x, gpu::adaptive_avg_pool2d(x, out_h, out_w));
  return mean_forward("adaptive_avg_pool2d", x, adaptive_spans(x.size(2), out_h), adaptive_spans(x.size(3), out_w));
}

Tensor adaptive_avg_pool2d_backward(const Tensor& gy, const Shape& x_shape) {
  SIAM_ON_CUDA(gy, gpu::adaptive_avg_pool2d_backward(gy, x_shape));
  return mean_backward("adaptive_avg_pool2d backward", gy, x_shape, adaptive_spans(x_shape[2], gy.size(2)),
                       adaptive_spans(x_shape[3], gy.size(3)));
}

}  // namespace siam::kernels
