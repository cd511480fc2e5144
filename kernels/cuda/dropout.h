#pragma once
// CUDA twins of kernels/dropout.h (same signatures and semantics), in kernels/cuda/dropout.cu.
// f32, f64 and bf16 (scaled in f32). The masks are bit-identical to the CPU kernels': the
// same Philox 4x32-10 words (tensor/rng.h, compiled for the device) and the same
// keep test, philox_uniform(seed, offset, i) >= p in double.
#include "kernels/dropout.h"

namespace siam::gpu {

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset);
Tensor drop_path(const Tensor& x, double p, uint64_t seed, uint64_t offset);

}  // namespace siam::gpu
