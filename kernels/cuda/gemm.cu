// GEMM on cuBLASLt: the CUDA twin of kernels/cpu/gemm.cpp. Writes (=) c when beta = 0, else
// accumulates (+=) into beta * c.
//
// cuBLAS is column-major and siam row-major: a row-major c (m, n) is the column-major c^T (n, m)
// = op(b)^T op(a)^T, so b goes to cuBLASLt as its matrix "A" and a as its "B". A matrix with a
// unit stride in either of its last two dims goes as it lies (a transposed view costs nothing);
// other layouts are copied first, as on the CPU. A column-major c computes its transpose.
//
// Batch dims: those along which c is a broadcast view (stride 0) sum their products into one
// matrix; the others merge wherever the strides of a, b and c allow, and the innermost run of
// merged dims becomes cuBLASLt's strided batch (an operand with batch stride 0 is shared by the
// whole batch). Whatever does not merge, and the summed dims, loop on the host: the first pass
// over each c matrix applies beta, the later ones add with beta = 1.
//
// One cuBLASLt handle and a 32 MiB workspace per (host thread, device), made on the first call;
// the heuristic's algorithm is cached per problem (shapes, strides, dtype, compute type,
// transposes, epilogue, pointer alignments). All work is on gpu::stream() and nothing waits on
// the host, so once a first uncaptured call has made the handle and workspace, the calls can be
// captured into a CUDA graph.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"
#include "kernels/precision.h"

namespace siam::gpu {
namespace {

#define SIAM_CUBLAS_CHECK(expr)                                                              \
  do {                                                                                       \
    cublasStatus_t s_ = (expr);                                                              \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                         \
      ::siam::fail(__FILE__, ":", __LINE__, ": ", #expr, ": ", cublasLtGetStatusString(s_)); \
  } while (0)

constexpr int kMaxDevices = 16;
constexpr size_t kWorkspaceBytes = size_t(32) << 20;
// A larger batch goes to cuBLASLt in several calls: some of its kernels put the batch on a grid
// dimension limited to 65535.
constexpr int64_t kMaxBatch = 65535;

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  Tensor* workspace = nullptr;
};

// Per host thread because cudaStreamPerThread is a different stream on each thread and one
// workspace must not serve two streams at once. Never destroyed: at process exit the CUDA
// runtime may already be gone.
LtContext& lt_context(int device) {
  if (device < 0 || device >= kMaxDevices)
    fail("gemm: device cuda:", device, " is beyond the ", kMaxDevices, " devices siam supports");
  thread_local LtContext ctx[kMaxDevices];
  LtContext& c = ctx[device];
  if (!c.handle) {
    SIAM_CUBLAS_CHECK(cublasLtCreate(&c.handle));
    c.workspace = new Tensor(empty({int64_t(kWorkspaceBytes)}, {DType::u8, Device::cuda(device)}));
  }
  return c;
}

// How a row-major reader sees a (rows, cols) matrix with strides (sr, sc): as it lies with
// leading dimension ld, or as the transpose of a row-major (cols, rows) matrix. nullopt: no unit
// stride. (The CPU twin's rule, so both take and copy the same layouts.)
struct Layout {
  bool trans;
  int64_t ld;
};
std::optional<Layout> blas_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc) {
  if ((cols == 1 || sc == 1) && (rows == 1 || sr >= cols)) return Layout{false, rows == 1 ? cols : sr};
  if ((rows == 1 || sr == 1) && (cols == 1 || sc >= rows)) return Layout{true, cols == 1 ? rows : sc};
  return std::nullopt;
}

// A row-major view M (rows, cols) with layout l, as cuBLASLt reads M^T: the column-major
// (cols, rows) matrix M's memory is (op N), or the transpose (op T) of the column-major
// (rows, cols) matrix that a transposed layout's memory is.
struct LtMatrix {
  cublasOperation_t op;
  uint64_t rows, cols;
  int64_t ld;
  int64_t batch_stride;
};
LtMatrix lt_matrix(int64_t rows, int64_t cols, Layout l, int64_t batch_stride) {
  if (!l.trans) return {CUBLAS_OP_N, uint64_t(cols), uint64_t(rows), l.ld, batch_stride};
  return {CUBLAS_OP_T, uint64_t(rows), uint64_t(cols), l.ld, batch_stride};
}

// One cuBLASLt call's problem: D (= C) = alpha * op(A) op(B) + beta * C, `batch` times.
struct Problem {
  int device;
  DType dtype;
  cublasComputeType_t compute;
  LtMatrix a, b, d;  // cuBLASLt's A (siam's b), B (siam's a), C = D (siam's c)
  int64_t batch;
  cublasLtEpilogue_t epilogue;
};

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    default: break;
  }
  fail("gemm: CUDA kernel takes f32, f64 or bf16, got ", dtype_name(t));
}

