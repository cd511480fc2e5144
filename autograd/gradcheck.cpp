#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/ops.h"

namespace siam {

namespace {

GradcheckResult check_leaves(const std::function<Tensor()>& f, const std::vector<Tensor>& leaves,
                             const std::vector<size_t>& index, const char* what, const Tensor& gout_in,
                             const GradcheckOptions& o) {
  for (size_t i = 0; i < leaves.size(); ++i) {
    const Tensor& x = leaves[i];
    if (x.dtype() != DType::f64 || !x.device().is_cpu() || !x.is_contiguous())
      fail("gradcheck: ", what, " ", index[i], " must be a contiguous f64 CPU tensor, got ", dtype_name(x.dtype()));
    if (x.grad().defined()) x.set_grad(Tensor());
  }
  Tensor out = f();
  Tensor gout = gout_in.defined() ? copy_to(gout_in, Device::cpu(), DType::f64) : ones(out.shape(), {DType::f64});
  if (gout.shape() != out.shape())
    fail("gradcheck: grad_output shape ", shape_str(gout.shape()), " differs from output ", shape_str(out.shape()));
  std::vector<double> gv = gout.to_vector();
  auto loss = [&] {
    NoGradGuard ng;
    std::vector<double> y = f().to_vector();
    double s = 0;
    for (size_t k = 0; k < y.size(); ++k) s += y[k] * gv[k];
    return s;
  };
  if (out.requires_grad()) autograd::backward(out, gout);

  GradcheckResult r;
  std::ostringstream rep;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const Tensor& x = leaves[i];
    std::vector<double> analytic = x.grad().defined() ? x.grad().to_vector() : std::vector<double>(x.numel(), 0.0);
    GradcheckEntry e;
    e.index = index[i];
    e.shape = x.shape();
    double* p = x.data<double>();
    const int64_t n = x.numel();
    const int64_t count = o.max_elements > 0 ? std::min(n, o.max_elements) : n;
    double worst = -1;
    for (int64_t j = 0; j < count; ++j) {
      // An evenly spaced sample that includes the first and the last element.
      const int64_t k = count == n ? j : (count == 1 ? 0 : j * (n - 1) / (count - 1));
      double keep = p[k];
      p[k] = keep + o.eps;
      double lp = loss();
      p[k] = keep - o.eps;
      double lm = loss();
      p[k] = keep;
      double numeric = (lp - lm) / (2 * o.eps);
      double err = std::abs(numeric - analytic[k]);
      double excess = err - (o.atol + o.rtol * std::abs(numeric));
      if (!(excess <= 0)) e.ok = false;
      e.max_abs_err = std::isnan(err) ? INFINITY : std::max(e.max_abs_err, err);
      if (std::isnan(err) || excess > worst || e.worst_element < 0) {
        worst = std::isnan(err) ? INFINITY : excess;
        e.worst_element = k;
        e.analytic = analytic[k];
        e.numeric = numeric;
      }
      ++e.checked;
    }
    rep << what << " " << e.index << " " << shape_str(x.shape()) << ": " << (e.ok ? "ok" : "MISMATCH")
        << ", worst element " << e.worst_element << " analytic " << e.analytic << " numeric " << e.numeric;
    if (e.checked < n) rep << " (" << e.checked << " of " << n << " elements checked)";
    rep << "\n";
    r.ok = r.ok && e.ok;
    r.entries.push_back(e);
  }
  r.report = rep.str();
  return r;
}

}  // namespace

GradcheckResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs_in, const Tensor& gout_in,
                          const GradcheckOptions& o) {
  auto checked = [&](size_t i) {
    return inputs_in[i].dtype() == DType::f64 &&
           std::find(o.skip_inputs.begin(), o.skip_inputs.end(), static_cast<int>(i)) == o.skip_inputs.end();
  };
  std::vector<Tensor> inputs, leaves;
  std::vector<size_t> index;
  for (size_t i = 0; i < inputs_in.size(); ++i) {
    if (is_floating(inputs_in[i].dtype()) && inputs_in[i].dtype() != DType::f64)
      fail("gradcheck: input ", i, " is ", dtype_name(inputs_in[i].dtype()), ", expected f64");
    Tensor c = copy_to(inputs_in[i], Device::cpu(), inputs_in[i].dtype());
    if (checked(i)) {
      c.requires_grad_(true);
      leaves.push_back(c);
      index.push_back(i);
    }
    inputs.push_back(c);
  }
  return check_leaves([&] { return f(inputs); }, leaves, index, "input", gout_in, o);
}

GradcheckResult gradcheck_leaves(const std::function<Tensor()>& f, const std::vector<Tensor>& leaves,
                                 const Tensor& grad_output, const GradcheckOptions& o) {
  std::vector<size_t> index(leaves.size());
  for (size_t i = 0; i < index.size(); ++i) index[i] = i;
  return check_leaves(f, leaves, index, "leaf", grad_output, o);
}

}  // namespace siam
