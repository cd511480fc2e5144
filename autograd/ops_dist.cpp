// Differentiable collectives and synchronised batch norm. The statistics are reductions over
// the ranks' per-channel sums (f64 on the wire), the normalisation itself is the batch-norm
// kernel in its evaluation form (x - mean) * invstd * w + b, given the shared mean and
// variance; the backward adds the statistics' derivative from all-reduced sums.
#include "autograd/ops_dist.h"

#include "autograd/node.h"
#include "kernels/norm.h"

namespace siam {

namespace {

Tensor detach_or_empty(const Tensor& t) { return t.defined() ? detach(t) : Tensor(); }
bool grad_wanted(const Tensor& t) { return t.defined() && t.requires_grad(); }

struct GlobalStats {
  Tensor mean, var;  // (C), x's dtype: biased statistics over every rank's values
  double count = 0;  // values per channel over all ranks
};

// Two passes, each one all-reduce of C doubles: the mean, then the centred sum of squares.
GlobalStats global_stats(const Tensor& x, dist::Group& g) {
  NoGradGuard no_grad;
  // Every rank holds the same number of values (equal shares of the global batch), so the
  // count needs no reduction and nothing here waits for the host.
  GlobalStats out;
  out.count = static_cast<double>(x.numel() / x.size(1)) * g.size();
  Tensor s = kernels::batch_norm_channel_sums(x, Tensor());
  g.all_reduce(s);
  out.mean = to(mul(s, 1.0 / out.count), x.dtype());
  Tensor sq = kernels::batch_norm_channel_sums(x, out.mean);
  g.all_reduce(sq);
  out.var = to(mul(sq, 1.0 / out.count), x.dtype());
  return out;
}

void update_running(const Tensor& running_mean, const Tensor& running_var, const GlobalStats& st, double momentum) {
  NoGradGuard no_grad;
  if (running_mean.defined()) copy_(running_mean, add(mul(running_mean, 1 - momentum), mul(st.mean, momentum)));
  if (running_var.defined()) {
    const double unbias = st.count / (st.count - 1);
    copy_(running_var, add(mul(running_var, 1 - momentum), mul(st.var, momentum * unbias)));
  }
}

// dx = dx_local - w invstd / M (sum_g + x_hat sum_gxhat), with sum_g and sum_gxhat summed over
// ranks; dx_local = w invstd g is the evaluation-form backward (updated in place).
Tensor sync_dx(Tensor dx_local, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd,
               const Tensor& sum_g, const Tensor& sum_gxhat, double count, dist::Group& g) {
  Tensor sums = contiguous(cat({to(sum_g, DType::f64), to(sum_gxhat, DType::f64)}, 0));
  g.all_reduce(sums);
  if (!dx_local.is_contiguous()) dx_local = contiguous(dx_local);
  kernels::batch_norm_sync_dx_(dx_local, x, w, mean, invstd, sums, count);
  return dx_local;
}

void check_sync_bn(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                   const Tensor& running_var, const char* op) {
  if (x.dim() != 2 && x.dim() != 4) fail(op, ": expected x of shape (N, C) or (N, C, H, W), got ", shape_str(x.shape()));
  if (!is_floating(x.dtype())) fail(op, ": x must be floating point, got ", dtype_name(x.dtype()));
  const int64_t c = x.size(1);
  for (const Tensor* t : {&weight, &bias, &running_mean, &running_var})
    if (t->defined() && (t->shape() != Shape{c} || t->dtype() != x.dtype()))
      fail(op, ": per-channel tensors must be (", c, ") ", dtype_name(x.dtype()), ", got ", shape_str(t->shape()), " ",
           dtype_name(t->dtype()));
}

}  // namespace

Tensor all_gather(const Tensor& x, dist::Group& group) {
  if (group.size() == 1) return x;
  const int64_t n = x.size(0);
  const int r = group.rank();
  Tensor out;
  {
    NoGradGuard no_grad;
    out = group.all_gather(contiguous(detach(x)));
  }
  return autograd::record("all_gather", out, {x}, [&group, n, r](const Tensor& g) {
    Tensor summed = copy_to(g, g.device(), g.dtype());
    group.all_reduce(summed);
    return std::vector<Tensor>{contiguous(narrow(summed, 0, r * n, n))};
  });
}

Tensor sync_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, double momentum, double eps, dist::Group& group) {
  check_sync_bn(x, weight, bias, running_mean, running_var, "sync_batch_norm");
  const GlobalStats st = global_stats(x, group);
  if (st.count < 2) fail("sync_batch_norm: training needs more than one value per channel over all ranks, got ", st.count);
  update_running(running_mean, running_var, st, momentum);
  kernels::NormForward f = kernels::batch_norm_forward(x, weight, bias, st.mean, st.var, false, momentum, eps);
  return autograd::record(
      "sync_batch_norm", f.y, {x, weight, bias},
      [x = detach(x), w = detach_or_empty(weight), mean = f.mean, invstd = f.invstd, count = st.count, &group,
       need_w = grad_wanted(weight), need_b = grad_wanted(bias)](const Tensor& g) {
        kernels::NormBackward b = kernels::batch_norm_backward(g, x, w, mean, invstd, false, {true, true, true});
        Tensor dx = sync_dx(b.dx, x, w, mean, invstd, b.dbias, b.dweight, count, group);
        return std::vector<Tensor>{dx, need_w ? b.dweight : Tensor(), need_b ? b.dbias : Tensor()};
      });
}

Tensor sync_batch_norm_act(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                           const Tensor& weight, const Tensor& bias, const Tensor& residual, bool relu,
                           double momentum, double eps, dist::Group& group) {
  check_sync_bn(x, weight, bias, running_mean, running_var, "sync_batch_norm_act");
  if (residual.defined() && (residual.shape() != x.shape() || residual.dtype() != x.dtype()))
    fail("sync_batch_norm_act: residual must be ", shape_str(x.shape()), " ", dtype_name(x.dtype()), ", got ",
         shape_str(residual.shape()), " ", dtype_name(residual.dtype()));
  const GlobalStats st = global_stats(x, group);
  if (st.count < 2)
    fail("sync_batch_norm_act: training needs more than one value per channel over all ranks, got ", st.count);
  update_running(running_mean, running_var, st, momentum);
  kernels::NormForward f =
      kernels::batch_norm_act_forward(x, weight, bias, st.mean, st.var, residual, relu, false, momentum, eps);
  return autograd::record(
      "sync_batch_norm_act", f.y, {x, weight, bias, residual},
      [x = detach(x), y = relu ? detach(f.y) : Tensor(), w = detach_or_empty(weight), mean = f.mean,
       invstd = f.invstd, count = st.count, relu, &group, need_w = grad_wanted(weight), need_b = grad_wanted(bias),
       need_r = grad_wanted(residual)](const Tensor& g) {
        kernels::NormActBackward b =
            kernels::batch_norm_act_backward(g, y, x, w, mean, invstd, relu, false, {true, true, true, need_r});
        Tensor dx = sync_dx(b.dx, x, w, mean, invstd, b.dbias, b.dweight, count, group);
        return std::vector<Tensor>{dx, need_w ? b.dweight : Tensor(), need_b ? b.dbias : Tensor(),
                                   need_r ? b.dresidual : Tensor()};
      });
}

}  // namespace siam
