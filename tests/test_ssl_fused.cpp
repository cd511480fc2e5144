// The fused InfoNCE, BYOL / SimSiam, VICReg and Barlow Twins losses (kernels/ssl_loss.h through
// the autograd ops of autograd/ops_ssl.cpp) against their composites (ssl/losses.cpp), on the
// CPU: values and gradients in f64 and f32 at several shapes (N = 2, D not a multiple of 4 or 8,
// 256 x 512 for the covariance paths), gradcheck of the fused ops, the stop-gradients, and the
// errors. The PyTorch fixtures of both paths are in tests/ops_ssl.cpp.
//
// Tolerances. f64: both sides compute the same formula in double and differ only in the order
// of the sums, so values agree to 1e-12 relative and gradients to 1e-12 of their largest
// entry (a gradient entry can be a cancellation near zero, so it is measured against the
// tensor's scale). f32: the fused kernel rounds once from double, the composite rounds after
// every op (normalise, GEMM, means); the f32 chain dominates: 1e-5 relative on values and
// 1e-4 of the largest gradient entry (VICReg's and Barlow's gradients sum D-long GEMM rows of
// centred values, which loses about 1e-5 of the scale in f32).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "ssl/losses.h"
#include "tensor/rng.h"
#include "test_util.h"

namespace siam::test {
namespace {

using ssl::LossImpl;

// The outputs of one evaluation and the gradients of sum_o weight_o output_o w.r.t. the inputs.
struct Result {
  std::vector<double> values;
  std::vector<std::vector<double>> grads;  // empty vector: the input got no gradient
};

using LossFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&, LossImpl)>;

Result evaluate(const LossFn& f, const std::vector<Tensor>& inputs, LossImpl impl) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(clone(t).requires_grad_(true));
  std::vector<Tensor> outs = f(xs, impl);
  Result r;
  Tensor objective;
  for (size_t o = 0; o < outs.size(); ++o) {
    r.values.push_back(outs[o].item());
    Tensor term = mul(outs[o], 1.0 + 0.37 * static_cast<double>(o));  // every output's gradient counts
    objective = objective.defined() ? add(objective, term) : term;
  }
  autograd::backward(objective);
  for (const Tensor& x : xs) r.grads.push_back(x.grad().defined() ? x.grad().to_vector() : std::vector<double>{});
  return r;
}

void expect_same(const Result& fused, const Result& composite, double vtol, double gtol) {
  ASSERT_EQ(fused.values.size(), composite.values.size());
  for (size_t o = 0; o < fused.values.size(); ++o)
    EXPECT_NEAR(fused.values[o], composite.values[o], vtol * (1e-3 + std::abs(composite.values[o])))
        << "output " << o;
  ASSERT_EQ(fused.grads.size(), composite.grads.size());
  for (size_t i = 0; i < fused.grads.size(); ++i) {
    const std::vector<double>& a = fused.grads[i];
    const std::vector<double>& b = composite.grads[i];
    ASSERT_EQ(a.empty(), b.empty()) << "input " << i << ": one side has a gradient, the other none";
    ASSERT_EQ(a.size(), b.size());
    double scale = 0, worst = 0;
    size_t at = 0;
    for (size_t k = 0; k < b.size(); ++k) {
      scale = std::max(scale, std::abs(b[k]));
      if (std::abs(a[k] - b[k]) > worst) worst = std::abs(a[k] - b[k]), at = k;
    }
    EXPECT_LE(worst, gtol * scale + 1e-300)
        << "input " << i << " element " << at << ": fused " << a[at] << ", composite " << b[at] << " (scale "
        << scale << ")";
  }
}

void compare(const LossFn& f, const std::vector<Tensor>& inputs, DType dt) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) xs.push_back(copy_to(t, Device::cpu(), dt));
  const bool f64 = dt == DType::f64;
  expect_same(evaluate(f, xs, LossImpl::fused), evaluate(f, xs, LossImpl::composite), f64 ? 1e-12 : 1e-5,
              f64 ? 1e-12 : 1e-4);
}

