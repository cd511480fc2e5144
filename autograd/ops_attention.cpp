// Attention: the composite reference (matmul -> scale -> softmax -> dropout -> matmul).
// A fused GPU kernel is tested against this composite.
#include <cmath>

#include "autograd/ops.h"

namespace siam {

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, double dropout_p,
                                    Generator* gen) {
  // q: (..., Lq, D)  k: (..., Lk, D)  v: (..., Lk, Dv)
  if (q.dim() < 2 || k.dim() != q.dim() || v.dim() != q.dim())
    fail("scaled_dot_product_attention: q, k, v must have the same rank >= 2, got ", shape_str(q.shape()),
         ", ", shape_str(k.shape()), ", ", shape_str(v.shape()));
  if (k.size(-1) != q.size(-1))
    fail("scaled_dot_product_attention: q has head dim ", q.size(-1), ", k has ", k.size(-1));
  if (v.size(-2) != k.size(-2))
    fail("scaled_dot_product_attention: k has ", k.size(-2), " keys, v has ", v.size(-2), " values");
  if (dropout_p < 0 || dropout_p >= 1)
    fail("scaled_dot_product_attention: dropout_p must be in [0, 1), got ", dropout_p);
  if (dropout_p > 0 && gen == nullptr)
    fail("scaled_dot_product_attention: dropout_p > 0 needs a Generator");
  double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  Tensor weights = softmax(mul(matmul(q, transpose(k, -2, -1)), scale), -1);  // (..., Lq, Lk)
  if (dropout_p > 0) weights = dropout(weights, dropout_p, true, *gen);
  return matmul(weights, v);
}

}  // namespace siam
