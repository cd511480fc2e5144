// Reductions. Their backward broadcasts the output gradient back over the reduced dims.
#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "kernels/reduce.h"
#include "kernels/topk.h"

namespace siam {

static std::vector<int64_t> norm_dims(const std::vector<int64_t>& dims, int64_t n, const char* op) {
  std::vector<int64_t> r;
  for (int64_t d : dims) {
    int64_t w = d < 0 ? d + n : d;
    if (w < 0 || w >= n) fail(op, ": dimension ", d, " out of range for ", n, " dimensions");
    r.push_back(w);
  }
  std::sort(r.begin(), r.end());
  if (std::adjacent_find(r.begin(), r.end()) != r.end()) fail(op, ": repeated dimension");
  if (r.empty())
    for (int64_t i = 0; i < n; ++i) r.push_back(i);
  return r;
}

// The shape of the output with keepdim=true: reduced dims set to 1.
static Shape kept_shape(const Shape& s, const std::vector<int64_t>& dims) {
  Shape k = s;
  for (int64_t d : dims) k[d] = 1;
  return k;
}

static int64_t reduced_count(const Shape& s, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= s[d];
  return n;
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  auto dims = norm_dims(dims_in, x.dim(), "sum");
  Tensor y = kernels::sum(x, dims, keepdim);
  Shape in = x.shape(), k = kept_shape(in, dims);
  return autograd::record("sum", y, {x}, [in, k](const Tensor& g) {
    return std::vector<Tensor>{contiguous(expand(reshape(g, k), in))};
  });
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  auto dims = norm_dims(dims_in, x.dim(), "mean");
  return mul(sum(x, dims, keepdim), 1.0 / static_cast<double>(reduced_count(x.shape(), dims)));
}

Tensor var(const Tensor& x, const std::vector<int64_t>& dims_in, bool unbiased, bool keepdim) {
  auto dims = norm_dims(dims_in, x.dim(), "var");
  int64_t n = reduced_count(x.shape(), dims);
  if (unbiased && n < 2) fail("var: unbiased variance needs at least 2 elements, got ", n);
  Tensor centered = sub(x, mean(x, dims, true));
  return mul(sum(mul(centered, centered), dims, keepdim), 1.0 / static_cast<double>(unbiased ? n - 1 : n));
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  int64_t d = norm_dims({dim}, x.dim(), "max")[0];
  auto [values, indices] = kernels::max(x, d, keepdim);
  Shape in = x.shape(), k = kept_shape(in, {d});
  Tensor v = autograd::record("max", values, {x}, [in, k, d, idx = indices](const Tensor& g) {
    // Scatter g to the argmax positions: compare each position's index with the argmax.
    Shape pos_shape(in.size(), 1);
    pos_shape[d] = in[d];
    Tensor pos = reshape(arange(0, static_cast<double>(in[d]), 1, {DType::i64, g.device()}), pos_shape);
    Tensor hit = eq(pos, reshape(idx, k));
    Tensor zero = zeros({}, {g.dtype(), g.device()});
    return std::vector<Tensor>{contiguous(where(hit, expand(reshape(g, k), in), zero))};
  });
  return {v, indices};
}

std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k) {
  if (autograd::needs_graph({x}))
    fail("topk: not differentiable, but its input requires a gradient; call it under NoGradGuard or on detach(x)");
  return kernels::topk(x, k);
}

Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim) {
  int64_t d = norm_dims({dim}, x.dim(), "logsumexp")[0];
  Tensor m;
  {
    NoGradGuard ng;
    m = kernels::max(x, d, true).first;
  }
  Tensor r = add(log(sum(exp(sub(x, m)), {d}, true)), m);
  return keepdim ? r : squeeze(r, d);
}

Tensor norm(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return sqrt(sum(mul(x, x), dims, keepdim));
}

}  // namespace siam