// f32 may use TF32 tensor cores only when allowed; bf16 multiplies exactly and accumulates in f32.
cublasComputeType_t compute_type(DType t) {
  if (t == DType::f64) return CUBLAS_COMPUTE_64F;
  if (t == DType::f32 && kernels::allow_tf32()) return CUBLAS_COMPUTE_32F_FAST_TF32;
  return CUBLAS_COMPUTE_32F;
}

// The largest power of two up to 256 that divides the address: cuBLASLt's heuristic must only
// offer kernels whose vector loads this alignment allows.
uint32_t alignment(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

struct OpDesc {
  cublasLtMatmulDesc_t d = nullptr;
  OpDesc() = default;
  OpDesc(const OpDesc&) = delete;
  OpDesc& operator=(const OpDesc&) = delete;
  ~OpDesc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
};
struct MatDesc {
  cublasLtMatrixLayout_t d = nullptr;
  MatDesc() = default;
  MatDesc(const MatDesc&) = delete;
  MatDesc& operator=(const MatDesc&) = delete;
  ~MatDesc() {
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};
struct PrefDesc {
  cublasLtMatmulPreference_t d = nullptr;
  PrefDesc() = default;
  PrefDesc(const PrefDesc&) = delete;
  PrefDesc& operator=(const PrefDesc&) = delete;
  ~PrefDesc() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
};

template <class V>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, V v) {
  SIAM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof(v)));
}
template <class V>
void set_attr(cublasLtMatrixLayout_t d, cublasLtMatrixLayoutAttribute_t a, V v) {
  SIAM_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(d, a, &v, sizeof(v)));
}
template <class V>
void set_attr(cublasLtMatmulPreference_t d, cublasLtMatmulPreferenceAttributes_t a, V v) {
  SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d, a, &v, sizeof(v)));
}

void make_layout(MatDesc& m, cudaDataType_t t, const LtMatrix& x, int64_t batch) {
  SIAM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&m.d, t, x.rows, x.cols, x.ld));
  if (batch > 1) {
    set_attr(m.d, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, int32_t(batch));
    set_attr(m.d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, int64_t(x.batch_stride));
  }
}

std::string describe(const Problem& p) {
  uint64_t k = p.a.op == CUBLAS_OP_N ? p.a.cols : p.a.rows;
  return "c (" + std::to_string(p.d.cols) + ", " + std::to_string(p.d.rows) + ") = a (" + std::to_string(p.d.cols) +
         ", " + std::to_string(k) + ") @ b (" + std::to_string(k) + ", " + std::to_string(p.d.rows) + "), batch " +
         std::to_string(p.batch) + ", " + dtype_name(p.dtype);
}

std::mutex algo_mutex;
std::map<std::vector<int64_t>, cublasLtMatmulAlgo_t> algo_cache;

