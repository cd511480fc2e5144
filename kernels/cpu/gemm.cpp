// GEMM CPU kernel on CBLAS (OpenBLAS). Writes (=) c when beta = 0, else accumulates (+=) into
// beta * c.
#include "kernels/gemm.h"

#include <algorithm>
#include <climits>
#include <optional>

#include "kernels/cpu/blas.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/gemm.h"
#include "kernels/elementwise.h"

namespace siam::kernels {
namespace {

// How BLAS (row-major) reads a (rows, cols) matrix with strides (sr, sc): as it lies with leading
// dimension ld, or as the transpose of a row-major (cols, rows) matrix. nullopt: no unit stride.
struct Layout {
  bool trans;
  int64_t ld;
};
std::optional<Layout> blas_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc) {
  if ((cols == 1 || sc == 1) && (rows == 1 || sr >= cols)) return Layout{false, rows == 1 ? cols : sr};
  if ((rows == 1 || sr == 1) && (cols == 1 || sc >= rows)) return Layout{true, cols == 1 ? rows : sc};
  return std::nullopt;
}

Tensor swap_last2(const Tensor& t) {
  Shape sh = t.shape(), st = t.strides();
  std::swap(sh[sh.size() - 1], sh[sh.size() - 2]);
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return t.as_strided(sh, st, t.offset());
}

// The distinct memory of c: its broadcast (stride-0) batch dims cut to size 1.
Tensor collapse_broadcast(const Tensor& c, bool* any) {
  Shape sh = c.shape();
  *any = false;
  for (int64_t d = 0; d + 2 < c.dim(); ++d)
    if (sh[d] > 1 && c.strides()[d] == 0) {
      sh[d] = 1;
      *any = true;
    }
  return c.as_strided(sh, c.strides(), c.offset());
}

// a: (..., m, k), b: (..., k, n), c: (..., m, n) with c row-major in its last two dims.
void gemm_rowmajor_c(double alpha, Tensor a, Tensor b, double beta, const Tensor& c) {
  int64_t r = c.dim(), m = c.size(-2), n = c.size(-1), k = a.size(-1);
  bool c_bcast;
  Tensor c_mem = collapse_broadcast(c, &c_bcast);
  if (c_bcast || k == 0) {
    // Every product lands on c_mem more than once (or never): scale it first, then add.
    if (beta == 0) fill_(c_mem, 0.0);
    else if (beta != 1) scale_inplace(c_mem, beta);
    beta = 1;
    if (k == 0) return;
  }
  auto la = blas_layout(m, k, a.stride(-2), a.stride(-1));
  if (!la) {
    a = copy_to(a, a.device(), a.dtype());
    la = Layout{false, k};
  }
  auto lb = blas_layout(k, n, b.stride(-2), b.stride(-1));
  if (!lb) {
    b = copy_to(b, b.device(), b.dtype());
    lb = Layout{false, n};
  }
  int64_t ldc = m == 1 ? n : c.stride(-2);
  if (std::max({m, n, k, la->ld, lb->ld, ldc}) > INT_MAX) fail("gemm: a dimension exceeds the BLAS int range");

  Shape batch(c.shape().begin(), c.shape().end() - 2);
  auto batch_strides = [&](const Tensor& t) {
    Shape s(r - 2);
    for (int64_t d = 0; d < r - 2; ++d) s[d] = t.shape()[d] == 1 ? 0 : t.strides()[d];
    return s;
  };
  Shape sa = batch_strides(a), sb = batch_strides(b), sc = batch_strides(c);
  int64_t nb = shape_numel(batch);
  bool parallel = !c_bcast && cpu::share_gemms(nb, m, n, k);
  SIAM_DISPATCH_FLOAT(c.dtype(), "gemm", [&] {
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    scalar_t* pc = c.data<scalar_t>();
    auto one = [&](int64_t i) {
      int64_t oa = 0, ob = 0, oc = 0, rem = i;
      for (int64_t d = r - 3; d >= 0; --d) {
        int64_t j = rem % batch[d];
        rem /= batch[d];
        oa += j * sa[d];
        ob += j * sb[d];
        oc += j * sc[d];
      }
      cpu::blas_gemm(la->trans, lb->trans, m, n, k, alpha, pa + oa, la->ld, pb + ob, lb->ld, beta, pc + oc, ldc);
    };
    // Not inside an inactive `parallel if (false)` region: each product would then open a
    // nested team of its own to cut itself over the threads, a fresh team every call.
    if (parallel) {
      _Pragma("omp parallel for schedule(static)")
      for (int64_t i = 0; i < nb; ++i) one(i);
    } else {
      for (int64_t i = 0; i < nb; ++i) one(i);
    }
  });
}

}  // namespace

