#pragma once
// Matrix products through BLAS (no autograd). f32 and f64 on the CPU.
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

}  // namespace siam::kernels
