// Convolution on cuDNN: the CUDA twin of kernels/cpu/conv.cpp. Every function writes (=) a
// fresh output; the bias gradient is a deterministic reduction of our own.
//
// Layouts. cuDNN gets every operand of one call in one format, described with explicit strides:
// channels-last (NHWC memory behind the logical (N, C, H, W) shape, PyTorch's channels_last)
// when the activation is channels-last (x for the forward and the weight gradient, gy for the
// input gradient), NCHW-packed otherwise; f64 (verification only) always NCHW. An operand in
// another layout is copied into the call's format first; for a channels-last call that is
// usually the weight, (O, C/g, kH, kW) memory copied to (O, kH, kW, C/g), unless the weight is
// kept channels-last. y and dx come back in the call's format; dw is always a contiguous
// (O, C/g, kH, kW) tensor, the layout of the parameter it is the gradient of.
//
// Math: bf16 on tensor cores (CUDNN_TENSOR_OP_MATH, f32 accumulation); f32 with TF32 tensor cores
// (CUDNN_DEFAULT_MATH) when kernels::allow_tf32(), else strict: FMA only (CUDNN_FMA_MATH) and
// only the algorithms that sum products directly (no FFT or Winograd transforms, whose rounding
// differs from a dot product's); f64 plain.
//
// Algorithms come from cuDNN's heuristics (cudnnGet*Algorithm_v7: no benchmarking, no host
// synchronisation), in cuDNN's ranking with the deterministic ones first (same inputs, same
// bits), without those needing more than kMaxWorkspace bytes of workspace. The list is cached
// per problem (pass, device, dtype, math, format, shapes, geometry); an algorithm that cuDNN
// refuses at run time as unsupported is dropped and the next one tried. Workspace comes from the
// stream-ordered pool on every call. One cuDNN handle per (host thread, device), bound to
// gpu::stream() and made on first use: run one step uncaptured before capturing a CUDA graph.
#include "kernels/cuda/conv.h"

#include <cudnn.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/precision.h"

