#pragma once
// CUDA twins of kernels/index.h (same signatures and semantics), in kernels/cuda/index.cu.
// The selecting kernels copy any dtype; the accumulating ones take f32, f64 and bf16 and use
// atomic adds, so with repeated indices the order of the additions (and the last bits of
// f32 / bf16 results) can vary from run to run.
//
// Index checks: an index tensor on the CPU is checked on the host before anything runs
// (siam::Error at once, as on the CPU). An index tensor on the GPU is checked by the kernel
// itself: an out-of-range index is skipped (its output element is 0, its addition dropped)
// and the first one found is recorded in host-mapped memory, without any synchronisation, so
// a step stays capturable. The record is reported as a siam::Error (naming the op, the
// index value, its element and the dimension) by the next index op called on the host, or
// at once by check_index_errors(). The record (pinned host memory) is allocated by the first
// index op on the GPU: make that call before capturing a CUDA graph (a warm-up step does).
#include "kernels/index.h"

namespace siam::gpu {

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
void index_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
void scatter_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);

// Waits for the work queued on `device` and throws the out-of-range index recorded by an
// index kernel since the last report, if any. Synchronises: call it outside graph capture
// (tests, the end of a step when debugging).
void check_index_errors(int device = 0);

}  // namespace siam::gpu
