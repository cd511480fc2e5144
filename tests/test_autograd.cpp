// Autograd engine: accumulation, shared subgraphs, NoGradGuard, detach, graph release.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

using namespace siam;

TEST(Autograd, LeafGradientsAccumulate) {
  Tensor x = from_vector({1, 2, 3}, {3}).requires_grad_();
  autograd::backward(sum(mul(x, x)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 4, 6}));
  autograd::backward(sum(mul(x, 3.0)));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{5, 7, 9})) << "parameter gradients accumulate (+=)";
}

TEST(Autograd, DiamondGraphSumsBothPaths) {
  Tensor x = from_vector({2}, {1}).requires_grad_();
  Tensor y = exp(x);
  Tensor z = add(mul(y, y), y);  // dz/dx = 2 e^2x + e^x
  autograd::backward(sum(z));
  double e2 = std::exp(2.0);
  EXPECT_NEAR(x.grad().item(), 2 * e2 * e2 + e2, 1e-3);
}

TEST(Autograd, NoGradGuardAndDetach) {
  Tensor x = ones({2}).requires_grad_();
  {
    NoGradGuard ng;
    Tensor y = mul(x, 2.0);
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor d = detach(x);
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.raw_data(), x.raw_data()) << "detach shares storage";
  Tensor y = add(mul(x, 2.0), mul(d, 5.0));
  autograd::backward(sum(y));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 2}));
}

TEST(Autograd, GraphIsReleasedAfterBackward) {
  Tensor x = ones({2}).requires_grad_();
  Tensor y = sum(mul(exp(x), 2.0));
  autograd::backward(y);
  try {
    autograd::backward(y);
    FAIL() << "a second backward through a freed graph must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("second time"), std::string::npos) << e.what();
  }
}

TEST(Autograd, BackwardNeedsScalarOrGradient) {
  Tensor x = ones({2, 2}).requires_grad_();
  Tensor y = mul(x, 3.0);
  EXPECT_THROW(autograd::backward(y), Error);
  EXPECT_THROW(autograd::backward(y, ones({3})), Error);
  autograd::backward(y, full({2, 2}, 2.0));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>(4, 6.0)));
  EXPECT_THROW(autograd::backward(ones({1})), Error) << "no graph to run";
  EXPECT_THROW(ones({2}, {DType::i64}).requires_grad_(), Error);
}

TEST(Autograd, GradientsFlowThroughViews) {
  Tensor x = reshape(arange(0, 6), {2, 3});
  x.requires_grad_();
  Tensor y = sum(mul(slice(transpose(x, 0, 1), 0, 1, 3), 2.0));  // rows 1..2 of x^T = columns 1..2
  autograd::backward(y);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{0, 2, 2, 0, 2, 2}));
}

// A square op with a backward scaled by `factor` (2 is right).
static OpFn square_with_backward(double factor) {
  return [factor](const std::vector<Tensor>& in) {
    Tensor x = in[0], y;
    {
      NoGradGuard ng;
      y = mul(x, x);
    }
    return autograd::record("square", y, {x}, [x = detach(x), factor](const Tensor& g) {
      return std::vector<Tensor>{mul(mul(g, x), factor)};
    });
  };
}

TEST(Autograd, GradcheckPassesRightAndCatchesWrongGradients) {
  Tensor x = from_vector({0.5, -1.0, 2.0}, {3}, {DType::f64});
  GradcheckResult good = gradcheck(square_with_backward(2.0), {x});
  EXPECT_TRUE(good.ok) << good.report;
  GradcheckResult bad = gradcheck(square_with_backward(3.0), {x});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.report.find("MISMATCH"), std::string::npos) << bad.report;
  EXPECT_THROW(gradcheck(square_with_backward(2.0), {to(x, DType::f32)}), Error) << "gradcheck needs f64";
}
