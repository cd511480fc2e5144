#pragma once
// The mixed-precision policy: one object says which dtype the matrix products (Linear,
// Conv2d, attention) compute in, instead of casts at call sites.
//
// Parameters stay f32: they are the master weights the optimizer updates. Under bf16 the
// products read bf16 copies of their inputs and weights, made by an autograd cast, so the
// gradients arrive at the f32 masters in f32; cuBLASLt / cuDNN accumulate in f32; and the
// product's result returns to f32 for the layers around it (normalisation, activations,
// losses), which therefore always compute in f32.
#include <string>

#include "tensor/tensor.h"

namespace siam::nn {

struct Precision {
  DType compute = DType::f32;  // f32, or bf16 (CUDA only: the CPU kernels are f32 / f64)
  std::string str() const { return dtype_name(compute); }
};

Precision parse_precision(const std::string& s);  // "f32" or "bf16"; throws on others

Precision precision();  // this thread's policy (f32 unless a PrecisionScope says otherwise)

// Sets this thread's policy for a scope and restores the previous one after.
class PrecisionScope {
 public:
  explicit PrecisionScope(Precision p);
  ~PrecisionScope();
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  Precision prev_;
};

// A product's operand in the policy's compute dtype (an autograd cast; undefined stays
// undefined, non-floating and already-matching tensors pass through).
Tensor compute_cast(const Tensor& x);
// A product's result back in f32 (a no-op under the f32 policy).
Tensor result_cast(const Tensor& y);

}  // namespace siam::nn
