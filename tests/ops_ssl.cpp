// SSL loss cases. PyTorch twins with the same names: tools/reference/cases_ssl.py, each written
// as the official code computes it. A name ending in _composite runs the composite
// implementation, the plain name the fused kernel. Tolerances (f32 vs the f64
// PyTorch reference):
//  kFused - the fused kernels compute in double from the f32 inputs and round once.
//  kChain - a chain of f32 ops (normalise, matmul, log-sum-exp, means), each rounding once;
//           DINO's teacher logits are divided by 0.04, which multiplies their rounding error.
// Observed worst f32 errors: fused 2.4e-7 abs (dino_loss_2crops); chain 8.5e-7 abs
// (dino_loss_multicrop_composite), and 2.7e-5 abs = 1.7e-7 relative on vicreg_loss's value of 33.
// Below the table: fused == composite at larger sizes, helpers, and the errors users see.
#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"
#include "op_harness.h"
#include "ssl/heads.h"
#include "ssl/losses.h"

namespace siam::test {
namespace {

using ssl::LossImpl;

const char* kFused = "double accumulation from f32 inputs, one f32 rounding of each output";
const char* kChain = "a chain of f32 ops (normalise, matmul, log-sum-exp, means), each rounding once";

OpCase c(std::string name, OpFn fn, const char* why, double rtol, double atol, std::vector<int> no_grad = {}) {
  OpCase k;
  k.name = std::move(name);
  k.fn = std::move(fn);
  k.why = why;
  k.rtol = rtol;
  k.atol = atol;
  k.gc.skip_inputs = std::move(no_grad);
  return k;
}
OpCase fused(std::string name, OpFn fn, std::vector<int> no_grad = {}) {
  return c(std::move(name), std::move(fn), kFused, 1e-6, 1e-6, std::move(no_grad));
}
OpCase chain(std::string name, OpFn fn, std::vector<int> no_grad = {}) {
  return c(std::move(name), std::move(fn), kChain, 1e-5, 5e-6, std::move(no_grad));
}

using V = const std::vector<Tensor>&;

OpFn ntxent(double t, LossImpl impl) {
  return [t, impl](V x) { return ssl::nt_xent(x[0], t, x.size() > 1 ? x[1] : Tensor(), impl); };
}
OpFn dino(int64_t crops, double ts, double tt, LossImpl impl) {
  return [=](V x) { return ssl::dino_loss(x[0], x[1], x[2], crops, ts, tt, impl); };
}

OpFn infonce(double t, LossImpl impl) {
  return [t, impl](V x) { return ssl::info_nce(x[0], x[1], x[2], t, impl); };
}
OpFn byol(LossImpl impl) {
  return [impl](V x) { return ssl::byol_loss(x[0], x[1], x[2], x[3], impl); };
}
OpFn simsiam(LossImpl impl) {
  return [impl](V x) { return ssl::simsiam_loss(x[0], x[1], x[2], x[3], impl); };
}
// Every term of the loss, so their gradients are checked too.
OpFn vicreg_terms(LossImpl impl) {
  return [impl](V x) {
    ssl::VicregLoss r = ssl::vicreg_loss(x[0], x[1], 10.0, 5.0, 2.0, impl);
    return stack({r.loss, r.invariance, r.variance, r.covariance}, 0);
  };
}
OpFn barlow_terms(LossImpl impl) {
  return [impl](V x) {
    ssl::BarlowLoss r = ssl::barlow_twins_loss(x[0], x[1], 0.5, impl);
    return stack({r.loss, r.on_diag, r.off_diag}, 0);
  };
}

const LossImpl F = LossImpl::fused, C = LossImpl::composite;

OpTable table({
    fused("ntxent_pairs", ntxent(0.5, F)),
    chain("ntxent_pairs_composite", ntxent(0.5, C)),
    fused("ntxent_pairs_cold", ntxent(0.1, F)),
    chain("ntxent_pairs_cold_composite", ntxent(0.1, C)),
    fused("ntxent_groups", ntxent(0.2, F)),
    chain("ntxent_groups_composite", ntxent(0.2, C)),
    fused("ntxent_mined", ntxent(0.3, F)),
    chain("ntxent_mined_composite", ntxent(0.3, C)),

    fused("infonce_queue", infonce(0.2, F)),
    chain("infonce_queue_composite", infonce(0.2, C)),
    fused("infonce_queue_warm", infonce(1.0, F)),
    chain("infonce_queue_warm_composite", infonce(1.0, C)),

    fused("byol_loss", byol(F), {2, 3}),
    chain("byol_loss_composite", byol(C), {2, 3}),
    fused("simsiam_loss", simsiam(F), {2, 3}),
    chain("simsiam_loss_composite", simsiam(C), {2, 3}),

    fused("dino_loss_2crops", dino(2, 0.1, 0.04, F), {1, 2}),
    chain("dino_loss_2crops_composite", dino(2, 0.1, 0.04, C), {1, 2}),
    fused("dino_loss_multicrop", dino(5, 0.1, 0.07, F), {1, 2}),
    chain("dino_loss_multicrop_composite", dino(5, 0.1, 0.07, C), {1, 2}),

    // DINO's last layer with its parameters taken from the inputs: x, weight_g, weight_v.
    chain("dino_weight_norm_linear",
          [](V x) {
            ssl::WeightNormLinear layer(x[2].size(1), x[2].size(0));
            layer.weight_g = x[1];
            layer.weight_v = x[2];
            return layer.forward(x[0]);
          }),
    fused("vicreg_loss", [](V x) { return ssl::vicreg_loss(x[0], x[1], 25, 25, 1, F).loss; }),
    chain("vicreg_loss_composite", [](V x) { return ssl::vicreg_loss(x[0], x[1], 25, 25, 1, C).loss; }),
    fused("vicreg_terms", vicreg_terms(F)),
    chain("vicreg_terms_composite", vicreg_terms(C)),
    fused("barlow_loss", [](V x) { return ssl::barlow_twins_loss(x[0], x[1], 0.0051, F).loss; }),
    chain("barlow_loss_composite", [](V x) { return ssl::barlow_twins_loss(x[0], x[1], 0.0051, C).loss; }),
    fused("barlow_terms", barlow_terms(F)),
    chain("barlow_terms_composite", barlow_terms(C)),
});

// ---------------------------------------------------------------- fused == composite

struct Evaluated {
  double loss;
  std::vector<double> grad;
};

Evaluated evaluate(const std::function<Tensor(const Tensor&)>& loss_of, const Tensor& x0) {
  Tensor x = clone(x0).requires_grad_(true);
  Tensor loss = loss_of(x);
  autograd::backward(loss);
  return {loss.item(), x.grad().to_vector()};
}

// The fused kernel and the composite agree to rounding: exactly the same formula, only the
// order and precision of the sums differ (double in the kernel, f32 ops in the composite).
void expect_same(const Evaluated& a, const Evaluated& b, double tol) {
  EXPECT_NEAR(a.loss, b.loss, tol * (1 + std::abs(b.loss)));
  ASSERT_EQ(a.grad.size(), b.grad.size());
  double worst = 0;
  for (size_t i = 0; i < a.grad.size(); ++i) worst = std::max(worst, std::abs(a.grad[i] - b.grad[i]));
  EXPECT_LT(worst, tol) << "worst gradient difference";
}

double tolerance(DType dt) { return dt == DType::f64 ? 1e-12 : 2e-6; }

TEST(SslLosses, NtXentFusedEqualsComposite) {
  Generator gen(11);
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor z = randn({64, 16}, gen, {dt});
    std::vector<double> groups;
    for (int v = 0; v < 2; ++v)
      for (int i = 0; i < 32; ++i) groups.push_back(i % 10);  // 32 images of 10 classes
    Tensor pos = ssl::positives_from_groups(from_vector(groups, {64}, {DType::i64}));
    for (const Tensor& mask : {Tensor(), pos}) {
      for (double t : {0.1, 0.5}) {
        auto run = [&](LossImpl impl) {
          return evaluate([&](const Tensor& x) { return ssl::nt_xent(x, t, mask, impl); }, z);
        };
        expect_same(run(LossImpl::fused), run(LossImpl::composite), tolerance(dt));
      }
    }
  }
}

TEST(SslLosses, DinoFusedEqualsCompositeMultiCrop) {
  Generator gen(12);
  for (DType dt : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dt));
    const int64_t b = 4, k = 64, crops = 10;  // 2 global + 8 local crops
    Tensor student = randn({crops * b, k}, gen, {dt}), teacher = randn({2 * b, k}, gen, {dt});
    Tensor center = mul(randn({1, k}, gen, {dt}), 0.1);
    auto run = [&](LossImpl impl) {
      return evaluate([&](const Tensor& x) { return ssl::dino_loss(x, teacher, center, crops, 0.1, 0.04, impl); },
                      student);
    };
    expect_same(run(LossImpl::fused), run(LossImpl::composite), tolerance(dt));
  }
}

