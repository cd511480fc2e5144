// Views (share storage, O(1)) and copies. The backward of a view maps the gradient back
// onto the input's shape: reshape back, inverse permutation, or scatter into zeros.
#include <algorithm>
#include <numeric>

#include "autograd/ops.h"
#include "kernels/reduce.h"

namespace siam {

static int64_t wrap(int64_t d, int64_t n, const char* op) {
  int64_t w = d < 0 ? d + n : d;
  if (w < 0 || w >= n) fail(op, ": dimension ", d, " out of range for ", n, " dimensions");
  return w;
}

static Shape infer_shape(Shape shape, int64_t numel, const char* op, const Shape& from) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail(op, ": more than one -1 in shape ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      fail(op, ": negative size in shape ", shape_str(shape));
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel % known != 0)
      fail(op, ": cannot infer -1 in ", shape_str(shape), " from ", shape_str(from));
    shape[infer] = numel / known;
  }
  if (shape_numel(shape) != numel)
    fail(op, ": shape ", shape_str(shape), " has ", shape_numel(shape), " elements, input ",
         shape_str(from), " has ", numel);
  return shape;
}

// Strides for viewing (old_shape, old_strides) as new_shape without a copy, or empty when
// impossible. Each run of old dims that is contiguous in memory can be re-split freely.
static std::optional<Shape> view_strides(const Shape& os, const Shape& ost, const Shape& ns) {
  Shape nst(ns.size());
  if (shape_numel(os) == 0) return contiguous_strides(ns);
  int64_t view_d = static_cast<int64_t>(ns.size()) - 1;
  int64_t chunk_base = ost.empty() ? 1 : ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || ns[view_d] == 1)) {
        nst[view_d] = view_numel * chunk_base;
        view_numel *= ns[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) {
    for (; view_d >= 0; --view_d) {
      if (ns[view_d] != 1) return std::nullopt;
      nst[view_d] = 1;
    }
  }
  return nst;
}

static Tensor scatter_into_zeros(const Tensor& x_like, const std::function<Tensor(const Tensor&)>& sub, const Tensor& g) {
  Tensor z = zeros(x_like.shape(), {g.dtype(), g.device()});
  copy_(sub(z), g);
  return z;
}

Tensor view(const Tensor& x, Shape shape) {
  shape = infer_shape(std::move(shape), x.numel(), "view", x.shape());
  auto st = view_strides(x.shape(), x.strides(), shape);
  if (!st)
    fail("view: cannot view a tensor of shape ", shape_str(x.shape()), " and strides ",
         shape_str(x.strides()), " as ", shape_str(shape), " without a copy; use reshape");
  Shape in_shape = x.shape();
  return autograd::record("view", x.as_strided(shape, *st, x.offset()), {x},
                          [in_shape](const Tensor& g) { return std::vector<Tensor>{reshape(g, in_shape)}; });
}