namespace siam::gpu {

using kernels::ConvGeometry;

namespace {

#define SIAM_CUDNN_CHECK(expr)                                                             \
  do {                                                                                     \
    cudnnStatus_t s_ = (expr);                                                             \
    if (s_ != CUDNN_STATUS_SUCCESS)                                                        \
      ::siam::fail(__FILE__, ":", __LINE__, ": ", #expr, ": ", cudnnGetErrorString(s_));   \
  } while (0)

constexpr int kMaxDevices = 16;
constexpr size_t kMaxWorkspace = size_t(1) << 30;

// Per host thread (cudaStreamPerThread differs per thread, and a handle is not meant for two
// threads at once). Never destroyed: at process exit the CUDA runtime may already be gone.
cudnnHandle_t cudnn_handle(int device) {
  if (device < 0 || device >= kMaxDevices)
    fail("conv2d: device cuda:", device, " is beyond the ", kMaxDevices, " devices siam supports");
  thread_local cudnnHandle_t handles[kMaxDevices] = {};
  if (!handles[device]) {
    SIAM_CUDNN_CHECK(cudnnCreate(&handles[device]));
    SIAM_CUDNN_CHECK(cudnnSetStream(handles[device], stream()));
  }
  return handles[device];
}

enum class Fmt { nchw, nhwc };

// Strides of an (N, C, H, W) tensor packed in format f.
Shape packed_strides(const Shape& s, Fmt f) {
  int64_t C = s[1], H = s[2], W = s[3];
  if (f == Fmt::nchw) return {C * H * W, H * W, W, 1};
  return {H * W * C, 1, W * C, C};
}

// Whether t's memory is packed in format f (a dim of size 1 may have any stride).
bool is_packed(const Tensor& t, Fmt f) {
  Shape want = packed_strides(t.shape(), f);
  for (int d = 0; d < 4; ++d)
    if (t.shape()[d] > 1 && t.strides()[d] != want[d]) return false;
  return true;
}

// Channels-last and not also NCHW (C == 1 or H * W == 1 make the two the same memory; those go
// as NCHW).
bool is_channels_last(const Tensor& t) { return !is_packed(t, Fmt::nchw) && is_packed(t, Fmt::nhwc); }

Fmt format_for(const Tensor& activation) {
  return activation.dtype() != DType::f64 && is_channels_last(activation) ? Fmt::nhwc : Fmt::nchw;
}

// t (N, C, H, W) packed in format f at a 16-byte aligned address (cuDNN's vector loads): t
// itself, or a copy.
Tensor in_format(const Tensor& t, Fmt f) {
  if (is_packed(t, f) && reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0) return t;
  if (f == Fmt::nchw) return copy_to(t, t.device(), t.dtype());
  const Shape& s = t.shape();
  const Shape& st = t.strides();
  Tensor nhwc = copy_to(t.as_strided({s[0], s[2], s[3], s[1]}, {st[0], st[2], st[3], st[1]}, t.offset()),
                        t.device(), t.dtype());
  return nhwc.as_strided(s, packed_strides(s, Fmt::nhwc), 0);
}

// A new (N, C, H, W) tensor packed in format f.
Tensor empty_in(const Shape& s, Fmt f, const Tensor& like) {
  TensorOptions o{like.dtype(), like.device()};
  if (f == Fmt::nchw) return empty(s, o);
  return empty({s[0], s[2], s[3], s[1]}, o).as_strided(s, packed_strides(s, Fmt::nhwc), 0);
}

int to_int(int64_t v) {
  if (v > INT_MAX) fail("conv2d: size or stride ", v, " exceeds cuDNN's int range");
  return static_cast<int>(v);
}

cudnnDataType_t cudnn_type(DType t) {
  switch (t) {
    case DType::f32: return CUDNN_DATA_FLOAT;
    case DType::f64: return CUDNN_DATA_DOUBLE;
    case DType::bf16: return CUDNN_DATA_BFLOAT16;
    default: break;
  }
  fail("conv2d: CUDA kernel takes f32, f64 or bf16, got ", dtype_name(t));
}

cudnnMathType_t requested_math(DType t) {
  if (t == DType::bf16) return CUDNN_TENSOR_OP_MATH;
  if (t == DType::f32) return kernels::allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  return CUDNN_DEFAULT_MATH;
}

struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { SIAM_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  void set(const Shape& s, Fmt f, DType t) {
    Shape st = packed_strides(s, f);
    SIAM_CUDNN_CHECK(cudnnSetTensor4dDescriptorEx(d, cudnn_type(t), to_int(s[0]), to_int(s[1]), to_int(s[2]),
                                                  to_int(s[3]), to_int(st[0]), to_int(st[1]), to_int(st[2]),
                                                  to_int(st[3])));
  }
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { SIAM_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d)); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  void set(const Shape& w, Fmt f, DType t) {
    SIAM_CUDNN_CHECK(cudnnSetFilter4dDescriptor(d, cudnn_type(t), f == Fmt::nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                                to_int(w[0]), to_int(w[1]), to_int(w[2]), to_int(w[3])));
  }
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { SIAM_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d)); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  void set(const ConvGeometry& p, DType t) {
    SIAM_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d, to_int(p.pad_h), to_int(p.pad_w), to_int(p.stride_h),
                                                     to_int(p.stride_w), to_int(p.dil_h), to_int(p.dil_w),
                                                     CUDNN_CROSS_CORRELATION,
                                                     t == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT));
    SIAM_CUDNN_CHECK(cudnnSetConvolutionGroupCount(d, to_int(p.groups)));
  }
};

enum class Pass { forward, grad_input, grad_weight };
const char* pass_name(Pass p) {
  return p == Pass::forward ? "forward" : p == Pass::grad_input ? "input gradient" : "weight gradient";
}

// Whether an algorithm sums products directly (implicit / explicit GEMM, direct): the ones
// strict f32 may use.
bool sums_directly(Pass pass, int algo) {
  switch (pass) {
    case Pass::forward:
      return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
             algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || algo == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    case Pass::grad_input:
      return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    case Pass::grad_weight:
      return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
             algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  }
  return false;
}

// One convolution call: x (N, C, H, W), w (O, C/g, kH, kW), y (N, O, Ho, Wo), all in one format.
// For the gradients, y is gy and x / w the gradient's shape.
struct ConvCall {
  Pass pass;
  int device;
  DType dtype;
  Fmt fmt;
  Shape x, w, y;
  ConvGeometry p;
  cudnnHandle_t handle;
  TensorDesc xd, yd;
  FilterDesc wd;
  ConvDesc cd;