// (N, D) standard normal columns scaled from 0.3 to 2: some VICReg standard deviations below 1
// (the hinge active), some above.
Tensor spread_columns(int64_t n, int64_t d, Generator& gen) {
  std::vector<double> s(d);
  for (int64_t c = 0; c < d; ++c) s[c] = 0.3 + 1.7 * static_cast<double>(c) / static_cast<double>(std::max<int64_t>(d - 1, 1));
  return mul(randn({n, d}, gen, {DType::f64}), from_vector(s, {1, d}, {DType::f64}));
}

const LossFn kInfoNce02 = [](const std::vector<Tensor>& x, LossImpl impl) {
  return std::vector<Tensor>{ssl::info_nce(x[0], x[1], x[2], 0.2, impl)};
};
const LossFn kInfoNceCold = [](const std::vector<Tensor>& x, LossImpl impl) {
  return std::vector<Tensor>{ssl::info_nce(x[0], x[1], x[2], 0.07, impl)};
};
const LossFn kByol = [](const std::vector<Tensor>& x, LossImpl impl) {
  return std::vector<Tensor>{ssl::byol_loss(x[0], x[1], x[2], x[3], impl)};
};
const LossFn kSimSiam = [](const std::vector<Tensor>& x, LossImpl impl) {
  return std::vector<Tensor>{ssl::simsiam_loss(x[0], x[1], x[2], x[3], impl)};
};
LossFn vicreg(double sim, double std_c, double cov) {
  return [=](const std::vector<Tensor>& x, LossImpl impl) {
    ssl::VicregLoss r = ssl::vicreg_loss(x[0], x[1], sim, std_c, cov, impl);
    return std::vector<Tensor>{r.loss, r.invariance, r.variance, r.covariance};
  };
}
LossFn barlow(double lambda) {
  return [=](const std::vector<Tensor>& x, LossImpl impl) {
    ssl::BarlowLoss r = ssl::barlow_twins_loss(x[0], x[1], lambda, impl);
    return std::vector<Tensor>{r.loss, r.on_diag, r.off_diag};
  };
}

// ---------------------------------------------------------------- fused == composite

TEST(SslFused, InfoNceEqualsComposite) {
  Generator gen(21);
  struct Shape3 {
    int64_t n, d, k;
  };
  for (Shape3 s : {Shape3{2, 3, 1}, Shape3{5, 7, 13}, Shape3{32, 33, 257}}) {
    SCOPED_TRACE("N " + std::to_string(s.n) + " D " + std::to_string(s.d) + " K " + std::to_string(s.k));
    Tensor q = randn({s.n, s.d}, gen, {DType::f64}), k = randn({s.n, s.d}, gen, {DType::f64});
    Tensor queue = normalize(randn({s.k, s.d}, gen, {DType::f64}), 1);
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE(dtype_name(dt));
      compare(kInfoNce02, {q, k, queue}, dt);
      compare(kInfoNceCold, {q, k, queue}, dt);
    }
  }
}

TEST(SslFused, ByolAndSimSiamEqualComposite) {
  Generator gen(22);
  for (auto [n, d] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {7, 13}, {64, 129}}) {
    SCOPED_TRACE("N " + std::to_string(n) + " D " + std::to_string(d));
    std::vector<Tensor> x;
    for (int i = 0; i < 4; ++i) x.push_back(randn({n, d}, gen, {DType::f64}));
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE(dtype_name(dt));
      compare(kByol, x, dt);
      compare(kSimSiam, x, dt);
    }
  }
}

// A zero prediction row takes the clamped-norm paths: normalize() (BYOL) blocks the gradient
// through the clamp, cosine_similarity (SimSiam) does not. Tiny rows sit between the two eps.
TEST(SslFused, ByolAndSimSiamClampedNormsEqualComposite) {
  Generator gen(23);
  std::vector<Tensor> x;
  for (int i = 0; i < 4; ++i) x.push_back(randn({4, 5}, gen, {DType::f64}));
  std::vector<double> rows(20, 0.0);
  for (int c = 0; c < 5; ++c) rows[5 + c] = 1e-10 * (c + 1);  // row 1: ||p|| ~ 7e-10 < 1e-8
  x[0] = from_vector(rows, {4, 5}, {DType::f64});                // rows 0, 2, 3 exactly zero
  compare(kByol, x, DType::f64);
  compare(kSimSiam, x, DType::f64);
}

