// Tutorial, step 3 (docs/tutorial.md): SimCLR's NT-Xent written from general ops, against
// siam's fused kernel, then saved as a `siam verify` file. Built as build/tutorial_ntxent_by_hand.
//
//   z (2N, D): the two views' embeddings stacked, rows i and i + N are a positive pair
//   s_ij = cos(z_i, z_j) / T
//   loss = mean_i [ log sum_{k != i} exp(s_ik) - s_i,partner(i) ]
#include <cmath>
#include <cstdio>
#include <string>

#include "autograd/ops.h"
#include "ssl/losses.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"

using namespace siam;

Tensor nt_xent_by_hand(const Tensor& z, double temperature) {
  const int64_t m = z.size(0), n = m / 2;
  Tensor zn = normalize(z, -1);                                    // unit rows
  Tensor s = mul(matmul(zn, transpose(zn, 0, 1)), 1.0 / temperature);  // (2N, 2N) cosine / T
  // An anchor is not its own negative: -inf on the diagonal drops it from the log-sum-exp.
  Tensor diagonal = gt(eye(m, {DType::f64}), zeros({m, m}, {DType::f64}));
  Tensor masked = where(diagonal, full({m, m}, -INFINITY, {DType::f64}), s);
  Tensor lse = logsumexp(masked, 1);                               // (2N)
  std::vector<double> partner(m);
  for (int64_t i = 0; i < m; ++i) partner[i] = static_cast<double>((i + n) % m);
  Tensor pos = flatten(gather(s, 1, from_vector(partner, {m, 1}, {DType::i64})));  // s_i,partner(i)
  return mean(sub(lse, pos));
}

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "ntxent_by_hand.safetensors";
  const double T = 0.5;
  Generator gen(3);
  Tensor z0 = randn({8, 16}, gen, {DType::f64});

  Tensor z1 = clone(z0).requires_grad_(true);
  Tensor by_hand = nt_xent_by_hand(z1, T);
  autograd::backward(by_hand);

  Tensor z2 = clone(z0).requires_grad_(true);
  Tensor fused = ssl::nt_xent(z2, T);  // one kernel, forward and backward
  autograd::backward(fused);

  double worst = 0;
  std::vector<double> a = z1.grad().to_vector(), b = z2.grad().to_vector();
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  std::printf("loss by hand %.15f\nloss fused   %.15f\nmax |gradient difference| %.3g\n", by_hand.item(),
              fused.item(), worst);

  // The hand-written loss as a reference file: `siam verify` runs siam's fused NT-Xent on the
  // same input and compares its output and gradient with these.
  save_safetensors(out,
                   {{"input.0", z0}, {"output", detach(by_hand)}, {"grad.0", z1.grad()}},
                   {{"siam_verify", "1"}, {"kind", "loss"}, {"name", "nt_xent"}, {"settings", "{\"temperature\": 0.5}"},
                    {"producer", "tools/tutorial/ntxent_by_hand.cpp"}});
  std::printf("wrote %s: check it with  build/siam verify %s\n", out.c_str(), out.c_str());
  return 0;
}
