#pragma once
// CUDA twins of kernels/gemm.h on cuBLASLt, same signatures and semantics (batched, broadcast and
// strided operands, a stride-0 c that sums the products of its broadcast batch dims). Reached
// through SIAM_ON_CUDA in kernels/cpu/gemm.cpp. f32 (TF32 when kernels::allow_tf32()), f64 and
// bf16 (f32 accumulation).
#include "kernels/gemm.h"

namespace siam::gpu {

void gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a, const Tensor& b, double beta,
          const Tensor& c);
// Shapes checked by the CPU entry point before it routes here.
Tensor linear_epilogue(const Tensor& x, const Tensor& w, const Tensor& bias, kernels::Epilogue act);

}  // namespace siam::gpu
