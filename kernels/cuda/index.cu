// Indexing CUDA kernels, the twins of kernels/cpu/index.cpp. index_select and gather write
// (=) fresh outputs; index_add_ and scatter_add_ accumulate (+=) into their first argument
// with atomic adds (f32, f64 and bf16 atomics: sm_60 / sm_80 and newer). Atomics are the one
// non-deterministic spot of this family: when indices repeat, the additions into one
// element happen in no fixed order.
//
// Index checking (see kernels/cuda/index.h): CPU index tensors are checked on the host;
// GPU ones by the kernels, which skip a bad index and record the first one in host-mapped
// memory (claimed through an atomic on a device word, fields written, a system fence, then
// the flag), so the host can read it later without a synchronisation.
//
// Launch strategy: index_select moves whole inner rows in the widest unit (16, 8, 4, 2 or 1
// bytes) that the row length and the pointers' alignment allow, one unit per thread of a
// grid-stride loop; index_add_ is one thread per source element; gather and scatter_add_ walk
// the index tensor with the strided indexer of strided_iter.cuh.
#include "kernels/cuda/index.h"

#include <cstring>
#include <mutex>

#include "kernels/cuda/strided_iter.cuh"

namespace siam::gpu {

namespace {

enum IndexOp : int { kIndexSelect, kIndexAdd, kGather, kScatterAdd };
const char* op_name(int op) {
  switch (op) {
    case kIndexSelect: return "index_select";
    case kIndexAdd: return "index_add_";
    case kGather: return "gather";
    case kScatterAdd: return "scatter_add_";
  }
  return "index op";
}

// One per device, in host-mapped pinned memory.
struct IndexErrorRecord {
  int flag;  // written last
  int op;
  long long value, element, dim, size;
};
constexpr int kMaxDevices = 16;

__device__ int g_index_claim = 0;  // per device: 1 once a kernel has claimed the record

IndexErrorRecord* g_records = nullptr;  // host view
IndexErrorRecord* g_records_dev = nullptr;  // device view of the same memory
std::once_flag g_records_once;

IndexErrorRecord* records_host() {
  std::call_once(g_records_once, [] {
    void* p = nullptr;
    SIAM_CUDA_CHECK(cudaHostAlloc(&p, sizeof(IndexErrorRecord) * kMaxDevices,
                                  cudaHostAllocMapped | cudaHostAllocPortable));
    std::memset(p, 0, sizeof(IndexErrorRecord) * kMaxDevices);
    void* d = nullptr;
    SIAM_CUDA_CHECK(cudaHostGetDevicePointer(&d, p, 0));
    g_records = static_cast<IndexErrorRecord*>(p);
    g_records_dev = static_cast<IndexErrorRecord*>(d);
  });
  return g_records;
}

struct ErrorSink {
  int* claim;
  IndexErrorRecord* rec;
  int op;
  long long dim, size;
};

__device__ inline void report_bad_index(const ErrorSink& s, int64_t value, int64_t element) {
  if (atomicCAS(s.claim, 0, 1) != 0) return;
  volatile IndexErrorRecord* r = s.rec;
  r->op = s.op;
  r->value = value;
  r->element = element;
  r->dim = s.dim;
  r->size = s.size;
  __threadfence_system();
  r->flag = 1;
}

// g_index_claim's address on `device` (the current device), looked up once: later calls
// make no runtime call, so they can be captured into a graph.
int* claim_on(int device) {
  static std::mutex mu;
  static int* cache[kMaxDevices] = {};
  std::lock_guard<std::mutex> lock(mu);
  if (!cache[device]) {
    void* claim = nullptr;
    SIAM_CUDA_CHECK(cudaGetSymbolAddress(&claim, g_index_claim));
    cache[device] = static_cast<int*>(claim);
  }
  return cache[device];
}

// Throws the error an earlier kernel on `device` recorded, if it has been recorded by now,
// and re-arms the record. No synchronisation.
void raise_recorded(int device) {
  if (device < 0 || device >= kMaxDevices) fail("index ops: no support for cuda:", device);
  volatile IndexErrorRecord* r = records_host() + device;
  if (!r->flag) return;
  IndexErrorRecord e;
  e.op = r->op;
  e.value = r->value;
  e.element = r->element;
  e.dim = r->dim;
  e.size = r->size;
  r->flag = 0;
  SIAM_CUDA_CHECK(cudaSetDevice(device));
  SIAM_CUDA_CHECK(cudaMemsetAsync(claim_on(device), 0, sizeof(int), stream()));
  fail(op_name(e.op), ": index ", e.value, " (element ", e.element, " of the index) is out of range for dimension ",
       e.dim, " of size ", e.size, " (found on cuda:", device, " by an earlier ", op_name(e.op), " call)");
}

ErrorSink sink_for(int op, int device, int64_t dim, int64_t size) {
  records_host();
  return ErrorSink{claim_on(device), g_records_dev + device, op, dim, size};
}

// The index as a contiguous i64 tensor on x's device. A host index is range-checked here,
// with the CPU kernel's message; a device one is left to the kernel.
Tensor device_index(const Tensor& index, const Tensor& x, int64_t size, int64_t dim, const char* op) {
  if (index.dtype() != DType::i64) fail(op, ": index must be i64, got ", dtype_name(index.dtype()));
  if (index.device().is_cpu()) {
    Tensor ic = index.is_contiguous() ? index : copy_to(index, Device::cpu(), DType::i64);
    const int64_t* p = ic.data<int64_t>();
    for (int64_t k = 0; k < ic.numel(); ++k)
      if (p[k] < 0 || p[k] >= size)
        fail(op, ": index ", p[k], " (element ", k, " of the index) is out of range for dimension ", dim,
             " of size ", size);
    return copy_to(ic, x.device(), DType::i64);
  }
  if (index.device() != x.device())
    fail(op, ": index on ", index.device().str(), ", expected it on ", x.device().str(), " or the CPU");
  return index.is_contiguous() ? index : copy_to(index, x.device(), DType::i64);
}

Tensor dense(const Tensor& t) { return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype()); }

void same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype()) fail(op, ": dtype mismatch, ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
}

