// Convolution, pooling and resizing: shape checks here, arithmetic in kernels/{conv,pool,resize}.
// Each op is linear in each input (max pooling given its argmax), so every backward is one
// kernel pass over the saved inputs and the output gradient.
#include "autograd/ops.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "kernels/resize.h"

namespace siam {
namespace {

void require_nchw(const char* op, const Tensor& x) {
  if (x.dim() != 4) fail(op, ": expected a 4-D input (N, C, H, W), got ", shape_str(x.shape()));
}

void check_pool(const char* op, const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  require_nchw(op, x);
  if (kernel < 1 || stride < 1 || pad < 0)
    fail(op, ": kernel ", kernel, " and stride ", stride, " must be positive, padding ", pad, " non-negative");
  if (pad > kernel / 2) fail(op, ": padding ", pad, " exceeds half the kernel size ", kernel);
  if (x.size(2) + 2 * pad < kernel || x.size(3) + 2 * pad < kernel)
    fail(op, ": input ", x.size(2), "x", x.size(3), " with padding ", pad, " is smaller than the kernel ", kernel);
}

void check_out_size(const char* op, int64_t h, int64_t w) {
  if (h < 1 || w < 1) fail(op, ": output size ", h, "x", w, " must be positive");
}

Tensor resize_op(const char* op, kernels::Resize mode, const Tensor& x, int64_t out_h, int64_t out_w,
                 bool align_corners) {
  require_nchw(op, x);
  check_out_size(op, out_h, out_w);
  if (x.size(2) < 1 || x.size(3) < 1) fail(op, ": input ", shape_str(x.shape()), " has an empty plane");
  Tensor y = kernels::resize(mode, x, out_h, out_w, align_corners);
  return autograd::record(op, y, {x}, [mode, xs = x.shape(), align_corners](const Tensor& g) {
    return std::vector<Tensor>{kernels::resize_backward(mode, g, xs, align_corners)};
  });
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  require_nchw("conv2d", x);
  if (weight.dim() != 4 || weight.size(2) < 1 || weight.size(3) < 1)
    fail("conv2d: weight must be 4-D (O, C/groups, kH, kW) with a non-empty kernel, got ", shape_str(weight.shape()));
  if (p.groups < 1 || p.stride_h < 1 || p.stride_w < 1 || p.dil_h < 1 || p.dil_w < 1 || p.pad_h < 0 || p.pad_w < 0)
    fail("conv2d: groups, stride and dilation must be positive and padding non-negative");
  for (const Tensor* t : {&weight, &bias})
    if (t->defined() && (t->dtype() != x.dtype() || t->device() != x.device()))
      fail("conv2d: input is ", dtype_name(x.dtype()), " on ", x.device().str(), ", a parameter is ",
           dtype_name(t->dtype()), " on ", t->device().str());
  int64_t C = x.size(1), O = weight.size(0);
  if (C != weight.size(1) * p.groups)
    fail("conv2d: input has ", C, " channels, weight expects ", weight.size(1) * p.groups, " (groups ", p.groups, ")");
  if (O % p.groups != 0) fail("conv2d: ", O, " output channels do not divide into ", p.groups, " groups");
  if (bias.defined() && bias.shape() != Shape{O})
    fail("conv2d: bias ", shape_str(bias.shape()), " does not match the ", O, " output channels");
  int64_t kh_eff = p.dil_h * (weight.size(2) - 1) + 1, kw_eff = p.dil_w * (weight.size(3) - 1) + 1;
  if (x.size(2) + 2 * p.pad_h < kh_eff || x.size(3) + 2 * p.pad_w < kw_eff)
    fail("conv2d: input ", x.size(2), "x", x.size(3), " (padded ", x.size(2) + 2 * p.pad_h, "x",
         x.size(3) + 2 * p.pad_w, ") is smaller than the dilated kernel ", kh_eff, "x", kw_eff);

  kernels::ConvGeometry geo{p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups};
  Tensor y = kernels::conv2d(x, weight, bias, geo);
  bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
  return autograd::record("conv2d", y, {x, weight, bias},
                          [x = detach(x), w = detach(weight), geo, gx, gw, gb](const Tensor& g) {
                            return std::vector<Tensor>{
                                gx ? kernels::conv2d_grad_input(g, w, x.shape(), geo) : Tensor(),
                                gw ? kernels::conv2d_grad_weight(g, x, w.shape(), geo) : Tensor(),
                                gb ? kernels::conv2d_grad_bias(g) : Tensor()};
                          });
}

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_pool("max_pool2d", x, kernel, stride, padding);
  auto [y, argmax] = kernels::max_pool2d(x, kernel, stride, padding);
  return autograd::record("max_pool2d", y, {x}, [argmax = argmax, xs = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{kernels::max_pool2d_backward(g, argmax, xs)};
  });
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_pool("avg_pool2d", x, kernel, stride, padding);
  Tensor y = kernels::avg_pool2d(x, kernel, stride, padding);
  return autograd::record("avg_pool2d", y, {x}, [xs = x.shape(), kernel, stride, padding](const Tensor& g) {
    return std::vector<Tensor>{kernels::avg_pool2d_backward(g, xs, kernel, stride, padding)};
  });
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  require_nchw("adaptive_avg_pool2d", x);
  check_out_size("adaptive_avg_pool2d", out_h, out_w);
  if (x.size(2) < 1 || x.size(3) < 1)
    fail("adaptive_avg_pool2d: input ", shape_str(x.shape()), " has an empty plane");
  Tensor y = kernels::adaptive_avg_pool2d(x, out_h, out_w);
  return autograd::record("adaptive_avg_pool2d", y, {x}, [xs = x.shape()](const Tensor& g) {
    return std::vector<Tensor>{kernels::adaptive_avg_pool2d_backward(g, xs)};
  });
}

Tensor interpolate_bilinear(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  return resize_op("interpolate_bilinear", kernels::Resize::bilinear, x, out_h, out_w, align_corners);
}

Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  return resize_op("interpolate_bicubic", kernels::Resize::bicubic, x, out_h, out_w, align_corners);
}

}  // namespace siam
