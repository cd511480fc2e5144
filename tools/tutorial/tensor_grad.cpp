// Tutorial, step 1 (docs/tutorial.md): a tensor, an op, its gradient, and a finite-difference
// check of that gradient. Built as build/tutorial_tensor_grad.
#include <cstdio>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/rng.h"

using namespace siam;

static void print(const char* name, const Tensor& t) {
  std::printf("%s %s:", name, shape_str(t.shape()).c_str());
  for (double v : t.to_vector()) std::printf(" %.6g", v);
  std::printf("\n");
}

int main() {
  // y = sum(3 x^2): backward gives dy/dx = 6 x.
  Tensor x = from_vector({1, 2, 3}, {3}, {DType::f64}).requires_grad_(true);
  Tensor y = sum(mul(pow(x, 2.0), 3.0));
  autograd::backward(y);
  print("x", x);
  print("y = sum(3 x^2)", y);
  print("dy/dx (backward)", x.grad());
  print("6 x (by hand)", mul(detach(x), 6.0));

  // log_softmax over rows: backward's gradient against central differences
  // (L(x + h) - L(x - h)) / 2h of L = sum(log_softmax(x) * g), element by element, in f64.
  Generator gen(7);
  Tensor logits = randn({3, 5}, gen, {DType::f64}), g = randn({3, 5}, gen, {DType::f64});
  GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return log_softmax(in[0], 1); }, {logits}, g);
  std::printf("gradcheck log_softmax: %s\n%s", r.ok ? "ok" : "MISMATCH", r.report.c_str());
  return r.ok ? 0 : 1;
}
