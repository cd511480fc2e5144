// matmul and linear, both on kernels::gemm. The backward of y = a @ b is two more products,
// g @ b^T for a and a^T @ g for b; an operand broadcast along batch dims gets the sum over them,
// which gemm forms directly when its output is a stride-0 (expanded) view.
#include <algorithm>

#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/reduce.h"

namespace siam {
namespace {

// x: (..., k) seen as (rows, k), with no copy when the leading dims merge into one stride.
Tensor as_rows(const Tensor& x) {
  int64_t k = x.size(-1), rows = 1, row_stride = k, span = -1;
  bool merges = true;
  for (int64_t d = x.dim() - 2; d >= 0; --d) {
    int64_t n = x.shape()[d], s = x.strides()[d];
    rows *= n;
    if (n == 1) continue;
    if (span < 0) row_stride = s;
    else merges = merges && s == span;
    span = s * n;
  }
  if (!merges) return copy_to(x, x.device(), x.dtype()).as_strided({rows, k}, {k, 1}, 0);
  return x.as_strided({rows, k}, {row_stride, x.stride(-1)}, x.offset());
}

// x broadcast to `shape` (no autograd): right-aligned, stride 0 on the dims it lacks or has as 1.
Tensor expand_raw(const Tensor& x, const Shape& shape) {
  int64_t lead = static_cast<int64_t>(shape.size()) - x.dim();
  Shape st(shape.size(), 0);
  for (int64_t d = 0; d < x.dim(); ++d)
    if (x.shape()[d] == shape[lead + d]) st[lead + d] = x.strides()[d];
  return x.as_strided(shape, st, x.offset());
}

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    fail(op, ": dtype mismatch, ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  if (a.device() != b.device()) fail(op, ": operands on ", a.device().str(), " and ", b.device().str());
}

// y (..., n) = x (..., k) @ W + bias. W is w itself (k, n), or w^T when w_out_in (linear's
// (n, k) weight): gemm reads the transposed layout in place.
Tensor affine(const char* name, const Tensor& x, const Tensor& w, bool w_out_in, const Tensor& bias) {
  int64_t n = w.size(w_out_in ? 0 : 1);
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor x2 = as_rows(x);
  Tensor y = empty(out_shape, {x.dtype(), x.device()});
  Tensor y2 = y.as_strided({x2.size(0), n}, {n, 1}, 0);
  kernels::gemm(false, w_out_in, 1.0, x2, w, 0.0, y2);
  if (bias.defined()) kernels::add_inplace(y2, bias, 1.0);
  bool gx = x.requires_grad(), gw = w.requires_grad(), gb = bias.defined() && bias.requires_grad();
  return autograd::record(name, y, {x, w, bias}, [x = detach(x), w = detach(w), w_out_in, gx, gw, gb](const Tensor& g) {
    Tensor g2 = as_rows(g), dx, dw, db;
    if (gx) {
      dx = empty(x.shape(), {g.dtype(), g.device()});
      kernels::gemm(false, !w_out_in, 1.0, g2, w, 0.0, as_rows(dx));
    }
    if (gw) {
      dw = empty(w.shape(), {g.dtype(), g.device()});
      Tensor x2 = as_rows(x);
      if (w_out_in) kernels::gemm(true, false, 1.0, g2, x2, 0.0, dw);
      else kernels::gemm(true, false, 1.0, x2, g2, 0.0, dw);
    }
    if (gb) db = kernels::sum(g2, {0}, false);
    return std::vector<Tensor>{dx, dw, db};
  });
}

// a: (..., m, k) @ b: (..., k, n), both at least 2-D, batch dims broadcast.
Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  size_t nd = std::max(ba.size(), bb.size());
  Shape batch(nd);
  for (size_t i = 0; i < nd; ++i) {
    int64_t da = i < nd - ba.size() ? 1 : ba[i - (nd - ba.size())];
    int64_t db = i < nd - bb.size() ? 1 : bb[i - (nd - bb.size())];
    if (da != db && da != 1 && db != 1)
      fail("matmul: batch dims of ", shape_str(a.shape()), " and ", shape_str(b.shape()), " do not broadcast");
    batch[i] = da == 1 ? db : da;
  }
  int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  auto with = [batch](int64_t r, int64_t c) {
    Shape s = batch;
    s.push_back(r);
    s.push_back(c);
    return s;
  };
  Tensor y = empty(with(m, n), {a.dtype(), a.device()});
  kernels::gemm(false, false, 1.0, expand_raw(a, with(m, k)), expand_raw(b, with(k, n)), 0.0, y);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  return autograd::record("matmul", y, {a, b}, [a = detach(a), b = detach(b), with, m, k, n, ga, gb](const Tensor& g) {
    Tensor da, db;
    if (ga) {
      da = empty(a.shape(), {g.dtype(), g.device()});
      kernels::gemm(false, true, 1.0, g, expand_raw(b, with(k, n)), 0.0, expand_raw(da, with(m, k)));
    }
    if (gb) {
      db = empty(b.shape(), {g.dtype(), g.device()});
      kernels::gemm(true, false, 1.0, expand_raw(a, with(m, k)), g, 0.0, expand_raw(db, with(k, n)));
    }
    return std::vector<Tensor>{da, db};
  });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.dim() == 0 || b.dim() == 0)
    fail("matmul: operands need at least 1 dimension, got ", shape_str(a.shape()), " and ", shape_str(b.shape()));
  check_pair("matmul", a, b);
  int64_t ka = a.size(-1), kb = b.size(b.dim() == 1 ? 0 : -2);
  if (ka != kb)
    fail("matmul: ", shape_str(a.shape()), " @ ", shape_str(b.shape()), ": inner dimensions ", ka, " and ", kb,
         " differ");
  // A 2-D b is shared by every row of a, so a's leading dims fold into one GEMM.
  if (b.dim() == 2) return affine("matmul", a, b, false, Tensor());
  if (b.dim() == 1) return squeeze(affine("matmul", a, unsqueeze(b, 1), false, Tensor()), -1);
  if (a.dim() == 1) return squeeze(batched_matmul(unsqueeze(a, 0), b), -2);
  return batched_matmul(a, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (weight.dim() != 2) fail("linear: weight must be 2-D (out, in), got ", shape_str(weight.shape()));
  if (x.dim() == 0) fail("linear: input must have at least 1 dimension");
  check_pair("linear", x, weight);
  if (x.size(-1) != weight.size(1))
    fail("linear: input ", shape_str(x.shape()), " has ", x.size(-1), " features, weight ",
         shape_str(weight.shape()), " expects ", weight.size(1));
  if (bias.defined()) {
    check_pair("linear", x, bias);
    if (bias.shape() != Shape{weight.size(0)})
      fail("linear: bias ", shape_str(bias.shape()), " does not match the ", weight.size(0), " outputs of weight ",
           shape_str(weight.shape()));
  }
  return affine("linear", x, weight, true, bias);
}

}  // namespace siam