void split_at(const Shape& s, int64_t dim, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t k = 0; k < dim; ++k) *outer *= s[k];
  for (size_t k = dim + 1; k < s.size(); ++k) *inner *= s[k];
}

Shape strides_without(const Tensor& t, int64_t dim) {
  Shape st = t.strides();
  st[dim] = 0;
  return st;
}

void check_gather_shape(const Shape& target, const Shape& index, int64_t dim, const char* op) {
  if (index.size() != target.size())
    fail(op, ": index ", shape_str(index), " must have the same number of dimensions as the input ",
         shape_str(target));
  for (size_t d = 0; d < target.size(); ++d)
    if (static_cast<int64_t>(d) != dim && index[d] > target[d])
      fail(op, ": index ", shape_str(index), " is larger than the input ", shape_str(target), " in dimension ", d);
}

void check_dim(const Tensor& t, int64_t dim, const char* op) {
  if (dim < 0 || dim >= t.dim()) fail(op, ": dim ", dim, " out of range for a tensor of ", t.dim(), " dimensions");
}

// out: (outer, k_n, inner) units of U; x: (outer, d, inner).
template <class U, class I>
__global__ void index_select_kernel(const U* x, U* out, const int64_t* idx, IDiv<I> inner, IDiv<I> kn, int64_t d,
                                    I total, ErrorSink err) {
  for (I flat = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; flat < total;
       flat += static_cast<I>(gridDim.x) * blockDim.x) {
    const I t = inner.div(flat), i = flat - t * inner.d;
    const I o = kn.div(t), k = t - o * kn.d;
    const int64_t j = idx[k];
    if (j < 0 || j >= d) {
      report_bad_index(err, j, static_cast<int64_t>(k));
      out[flat] = U{};
      continue;
    }
    out[flat] = x[(static_cast<int64_t>(o) * d + j) * static_cast<int64_t>(inner.d) + i];
  }
}

template <class U>
void launch_index_select(const void* x, void* out, const int64_t* idx, int64_t outer, int64_t k_n, int64_t d,
                         int64_t inner_units, const ErrorSink& err) {
  const int64_t total = outer * k_n * inner_units;
  auto go = [&](auto zero) {
    using I = decltype(zero);
    index_select_kernel<U, I><<<grid_for(total), kBlock, 0, stream()>>>(
        static_cast<const U*>(x), static_cast<U*>(out), idx, IDiv<I>(inner_units), IDiv<I>(k_n), d,
        static_cast<I>(total), err);
  };
  if (fits_u32(total)) go(uint32_t{});
  else go(uint64_t{});
  SIAM_CUDA_LAUNCHED();
}

