#include "nn/precision.h"

#include "autograd/ops.h"
#include "tensor/error.h"

namespace siam::nn {

namespace {
thread_local Precision g_precision;
}

Precision parse_precision(const std::string& s) {
  if (s == "f32") return {DType::f32};
  if (s == "bf16") return {DType::bf16};
  fail("precision must be f32 or bf16, got '", s, "'");
}

Precision precision() { return g_precision; }

PrecisionScope::PrecisionScope(Precision p) : prev_(g_precision) { g_precision = p; }
PrecisionScope::~PrecisionScope() { g_precision = prev_; }

Tensor compute_cast(const Tensor& x) {
  if (!x.defined() || !is_floating(x.dtype())) return x;
  const DType c = g_precision.compute;
  if (c == DType::f32 || x.dtype() == c) return x;
  return to(x, c);
}

Tensor result_cast(const Tensor& y) {
  if (!y.defined() || g_precision.compute == DType::f32 || y.dtype() != g_precision.compute) return y;
  return to(y, DType::f32);
}

}  // namespace siam::nn