TEST(SslFused, VicregEqualsComposite) {
  Generator gen(24);
  for (auto [n, d] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {9, 7}, {256, 512}}) {
    SCOPED_TRACE("N " + std::to_string(n) + " D " + std::to_string(d));
    Tensor x = spread_columns(n, d, gen), y = add(mul(x, 0.8), mul(spread_columns(n, d, gen), 0.5));
    compare(vicreg(25, 25, 1), {x, y}, DType::f64);
    compare(vicreg(10, 5, 2), {x, y}, DType::f64);
    if (n * d <= 4096) compare(vicreg(25, 25, 1), {x, y}, DType::f32);
  }
}

TEST(SslFused, BarlowEqualsComposite) {
  Generator gen(25);
  for (auto [n, d] : std::vector<std::pair<int64_t, int64_t>>{{2, 3}, {9, 7}, {256, 512}}) {
    SCOPED_TRACE("N " + std::to_string(n) + " D " + std::to_string(d));
    Tensor z1 = spread_columns(n, d, gen), z2 = add(z1, mul(randn({n, d}, gen, {DType::f64}), 0.7));
    compare(barlow(0.0051), {z1, z2}, DType::f64);
    compare(barlow(0.5), {z1, z2}, DType::f64);
    // Not at N = 2: batch norm over two samples leaves every standardised value at +-1 /
    // sqrt(1 + eps / var), which the f32 composite computes with 5e-4 relative error.
    if (n > 2 && n * d <= 4096) compare(barlow(0.0051), {z1, z2}, DType::f32);
  }
}

// ---------------------------------------------------------------- gradcheck of the fused ops

void expect_gradcheck(const OpFn& f, const std::vector<Tensor>& inputs, std::vector<int> skip = {}) {
  GradcheckOptions o;
  o.skip_inputs = std::move(skip);
  GradcheckResult r = gradcheck(f, inputs, Tensor(), o);
  EXPECT_TRUE(r.ok) << r.report;
}

TEST(SslFused, Gradcheck) {
  Generator gen(26);
  const TensorOptions f64{DType::f64};
  Tensor q = randn({4, 5}, gen, f64), k = randn({4, 5}, gen, f64), queue = randn({6, 5}, gen, f64);
  expect_gradcheck([](const std::vector<Tensor>& x) { return info_nce_fused(x[0], x[1], x[2], 0.3); }, {q, k, queue});
  std::vector<Tensor> p;
  for (int i = 0; i < 4; ++i) p.push_back(randn({3, 5}, gen, f64));
  for (bool byol : {true, false})
    expect_gradcheck([byol](const std::vector<Tensor>& x) { return cosine_regression_fused(x[0], x[1], x[2], x[3], byol); },
                     p, {2, 3});
  Tensor x = spread_columns(6, 5, gen), y = spread_columns(6, 5, gen);
  expect_gradcheck(
      [](const std::vector<Tensor>& v) {
        std::array<Tensor, 4> t = vicreg_loss_fused(v[0], v[1], 10, 5, 2);
        return stack({t[0], t[1], t[2], t[3]}, 0);
      },
      {x, y});
  expect_gradcheck(
      [](const std::vector<Tensor>& v) {
        std::array<Tensor, 3> t = barlow_loss_fused(v[0], v[1], 0.5);
        return stack({t[0], t[1], t[2]}, 0);
      },
      {x, y});
}

// ---------------------------------------------------------------- stop-gradients