  ConvCall(Pass pass_, const Tensor& like, Fmt f, const Shape& x_, const Shape& w_, const Shape& y_,
           const ConvGeometry& p_)
      : pass(pass_), device(like.device().index), dtype(like.dtype()), fmt(f), x(x_), w(w_), y(y_), p(p_),
        handle(cudnn_handle(like.device().index)) {
    xd.set(x, fmt, dtype);
    yd.set(y, fmt, dtype);
    wd.set(w, fmt, dtype);
    cd.set(p, dtype);
  }

  std::string describe() const {
    return std::string("conv2d ") + pass_name(pass) + ": x " + shape_str(x) + ", w " + shape_str(w) + ", y " +
           shape_str(y) + ", stride " + std::to_string(p.stride_h) + "x" + std::to_string(p.stride_w) + ", padding " +
           std::to_string(p.pad_h) + "x" + std::to_string(p.pad_w) + ", dilation " + std::to_string(p.dil_h) + "x" +
           std::to_string(p.dil_w) + ", groups " + std::to_string(p.groups) + ", " + dtype_name(dtype) +
           (fmt == Fmt::nhwc ? ", channels-last" : ", NCHW");
  }

  std::vector<int64_t> key(cudnnMathType_t math) const {
    std::vector<int64_t> k{int64_t(pass), device, int64_t(dtype), int64_t(math), int64_t(fmt)};
    for (const Shape* s : {&x, &w}) k.insert(k.end(), s->begin(), s->end());
    k.insert(k.end(), {p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups});
    return k;
  }

  // The workspace algo needs with the descriptor's current math type; false if cuDNN refuses.
  bool workspace(int algo, size_t* bytes) {
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    switch (pass) {
      case Pass::forward:
        s = cudnnGetConvolutionForwardWorkspaceSize(handle, xd.d, wd.d, cd.d, yd.d, cudnnConvolutionFwdAlgo_t(algo),
                                                    bytes);
        break;
      case Pass::grad_input:
        s = cudnnGetConvolutionBackwardDataWorkspaceSize(handle, wd.d, yd.d, cd.d, xd.d,
                                                         cudnnConvolutionBwdDataAlgo_t(algo), bytes);
        break;
      case Pass::grad_weight:
        s = cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, xd.d, yd.d, cd.d, wd.d,
                                                           cudnnConvolutionBwdFilterAlgo_t(algo), bytes);
        break;
    }
    return s == CUDNN_STATUS_SUCCESS;
  }
};

struct Candidate {
  int algo;
  cudnnMathType_t math;
  size_t workspace;
};

struct Ranked {
  int algo;
  cudnnStatus_t status;
  cudnnMathType_t math;
  cudnnDeterminism_t determinism;
};

template <class Perf>
void collect(const std::vector<Perf>& perf, int n, std::vector<Ranked>& out) {
  for (int i = 0; i < n; ++i)
    out.push_back({int(perf[i].algo), perf[i].status, perf[i].mathType, perf[i].determinism});
}

