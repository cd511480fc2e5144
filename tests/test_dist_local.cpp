// dist/ in one process (no launcher): the world is the one-process group, its collectives are
// identities, and the data-parallel pieces reduce to their one-process selves: SyncBN over
// one rank is batch norm (its fused statistic and backward kernels against the plain kernel),
// the gradient reducer is plain backward. The multi-rank behaviour is tested under mpirun
// (tests/dist/).
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops_dist.h"
#include "kernels/norm.h"
#include "nn/data_parallel.h"
#include "tensor/rng.h"
#include "tests/test_util.h"

using namespace siam;

namespace {

double max_abs(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

}  // namespace

TEST(DistLocal, WorldWithoutLauncherIsOneProcess) {
  if (std::getenv("OMPI_COMM_WORLD_SIZE")) GTEST_SKIP() << "started under mpirun";
  EXPECT_EQ(dist::world().size(), 1);
  EXPECT_EQ(dist::world().rank(), 0);
  EXPECT_EQ(dist::launch().launcher, "none");
  EXPECT_EQ(dist::world().backend(Device::cpu()), "self");
  Tensor t = full({3}, 2.0);
  dist::world().all_reduce(t);
  EXPECT_EQ(t.to_vector(), (std::vector<double>{2, 2, 2}));
  EXPECT_EQ(dist::world().all_gather(t).to_vector(), t.to_vector());
  EXPECT_GE(dist::default_threads(), 1);
  dist::require_same(dist::world(), 7, "anything");
  test::expect_error([] { dist::make_group("gloo", dist::world(), -1); }, "run.dist_backend must be");
}

TEST(DistLocal, SyncBatchNormOverOneRankIsBatchNorm) {
  auto self = dist::self_group();
  Generator gen(4);
  for (DType dt : {DType::f64, DType::f32})
    for (bool fused : {false, true}) {
      Tensor x0 = randn({5, 3, 4, 2}, gen, {dt}), r0 = randn({5, 3, 4, 2}, gen, {dt}), t = randn({5, 3, 4, 2}, gen, {dt});
      Tensor w0 = randn({3}, gen, {dt}), b0 = randn({3}, gen, {dt});
      auto run = [&](bool sync) {
        Tensor x = copy_to(x0, Device::cpu(), dt), r = copy_to(r0, Device::cpu(), dt), w = copy_to(w0, Device::cpu(), dt),
               b = copy_to(b0, Device::cpu(), dt);
        for (Tensor* p : {&x, &r, &w, &b}) p->requires_grad_(true);
        Tensor rm = zeros({3}, {dt}), rv = ones({3}, {dt});
        Tensor y = fused ? (sync ? sync_batch_norm_act(x, rm, rv, w, b, r, true, 0.1, 1e-5, *self)
                                 : batch_norm_act(x, rm, rv, w, b, r, true, true, 0.1, 1e-5))
                         : (sync ? sync_batch_norm(x, rm, rv, w, b, 0.1, 1e-5, *self)
                                 : batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5));
        autograd::backward(sum(mul(mul(y, y), t)));
        std::vector<Tensor> out{y, rm, rv, x.grad(), w.grad(), b.grad()};
        if (fused) out.push_back(r.grad());
        return out;
      };
      const auto a = run(false), s = run(true);
      const double tol = dt == DType::f64 ? 1e-12 : 1e-4;
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_LT(max_abs(a[i], s[i]), tol) << dtype_name(dt) << (fused ? " fused" : "") << " tensor " << i;
    }
}

TEST(DistLocal, ChannelSumsKernel) {
  Generator gen(9);
  Tensor x = randn({4, 3, 5}, gen, {DType::f64});
  Tensor x4 = reshape(x, {4, 3, 5, 1});
  const std::vector<double> s = kernels::batch_norm_channel_sums(x4, Tensor()).to_vector();
  const std::vector<double> v = x.to_vector();
  for (int c = 0; c < 3; ++c) {
    double expect = 0;
    for (int n = 0; n < 4; ++n)
      for (int k = 0; k < 5; ++k) expect += v[static_cast<size_t>((n * 3 + c) * 5 + k)];
    EXPECT_NEAR(s[static_cast<size_t>(c)], expect, 1e-12);
  }
  Tensor centre = from_vector({0.5, -1, 2}, {3}, {DType::f64});
  const std::vector<double> q = kernels::batch_norm_channel_sums(x4, centre).to_vector();
  const double c1 = -1;
  double expect = 0;
  for (int n = 0; n < 4; ++n)
    for (int k = 0; k < 5; ++k) expect += std::pow(v[static_cast<size_t>((n * 3 + 1) * 5 + k)] - c1, 2);
  EXPECT_NEAR(q[1], expect, 1e-12);
}

TEST(DistLocal, GradReducerOverOneRankIsBackward) {
  auto self = dist::self_group();
  Tensor p = full({4}, 3.0, {DType::f64});
  p.requires_grad_(true);
  nn::GradReducer r({p}, *self);
  r.backward(sum(mul(p, p)));
  EXPECT_EQ(p.grad().to_vector(), (std::vector<double>{6, 6, 6, 6}));
  EXPECT_EQ(r.last().buckets, 1);
}