// dst: (outer, d, inner) contiguous; src: (outer, k_n, inner) contiguous.
template <class T, class I>
__global__ void index_add_kernel(T* dst, const T* src, const int64_t* idx, IDiv<I> inner, IDiv<I> kn, int64_t d,
                                 I total, ErrorSink err) {
  for (I flat = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; flat < total;
       flat += static_cast<I>(gridDim.x) * blockDim.x) {
    const I t = inner.div(flat), i = flat - t * inner.d;
    const I o = kn.div(t), k = t - o * kn.d;
    const int64_t j = idx[k];
    if (j < 0 || j >= d) {
      report_bad_index(err, j, static_cast<int64_t>(k));
      continue;
    }
    atomicAdd(dst + (static_cast<int64_t>(o) * d + j) * static_cast<int64_t>(inner.d) + i, src[flat]);
  }
}

template <class U> struct GatherF {
  const U* x;
  U* out;
  const int64_t* idx;
  int64_t xs, d;
  ErrorSink err;
  __device__ inline void operator()(int64_t flat, const int64_t (&off)[2]) const {
    const int64_t j = idx[off[0]];
    if (j < 0 || j >= d) {
      report_bad_index(err, j, flat);
      out[flat] = U{};
      return;
    }
    out[flat] = x[off[1] + j * xs];
  }
};

template <class T> struct ScatterAddF {
  T* dst;
  const T* src;
  const int64_t* idx;
  int64_t ds, d;
  ErrorSink err;
  __device__ inline void operator()(int64_t flat, const int64_t (&off)[3]) const {
    const int64_t j = idx[off[0]];
    if (j < 0 || j >= d) {
      report_bad_index(err, j, flat);
      return;
    }
    atomicAdd(dst + off[2] + j * ds, src[off[1]]);
  }
};

// Calls BODY with `unit_t` an unsigned integer type of the element size of DTYPE (the
// selecting kernels only move bytes).
template <class F>
void by_element_size(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: return f(uint8_t{});
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
  }
  fail("index op: unsupported element size ", dtype_size(t));
}

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  require_same_device("index_select", x, {});
  const int dev = use_device(x);
  raise_recorded(dev);
  check_dim(x, dim, "index_select");
  const int64_t d = x.shape()[dim];
  Tensor ic = device_index(index, x, d, dim, "index_select");
  Tensor xc = dense(x);
  Shape out_shape = x.shape();
  out_shape[dim] = ic.numel();
  Tensor out = empty(out_shape, {x.dtype(), x.device()});
  if (out.numel() == 0) return out;
  int64_t outer, inner;
  split_at(x.shape(), dim, &outer, &inner);
  const int64_t row_bytes = inner * static_cast<int64_t>(dtype_size(x.dtype()));
  const auto xa = reinterpret_cast<uintptr_t>(xc.raw_data()), oa = reinterpret_cast<uintptr_t>(out.raw_data());
  int64_t unit = 16;
  while (unit > 1 && (row_bytes % unit != 0 || xa % unit != 0 || oa % unit != 0)) unit /= 2;
  ErrorSink err = sink_for(kIndexSelect, dev, dim, d);
  const int64_t* pi = dptr<int64_t>(ic);
  const int64_t units = row_bytes / unit;
  switch (unit) {
    case 16: launch_index_select<uint4>(xc.raw_data(), out.raw_data(), pi, outer, ic.numel(), d, units, err); break;
    case 8: launch_index_select<uint64_t>(xc.raw_data(), out.raw_data(), pi, outer, ic.numel(), d, units, err); break;
    case 4: launch_index_select<uint32_t>(xc.raw_data(), out.raw_data(), pi, outer, ic.numel(), d, units, err); break;
    case 2: launch_index_select<uint16_t>(xc.raw_data(), out.raw_data(), pi, outer, ic.numel(), d, units, err); break;
    default: launch_index_select<uint8_t>(xc.raw_data(), out.raw_data(), pi, outer, ic.numel(), d, units, err); break;
  }
  return out;
}

