#pragma once
// Elementwise kernels (no autograd). Outputs are new contiguous tensors; inputs may be any
// strided view and are broadcast to a common shape. f32 and f64 on the CPU.
#include "tensor/tensor.h"

namespace siam::kernels {

enum class Unary { neg, exp, log, sqrt, rsqrt, abs, relu, sigmoid, tanh, gelu_erf, gelu_tanh,
                   pow_scalar, add_scalar, mul_scalar, clamp };
enum class Binary { add, sub, mul, div, maximum, minimum };
enum class Compare { gt, lt, eq };

// y = op(x). a and b are the op's scalars: pow exponent, added / multiplied scalar,
// clamp bounds (a = lo, b = hi; +-inf for a missing bound).
Tensor unary(Unary op, const Tensor& x, double a = 0, double b = 0);
// dx = g * op'(x), written (=) into a new tensor. x is the op's input, y its output.
Tensor unary_backward(Unary op, const Tensor& g, const Tensor& x, const Tensor& y, double a = 0,
                      double b = 0);
Tensor binary(Binary op, const Tensor& a, const Tensor& b);
Tensor compare(Compare op, const Tensor& a, const Tensor& b);  // bool output
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// a += alpha * b in place (b broadcast to a's shape); a may be strided.
void add_inplace(const Tensor& a, const Tensor& b, double alpha);
void scale_inplace(const Tensor& a, double s);

}  // namespace siam::kernels