// One cuBLASLt call on siam's stream. lt_a / lt_b / d point at the first matrix of each.
void run_lt(const Problem& p, const void* lt_a, const void* lt_b, void* d, const void* bias, double alpha,
            double beta) {
  LtContext& ctx = lt_context(p.device);
  cudaDataType_t t = cuda_type(p.dtype);
  OpDesc op;
  SIAM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.d, p.compute, p.dtype == DType::f64 ? CUDA_R_64F : CUDA_R_32F));
  set_attr(op.d, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(p.a.op));
  set_attr(op.d, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(p.b.op));
  if (p.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    set_attr(op.d, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(p.epilogue));
    if (bias) set_attr(op.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  MatDesc la, lb, ld;
  make_layout(la, t, p.a, p.batch);
  make_layout(lb, t, p.b, p.batch);
  make_layout(ld, t, p.d, p.batch);

  uint32_t al_a = alignment(lt_a), al_b = alignment(lt_b), al_d = alignment(d), al_bias = bias ? alignment(bias) : 256;
  auto stride = [&](const LtMatrix& x) { return p.batch > 1 ? x.batch_stride : 0; };
  std::vector<int64_t> key{p.device, int64_t(p.dtype), int64_t(p.compute), int64_t(p.epilogue), p.batch,
                           int64_t(p.a.op), int64_t(p.a.rows), int64_t(p.a.cols), p.a.ld, stride(p.a),
                           int64_t(p.b.op), int64_t(p.b.rows), int64_t(p.b.cols), p.b.ld, stride(p.b),
                           int64_t(p.d.rows), int64_t(p.d.cols), p.d.ld, stride(p.d),
                           al_a, al_b, al_d, al_bias};
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = algo_cache.find(key);
    if (it != algo_cache.end()) {
      algo = it->second;
    } else {
      PrefDesc pref;
      SIAM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.d));
      set_attr(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(kWorkspaceBytes));
      set_attr(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_a);
      set_attr(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_b);
      set_attr(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_d);
      set_attr(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d);
      cublasLtMatmulHeuristicResult_t res{};
      int found = 0;
      cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(ctx.handle, op.d, la.d, lb.d, ld.d, ld.d, pref.d, 1, &res, &found);
      if (s != CUBLAS_STATUS_SUCCESS || found == 0)
        fail("gemm: cuBLASLt offers no algorithm for ", describe(p), " (epilogue ", int(p.epilogue), ", alignments ",
             al_a, "/", al_b, "/", al_d, " bytes): ", cublasLtGetStatusString(s));
      algo = res.algo;
      algo_cache.emplace(key, algo);
    }
  }

  void* ws = ctx.workspace->raw_data();
  if (p.dtype == DType::f64) {
    double a = alpha, b = beta;
    SIAM_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, op.d, &a, lt_a, la.d, lt_b, lb.d, &b, d, ld.d, d, ld.d, &algo, ws,
                                     kWorkspaceBytes, stream()));
  } else {
    float a = static_cast<float>(alpha), b = static_cast<float>(beta);
    SIAM_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, op.d, &a, lt_a, la.d, lt_b, lb.d, &b, d, ld.d, d, ld.d, &algo, ws,
                                     kWorkspaceBytes, stream()));
  }
}

Tensor swap_last2(const Tensor& t) {
  Shape sh = t.shape(), st = t.strides();
  std::swap(sh[sh.size() - 1], sh[sh.size() - 2]);
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return t.as_strided(sh, st, t.offset());
}

// The distinct memory of c: its broadcast (stride-0) batch dims cut to size 1.
Tensor collapse_broadcast(const Tensor& c) {
  Shape sh = c.shape();
  for (int64_t d = 0; d + 2 < c.dim(); ++d)
    if (c.strides()[d] == 0) sh[d] = 1;
  return c.as_strided(sh, c.strides(), c.offset());
}

// t's matrices copied row-major, keeping its broadcast (stride-0) batch dims unmaterialised.
Tensor dense_matrices(const Tensor& t) {
  Tensor copy = copy_to(collapse_broadcast(t), t.device(), t.dtype());
  Shape st = copy.strides();
  for (int64_t d = 0; d + 2 < t.dim(); ++d)
    if (copy.shape()[d] != t.shape()[d]) st[d] = 0;
  return copy.as_strided(t.shape(), st, 0);
}

struct Dim {
  int64_t size, sa, sb, sc;
};

// Adds dims' element offsets for flat index i (row-major over their sizes).
void add_offsets(const std::vector<Dim>& dims, int64_t i, int64_t& oa, int64_t& ob, int64_t& oc) {
  for (auto d = dims.rbegin(); d != dims.rend(); ++d) {
    int64_t j = i % d->size;
    i /= d->size;
    oa += j * d->sa;
    ob += j * d->sb;
    oc += j * d->sc;
  }
}

