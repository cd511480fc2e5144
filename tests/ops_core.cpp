// Op cases: views, elementwise, activations, reductions. PyTorch twins with the same names:
// tools/reference/cases_core.py. Tolerances (f32 vs the f64 PyTorch reference):
//  kExact  - one rounding per element (views, add, mul, ...): a few f32 ulps.
//  kMath   - libm transcendental in f32 (exp, log, erf, tanh): ~1e-6 relative.
//  kReduce - sums of up to tens of terms accumulated in double, rounded once.
#include "op_harness.h"

namespace siam::test {
namespace {

constexpr double kR = 1e-6, kA = 1e-6;
const char* kExact = "f32 rounding of one or two operations per element";
const char* kMath = "f32 transcendental functions are accurate to a few ulps";
const char* kReduce = "sums accumulate in double and round once to f32";

OpCase c(std::string name, OpFn fn, const char* why, double rtol = kR, double atol = kA) {
  OpCase k;
  k.name = std::move(name);
  k.fn = std::move(fn);
  k.why = why;
  k.rtol = rtol;
  k.atol = atol;
  return k;
}

using V = const std::vector<Tensor>&;

OpTable table({
    c("view_reshape_noncontig", [](V x) { return mul(reshape(transpose(x[0], 0, 1), {2, 6}), 1.0); }, kExact),
    c("view_permute", [](V x) { return permute(x[0], {2, 0, 1}); }, kExact),
    c("view_narrow", [](V x) { return narrow(x[0], 1, 1, 3); }, kExact),
    c("view_slice_step", [](V x) { return slice(x[0], 1, 1, 6, 2); }, kExact),
    c("view_select", [](V x) { return select(x[0], 1, 2); }, kExact),
    c("view_expand", [](V x) { return expand(x[0], {2, 3, 4}); }, kExact),
    c("view_squeeze_unsqueeze", [](V x) { return unsqueeze(squeeze(x[0], 1), 0); }, kExact),
    c("view_flatten", [](V x) { return flatten(transpose(x[0], 0, 2), 1); }, kExact),

    c("add_broadcast", [](V x) { return add(x[0], x[1]); }, kExact),
    c("add_transposed", [](V x) { return add(transpose(x[0], 0, 1), x[1]); }, kExact),
    c("sub_broadcast", [](V x) { return sub(x[0], x[1]); }, kExact),
    c("mul_broadcast", [](V x) { return mul(x[0], x[1]); }, kExact),
    c("div_broadcast", [](V x) { return div(x[0], x[1]); }, kExact),
    c("scalar_affine", [](V x) { return x[0] * -1.5 + 2.5; }, kExact),
    c("neg", [](V x) { return neg(x[0]); }, kExact),
    c("pow", [](V x) { return pow(x[0], 2.5); }, kMath),
    c("exp", [](V x) { return exp(x[0]); }, kMath),
    c("log", [](V x) { return log(x[0]); }, kMath),
    c("sqrt", [](V x) { return sqrt(x[0]); }, kExact),
    c("rsqrt", [](V x) { return rsqrt(x[0]); }, kExact),
    c("abs", [](V x) { return abs(x[0]); }, kExact),
    c("clamp", [](V x) { return clamp(x[0], -0.55, 0.65); }, kExact),
    c("clamp_min", [](V x) { return clamp(x[0], 0.15, std::nullopt); }, kExact),
    c("maximum", [](V x) { return maximum(x[0], x[1]); }, kExact),
    c("minimum", [](V x) { return minimum(x[0], x[1]); }, kExact),
    c("where", [](V x) { return where(x[0], x[1], x[2]); }, kExact),

    c("relu", [](V x) { return relu(x[0]); }, kExact),
    c("gelu_erf", [](V x) { return gelu(x[0]); }, kMath),
    c("gelu_tanh", [](V x) { return gelu(x[0], true); }, kMath),
    c("sigmoid", [](V x) { return sigmoid(x[0]); }, kMath),
    c("tanh", [](V x) { return tanh(x[0]); }, kMath),

    c("sum_all", [](V x) { return sum(x[0]); }, kReduce),
    c("sum_dims_keepdim", [](V x) { return sum(x[0], {0, 2}, true); }, kReduce),
    c("sum_transposed", [](V x) { return sum(transpose(x[0], 0, 1), {1}); }, kReduce),
    c("mean_dim", [](V x) { return mean(x[0], {1}); }, kReduce),
    c("var_unbiased", [](V x) { return var(x[0], {1}, true); }, kReduce),
    c("var_biased_keepdim", [](V x) { return var(x[0], {0}, false, true); }, kReduce),
    c("max_dim", [](V x) { return max(x[0], 1).first; }, kExact),
    c("max_dim_keepdim", [](V x) { return max(x[0], 0, true).first; }, kExact),
    c("logsumexp", [](V x) { return logsumexp(x[0], 1); }, kMath),
    c("norm", [](V x) { return norm(x[0], {1}); }, kReduce),
});

}  // namespace
}  // namespace siam::test
