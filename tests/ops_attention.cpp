// Op cases: attention. PyTorch twins: tools/reference/cases_attention.py (written out as
// softmax(q k^T / sqrt(d)) v, with the dropout mask from the Philox twin).
#include "op_harness.h"

namespace siam::test {
namespace {

OpCase c(std::string name, OpFn fn) {
  OpCase k;
  k.name = std::move(name);
  k.fn = std::move(fn);
  k.rtol = 1e-5;
  k.atol = 1e-6;
  k.why = "two f32 GEMMs around an f32 softmax: a few ulps per output";
  return k;
}

using V = const std::vector<Tensor>&;

OpTable table({
    c("attention", [](V x) { return scaled_dot_product_attention(x[0], x[1], x[2]); }),
    c("attention_self_3d", [](V x) { return scaled_dot_product_attention(x[0], x[0], x[0]); }),
    c("attention_dropout", [](V x) {
      Generator g(99);
      return scaled_dot_product_attention(x[0], x[1], x[2], 0.3, &g);
    }),
});

}  // namespace
}  // namespace siam::test