void gemm(bool trans_a, bool trans_b, double alpha, const Tensor& a_in, const Tensor& b_in, double beta,
          const Tensor& c) {
  SIAM_ON_CUDA(c, gpu::gemm(trans_a, trans_b, alpha, a_in, b_in, beta, c));
  for (const Tensor* t : {&a_in, &b_in, &c}) {
    if (!t->device().is_cpu()) fail("gemm: no ", t->device().str(), " kernel yet");
    if (t->dtype() != c.dtype())
      fail("gemm: dtype mismatch, ", dtype_name(t->dtype()), " and ", dtype_name(c.dtype()));
  }
  if (c.dim() < 2 || a_in.dim() != c.dim() || b_in.dim() != c.dim())
    fail("gemm: a, b and c need the same rank (2 or more), got ", shape_str(a_in.shape()), ", ",
         shape_str(b_in.shape()), " and ", shape_str(c.shape()));
  Tensor a = trans_a ? swap_last2(a_in) : a_in, b = trans_b ? swap_last2(b_in) : b_in;
  int64_t r = c.dim();
  bool ok = a.size(-2) == c.size(-2) && b.size(-1) == c.size(-1) && a.size(-1) == b.size(-2);
  for (int64_t d = 0; d + 2 < r; ++d)
    for (const Tensor* t : {&a, &b})
      ok = ok && (t->shape()[d] == c.shape()[d] || t->shape()[d] == 1);
  if (!ok)
    fail("gemm: op(a) ", shape_str(a.shape()), " times op(b) ", shape_str(b.shape()), " does not give c ",
         shape_str(c.shape()));
  if (c.numel() == 0) return;
  auto lc = blas_layout(c.size(-2), c.size(-1), c.stride(-2), c.stride(-1));
  if (!lc) fail("gemm: c ", shape_str(c.shape()), " with strides ", shape_str(c.strides()),
                " has no unit stride in its last two dims");
  // A column-major c is the row-major c^T = op(b)^T op(a)^T.
  if (lc->trans) gemm_rowmajor_c(alpha, swap_last2(b), swap_last2(a), beta, swap_last2(c));
  else gemm_rowmajor_c(alpha, a, b, beta, c);
}

// The CPU twin of the fused linear layer: the GEMM, the bias, the activation, one after another.
Tensor linear_epilogue(const Tensor& x, const Tensor& w, const Tensor& bias, Epilogue act) {
  if (x.dim() != 2 || w.dim() != 2 || x.size(1) != w.size(1))
    fail("linear_epilogue: expected x (rows, k) and w (n, k), got ", shape_str(x.shape()), " and ",
         shape_str(w.shape()));
  if (bias.defined() && bias.shape() != Shape{w.size(0)})
    fail("linear_epilogue: bias ", shape_str(bias.shape()), " does not match the ", w.size(0), " outputs of w");
  SIAM_ON_CUDA(x, gpu::linear_epilogue(x, w, bias, act));
  Tensor y = empty({x.size(0), w.size(0)}, {x.dtype(), x.device()});
  gemm(false, true, 1.0, x, w, 0.0, y);
  if (bias.defined()) add_inplace(y, bias, 1.0);
  if (act == Epilogue::relu) return unary(Unary::relu, y);
  if (act == Epilogue::gelu_tanh) return unary(Unary::gelu_tanh, y);
  return y;
}

}  // namespace siam::kernels
