// Data-parallel training, run by ctest under `mpirun -np 2` and `-np 4` (tests/dist/main.cpp
// starts MPI): collectives against hand-computed values for every dtype, the differentiable
// all_gather against finite differences of the ranks' summed objective, SyncBN against one
// process's batch norm on the concatenated batch, the gradient reducer, and the property the
// whole design serves: for each of the seven methods, a run of 1, 2 and 4 ranks at the same
// global batch gives the same losses at every step and the same final weights (f64: 1e-10).
#include <algorithm>

#include "nn/data_parallel.h"
#include "nn/layers.h"
#include "ssl/moco.h"
#include "tests/dist/dist_test_util.h"
#include "tests/test_ssl_common.h"

using namespace siam;
using namespace siam::disttest;


// ---------------------------------------------------------------- collectives

TEST(Collectives, AllReduceEveryDtypeAndOp) {
  const int w = world().size(), r = world().rank();
  for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64}) {
    Tensor t = rank_values({3, 5}, dt, r);
    world().all_reduce(t);
    Tensor mx = rank_values({3, 5}, dt, r), mn = rank_values({3, 5}, dt, r);
    world().all_reduce(mx, dist::ReduceOp::max);
    world().all_reduce(mn, dist::ReduceOp::min);
    const std::vector<double> s = t.to_vector(), a = mx.to_vector(), b = mn.to_vector();
    for (size_t i = 0; i < s.size(); ++i) {
      double expect = 0;
      for (int k = 0; k < w; ++k) expect += (k + 1) * 10 + static_cast<int>(i % 7);
      EXPECT_EQ(s[i], expect) << dtype_name(dt) << " element " << i;
      EXPECT_EQ(a[i], w * 10 + static_cast<int>(i % 7)) << dtype_name(dt);
      EXPECT_EQ(b[i], 10 + static_cast<int>(i % 7)) << dtype_name(dt);
    }
  }
}

TEST(Collectives, AsyncAllReduceMatchesBlocking) {
  Tensor a = rank_values({1000}, DType::f32, world().rank()), b = fresh(a);
  auto work = world().all_reduce_async(a);
  world().all_reduce(b);  // a different collective in flight on the same group is allowed after it
  work->wait();
  EXPECT_EQ(max_rel_diff(a, b), 0.0);
}

TEST(Collectives, AllGatherEveryDtype) {
  const int w = world().size(), r = world().rank();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8}) {
    Tensor g = world().all_gather(rank_values({2, 3}, dt, r));
    ASSERT_EQ(g.shape(), (Shape{2 * w, 3})) << dtype_name(dt);
    const std::vector<double> v = g.to_vector();
    for (int k = 0; k < w; ++k)
      for (int i = 0; i < 6; ++i) EXPECT_EQ(v[static_cast<size_t>(k * 6 + i)], (k + 1) * 10 + i % 7) << dtype_name(dt);
  }
}

TEST(Collectives, BroadcastAndReduceScatter) {
  const int w = world().size(), r = world().rank();
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    Tensor t = rank_values({4}, dt, r);
    world().broadcast(t, w - 1);
    EXPECT_EQ(t.to_vector(), rank_values({4}, dt, w - 1).to_vector()) << dtype_name(dt);
    Tensor x = rank_values({2 * w, 2}, dt, r);
    Tensor y = world().reduce_scatter(x);
    ASSERT_EQ(y.shape(), (Shape{2, 2}));
    const std::vector<double> v = y.to_vector();
    for (int i = 0; i < 4; ++i) {
      const int flat = r * 4 + i;
      double expect = 0;
      for (int k = 0; k < w; ++k) expect += (k + 1) * 10 + flat % 7;
      EXPECT_EQ(v[static_cast<size_t>(i)], expect) << dtype_name(dt);
    }
  }
}