// a: (..., m, k), b: (..., k, n), c: (..., m, n) with c row-major in its last two dims (layout lc).
// bias (n elements, contiguous) goes with an epilogue that reads it; rank-2 problems only.
void gemm_rowmajor_c(double alpha, Tensor a, Tensor b, double beta, const Tensor& c, Layout lc,
                     cublasLtEpilogue_t epilogue, const void* bias) {
  int64_t r = c.dim(), m = c.size(-2), n = c.size(-1), k = a.size(-1);
  if (k == 0) {
    // No products: c = beta * c over its distinct memory.
    Tensor c_mem = collapse_broadcast(c);
    if (beta == 0) fill_(c_mem, 0.0);
    else if (beta != 1) kernels::scale_inplace(c_mem, beta);
    return;
  }
  if (std::max({m, n, k}) > INT_MAX) fail("gemm: a dimension of ", shape_str(c.shape()), " exceeds cuBLASLt's int range");
  auto la = blas_layout(m, k, a.stride(-2), a.stride(-1));
  if (!la) {
    a = dense_matrices(a);
    la = Layout{false, k};
  }
  auto lb = blas_layout(k, n, b.stride(-2), b.stride(-1));
  if (!lb) {
    b = dense_matrices(b);
    lb = Layout{false, n};
  }

  std::vector<Dim> summed, batch;
  for (int64_t d = 0; d + 2 < r; ++d) {
    int64_t size = c.shape()[d];
    if (size == 1) continue;
    Dim x{size, a.shape()[d] == 1 ? 0 : a.strides()[d], b.shape()[d] == 1 ? 0 : b.strides()[d], c.strides()[d]};
    (x.sc == 0 ? summed : batch).push_back(x);
  }
  // Runs of batch dims, innermost first: a dim joins the run inside it when its strides continue
  // the run's in all three operands.
  std::vector<Dim> runs;
  for (auto d = batch.rbegin(); d != batch.rend(); ++d) {
    if (!runs.empty()) {
      Dim& in = runs.back();
      if (d->sa == in.sa * in.size && d->sb == in.sb * in.size && d->sc == in.sc * in.size) {
        in.size *= d->size;
        continue;
      }
    }
    runs.push_back(*d);
  }
  Dim inner = runs.empty() ? Dim{1, 0, 0, 0} : runs.front();
  std::vector<Dim> outer;
  for (size_t i = runs.size(); i > 1; --i) outer.push_back(runs[i - 1]);  // outermost first
  int64_t n_sum = 1, n_outer = 1;
  for (const Dim& d : summed) n_sum *= d.size;
  for (const Dim& d : outer) n_outer *= d.size;

  Problem p{c.device().index, c.dtype(), compute_type(c.dtype()), lt_matrix(k, n, *lb, inner.sb),
            lt_matrix(m, k, *la, inner.sa), lt_matrix(m, n, lc, inner.sc), 1, epilogue};
  size_t es = dtype_size(c.dtype());
  const char* pa = static_cast<const char*>(a.raw_data());
  const char* pb = static_cast<const char*>(b.raw_data());
  char* pc = static_cast<char*>(c.raw_data());
  for (int64_t s = 0; s < n_sum; ++s)
    for (int64_t o = 0; o < n_outer; ++o) {
      int64_t oa = 0, ob = 0, oc = 0;
      add_offsets(summed, s, oa, ob, oc);
      add_offsets(outer, o, oa, ob, oc);
      for (int64_t first = 0; first < inner.size; first += kMaxBatch) {
        p.batch = std::min(kMaxBatch, inner.size - first);
        run_lt(p, pb + (ob + first * inner.sb) * int64_t(es), pa + (oa + first * inner.sa) * int64_t(es),
               pc + (oc + first * inner.sc) * int64_t(es), bias, alpha, s == 0 ? beta : 1.0);
      }
    }
}

void check_dtype(const char* op, const Tensor& t) {
  DType d = t.dtype();
  if (d != DType::f32 && d != DType::f64 && d != DType::bf16)
    fail(op, ": CUDA kernel takes f32, f64 or bf16, got ", dtype_name(d));
}