Tensor reshape(const Tensor& x, Shape shape) {
  shape = infer_shape(std::move(shape), x.numel(), "reshape", x.shape());
  if (view_strides(x.shape(), x.strides(), shape)) return view(x, shape);
  return view(contiguous(x), shape);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  int64_t n = x.dim();
  if (static_cast<int64_t>(dims.size()) != n)
    fail("permute: ", dims.size(), " dims given for a tensor of ", n, " dimensions");
  Shape shape(n), strides(n);
  std::vector<int64_t> inverse(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    int64_t d = wrap(dims[i], n, "permute");
    if (inverse[d] != -1) fail("permute: dimension ", d, " repeated in the permutation");
    inverse[d] = i;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  return autograd::record("permute", x.as_strided(shape, strides, x.offset()), {x},
                          [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> p(x.dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap(d0, x.dim(), "transpose")], p[wrap(d1, x.dim(), "transpose")]);
  return permute(x, p);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  int64_t d = wrap(dim, x.dim(), "slice");
  int64_t n = x.shape()[d];
  if (step <= 0) fail("slice: step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = x.shape(), strides = x.strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  Tensor out = x.as_strided(shape, strides, x.offset() + start * x.strides()[d]);
  return autograd::record("slice", out, {x}, [x = detach(x), d, start, end, step](const Tensor& g) {
    return std::vector<Tensor>{scatter_into_zeros(x, [&](const Tensor& z) { return slice(z, d, start, end, step); }, g)};
  });
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  int64_t d = wrap(dim, x.dim(), "narrow");
  if (start < 0 || length < 0 || start + length > x.shape()[d])
    fail("narrow: range [", start, ", ", start + length, ") out of bounds for size ", x.shape()[d],
         " of dimension ", d);
  return slice(x, d, start, start + length);
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  int64_t d = wrap(dim, x.dim(), "select");
  int64_t n = x.shape()[d];
  if (index < -n || index >= n) fail("select: index ", index, " out of range for size ", n);
  if (index < 0) index += n;
  Shape shape = x.shape(), strides = x.strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  Tensor out = x.as_strided(shape, strides, x.offset() + index * x.strides()[d]);
  return autograd::record("select", out, {x}, [x = detach(x), d, index](const Tensor& g) {
    return std::vector<Tensor>{scatter_into_zeros(x, [&](const Tensor& z) { return select(z, d, index); }, g)};
  });
}

Tensor expand(const Tensor& x, const Shape& shape) {
  int64_t n = static_cast<int64_t>(shape.size());
  if (n < x.dim()) fail("expand: target ", shape_str(shape), " has fewer dims than ", shape_str(x.shape()));
  Shape out(n), strides(n, 0);
  for (int64_t i = n - 1, j = x.dim() - 1; i >= 0; --i, --j) {
    int64_t want = shape[i];
    if (j >= 0) {
      int64_t have = x.shape()[j];
      if (want == -1) want = have;
      if (have == want) strides[i] = x.strides()[j];
      else if (have != 1) fail("expand: cannot expand ", shape_str(x.shape()), " to ", shape_str(shape));
    } else if (want < 0) {
      fail("expand: -1 not allowed for a new leading dimension in ", shape_str(shape));
    }
    out[i] = want;
  }
  Shape in_shape = x.shape();
  return autograd::record("expand", x.as_strided(out, strides, x.offset()), {x},
                          [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, in_shape)}; });
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  int64_t d = wrap(dim, x.dim(), "squeeze");
  if (x.shape()[d] != 1) return x;
  Shape s = x.shape();
  s.erase(s.begin() + d);
  return reshape(x, s);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  int64_t d = wrap(dim, x.dim() + 1, "unsqueeze");
  Shape s = x.shape();
  s.insert(s.begin() + d, 1);
  return reshape(x, s);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  if (x.dim() == 0) return reshape(x, {1});
  int64_t s = wrap(start_dim, x.dim(), "flatten"), e = wrap(end_dim, x.dim(), "flatten");
  if (s > e) fail("flatten: start_dim ", start_dim, " is after end_dim ", end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= x.shape()[i];
  shape.push_back(m);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor clone(const Tensor& x) {
  Tensor out = copy_to(x, x.device(), x.dtype());
  return autograd::record("clone", out, {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor contiguous(const Tensor& x) { return x.is_contiguous() ? x : clone(x); }

Tensor to(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Device from = x.device();
  return autograd::record("to_device", copy_to(x, device, x.dtype()), {x},
                          [from](const Tensor& g) { return std::vector<Tensor>{to(g, from)}; });
}

Tensor to(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  DType from = x.dtype();
  Tensor out = copy_to(x, x.device(), dtype);
  if (!is_floating(dtype)) return out;
  return autograd::record("to_dtype", out, {x},
                          [from](const Tensor& g) { return std::vector<Tensor>{to(g, from)}; });
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast together");
    r[i] = da == 1 ? db : da;
  }
  return r;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  int64_t lead = g.dim() - static_cast<int64_t>(shape.size());
  SIAM_CHECK(lead >= 0, "sum_to: ", shape_str(g.shape()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < g.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  if (dims.empty()) return reshape(g, shape);
  return reshape(sum(g, dims, true), shape);
}

}  // namespace siam
