// Reduction CPU kernels: outputs are written (=). Accumulation is in double for f32 inputs,
// so sums over large dimensions keep f32-exact results.
#include "kernels/reduce.h"

#include <algorithm>
#include <numeric>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/reduce.h"

namespace siam::kernels {

// Moves reduced dims to the end and makes the result contiguous: (outer, inner) blocks.
static Tensor reduced_last(const Tensor& x, const std::vector<int64_t>& dims, int64_t* outer,
                           int64_t* inner, Shape* out_shape, bool keepdim) {
  std::vector<bool> red(x.dim(), dims.empty());
  for (int64_t d : dims) red[d] = true;
  Shape perm_shape, perm_strides;
  Shape kept_shape, kept_strides, red_shape, red_strides;
  out_shape->clear();
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (red[d]) {
      red_shape.push_back(x.shape()[d]);
      red_strides.push_back(x.strides()[d]);
      if (keepdim) out_shape->push_back(1);
    } else {
      kept_shape.push_back(x.shape()[d]);
      kept_strides.push_back(x.strides()[d]);
      out_shape->push_back(x.shape()[d]);
    }
  }
  *outer = shape_numel(kept_shape);
  *inner = shape_numel(red_shape);
  perm_shape = kept_shape;
  perm_shape.insert(perm_shape.end(), red_shape.begin(), red_shape.end());
  perm_strides = kept_strides;
  perm_strides.insert(perm_strides.end(), red_strides.begin(), red_strides.end());
  Tensor v = x.as_strided(perm_shape, perm_strides, x.offset());
  if (v.is_contiguous()) return v;
  return copy_to(v, x.device(), x.dtype());
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  SIAM_ON_CUDA(x, gpu::sum(x, dims, keepdim));
  SIAM_CHECK(x.device().is_cpu(), "sum on ", x.device().str());
  int64_t outer, inner;
  Shape out_shape;
  Tensor c = reduced_last(x, dims, &outer, &inner, &out_shape, keepdim);
  Tensor y = empty(out_shape, {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "sum", [&] {
    const scalar_t* p = c.data<scalar_t>();
    scalar_t* o = y.data<scalar_t>();
    _Pragma("omp parallel for schedule(static) if (outer * inner > 32768 && outer > 1)")
    for (int64_t i = 0; i < outer; ++i) {
      double acc = 0;
      const scalar_t* row = p + i * inner;
      for (int64_t k = 0; k < inner; ++k) acc += row[k];
      o[i] = static_cast<scalar_t>(acc);
    }
  });
  return y;
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  SIAM_ON_CUDA(x, gpu::max(x, dim, keepdim));
  SIAM_CHECK(x.device().is_cpu(), "max on ", x.device().str());
  if (x.shape()[dim] == 0) fail("max: dimension ", dim, " has size 0");
  int64_t outer, inner;
  Shape out_shape;
  Tensor c = reduced_last(x, {dim}, &outer, &inner, &out_shape, keepdim);
  Tensor y = empty(out_shape, {x.dtype(), x.device()});
  Tensor idx = empty(out_shape, {DType::i64, x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "max", [&] {
    const scalar_t* p = c.data<scalar_t>();
    scalar_t* o = y.data<scalar_t>();
    int64_t* oi = idx.data<int64_t>();
    for (int64_t i = 0; i < outer; ++i) {
      const scalar_t* row = p + i * inner;
      int64_t best = 0;
      for (int64_t k = 1; k < inner; ++k)
        if (row[k] > row[best]) best = k;
      o[i] = row[best];
      oi[i] = best;
    }
  });
  return {y, idx};
}

}  // namespace siam::kernels