// BYOL / SimSiam targets get no gradient; InfoNCE's keys and queue get one only when they ask
// (as in the official code, where they come from the momentum encoder and a buffer).
TEST(SslFused, StopGradients) {
  Generator gen(27);
  Tensor p1 = randn({3, 4}, gen).requires_grad_(true), p2 = randn({3, 4}, gen).requires_grad_(true);
  Tensor z1 = randn({3, 4}, gen).requires_grad_(true), z2 = randn({3, 4}, gen).requires_grad_(true);
  autograd::backward(add(ssl::byol_loss(p1, p2, z1, z2), ssl::simsiam_loss(p1, p2, z1, z2)));
  EXPECT_TRUE(p1.grad().defined());
  EXPECT_TRUE(p2.grad().defined());
  EXPECT_FALSE(z1.grad().defined());
  EXPECT_FALSE(z2.grad().defined());

  Tensor q = randn({3, 4}, gen).requires_grad_(true), k = randn({3, 4}, gen), queue = randn({5, 4}, gen);
  autograd::backward(ssl::info_nce(q, k, queue, 0.2));
  EXPECT_TRUE(q.grad().defined());
  EXPECT_FALSE(k.grad().defined());
  EXPECT_FALSE(queue.grad().defined());
}

// The methods log detached terms next to the loss: the fused terms are plain () values.
TEST(SslFused, TermsAreScalarsOfTheInputDtype) {
  Generator gen(28);
  Tensor x = randn({5, 6}, gen).requires_grad_(true), y = randn({5, 6}, gen).requires_grad_(true);
  ssl::VicregLoss v = ssl::vicreg_loss(x, y);
  for (const Tensor& t : {v.loss, v.invariance, v.variance, v.covariance}) {
    EXPECT_EQ(t.dim(), 0);
    EXPECT_EQ(t.dtype(), DType::f32);
    EXPECT_TRUE(t.requires_grad());
  }
  EXPECT_NEAR(v.loss.item(), 25 * v.invariance.item() + 25 * v.variance.item() + v.covariance.item(),
              1e-5 * std::abs(v.loss.item()));
  ssl::BarlowLoss b = ssl::barlow_twins_loss(x, y, 0.25);
  EXPECT_NEAR(b.loss.item(), b.on_diag.item() + 0.25 * b.off_diag.item(), 1e-5 * std::abs(b.loss.item()));
  NoGradGuard ng;
  EXPECT_FALSE(ssl::vicreg_loss(x, y).loss.requires_grad());
}

// ---------------------------------------------------------------- errors

TEST(SslFused, BadShapesNameTheLoss) {
  const LossImpl F = LossImpl::fused;
  Tensor z = ones({4, 3});
  expect_error([&] { ssl::info_nce(z, ones({4, 2}), ones({6, 3}), 0.2, F); }, "info_nce: k must have q's shape [4, 3]");
  expect_error([&] { ssl::info_nce(z, z, ones({6, 2}), 0.2, F); }, "info_nce: queue must be (K, 3) f32");
  expect_error([&] { ssl::byol_loss(z, z, ones({5, 3}), z, F); }, "byol_loss: z1 must have p1's shape [4, 3]");
  expect_error([&] { ssl::simsiam_loss(z, z, z, ones({4}), F); }, "simsiam_loss: z2 must be a matrix (N, D)");
  expect_error([&] { ssl::vicreg_loss(z, ones({4, 5}), 25, 25, 1, F); }, "vicreg_loss: y must have x's shape [4, 3]");
  expect_error([&] { ssl::vicreg_loss(ones({1, 3}), ones({1, 3}), 25, 25, 1, F); }, "needs a batch of at least 2");
  expect_error([&] { ssl::barlow_twins_loss(z, ones({4, 3}, {DType::f64}), 0.005, F); },
               "barlow_twins_loss: z2 is f64 but z1 is f32");
  // The autograd ops called directly check their kernels' shapes.
  expect_error([&] { info_nce_fused(z, z, ones({6, 2}), 0.2); }, "info_nce kernel: queue");
  expect_error([&] { cosine_regression_fused(z, ones({4, 2}), z, z, true); }, "cosine_regression kernel");
  expect_error([&] { vicreg_loss_fused(ones({1, 3}), ones({1, 3}), 25, 25, 1); }, "vicreg_loss kernel: needs N >= 2");
  expect_error([&] { barlow_loss_fused(z, ones({3, 3}), 0.005); }, "barlow_twins_loss kernel: shapes");
}

}  // namespace
}  // namespace siam::test