// The fused DINO loss gives neither the teacher nor the centre a gradient (stop-gradient).
TEST(SslLosses, DinoTeacherAndCenterGetNoGradient) {
  Generator gen(13);
  Tensor student = randn({4, 5}, gen).requires_grad_(true), teacher = randn({4, 5}, gen).requires_grad_(true);
  Tensor center = zeros({5}).requires_grad_(true);
  for (LossImpl impl : {LossImpl::fused, LossImpl::composite}) {
    autograd::backward(ssl::dino_loss(student, teacher, center, 2, 0.1, 0.04, impl));
    EXPECT_FALSE(teacher.grad().defined());
    EXPECT_FALSE(center.grad().defined());
  }
}

// ---------------------------------------------------------------- helpers

TEST(SslLosses, PositivesFromGroups) {
  Tensor p = ssl::positives_from_groups(from_vector({0, 1, 0, 1, 2}, {5}, {DType::i64}));
  EXPECT_EQ(p.dtype(), DType::b8);
  std::vector<double> want = {0, 0, 1, 0, 0,  //
                              0, 0, 0, 1, 0,  //
                              1, 0, 0, 0, 0,  //
                              0, 1, 0, 0, 0,  //
                              0, 0, 0, 0, 0};
  EXPECT_EQ(p.to_vector(), want);
}

