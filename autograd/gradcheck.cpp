#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/ops.h"

namespace siam {

GradcheckResult gradcheck(const OpFn& f, const std::vector<Tensor>& inputs_in, const Tensor& gout_in,
                          const GradcheckOptions& o) {
  auto checked = [&](size_t i) {
    return inputs_in[i].dtype() == DType::f64 &&
           std::find(o.skip_inputs.begin(), o.skip_inputs.end(), static_cast<int>(i)) == o.skip_inputs.end();
  };
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < inputs_in.size(); ++i) {
    if (is_floating(inputs_in[i].dtype()) && inputs_in[i].dtype() != DType::f64)
      fail("gradcheck: input ", i, " is ", dtype_name(inputs_in[i].dtype()), ", expected f64");
    Tensor c = copy_to(inputs_in[i], Device::cpu(), inputs_in[i].dtype());
    if (checked(i)) c.requires_grad_(true);
    inputs.push_back(c);
  }
  Tensor out = f(inputs);
  Tensor gout = gout_in.defined() ? copy_to(gout_in, Device::cpu(), DType::f64) : ones(out.shape(), {DType::f64});
  if (gout.shape() != out.shape())
    fail("gradcheck: grad_output shape ", shape_str(gout.shape()), " differs from output ", shape_str(out.shape()));
  std::vector<double> gv = gout.to_vector();
  auto loss = [&](const std::vector<Tensor>& in) {
    NoGradGuard ng;
    std::vector<double> y = f(in).to_vector();
    double s = 0;
    for (size_t k = 0; k < y.size(); ++k) s += y[k] * gv[k];
    return s;
  };
  if (out.requires_grad()) autograd::backward(out, gout);

  GradcheckResult r;
  std::ostringstream rep;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!checked(i)) continue;
    Tensor& x = inputs[i];
    std::vector<double> analytic = x.grad().defined() ? x.grad().to_vector() : std::vector<double>(x.numel(), 0.0);
    // Perturb a detached contiguous copy element by element.
    std::vector<Tensor> probe = inputs;
    Tensor px = copy_to(x, Device::cpu(), DType::f64);
    probe[i] = px;
    double* p = px.data<double>();
    double worst = -1, worst_a = 0, worst_n = 0;
    int64_t worst_k = -1;
    bool ok = true;
    for (int64_t k = 0; k < px.numel(); ++k) {
      double keep = p[k];
      p[k] = keep + o.eps;
      double lp = loss(probe);
      p[k] = keep - o.eps;
      double lm = loss(probe);
      p[k] = keep;
      double numeric = (lp - lm) / (2 * o.eps);
      double err = std::abs(numeric - analytic[k]);
      double excess = err - (o.atol + o.rtol * std::abs(numeric));
      if (!(excess <= 0)) ok = false;
      if (std::isnan(err) || excess > worst || worst_k < 0) {
        worst = std::isnan(err) ? INFINITY : excess;
        worst_k = k;
        worst_a = analytic[k];
        worst_n = numeric;
      }
    }
    rep << "input " << i << " " << shape_str(x.shape()) << ": " << (ok ? "ok" : "MISMATCH")
        << ", worst element " << worst_k << " analytic " << worst_a << " numeric " << worst_n << "\n";
    r.ok = r.ok && ok;
  }
  r.report = rep.str();
  return r;
}

}  // namespace siam