// cuDNN's heuristic ranking for the call, filtered and reordered as the file comment says.
std::vector<Candidate> find_candidates(ConvCall& c, cudnnMathType_t math) {
  int n_out = 0, h_out = 0, w_out = 0, c_out = 0;
  SIAM_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(c.cd.d, c.xd.d, c.wd.d, &n_out, &c_out, &h_out, &w_out));
  SIAM_CHECK(Shape({n_out, c_out, h_out, w_out}) == c.y, "cuDNN's output shape ",
             shape_str({n_out, c_out, h_out, w_out}), " differs from siam's for ", c.describe());

  std::vector<Ranked> ranked;
  int max = 0, n = 0;
  switch (c.pass) {
    case Pass::forward: {
      SIAM_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(c.handle, &max));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max, 1));
      SIAM_CUDNN_CHECK(cudnnSetConvolutionMathType(c.cd.d, math));
      SIAM_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(c.handle, c.xd.d, c.wd.d, c.cd.d, c.yd.d, max, &n,
                                                              perf.data()));
      collect(perf, n, ranked);
      break;
    }
    case Pass::grad_input: {
      SIAM_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(c.handle, &max));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max, 1));
      SIAM_CUDNN_CHECK(cudnnSetConvolutionMathType(c.cd.d, math));
      SIAM_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(c.handle, c.wd.d, c.yd.d, c.cd.d, c.xd.d, max, &n,
                                                                   perf.data()));
      collect(perf, n, ranked);
      break;
    }
    case Pass::grad_weight: {
      SIAM_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(c.handle, &max));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(max, 1));
      SIAM_CUDNN_CHECK(cudnnSetConvolutionMathType(c.cd.d, math));
      SIAM_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(c.handle, c.xd.d, c.yd.d, c.cd.d, c.wd.d, max,
                                                                     &n, perf.data()));
      collect(perf, n, ranked);
      break;
    }
  }

  bool strict = c.dtype == DType::f32 && math == CUDNN_FMA_MATH;
  std::vector<Candidate> det, nondet;
  for (const Ranked& r : ranked) {
    if (r.status != CUDNN_STATUS_SUCCESS) continue;
    if (strict && !sums_directly(c.pass, r.algo)) continue;
    // The heuristic may rank an algorithm under another math type than asked; strict f32 runs it
    // with FMA only, the other modes as ranked.
    cudnnMathType_t run_math = strict ? CUDNN_FMA_MATH : r.math;
    bool seen = false;
    for (const auto* list : {&det, &nondet})
      for (const Candidate& k : *list) seen = seen || (k.algo == r.algo && k.math == run_math);
    if (seen) continue;
    SIAM_CUDNN_CHECK(cudnnSetConvolutionMathType(c.cd.d, run_math));
    size_t bytes = 0;
    if (!c.workspace(r.algo, &bytes) || bytes > kMaxWorkspace) continue;
    (r.determinism == CUDNN_DETERMINISTIC ? det : nondet).push_back({r.algo, run_math, bytes});
  }
  det.insert(det.end(), nondet.begin(), nondet.end());
  if (det.empty()) fail("cuDNN offers no usable algorithm for ", c.describe());
  return det;
}

std::mutex algo_mutex;
std::map<std::vector<int64_t>, std::vector<Candidate>> algo_cache;

bool not_supported(cudnnStatus_t s) { return int(s) >= int(CUDNN_STATUS_NOT_SUPPORTED) && int(s) < 4000; }

// Runs the call with the first candidate cuDNN accepts. run(algo, workspace, bytes) enqueues the
// cuDNN call and returns its status.
template <class Run>
void execute(ConvCall& c, Run run) {
  cudnnMathType_t math = requested_math(c.dtype);
  std::vector<int64_t> key = c.key(math);
  std::vector<Candidate> cands;
  {
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = algo_cache.find(key);
    if (it == algo_cache.end()) it = algo_cache.emplace(key, find_candidates(c, math)).first;
    cands = it->second;
  }
  cudnnStatus_t last = CUDNN_STATUS_SUCCESS;
  for (const Candidate& k : cands) {
    SIAM_CUDNN_CHECK(cudnnSetConvolutionMathType(c.cd.d, k.math));
    Tensor ws = k.workspace ? empty({int64_t(k.workspace)}, {DType::u8, Device::cuda(c.device)}) : Tensor();
    last = run(k.algo, ws.defined() ? ws.raw_data() : nullptr, k.workspace);
    if (last == CUDNN_STATUS_SUCCESS) return;
    if (!not_supported(last))
      fail("cuDNN failed on ", c.describe(), " (algorithm ", k.algo, "): ", cudnnGetErrorString(last));
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = algo_cache.find(key);
    if (it != algo_cache.end()) {
      auto& list = it->second;
      list.erase(std::remove_if(list.begin(), list.end(),
                                [&](const Candidate& x) { return x.algo == k.algo && x.math == k.math; }),
                 list.end());
      if (list.empty()) algo_cache.erase(it);
    }
  }
  fail("cuDNN ran none of its algorithms for ", c.describe(), ": ", cudnnGetErrorString(last));
}

