// Fused batch norm + residual add + ReLU: shape checks here, arithmetic in kernels/norm.h
// (batch_norm_act_forward / _backward). Its composite twin is
// relu(add(batch_norm(x, ...), residual)); tests/ops_norm_act.cpp checks they agree.
#include <algorithm>

#include "autograd/ops.h"
#include "kernels/norm.h"

namespace siam {
namespace {

bool wants_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
Tensor detach_opt(const Tensor& t) { return t.defined() ? detach(t) : Tensor(); }

// An optional per-channel tensor: undefined, or (C) with x's dtype.
void check_channel(const Tensor& t, int64_t c, DType dtype, const char* what) {
  if (!t.defined()) return;
  if (t.shape() != Shape{c}) fail("batch_norm_act: ", what, " must have shape ", shape_str({c}), ", got ", shape_str(t.shape()));
  if (t.dtype() != dtype)
    fail("batch_norm_act: ", what, " is ", dtype_name(t.dtype()), " but the input is ", dtype_name(dtype));
}

}  // namespace

Tensor batch_norm_act(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& weight, const Tensor& bias, const Tensor& residual, bool relu,
                      bool training, double momentum, double eps) {
  if (x.dim() != 2 && x.dim() != 4)
    fail("batch_norm_act: expected x of shape (N, C) or (N, C, H, W), got ", shape_str(x.shape()));
  if (!is_floating(x.dtype())) fail("batch_norm_act: x must be floating point, got ", dtype_name(x.dtype()));
  const int64_t c = x.size(1);
  check_channel(weight, c, x.dtype(), "weight");
  check_channel(bias, c, x.dtype(), "bias");
  check_channel(running_mean, c, x.dtype(), "running_mean");
  check_channel(running_var, c, x.dtype(), "running_var");
  if (residual.defined()) {
    if (residual.shape() != x.shape())
      fail("batch_norm_act: residual must have x's shape ", shape_str(x.shape()), ", got ", shape_str(residual.shape()));
    if (residual.dtype() != x.dtype())
      fail("batch_norm_act: residual is ", dtype_name(residual.dtype()), " but the input is ", dtype_name(x.dtype()));
    if (residual.device() != x.device())
      fail("batch_norm_act: residual is on ", residual.device().str(), " but the input is on ", x.device().str());
  }
  if (!training && !(running_mean.defined() && running_var.defined()))
    fail("batch_norm_act: evaluation mode normalises with the running statistics, but running_mean ",
         "or running_var is undefined");
  if (training && x.numel() / std::max<int64_t>(c, 1) < 2)
    fail("batch_norm_act: training needs more than one value per channel, got input of shape ", shape_str(x.shape()));
  kernels::NormForward f = kernels::batch_norm_act_forward(x, weight, bias, running_mean, running_var, residual, relu,
                                                           training, momentum, eps);
  std::array<bool, 4> need{x.requires_grad(), wants_grad(weight), wants_grad(bias), wants_grad(residual)};
  // The ReLU's mask is read from y; without a ReLU y is not needed.
  return autograd::record(
      "batch_norm_act", f.y, {x, weight, bias, residual},
      [x = detach(x), y = relu ? detach(f.y) : Tensor(), w = detach_opt(weight), mean = f.mean, invstd = f.invstd, relu,
       training, need](const Tensor& g) {
        kernels::NormActBackward b = kernels::batch_norm_act_backward(g, y, x, w, mean, invstd, relu, training, need);
        return std::vector<Tensor>{b.dx, b.dweight, b.dbias, b.dresidual};
      });
}

}  // namespace siam