TEST(Collectives, SplitGroupsAndDisagreementIsAnError) {
  const int r = world().rank();
  auto halves = world().split(r % 2);
  EXPECT_EQ(halves->size(), (world().size() + 1 - r % 2) / 2);
  Tensor t = full({1}, 1.0, {DType::f64});
  halves->all_reduce(t);
  EXPECT_EQ(t.to_vector()[0], halves->size());
  dist::require_same(world(), 42, "a constant");
  try {
    dist::require_same(world(), static_cast<uint64_t>(r == 0 ? 1 : 2), "the test's value");
    ADD_FAILURE() << "ranks with different values passed require_same";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the ranks disagree on the test's value"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- differentiable all_gather

// The objective of the job is F = sum over ranks of f_r(all_gather(x)), with a different f_r
// on each rank; the backward of all_gather must give dF / dx_r on rank r. Central differences
// perturb one element of one rank's x at a time, every rank evaluating its f_r.
TEST(AllGatherGrad, MatchesFiniteDifferencesOfTheSummedObjective) {
  const int w = world().size(), r = world().rank();
  Tensor x = from_vector({0.3 + r, -0.7 * r, 1.1, 0.25 * (r + 1), -0.4, 0.9}, {3, 2}, {DType::f64});
  Tensor coef = from_vector(std::vector<double>(static_cast<size_t>(6 * w), 0.0), {3 * w, 2}, {DType::f64});
  {
    std::vector<double> c(static_cast<size_t>(6 * w));
    for (size_t i = 0; i < c.size(); ++i) c[i] = std::sin(1.0 + static_cast<double>(i) + 3.0 * r);
    coef = from_vector(c, {3 * w, 2}, {DType::f64});
  }
  auto f = [&](const Tensor& in) {  // f_r: sum(coef_r * g^2) + sum(g)^2 / 7
    Tensor g = all_gather(in, world());
    Tensor s = sum(g);
    return add(sum(mul(coef, mul(g, g))), mul(mul(s, s), 1.0 / 7));
  };
  Tensor xr = fresh(x);
  xr.requires_grad_(true);
  autograd::backward(f(xr));
  const std::vector<double> analytic = xr.grad().to_vector();
  auto total = [&](const Tensor& in) {
    NoGradGuard no_grad;
    Tensor v = contiguous(reshape(f(in), {1}));
    world().all_reduce(v);
    return v.to_vector()[0];
  };
  const double eps = 1e-6;
  for (int owner = 0; owner < w; ++owner)
    for (int64_t i = 0; i < 6; ++i) {
      Tensor plus = fresh(x), minus = fresh(x);
      if (r == owner) {
        plus.data<double>()[i] += eps;
        minus.data<double>()[i] -= eps;
      }
      const double numeric = (total(plus) - total(minus)) / (2 * eps);
      if (r == owner) {
        EXPECT_NEAR(analytic[static_cast<size_t>(i)], numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
            << "rank " << r << " element " << i;
      }
    }
}

// ---------------------------------------------------------------- SyncBN

// Each rank holds rows [r n, (r + 1) n) of one global batch; SyncBN on the shares must equal
// batch norm on the whole batch: outputs, running statistics, and the gradients of a loss
// that mixes samples (so the statistics' derivative matters).
TEST(SyncBatchNorm, EqualsOneProcessOnTheConcatenatedBatch) {
  const int w = world().size(), r = world().rank();
  const int64_t n = 3, c = 4;
  for (bool fused : {false, true})
    for (int64_t dim : {2, 4}) {
      const Shape gs = dim == 2 ? Shape{n * w, c} : Shape{n * w, c, 2, 3};
      Generator gen(7);
      Tensor all_x = randn(gs, gen, {DType::f64}), all_res = randn(gs, gen, {DType::f64});
      Tensor target = randn(gs, gen, {DType::f64});
      Tensor weight0 = randn({c}, gen, {DType::f64}), bias0 = randn({c}, gen, {DType::f64});
      auto run = [&](const Tensor& xin, const Tensor& res, const Tensor& tgt, bool sync, Tensor& rm, Tensor& rv,
                     std::vector<Tensor>& grads) {
        Tensor x = fresh(xin), rr = fresh(res), wt = fresh(weight0), b = fresh(bias0);
        for (Tensor* t : {&x, &rr, &wt, &b}) t->requires_grad_(true);
        Tensor y;
        if (fused)
          y = sync ? sync_batch_norm_act(x, rm, rv, wt, b, rr, true, 0.1, 1e-5, world())
                   : batch_norm_act(x, rm, rv, wt, b, rr, true, true, 0.1, 1e-5);
        else
          y = sync ? sync_batch_norm(x, rm, rv, wt, b, 0.1, 1e-5, world())
                   : batch_norm(x, rm, rv, wt, b, true, 0.1, 1e-5);
        // The global objective: one process sums over the whole batch; each rank its share.
        Tensor loss = sum(mul(mul(y, y), tgt));
        autograd::backward(loss);
        grads = {x.grad(), wt.grad(), b.grad()};
        if (fused) grads.push_back(rr.grad());
        return y;
      };
      Tensor rm1 = zeros({c}, {DType::f64}), rv1 = ones({c}, {DType::f64});
      Tensor rm2 = zeros({c}, {DType::f64}), rv2 = ones({c}, {DType::f64});
      std::vector<Tensor> g1, g2;
      Tensor y1 = run(all_x, all_res, target, false, rm1, rv1, g1);
      Tensor y2 = run(narrow(all_x, 0, r * n, n), narrow(all_res, 0, r * n, n), narrow(target, 0, r * n, n), true, rm2,
                      rv2, g2);
      const std::string what = std::string(fused ? "sync_batch_norm_act" : "sync_batch_norm") + " dim " + std::to_string(dim);
      EXPECT_LT(max_rel_diff(y2, narrow(y1, 0, r * n, n)), 1e-12) << what << " output";
      EXPECT_LT(max_rel_diff(rm2, rm1), 1e-12) << what << " running mean";
      EXPECT_LT(max_rel_diff(rv2, rv1), 1e-12) << what << " running var";
      EXPECT_LT(max_rel_diff(g2[0], narrow(g1[0], 0, r * n, n)), 1e-10) << what << " dx";
      if (fused) {
        EXPECT_LT(max_rel_diff(g2[3], narrow(g1[3], 0, r * n, n)), 1e-10) << what << " dresidual";
      }
      // Parameter gradients are per-rank shares; their sum over ranks is one process's.
      for (int k : {1, 2}) {
        Tensor s = contiguous(g2[static_cast<size_t>(k)]);
        world().all_reduce(s);
        EXPECT_LT(max_rel_diff(s, g1[static_cast<size_t>(k)]), 1e-10) << what << (k == 1 ? " dweight" : " dbias");
      }
    }
}

// ---------------------------------------------------------------- gradient reducer

TEST(GradReducer, AveragesEveryGradientInSeveralBuckets) {
  const int w = world().size(), r = world().rank();
  std::vector<Tensor> params;
  for (int i = 0; i < 5; ++i) {
    Tensor p = full({64, 33}, 0.5 + i, {DType::f64});
    p.requires_grad_(true);
    params.push_back(p);
  }
  Tensor unused = full({3}, 1.0, {DType::f64});
  unused.requires_grad_(true);
  params.push_back(unused);
  auto group = world().duplicate();
  nn::GradReducer reducer(params, *group, /*bucket_mb=*/0.01);  // 10 kB: one parameter a bucket
  EXPECT_EQ(reducer.num_buckets(), 5);  // the unused one shares the last parameter's
  Tensor loss = full({}, 0.0, {DType::f64});
  for (int i = 0; i < 5; ++i) loss = add(loss, mul(sum(mul(params[static_cast<size_t>(i)], params[static_cast<size_t>(i)])), 1.0 + r + i));
  reducer.backward(loss);
  EXPECT_FALSE(unused.grad().defined()) << "a parameter without a gradient got one";
  for (int i = 0; i < 5; ++i) {
    double mean_coef = 0;
    for (int k = 0; k < w; ++k) mean_coef += (1.0 + k + i) / w;
    const std::vector<double> g = params[static_cast<size_t>(i)].grad().to_vector();
    for (double v : g) ASSERT_NEAR(v, 2 * (0.5 + i) * mean_coef, 1e-12) << "parameter " << i;
  }
  EXPECT_GE(reducer.last().overlapped, 4) << "buckets should start while backward runs";
}

namespace {

class WorldSize : public ::testing::TestWithParam<std::string> {};

}  // namespace

// f64: the only differences left are the order of float reductions (gradient and statistic
// sums over ranks), about 1e-16 per step; 1e-10 leaves room for 8 steps of growth.
TEST_P(WorldSize, SameLossesAndWeightsAtOneTwoAndFourRanks) {
  const std::string method = GetParam();
  World w("ws_" + method);
  const std::vector<std::string> sets{"method.name=\"" + method + "\""};
  RunOutput one = run_with(1, w.config, w.dir + "/r1", sets);
  for (int ranks = 2; ranks <= world().size(); ranks *= 2) {
    RunOutput many = run_with(ranks, w.config, w.dir + "/r" + std::to_string(ranks), sets);
    expect_same_run(one, many, 1e-10, method + " at " + std::to_string(ranks) + " ranks");
  }
}

INSTANTIATE_TEST_SUITE_P(Methods, WorldSize,
                         ::testing::Values("simclr", "moco", "byol", "simsiam", "dino", "vicreg", "barlow"));

// f32, with the kNN monitor (its features split over the ranks). Float reduction order
// differs between world sizes and training amplifies it, so the yardstick is f32 rounding
// itself: the N-rank f32 run must be no farther from the 1-rank f32 run than that one is from
// the same run in f64. One pair of runs is one sample of how far training amplifies rounding:
// with im2col convolutions both distances were about 2e-5 after 8 steps; with the few-channel
// direct loops (kernels/cpu/direct_conv.h, this width-4 net) the 1-rank f32 run lands 1.3e-6
// from f64 while 4 ranks land 2.7e-5 from 1 rank. So the bound is floored at 1e-4, still far
// below what a lost, doubled or unaveraged gradient would do in 8 steps (the f64 test above
// pins the distributed arithmetic itself to 1e-10).
TEST(WorldSizeF32, SimclrWithMonitorDiffersOnlyByFloatRounding) {
  World w("ws_f32", "f32");
  const std::vector<std::string> sets{"method.name=\"simclr\"", "data.heldout=16", "data.knn_bank=32", "run.knn_every=1"};
  RunOutput one = run_with(1, w.config, w.dir + "/r1", sets);
  RunOutput exact = run_with(1, w.config, w.dir + "/r1_f64", {sets[0], sets[1], sets[2], sets[3], "run.dtype=\"f64\""});
  RunOutput many = run_with(world().size(), w.config, w.dir + "/rn", sets);
  if (world().rank() != 0) return;
  const double rounding = max_abs_diff(one, exact), ranks = max_abs_diff(one, many);
  EXPECT_GT(rounding, 0.0);
  EXPECT_LE(ranks, std::max(2 * rounding, 1e-4)) << "f32 at " << world().size() << " ranks vs 1 rank: " << ranks
                                 << "; f32 vs f64 at 1 rank: " << rounding;
  ASSERT_EQ(one.losses.size(), many.losses.size());
  for (size_t i = 0; i < one.losses.size(); ++i) EXPECT_NEAR(one.losses[i], many.losses[i], 1e-4) << "step " << i + 1;
  auto knn = [](const std::string& path) {
    std::vector<double> v;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("knn_top1")) v.push_back(j["knn_top1"].get<double>());
    }
    return v;
  };
  const auto a = knn(w.dir + "/r1/metrics.jsonl"), b = knn(w.dir + "/rn/metrics.jsonl");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b) << "the kNN monitor with features split over the ranks";
}

