#pragma once
// Device-side copies and fills for the tensor layer (tensor/tensor.cpp routes copy_ and
// fill_ on CUDA tensors here), in kernels/cuda/copy.cu. Asynchronous on siam's stream: no
// host synchronisation, so they can be captured into a CUDA graph.
#include "tensor/tensor.h"

namespace siam::gpu {

// dst[p] = convert(src[p]) for every position p: same shape, both on one CUDA device, any
// strides (dst may be a non-contiguous view), any pair of the seven dtypes. Conversions
// are those of the CPU copy_ (through double; to bf16 rounds to nearest even as
// tensor/dtype.h's bf16 does, NaN kept quiet).
void copy_strided(const Tensor& dst, const Tensor& src);
// Every element of t (any strides, any dtype) set to value converted as copy_ converts it.
void fill(const Tensor& t, double value);

}  // namespace siam::gpu
