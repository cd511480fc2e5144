// Elementwise ops and activations. Binary ops broadcast; their backward sums the gradient
// back to each input's shape with sum_to.
#include <limits>

#include "autograd/ops.h"
#include "kernels/elementwise.h"

namespace siam {

using kernels::Binary;
using kernels::Unary;

static Tensor unary_op(const char* name, Unary op, const Tensor& x, double a = 0, double b = 0) {
  Tensor y = kernels::unary(op, x, a, b);
  return autograd::record(name, y, {x}, [op, x = detach(x), y = detach(y), a, b](const Tensor& g) {
    return std::vector<Tensor>{kernels::unary_backward(op, g, x, y, a, b)};
  });
}

Tensor neg(const Tensor& x) { return unary_op("neg", Unary::neg, x); }
Tensor exp(const Tensor& x) { return unary_op("exp", Unary::exp, x); }
Tensor log(const Tensor& x) { return unary_op("log", Unary::log, x); }
Tensor sqrt(const Tensor& x) { return unary_op("sqrt", Unary::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op("rsqrt", Unary::rsqrt, x); }
Tensor abs(const Tensor& x) { return unary_op("abs", Unary::abs, x); }
Tensor relu(const Tensor& x) { return unary_op("relu", Unary::relu, x); }
Tensor sigmoid(const Tensor& x) { return unary_op("sigmoid", Unary::sigmoid, x); }
Tensor tanh(const Tensor& x) { return unary_op("tanh", Unary::tanh, x); }
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary_op("gelu", tanh_approximation ? Unary::gelu_tanh : Unary::gelu_erf, x);
}
Tensor pow(const Tensor& x, double e) { return unary_op("pow", Unary::pow_scalar, x, e); }
Tensor add(const Tensor& x, double s) { return unary_op("add_scalar", Unary::add_scalar, x, s); }
Tensor mul(const Tensor& x, double s) { return unary_op("mul_scalar", Unary::mul_scalar, x, s); }
Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  return unary_op("clamp", Unary::clamp, x, lo.value_or(-inf), hi.value_or(inf));
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::binary(Binary::add, a, b);
  return autograd::record("add", y, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(g, sb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::binary(Binary::sub, a, b);
  return autograd::record("sub", y, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, sa), sum_to(neg(g), sb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::binary(Binary::mul, a, b);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return autograd::record("mul", y, {a, b}, [a = detach(a), b = detach(b), ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(mul(g, b), a.shape()) : Tensor(),
                               gb ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = kernels::binary(Binary::div, a, b);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return autograd::record("div", y, {a, b}, [a = detach(a), b = detach(b), y = detach(y), ga, gb](const Tensor& g) {
    Tensor gdb = ga || gb ? div(g, b) : Tensor();
    return std::vector<Tensor>{ga ? sum_to(gdb, a.shape()) : Tensor(),
                               gb ? sum_to(neg(mul(gdb, y)), b.shape()) : Tensor()};
  });
}

// Gradient of max/min: to the winning side; on ties half to each (as PyTorch does).
static Tensor extremum(const char* name, Binary op, const Tensor& a, const Tensor& b) {
  Tensor y = kernels::binary(op, a, b);
  return autograd::record(name, y, {a, b}, [a = detach(a), b = detach(b), op](const Tensor& g) {
    Tensor a_wins = op == Binary::maximum ? gt(a, b) : lt(a, b);
    Tensor tie = eq(a, b);
    Tensor zero = zeros({}, {g.dtype(), g.device()});
    Tensor half = mul(g, 0.5);
    Tensor ga = where(tie, half, where(a_wins, g, zero));
    Tensor gb = where(tie, half, where(a_wins, zero, g));
    return std::vector<Tensor>{sum_to(ga, a.shape()), sum_to(gb, b.shape())};
  });
}

Tensor maximum(const Tensor& a, const Tensor& b) { return extremum("maximum", Binary::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return extremum("minimum", Binary::minimum, a, b); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Tensor y = kernels::where(cond, a, b);
  return autograd::record("where", y, {a, b}, [c = detach(cond), sa = a.shape(), sb = b.shape()](const Tensor& g) {
    Tensor zero = zeros({}, {g.dtype(), g.device()});
    return std::vector<Tensor>{sum_to(kernels::where(c, g, zero), sa), sum_to(kernels::where(c, zero, g), sb)};
  });
}

Tensor gt(const Tensor& a, const Tensor& b) { return kernels::compare(kernels::Compare::gt, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return kernels::compare(kernels::Compare::lt, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return kernels::compare(kernels::Compare::eq, a, b); }

void add_(const Tensor& a, const Tensor& b, double alpha) { kernels::add_inplace(a, b, alpha); }
void mul_(const Tensor& a, double s) { kernels::scale_inplace(a, s); }

}  // namespace siam
