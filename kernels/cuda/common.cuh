#pragma once
// What every CUDA kernel file shares: the stream siam works on, error checks that throw
// siam::Error, launch geometry, f32/f64/bf16 conversions and dispatch, and a strided indexer
// for inputs that are views. Included only by .cu files.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace siam::gpu {

// All of siam's device work (allocations, copies, kernels, cuBLAS, cuDNN) is ordered on this
// one stream, so a training step can be captured into a CUDA graph from it.
inline cudaStream_t stream() { return cudaStreamPerThread; }

#define SIAM_CUDA_CHECK(expr)                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (expr);                                                                    \
    if (e_ != cudaSuccess)                                                                      \
      ::siam::fail(__FILE__, ":", __LINE__, ": ", #expr, ": ", cudaGetErrorString(e_));          \
  } while (0)

// After a launch: reports a bad launch configuration at once (no synchronisation).
#define SIAM_CUDA_LAUNCHED() SIAM_CUDA_CHECK(cudaGetLastError())

constexpr int kBlock = 256;
inline unsigned grid_for(int64_t n, int block = kBlock, int64_t max_blocks = 65535LL * 16) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > max_blocks) g = max_blocks;  // kernels use grid-stride loops
  return static_cast<unsigned>(g);
}

// Sets the current device to t's and returns its index.
inline int use_device(const Tensor& t) {
  SIAM_CUDA_CHECK(cudaSetDevice(t.device().index));
  return t.device().index;
}

// f32 / f64 / bf16 in registers: compute in acc_t (float for f32 and bf16, double for f64).
template <class T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <class T> using acc_t = typename AccOf<T>::type;

template <class T> __host__ __device__ inline acc_t<T> to_acc(T v) { return static_cast<acc_t<T>>(v); }
template <> __host__ __device__ inline float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T, class A> __host__ __device__ inline T from_acc(A v) { return static_cast<T>(v); }
template <> __host__ __device__ inline __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }
template <> __host__ __device__ inline __nv_bfloat16 from_acc<__nv_bfloat16, double>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}

// Calls BODY with `scalar_t` bound to the device type of a floating DTYPE.
#define SIAM_CUDA_DISPATCH_FLOAT(DTYPE, NAME, ...)                                          \
  [&] {                                                                                     \
    switch (DTYPE) {                                                                        \
      case ::siam::DType::f32: { using scalar_t = float; return __VA_ARGS__(); }            \
      case ::siam::DType::f64: { using scalar_t = double; return __VA_ARGS__(); }           \
      case ::siam::DType::bf16: { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); }   \
      default: break;                                                                       \
    }                                                                                       \
    ::siam::fail(NAME, ": CUDA kernel takes f32, f64 or bf16, got ", ::siam::dtype_name(DTYPE)); \
  }()

// Element offsets of a strided view, for kernels that read non-contiguous inputs: flat index
// (row-major over shape) -> element offset. Up to kMaxDims dimensions; a stride of 0 broadcasts.
constexpr int kMaxDims = 8;
struct Strided {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
  __host__ __device__ inline int64_t offset(int64_t flat) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t i = flat % size[d];
      flat /= size[d];
      off += i * stride[d];
    }
    return off;
  }
};

// t's layout seen through `shape` (t's shape broadcast to it: missing or size-1 dims get
// stride 0).
inline Strided strided_as(const Tensor& t, const Shape& shape) {
  Strided s;
  int nd = static_cast<int>(shape.size());
  if (nd > kMaxDims) fail("CUDA kernels take at most ", kMaxDims, " dimensions, got ", nd);
  s.ndim = nd;
  int off = nd - static_cast<int>(t.dim());
  for (int d = 0; d < nd; ++d) {
    s.size[d] = shape[d];
    int td = d - off;
    s.stride[d] = (td < 0 || t.shape()[td] == 1) ? 0 : t.strides()[td];
  }
  return s;
}

template <class T> inline T* dptr(const Tensor& t) { return reinterpret_cast<T*>(t.raw_data()); }

}  // namespace siam::gpu