// alpha = 1 and beta = 0 in the type cuDNN scales with: double for f64 data, float otherwise.
struct Scale {
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  bool dbl;
  explicit Scale(DType t) : dbl(t == DType::f64) {}
  const void* one() const { return dbl ? static_cast<const void*>(&d1) : &f1; }
  const void* zero() const { return dbl ? static_cast<const void*>(&d0) : &f0; }
};

// y (N, O, ...) packed: channel of flat element i is (i / inner) % O (inner = Ho * Wo for NCHW,
// 1 for channels-last). y[i] += bias[channel].
template <class T>
__global__ void add_channel_bias(T* y, const T* bias, int64_t bias_stride, int64_t total, int64_t O, int64_t inner) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = (i / inner) % O;
    y[i] = from_acc<T>(to_acc(y[i]) + to_acc(bias[o * bias_stride]));
  }
}

// Sum of v over a block of kBlock threads in a fixed order; every thread gets the result.
__device__ double block_sum(double v) {
  __shared__ double buf[kBlock];
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int s = kBlock / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  return buf[0];
}

// gy seen as (N, O, L) with strides (sn, so, sl): block (o, s) sums values [s * chunk, (s + 1) *
// chunk) of channel o's N * L into partial[o * gridDim.y + s], in double.
template <class T>
__global__ void bias_grad_planes(const T* gy, double* partial, int64_t N, int64_t L, int64_t sn, int64_t so,
                                 int64_t sl, int64_t chunk) {
  int64_t o = blockIdx.x, s = blockIdx.y, total = N * L;
  int64_t begin = s * chunk, end = begin + chunk < total ? begin + chunk : total;
  const T* base = gy + o * so;
  double acc = 0;
  for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x) {
    int64_t n = r / L, l = r - n * L;
    acc += static_cast<double>(to_acc(base[n * sn + l * sl]));
  }
  double t = block_sum(acc);
  if (threadIdx.x == 0) partial[o * gridDim.y + s] = t;
}

// Channels-last gy seen as (R, O) rows with row stride sr and unit channel stride: block (bx, s)
// takes channels [32 bx, 32 bx + 32) (one per thread column, so a warp reads 32 neighbours) and
// rows [s * chunk, (s + 1) * chunk), eight row threads per channel.
constexpr int kCols = 32, kRowThreads = 8;
template <class T>
__global__ void bias_grad_rows(const T* gy, double* partial, int64_t R, int64_t O, int64_t sr, int64_t chunk) {
  __shared__ double buf[kRowThreads][kCols];
  int64_t o = blockIdx.x * int64_t(kCols) + threadIdx.x, s = blockIdx.y;
  int64_t begin = s * chunk, end = begin + chunk < R ? begin + chunk : R;
  double acc = 0;
  if (o < O)
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowThreads) acc += static_cast<double>(to_acc(gy[r * sr + o]));
  buf[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && o < O) {
    double t = 0;
    for (int i = 0; i < kRowThreads; ++i) t += buf[i][threadIdx.x];
    partial[o * gridDim.y + s] = t;
  }
}

// db[o] = sum of o's S partials, in order.
template <class T>
__global__ void bias_grad_finish(const double* partial, T* db, int64_t O, int64_t S) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < O; o += int64_t(gridDim.x) * blockDim.x) {
    double t = 0;
    for (int64_t s = 0; s < S; ++s) t += partial[o * S + s];
    db[o] = from_acc<T>(t);
  }
}

// Splits `total` values into S slices so that about kTargetBlocks blocks run in all.
constexpr int64_t kTargetBlocks = 1024;
void split(int64_t total, int64_t columns, int64_t per_block_min, int64_t* S, int64_t* chunk) {
  int64_t s = (kTargetBlocks + columns - 1) / columns;
  s = std::min({s, (total + per_block_min - 1) / per_block_min, int64_t(65535)});
  s = std::max<int64_t>(s, 1);
  *chunk = (total + s - 1) / s;
  *S = (total + *chunk - 1) / *chunk;
}

void check_dtype(const char* op, const Tensor& t) {
  DType d = t.dtype();
  if (d != DType::f32 && d != DType::f64 && d != DType::bf16)
    fail(op, ": CUDA kernel takes f32, f64 or bf16, got ", dtype_name(d));
}