// Orthonormal rows (N = D): each dimension holds one 1 and N - 1 zeros, whose unbiased
// standard deviation is exactly 1/sqrt(D); identical rows give 0 (collapse).
TEST(SslLosses, EmbeddingStdHealthyAndCollapsed) {
  const int64_t d = 16;
  EXPECT_NEAR(ssl::embedding_std(mul(eye(d, {DType::f64}), 3.0)).item(), 1.0 / std::sqrt(16.0), 1e-12);
  EXPECT_NEAR(ssl::embedding_std(ones({8, d}, {DType::f64})).item(), 0.0, 1e-12);
  Tensor z = randn({8, d}).requires_grad_(true);
  EXPECT_FALSE(ssl::embedding_std(z).requires_grad());
}

// ---------------------------------------------------------------- errors

TEST(SslLosses, ErrorsNameTheLossAndTheProblem) {
  Tensor z = ones({4, 3});
  expect_error([&] { ssl::nt_xent(ones({5, 3}), 0.5); }, "nt_xent: without a positive mask z holds two views");
  expect_error([&] { ssl::nt_xent(z, 0.0); }, "nt_xent: temperature must be a positive number, got 0");
  expect_error([&] { ssl::nt_xent(z, 0.5, ones({4, 4}, {DType::b8})); }, "marks anchor 0 as its own positive");
  expect_error([&] { ssl::nt_xent(z, 0.5, zeros({4, 4}, {DType::b8})); }, "anchor 0 has no positive");
  expect_error([&] { ssl::nt_xent(z, 0.5, zeros({3, 3}, {DType::b8})); }, "positives must be (M, M) = [4, 4]");
  expect_error([&] { ssl::nt_xent(z, 0.5, zeros({4, 4})); }, "positives must be a bool mask, got f32");
  expect_error([&] { ssl::nt_xent(ones({4}), 0.5); }, "z must be a matrix (N, D), got shape [4]");
  expect_error([&] { ssl::info_nce(z, z, ones({6, 2}), 0.2); }, "info_nce: queue must be (K, 3) f32");
  expect_error([&] { ssl::byol_loss(z, z, z, ones({4, 2})); }, "byol_loss: z2 must have p1's shape [4, 3]");
  expect_error([&] { ssl::simsiam_loss(z, ones({4, 3}, {DType::f64}), z, z); }, "p2 is f64 but p1 is f32");
  expect_error([&] { ssl::dino_loss(ones({6, 3}), ones({2, 3}), zeros({3}), 4, 0.1, 0.04); },
               "must split into student_crops >= 2 equal crops, got 4");
  expect_error([&] { ssl::dino_loss(ones({6, 3}), ones({9, 3}), zeros({3}), 2, 0.1, 0.04); },
               "teacher must be (T B, K) = (T * 3, 3) with 1 <= T <= 2 crops, got [9, 3]");
  expect_error([&] { ssl::dino_loss(ones({6, 3}), ones({3, 3}), zeros({4}), 2, 0.1, 0.04); },
               "center must hold K = 3 values");
  expect_error([&] { ssl::vicreg_loss(ones({1, 3}), ones({1, 3})); }, "needs a batch of at least 2");
  expect_error([&] { ssl::barlow_twins_loss(z, ones({5, 3})); }, "z2 must have z1's shape [4, 3]");
  expect_error([&] { ssl::positives_from_groups(ones({4})); }, "group must be an i64 vector (M), got f32 [4]");
}

}  // namespace
}  // namespace siam::test