// t must share ref's CUDA device and dtype.
void check_operand(const char* op, const Tensor& t, const Tensor& ref) {
  if (!t.device().is_cuda() || t.device() != ref.device())
    fail(op, ": operands must be on one CUDA device, got ", t.device().str(), " and ", ref.device().str());
  if (t.dtype() != ref.dtype()) fail(op, ": dtype mismatch, ", dtype_name(t.dtype()), " and ", dtype_name(ref.dtype()));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a_in, const Tensor& b_in, double beta,
          const Tensor& c) {
  for (const Tensor* t : {&a_in, &b_in, &c}) check_operand("gemm", *t, c);
  check_dtype("gemm", c);
  if (c.dim() < 2 || a_in.dim() != c.dim() || b_in.dim() != c.dim())
    fail("gemm: a, b and c need the same rank (2 or more), got ", shape_str(a_in.shape()), ", ",
         shape_str(b_in.shape()), " and ", shape_str(c.shape()));
  Tensor a = trans_a ? swap_last2(a_in) : a_in, b = trans_b ? swap_last2(b_in) : b_in;
  int64_t r = c.dim();
  bool ok = a.size(-2) == c.size(-2) && b.size(-1) == c.size(-1) && a.size(-1) == b.size(-2);
  for (int64_t d = 0; d + 2 < r; ++d)
    for (const Tensor* t : {&a, &b}) ok = ok && (t->shape()[d] == c.shape()[d] || t->shape()[d] == 1);
  if (!ok)
    fail("gemm: op(a) ", shape_str(a.shape()), " times op(b) ", shape_str(b.shape()), " does not give c ",
         shape_str(c.shape()));
  if (c.numel() == 0) return;
  use_device(c);
  auto lc = blas_layout(c.size(-2), c.size(-1), c.stride(-2), c.stride(-1));
  if (!lc)
    fail("gemm: c ", shape_str(c.shape()), " with strides ", shape_str(c.strides()),
         " has no unit stride in its last two dims");
  // A column-major c is the row-major c^T = op(b)^T op(a)^T.
  if (lc->trans)
    gemm_rowmajor_c(alpha, swap_last2(b), swap_last2(a), beta, swap_last2(c), Layout{false, lc->ld},
                    CUBLASLT_EPILOGUE_DEFAULT, nullptr);
  else
    gemm_rowmajor_c(alpha, a, b, beta, c, *lc, CUBLASLT_EPILOGUE_DEFAULT, nullptr);
}

Tensor linear_epilogue(const Tensor& x, const Tensor& w, const Tensor& bias, kernels::Epilogue act) {
  if (!x.device().is_cuda()) fail("linear_epilogue: expected a CUDA input, got ", x.device().str());
  check_dtype("linear_epilogue", x);
  check_operand("linear_epilogue", w, x);
  if (bias.defined()) check_operand("linear_epilogue", bias, x);
  int64_t rows = x.size(0), k = x.size(1), n = w.size(0);
  Tensor y = empty({rows, n}, {x.dtype(), x.device()});
  if (y.numel() == 0) return y;
  use_device(x);
  if (k == 0 || x.dtype() == DType::f64) {
    // cuBLASLt's bias and activation epilogues are for f32 and bf16; f64 (gradcheck) and empty
    // products run the same ops one after another, as the CPU twin does.
    gemm(false, true, 1.0, x, w, 0.0, y);
    if (bias.defined()) kernels::add_inplace(y, bias, 1.0);
    if (act == kernels::Epilogue::relu) return kernels::unary(kernels::Unary::relu, y);
    if (act == kernels::Epilogue::gelu_tanh) return kernels::unary(kernels::Unary::gelu_tanh, y);
    return y;
  }
  // The epilogue reads the bias as one contiguous vector along the rows of cuBLASLt's D (n).
  Tensor b = bias;
  if (bias.defined() && n > 1 && bias.stride(0) != 1) b = copy_to(bias, bias.device(), bias.dtype());
  bool has_bias = bias.defined();
  cublasLtEpilogue_t epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (act == kernels::Epilogue::relu) epi = has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
  if (act == kernels::Epilogue::gelu_tanh) epi = has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  gemm_rowmajor_c(1.0, x, swap_last2(w), 0.0, y, Layout{false, n}, epi, has_bias ? b.raw_data() : nullptr);
  return y;
}

}  // namespace siam::gpu