void index_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  require_same_device("index_add_", dst, {&src});
  const int dev = use_device(dst);
  raise_recorded(dev);
  same_dtype(dst, src, "index_add_");
  SIAM_CHECK(dst.is_contiguous(), "index_add_ into a non-contiguous tensor");
  check_dim(dst, dim, "index_add_");
  const int64_t d = dst.shape()[dim];
  Tensor ic = device_index(index, dst, d, dim, "index_add_");
  Shape want = dst.shape();
  want[dim] = ic.numel();
  if (src.shape() != want)
    fail("index_add_: source ", shape_str(src.shape()), " should be ", shape_str(want), " for ", ic.numel(),
         " indices into ", shape_str(dst.shape()));
  if (src.numel() == 0) return;
  Tensor sc = dense(src);
  int64_t outer, inner;
  split_at(dst.shape(), dim, &outer, &inner);
  ErrorSink err = sink_for(kIndexAdd, dev, dim, d);
  const int64_t total = sc.numel(), k_n = ic.numel();
  SIAM_CUDA_DISPATCH_FLOAT(dst.dtype(), "index_add_", [&] {
    auto go = [&](auto zero) {
      using I = decltype(zero);
      index_add_kernel<scalar_t, I><<<grid_for(total), kBlock, 0, stream()>>>(
          dptr<scalar_t>(dst), dptr<scalar_t>(sc), dptr<int64_t>(ic), IDiv<I>(inner), IDiv<I>(k_n), d,
          static_cast<I>(total), err);
    };
    if (fits_u32(total)) go(uint32_t{});
    else go(uint64_t{});
    SIAM_CUDA_LAUNCHED();
  });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  require_same_device("gather", x, {});
  const int dev = use_device(x);
  raise_recorded(dev);
  check_dim(x, dim, "gather");
  check_gather_shape(x.shape(), index.shape(), dim, "gather");
  const int64_t d = x.shape()[dim];
  Tensor ic = device_index(index, x, d, dim, "gather");
  Tensor out = empty(ic.shape(), {x.dtype(), x.device()});
  if (out.numel() == 0) return out;
  ErrorSink err = sink_for(kGather, dev, dim, d);
  const int64_t xs = x.strides()[dim];
  by_element_size(x.dtype(), [&](auto zero) {
    using U = decltype(zero);
    GatherF<U> f{static_cast<const U*>(x.raw_data()), static_cast<U*>(out.raw_data()), dptr<int64_t>(ic), xs, d, err};
    strided_apply<2>(ic.shape(), {ic.strides(), strides_without(x, dim)}, f);
  });
  return out;
}

void scatter_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  require_same_device("scatter_add_", dst, {&src});
  const int dev = use_device(dst);
  raise_recorded(dev);
  same_dtype(dst, src, "scatter_add_");
  SIAM_CHECK(dst.is_contiguous(), "scatter_add_ into a non-contiguous tensor");
  check_dim(dst, dim, "scatter_add_");
  check_gather_shape(dst.shape(), index.shape(), dim, "scatter_add_");
  if (src.shape() != index.shape())
    fail("scatter_add_: source ", shape_str(src.shape()), " and index ", shape_str(index.shape()),
         " must have the same shape");
  const int64_t d = dst.shape()[dim];
  Tensor ic = device_index(index, dst, d, dim, "scatter_add_");
  if (ic.numel() == 0) return;
  ErrorSink err = sink_for(kScatterAdd, dev, dim, d);
  const int64_t ds = dst.strides()[dim];
  SIAM_CUDA_DISPATCH_FLOAT(dst.dtype(), "scatter_add_", [&] {
    ScatterAddF<scalar_t> f{dptr<scalar_t>(dst), dptr<scalar_t>(src), dptr<int64_t>(ic), ds, d, err};
    strided_apply<3>(ic.shape(), {ic.strides(), src.strides(), strides_without(dst, dim)}, f);
  });
}

void check_index_errors(int device) {
  SIAM_CUDA_CHECK(cudaSetDevice(device));
  SIAM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  raise_recorded(device);
}

}  // namespace siam::gpu
