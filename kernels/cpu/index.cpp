// Indexing CPU kernels. index_select and gather write (=) fresh outputs; index_add_ and
// scatter_add_ accumulate (+=) into their first argument. Every index is range-checked
// before any memory is touched, so a bad index is an error, never a wild write.
#include "kernels/index.h"

#include <cstring>

#include "kernels/cpu/iter.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/index.h"

namespace siam::kernels {

static Tensor dense(const Tensor& t) {
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

static void require_cpu(const Tensor& t, const char* op) {
  if (!t.device().is_cpu())
    fail(op, ": no ", t.device().str(), " kernel yet (CUDA kernels arrive with the CUDA backend)");
}

// A contiguous i64 copy of `index` whose values all lie in [0, size).
static Tensor checked_index(const Tensor& index, int64_t size, int64_t dim, const char* op) {
  require_cpu(index, op);
  if (index.dtype() != DType::i64) fail(op, ": index must be i64, got ", dtype_name(index.dtype()));
  Tensor ic = dense(index);
  const int64_t* p = ic.data<int64_t>();
  for (int64_t k = 0; k < ic.numel(); ++k)
    if (p[k] < 0 || p[k] >= size)
      fail(op, ": index ", p[k], " (element ", k, " of the index) is out of range for dimension ",
           dim, " of size ", size);
  return ic;
}

static void same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  if (a.dtype() != b.dtype())
    fail(op, ": dtype mismatch, ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
}

// (outer, size at dim, inner) of a shape.
static void split_at(const Shape& s, int64_t dim, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int64_t k = 0; k < dim; ++k) *outer *= s[k];
  for (size_t k = dim + 1; k < s.size(); ++k) *inner *= s[k];
}

// The strides of `t` with `dim`'s stride zeroed: the offset of every coordinate but dim's.
static Shape strides_without(const Tensor& t, int64_t dim) {
  Shape st = t.strides();
  st[dim] = 0;
  return st;
}

// gather / scatter_add_: index has the indexed tensor's rank and fits inside it off `dim`.
static void check_gather_shape(const Shape& target, const Shape& index, int64_t dim, const char* op) {
  if (index.size() != target.size())
    fail(op, ": index ", shape_str(index), " must have the same number of dimensions as the input ",
         shape_str(target));
  for (size_t d = 0; d < target.size(); ++d)
    if (static_cast<int64_t>(d) != dim && index[d] > target[d])
      fail(op, ": index ", shape_str(index), " is larger than the input ", shape_str(target),
           " in dimension ", d);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  SIAM_ON_CUDA(x, gpu::index_select(x, dim, index));
  require_cpu(x, "index_select");
  Tensor ic = checked_index(index, x.shape()[dim], dim, "index_select");
  Tensor xc = dense(x);
  Shape out_shape = x.shape();
  out_shape[dim] = ic.numel();
  Tensor out = empty(out_shape, {x.dtype(), x.device()});
  int64_t outer, inner;
  split_at(x.shape(), dim, &outer, &inner);
  const int64_t d = x.shape()[dim], k_n = ic.numel();
  const size_t row_bytes = static_cast<size_t>(inner) * dtype_size(x.dtype());
  const char* px = static_cast<const char*>(xc.raw_data());
  char* po = static_cast<char*>(out.raw_data());
  const int64_t* pi = ic.data<int64_t>();
#pragma omp parallel for schedule(static) if (out.numel() > 32768)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k = 0; k < k_n; ++k)
      std::memcpy(po + (o * k_n + k) * row_bytes, px + (o * d + pi[k]) * row_bytes, row_bytes);
  return out;
}

void index_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  SIAM_ON_CUDA(dst, gpu::index_add_(dst, dim, index, src));
  require_cpu(dst, "index_add_");
  same_dtype(dst, src, "index_add_");
  SIAM_CHECK(dst.is_contiguous(), "index_add_ into a non-contiguous tensor");
  Tensor ic = checked_index(index, dst.shape()[dim], dim, "index_add_");
  Shape want = dst.shape();
  want[dim] = ic.numel();
  if (src.shape() != want)
    fail("index_add_: source ", shape_str(src.shape()), " should be ", shape_str(want), " for ",
         ic.numel(), " indices into ", shape_str(dst.shape()));
  Tensor sc = dense(src);
  int64_t outer, inner;
  split_at(dst.shape(), dim, &outer, &inner);
  const int64_t d = dst.shape()[dim], k_n = ic.numel();
  SIAM_DISPATCH_FLOAT(dst.dtype(), "index_add_", [&] {
    scalar_t* pd = dst.data<scalar_t>();
    const scalar_t* ps = sc.data<scalar_t>();
    const int64_t* pi = ic.data<int64_t>();
    // Different `o` never share a destination row, so splitting over `o` is race-free.
    _Pragma("omp parallel for schedule(static) if (src.numel() > 32768)")
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t k = 0; k < k_n; ++k) {
        scalar_t* drow = pd + (o * d + pi[k]) * inner;
        const scalar_t* srow = ps + (o * k_n + k) * inner;
        for (int64_t i = 0; i < inner; ++i) drow[i] += srow[i];
      }
  });
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  SIAM_ON_CUDA(x, gpu::gather(x, dim, index));
  require_cpu(x, "gather");
  check_gather_shape(x.shape(), index.shape(), dim, "gather");
  Tensor ic = checked_index(index, x.shape()[dim], dim, "gather");
  Tensor out = empty(ic.shape(), {x.dtype(), x.device()});
  const int64_t xs = x.strides()[dim];
  SIAM_DISPATCH_ALL(x.dtype(), "gather", [&] {
    const scalar_t* px = x.data<scalar_t>();
    const int64_t* pi = ic.data<int64_t>();
    scalar_t* po = out.data<scalar_t>();
    std::array<Shape, 2> st{contiguous_strides(ic.shape()), strides_without(x, dim)};
    // Output and index are both contiguous with the index's shape: they share offsets.
    cpu::for_each_row<2>(ic.shape(), st, [&](auto off, auto in, int64_t n) {
      for (int64_t k = 0; k < n; ++k) po[off[0] + k] = px[off[1] + k * in[1] + pi[off[0] + k] * xs];
    });
  });
  return out;
}