// A run stopped at N ranks resumes at M ranks and ends where one process ends.
TEST(WorldSizeResume, StopAtTwoRanksResumeAtOthers) {
  World w("resume");
  const std::vector<std::string> sets{"method.name=\"barlow\""};
  RunOutput one = run_with(1, w.config, w.dir + "/r1", sets);
  const int resume_at = world().size() >= 4 ? 4 : 1;
  run_with(2, w.config, w.dir + "/split", sets, /*stop_at=*/3);
  RunOutput resumed = run_with(resume_at, w.config, w.dir + "/split", sets, -1, /*resume=*/true);
  if (world().rank() == 0) {
    EXPECT_EQ(resumed.step, one.step);
  }
  expect_same_run(one, resumed, 1e-10, "stopped at 2 ranks, resumed at " + std::to_string(resume_at));
}

TEST(WorldSizeErrors, BatchThatDoesNotSplitAndConfigsThatDiffer) {
  World w("errors");
  const int r = world().rank();
  auto run = [&](std::vector<std::string> sets) {
    apps::PretrainOptions o;
    o.config_path = w.config;
    o.sets = std::move(sets);
    o.output = w.dir + "/e";
    o.console = false;
    try {
      apps::pretrain(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string uneven = run({"run.batch_size=" + std::to_string(4 * world().size() + 1)});
  EXPECT_NE(uneven.find("run.batch_size"), std::string::npos) << uneven;
  EXPECT_NE(uneven.find("equal shares over " + std::to_string(world().size()) + " ranks"), std::string::npos) << uneven;
  const std::string differ = run({"run.seed=" + std::to_string(r == 0 ? 1 : 2)});
  EXPECT_NE(differ.find("the ranks disagree on the resolved config"), std::string::npos) << differ;
}

// ---------------------------------------------------------------- MoCo shuffle-BN

// With the key encoder's batch norm in evaluation mode (per-sample), shuffling the key batch
// across the ranks must not change a single key: the permutation and its inverse agree on all
// ranks. In training mode the keys change (other images share the statistics), and every rank
// still enqueues the same keys.
TEST(MocoShuffleBn, KeysComeBackInOrderAndTheQueueIsShared) {
  const int r = world().rank(), w = world().size();
  const int64_t n = 3;
  Generator gen(11);
  Tensor all0 = randn({n * w, 1, 8, 8}, gen, {DType::f64}), all1 = randn({n * w, 1, 8, 8}, gen, {DType::f64});
  const std::vector<Tensor> views{narrow(all0, 0, r * n, n), narrow(all1, 0, r * n, n)};
  auto queue_after_step = [&](bool shuffle, bool key_bn_eval) {
    nn::init_generator().set_state(5, 0);
    ssl::MocoConfig cfg;
    cfg.projector.dims = {16, 8};
    cfg.queue_size = 64;
    cfg.shuffle_bn = shuffle;
    ssl::MoCo m(cfg, test::tiny_backbone);
    m.to(DType::f64);
    m.set_process_group(&world());
    if (key_bn_eval) m.key_backbone->eval();
    m.training_step(views, ssl::Progress{.step = 3, .steps_per_epoch = 10, .total_steps = 10});
    m.after_optimizer_step(ssl::Progress{.step = 3, .steps_per_epoch = 10, .total_steps = 10});
    return fresh(m.queue);
  };
  EXPECT_LT(max_rel_diff(queue_after_step(true, true), queue_after_step(false, true)), 1e-12)
      << "shuffle-BN with per-sample normalisation changed the keys";
  const Tensor shuffled = queue_after_step(true, false), synced = queue_after_step(false, false);
  EXPECT_GT(max_rel_diff(shuffled, synced), 1e-6) << "shuffle-BN left the key statistics as SyncBN's";
  dist::require_same(world(), dist::fnv1a(shuffled.raw_data(), shuffled.nbytes()), "the MoCo queue after shuffle-BN");
}
