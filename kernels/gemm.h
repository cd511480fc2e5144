#pragma once
// Matrix products through BLAS (no autograd). f32 and f64 on the CPU; f32, f64 and bf16 on CUDA
// (cuBLASLt).
#include "tensor/tensor.h"

namespace siam::kernels {

// c = alpha * op(a) @ op(b) + beta * c, batched over the leading dims; op(t) swaps t's last two
// dims when its flag is set.
// a: (..., m, k) and b: (..., k, n), both seen after op; c: (..., m, n). All three have the
// same rank, 2 or more.
// A batch dim of a or b may be 1 and is then shared by every matrix of c. A batch dim along
// which c is a broadcast view (stride 0) sums the products over it into the one matrix.
// Operands may be any strided views: a matrix with a unit stride in either dim goes to BLAS
// as it lies (transposed views cost nothing); other layouts are copied first. With beta = 0, c
// is only written, so it may hold garbage (an empty() tensor).
void gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b, double beta,
          const Tensor& c);

// The activation a fused linear layer applies after its bias (cuBLASLt epilogues on CUDA).
// gelu_tanh is GELU's tanh approximation, as Unary::gelu_tanh.
enum class Epilogue { none, relu, gelu_tanh };

// y = act(x @ w^T + bias), written (=) into a new contiguous tensor: one GEMM whose epilogue adds
// the bias and applies the activation on CUDA, the same ops one after another on the CPU.
// x: (rows, k), w: (n, k) (linear's (out, in) weight), bias: (n) or undefined -> y: (rows, n)
Tensor linear_epilogue(const Tensor& x, const Tensor& w, const Tensor& bias, Epilogue act);

}  // namespace siam::kernels