void scatter_add_(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  SIAM_ON_CUDA(dst, gpu::scatter_add_(dst, dim, index, src));
  require_cpu(dst, "scatter_add_");
  same_dtype(dst, src, "scatter_add_");
  SIAM_CHECK(dst.is_contiguous(), "scatter_add_ into a non-contiguous tensor");
  check_gather_shape(dst.shape(), index.shape(), dim, "scatter_add_");
  if (src.shape() != index.shape())
    fail("scatter_add_: source ", shape_str(src.shape()), " and index ", shape_str(index.shape()),
         " must have the same shape");
  Tensor ic = checked_index(index, dst.shape()[dim], dim, "scatter_add_");
  Tensor sc = dense(src);
  const Shape& shape = ic.shape();
  const int64_t nd = ic.dim(), total = ic.numel();
  const int64_t inner = nd ? shape[nd - 1] : 1;
  if (total == 0) return;
  const Shape dst_st = strides_without(dst, dim);
  const int64_t ds = dst.strides()[dim];
  SIAM_DISPATCH_FLOAT(dst.dtype(), "scatter_add_", [&] {
    scalar_t* pd = dst.data<scalar_t>();
    const scalar_t* ps = sc.data<scalar_t>();
    const int64_t* pi = ic.data<int64_t>();
    // Serial: two source positions may land on one destination element.
    for (int64_t r = 0; r < total / inner; ++r) {
      int64_t rem = r, off = 0;
      for (int64_t d = nd - 2; d >= 0; --d) {
        off += (rem % shape[d]) * dst_st[d];
        rem /= shape[d];
      }
      const int64_t base = r * inner, step = nd ? dst_st[nd - 1] : 0;
      for (int64_t k = 0; k < inner; ++k) pd[off + k * step + pi[base + k] * ds] += ps[base + k];
    }
  });
}

}  // namespace siam::kernels
