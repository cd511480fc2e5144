#pragma once
// CUDA twins of kernels/elementwise.h (same signatures and semantics), in
// kernels/cuda/elementwise.cu. f32, f64 and bf16 (computed in f32); compare takes every dtype.
#include "kernels/elementwise.h"

namespace siam::gpu {

Tensor unary(kernels::Unary op, const Tensor& x, double a = 0, double b = 0);
Tensor unary_backward(kernels::Unary op, const Tensor& g, const Tensor& x, const Tensor& y, double a = 0,
                      double b = 0);
Tensor binary(kernels::Binary op, const Tensor& a, const Tensor& b);
Tensor compare(kernels::Compare op, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
void add_inplace(const Tensor& a, const Tensor& b, double alpha);
void scale_inplace(const Tensor& a, double s);

}  // namespace siam::gpu