// t must be 4-D and share ref's CUDA device and dtype.
void check_operand(const char* op, const char* name, const Tensor& t, const Tensor& ref) {
  if (!t.device().is_cuda() || t.device() != ref.device())
    fail(op, ": operands must be on one CUDA device, got ", name, " on ", t.device().str(), " and ",
         ref.device().str());
  if (t.dtype() != ref.dtype())
    fail(op, ": dtype mismatch, ", name, " is ", dtype_name(t.dtype()), ", expected ", dtype_name(ref.dtype()));
  if (t.dim() != 4 && std::string(name) != "bias")
    fail(op, ": ", name, " must be 4-D, got ", shape_str(t.shape()));
}

Shape out_shape(const Shape& x, const Shape& w, const ConvGeometry& p) {
  return {x[0], w[0], kernels::conv_out_size(x[2], w[2], p.stride_h, p.pad_h, p.dil_h),
          kernels::conv_out_size(x[3], w[3], p.stride_w, p.pad_w, p.dil_w)};
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias, const ConvGeometry& p) {
  check_operand("conv2d", "x", x_in, x_in);
  check_dtype("conv2d", x_in);
  check_operand("conv2d", "w", w_in, x_in);
  if (bias.defined()) check_operand("conv2d", "bias", bias, x_in);
  use_device(x_in);
  Fmt f = format_for(x_in);
  Shape ys = out_shape(x_in.shape(), w_in.shape(), p);
  Tensor y = empty_in(ys, f, x_in);
  if (y.numel() == 0) return y;
  if (x_in.numel() == 0 || w_in.numel() == 0) {
    fill_(y, 0.0);
  } else {
    Tensor x = in_format(x_in, f), w = in_format(w_in, f);
    ConvCall c(Pass::forward, x, f, x.shape(), w.shape(), ys, p);
    Scale sc(x.dtype());
    execute(c, [&](int algo, void* ws, size_t bytes) {
      return cudnnConvolutionForward(c.handle, sc.one(), c.xd.d, x.raw_data(), c.wd.d, w.raw_data(), c.cd.d,
                                     cudnnConvolutionFwdAlgo_t(algo), ws, bytes, sc.zero(), c.yd.d, y.raw_data());
    });
  }
  if (bias.defined()) {
    int64_t total = y.numel(), O = ys[1], inner = f == Fmt::nchw ? ys[2] * ys[3] : 1;
    SIAM_CUDA_DISPATCH_FLOAT(y.dtype(), "conv2d", [&] {
      add_channel_bias<scalar_t><<<grid_for(total), kBlock, 0, stream()>>>(dptr<scalar_t>(y), dptr<scalar_t>(bias),
                                                                          bias.stride(0), total, O, inner);
      SIAM_CUDA_LAUNCHED();
    });
  }
  return y;
}

Tensor conv2d_grad_input(const Tensor& gy_in, const Tensor& w_in, const Shape& x_shape, const ConvGeometry& p) {
  check_operand("conv2d backward", "gy", gy_in, gy_in);
  check_dtype("conv2d backward", gy_in);
  check_operand("conv2d backward", "w", w_in, gy_in);
  if (x_shape.size() != 4) fail("conv2d backward: x shape must be 4-D, got ", shape_str(x_shape));
  use_device(gy_in);
  Fmt f = format_for(gy_in);
  Tensor dx = empty_in(x_shape, f, gy_in);
  if (dx.numel() == 0) return dx;
  if (gy_in.numel() == 0 || w_in.numel() == 0) {
    fill_(dx, 0.0);
    return dx;
  }
  Tensor gy = in_format(gy_in, f), w = in_format(w_in, f);
  ConvCall c(Pass::grad_input, gy, f, x_shape, w.shape(), gy.shape(), p);
  Scale sc(gy.dtype());
  execute(c, [&](int algo, void* ws, size_t bytes) {
    return cudnnConvolutionBackwardData(c.handle, sc.one(), c.wd.d, w.raw_data(), c.yd.d, gy.raw_data(), c.cd.d,
                                        cudnnConvolutionBwdDataAlgo_t(algo), ws, bytes, sc.zero(), c.xd.d,
                                        dx.raw_data());
  });
  return dx;
}

Tensor conv2d_grad_weight(const Tensor& gy_in, const Tensor& x_in, const Shape& w_shape, const ConvGeometry& p) {
  check_operand("conv2d backward", "gy", gy_in, gy_in);
  check_dtype("conv2d backward", gy_in);
  check_operand("conv2d backward", "x", x_in, gy_in);
  if (w_shape.size() != 4) fail("conv2d backward: weight shape must be 4-D, got ", shape_str(w_shape));
  use_device(gy_in);
  if (shape_numel(w_shape) == 0) return empty(w_shape, {gy_in.dtype(), gy_in.device()});
  if (gy_in.numel() == 0 || x_in.numel() == 0) return zeros(w_shape, {gy_in.dtype(), gy_in.device()});
  Fmt f = format_for(x_in);
  Tensor x = in_format(x_in, f), gy = in_format(gy_in, f);
  Tensor dw = empty_in(w_shape, f, gy);
  ConvCall c(Pass::grad_weight, gy, f, x.shape(), w_shape, gy.shape(), p);
  Scale sc(gy.dtype());
  execute(c, [&](int algo, void* ws, size_t bytes) {
    return cudnnConvolutionBackwardFilter(c.handle, sc.one(), c.xd.d, x.raw_data(), c.yd.d, gy.raw_data(), c.cd.d,
                                          cudnnConvolutionBwdFilterAlgo_t(algo), ws, bytes, sc.zero(), c.wd.d,
                                          dw.raw_data());
  });
  // The parameter's layout, whatever the call's.
  return f == Fmt::nchw ? dw : copy_to(dw, dw.device(), dw.dtype());
}

Tensor conv2d_grad_bias(const Tensor& gy_in) {
  check_operand("conv2d backward", "gy", gy_in, gy_in);
  check_dtype("conv2d backward", gy_in);
  int dev = use_device(gy_in);
  int64_t N = gy_in.size(0), O = gy_in.size(1), H = gy_in.size(2), W = gy_in.size(3);
  Tensor db = empty({O}, {gy_in.dtype(), gy_in.device()});
  if (O == 0) return db;
  if (N * H * W == 0) {
    fill_(db, 0.0);
    return db;
  }
  Tensor gy = gy_in;
  bool rows = is_channels_last(gy);
  int64_t sl = 0;
  if (!rows) {
    // The plane (H, W) must be one run of stride sl.
    const Shape& st = gy.strides();
    if (W == 1) sl = st[2];
    else if (H == 1 || st[2] == W * st[3]) sl = st[3];
    else {
      gy = copy_to(gy_in, gy_in.device(), gy_in.dtype());
      sl = 1;
    }
  }
  int64_t S = 1, chunk = 1;
  if (rows) split(N * H * W, (O + kCols - 1) / kCols, kRowThreads, &S, &chunk);
  else split(N * H * W, O, kBlock, &S, &chunk);
  Tensor partial = empty({O * S}, {DType::f64, Device::cuda(dev)});
  SIAM_CUDA_DISPATCH_FLOAT(gy.dtype(), "conv2d backward", [&] {
    if (rows) {
      dim3 grid{static_cast<unsigned>((O + kCols - 1) / kCols), static_cast<unsigned>(S)}, block{kCols, kRowThreads};
      // Row r = (n, h, w) starts at r * O in packed channels-last memory (a size-1 dim's stride
      // is never used).
      bias_grad_rows<scalar_t><<<grid, block, 0, stream()>>>(dptr<scalar_t>(gy), dptr<double>(partial), N * H * W, O,
                                                              O, chunk);
    } else {
      dim3 grid{static_cast<unsigned>(O), static_cast<unsigned>(S)};
      bias_grad_planes<scalar_t><<<grid, kBlock, 0, stream()>>>(dptr<scalar_t>(gy), dptr<double>(partial), N, H * W,
                                                                 gy.stride(0), gy.stride(1), sl, chunk);
    }
    SIAM_CUDA_LAUNCHED();
    bias_grad_finish<scalar_t><<<grid_for(O), kBlock, 0, stream()>>>(dptr<double>(partial), dptr<scalar_t>(db), O, S);
    SIAM_CUDA_LAUNCHED();
  });
  return db;
}

}  // namespace siam::gpu
