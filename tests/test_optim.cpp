// Optimizers, schedules, gradient clipping and the EMA updater. The three optimizers train a
// small MLP for 20 steps with warm-up + cosine and must follow PyTorch's run
// (tests/fixtures/optim, written by tools/reference/gen_optim.py); the rest is checked
// against values computed by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "nn/ema.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tensor/safetensors.h"

using namespace siam;
using namespace siam::nn;

namespace {

constexpr int kOptimFixtureFormat = 1;
constexpr int kSteps = 20;
const std::vector<std::string> kNames = {"0.weight", "0.bias", "2.weight", "2.bias"};

SafeTensors load_fixture(const std::string& name) {
  std::string path = std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/optim/" + name + ".safetensors";
  const char* regen = "regenerate with `/usr/bin/python3 tools/reference/gen_optim.py tests/fixtures/optim`";
  if (!std::filesystem::exists(path)) fail("missing fixture ", path, ": ", regen);
  SafeTensors st = load_safetensors(path);
  auto it = st.metadata.find("format_version");
  if (it == st.metadata.end() || it->second != std::to_string(kOptimFixtureFormat))
    fail("stale fixture ", path, ": format_version ", it == st.metadata.end() ? "missing" : it->second,
         ", this test expects ", kOptimFixtureFormat, ": ", regen);
  return st;
}

// x (N, in), w (out, in), b (out) -> (N, out). Written with broadcasting and sum so the test
// leans on the core elementwise and reduction ops only.
Tensor affine(const Tensor& x, const Tensor& w, const Tensor& b) { return sum(unsqueeze(x, 1) * w, {2}) + b; }

struct Settings {
  CosineSchedule lr;
  std::optional<CosineSchedule> wd = std::nullopt;  // applied through set_weight_decay
  std::optional<double> clip = std::nullopt;        // max total gradient norm
};

struct RunResult {
  std::vector<double> loss, lr, wd, grad_norm;
  std::map<std::string, Tensor> params;
};

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(const std::map<std::string, Tensor>&)>;

// The twin of gen_optim.py's run(): loss before each step, schedule applied before each step.
RunResult train(const SafeTensors& fx, DType dt, const MakeOptimizer& make, const Settings& s) {
  RunResult r;
  for (const auto& n : kNames) r.params[n] = copy_to(fx.at("init." + n), Device::cpu(), dt).requires_grad_(true);
  Tensor x = copy_to(fx.at("x"), Device::cpu(), dt), y = copy_to(fx.at("y"), Device::cpu(), dt);
  std::unique_ptr<Optimizer> opt = make(r.params);
  std::vector<Tensor> all;
  for (const auto& n : kNames) all.push_back(r.params[n]);
  for (int k = 0; k < kSteps; ++k) {
    r.lr.push_back(s.lr(k));
    opt->set_lr(s.lr(k));
    if (s.wd) {
      r.wd.push_back((*s.wd)(k));
      opt->set_weight_decay((*s.wd)(k));
    }
    opt->zero_grad();
    auto& p = r.params;
    Tensor out = affine(relu(affine(x, p["0.weight"], p["0.bias"])), p["2.weight"], p["2.bias"]);
    Tensor loss = mean(pow(out - y, 2));
    autograd::backward(loss);
    if (s.clip) r.grad_norm.push_back(clip_grad_norm(all, *s.clip));
    opt->step();
    r.loss.push_back(loss.item());
  }
  return r;
}

::testing::AssertionResult close(const std::string& what, const std::vector<double>& a,
                                 const std::vector<double>& b, double rtol, double atol) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << what << ": " << a.size() << " values, PyTorch " << b.size();
  for (size_t k = 0; k < a.size(); ++k)
    if (!(std::abs(a[k] - b[k]) <= atol + rtol * std::abs(b[k])))
      return ::testing::AssertionFailure() << what << "[" << k << "]: siam " << a[k] << ", PyTorch " << b[k]
                                           << " (rtol " << rtol << ", atol " << atol << ")";
  return ::testing::AssertionSuccess();
}

std::vector<double> values(const Tensor& t) { return t.to_vector(); }

// f64: the same arithmetic as PyTorch's f64 run with only the summation order changed; 20
// steps agree to ~1e-14 relative (observed), checked at 1e-10. f32: each op rounds at ~6e-8 and
// momentum / Adam's normalised steps carry it forward; 20 steps stay within 1e-5 relative
// plus 1e-8 absolute of the f64 reference (observed), checked at 1e-4 and 1e-7. A wrong rule
// (no Nesterov term, decay on an excluded group, a missing bias correction) is off by > 1e-3.
struct Tol {
  double rtol, atol;
};
Tol tolerance(DType dt) { return dt == DType::f64 ? Tol{1e-10, 1e-13} : Tol{1e-4, 1e-7}; }

void compare_with_fixture(const std::string& fixture, const MakeOptimizer& make, const Settings& s) {
  SafeTensors fx = load_fixture(fixture);
  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    Tol tol = tolerance(dt);
    RunResult r = train(fx, dt, make, s);
    EXPECT_TRUE(close("lr schedule", r.lr, values(fx.at("lr")), 1e-12, 1e-15));
    EXPECT_TRUE(close("loss", r.loss, values(fx.at("loss")), tol.rtol, tol.atol));
    if (s.wd) {
      EXPECT_TRUE(close("wd schedule", r.wd, values(fx.at("wd")), 1e-12, 1e-15));
    }
    if (s.clip) {
      EXPECT_TRUE(close("grad norm", r.grad_norm, values(fx.at("grad_norm")), tol.rtol, tol.atol));
    }
    for (const auto& n : kNames)
      EXPECT_TRUE(close("final " + n, values(r.params[n]), values(fx.at("final." + n)), tol.rtol, tol.atol));
  }
}

NamedTensors pick(const std::map<std::string, Tensor>& p, const std::vector<std::string>& names) {
  NamedTensors out;
  for (const auto& n : names) out.emplace_back(n, p.at(n));
  return out;
}

}  // namespace

// ---------------------------------------------------------------- against PyTorch

TEST(Optim, SgdNesterovWeightDecayFixedLrGroupMatchesPyTorch) {
  compare_with_fixture(
      "sgd",
      [](const std::map<std::string, Tensor>& p) {
        std::vector<ParamGroup> g = {
            {.name = "weights", .params = pick(p, {"0.weight", "0.bias", "2.bias"}), .lr = 0.2, .weight_decay = 5e-3},
            {.name = "predictor", .params = pick(p, {"2.weight"}), .lr = 0.05, .weight_decay = 5e-3, .fixed_lr = true}};
        return std::make_unique<SGD>(g, SgdOptions{.momentum = 0.9, .nesterov = true});
      },
      {.lr = CosineSchedule(0.2, 0.002, kSteps, 5, 0.02)});
}

TEST(Optim, LarsWithExcludedBiasesMatchesPyTorch) {
  compare_with_fixture(
      "lars",
      [](const std::map<std::string, Tensor>& p) {
        NamedTensors all = pick(p, kNames);
        std::vector<ParamGroup> g = bias_and_norm_groups(all, 2.0, 1e-2, 0.024);
        EXPECT_EQ(g.size(), 2u);
        return std::make_unique<LARS>(g, LarsOptions{.momentum = 0.9, .eta = 0.001});
      },
      {.lr = CosineSchedule(2.0, 0.02, kSteps, 5, 0.2)});
}

TEST(Optim, AdamWWithWeightDecayScheduleAndClippingMatchesPyTorch) {
  compare_with_fixture(
      "adamw",
      [](const std::map<std::string, Tensor>& p) {
        return std::make_unique<AdamW>(bias_and_norm_groups(pick(p, kNames), 1e-2, 0.04),
                                       AdamWOptions{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8});
      },
      {.lr = CosineSchedule(1e-2, 1e-4, kSteps, 5), .wd = CosineSchedule(0.04, 0.4, kSteps), .clip = 0.5});
}

// ---------------------------------------------------------------- by hand

namespace {
Tensor param(std::vector<double> v) { return from_vector(v, {static_cast<int64_t>(v.size())}).requires_grad_(true); }
void set_grad(const Tensor& p, std::vector<double> g) { p.set_grad(from_vector(g, p.shape())); }
void expect_values(const Tensor& t, std::vector<double> want, double tol = 1e-6) {
  std::vector<double> got = t.to_vector();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}
}  // namespace

TEST(Optim, LarsTrustRatioByHand) {
  // w = (3, 4): ||w|| = 5; g + wd w = (0.6, 0.8) + 0.1 (3, 4) = (0.9, 1.2): norm 1.5.
  // q = eta 5 / 1.5; buf = q (0.9, 1.2); w -= lr buf.
  Tensor w = param({3, 4}), zero = param({0, 0}), b = param({1, -1});
  ParamGroup main{.name = "weights", .params = {{"w", w}, {"zero", zero}}, .lr = 0.5, .weight_decay = 0.1};
  ParamGroup bias{.name = "bias", .params = {{"b", b}}, .lr = 0.5, .weight_decay = 0.1,
                  .exclude_wd_and_adaptation = true};
  LARS opt({main, bias}, {.momentum = 0.9, .eta = 0.01});
  set_grad(w, {0.6, 0.8});
  set_grad(zero, {1, 2});
  set_grad(b, {0.5, 0.25});
  opt.step();
  double q = 0.01 * 5 / 1.5;
  expect_values(w, {3 - 0.5 * q * 0.9, 4 - 0.5 * q * 1.2});
  expect_values(zero, {-0.5, -1.0});          // ||w|| = 0: trust ratio 1
  expect_values(b, {1 - 0.25, -1 - 0.125});   // excluded: no decay, no ratio
  expect_values(opt.state_dict().at("w.momentum_buffer"), {q * 0.9, q * 1.2});
  // Second step: momentum carries the first buffer.
  set_grad(b, {0.5, 0.25});
  opt.step();
  expect_values(b, {0.75 - 0.5 * (0.9 * 0.5 + 0.5), -1.125 - 0.5 * (0.9 * 0.25 + 0.25)});
}

TEST(Optim, SetLrHonoursFixedGroupsAndScales) {
  Tensor a = param({1}), b = param({1}), c = param({1});
  SGD opt({{.name = "a", .params = {{"a", a}}, .lr = 1},
           {.name = "b", .params = {{"b", b}}, .lr = 1, .lr_scale = 0.5},
           {.name = "c", .params = {{"c", c}}, .lr = 0.05, .weight_decay = 0.1, .fixed_lr = true,
            .exclude_wd_and_adaptation = true}});
  opt.set_lr(0.2);
  opt.set_weight_decay(0.3);
  EXPECT_DOUBLE_EQ(opt.groups()[0].lr, 0.2);
  EXPECT_DOUBLE_EQ(opt.groups()[1].lr, 0.1);
  EXPECT_DOUBLE_EQ(opt.groups()[2].lr, 0.05);
  EXPECT_DOUBLE_EQ(opt.groups()[0].weight_decay, 0.3);
  EXPECT_DOUBLE_EQ(opt.groups()[2].weight_decay, 0.1);
  // The excluded group's weight decay is not applied: c moves by lr g only.
  set_grad(c, {1});
  opt.step();
  expect_values(c, {1 - 0.05});
}

TEST(Optim, BiasAndNormGroupsSplitByRank) {
  NamedTensors p = {{"conv.weight", zeros({2, 1, 3, 3})}, {"bn.weight", zeros({2})}, {"fc.bias", zeros({2})},
                    {"fc.weight", zeros({2, 2})}};
  std::vector<ParamGroup> g = bias_and_norm_groups(p, 0.2, 1e-6, 0.024);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0].name, "weights");
  EXPECT_EQ(g[0].params.size(), 2u);
  EXPECT_FALSE(g[0].exclude_wd_and_adaptation);
  EXPECT_EQ(g[1].name, "bias_and_norm");
  EXPECT_EQ(g[1].params[0].first, "bn.weight");
  EXPECT_TRUE(g[1].exclude_wd_and_adaptation);
  EXPECT_DOUBLE_EQ(g[1].lr, 0.2 * 0.024);
  EXPECT_EQ(bias_and_norm_groups({{"w", zeros({2, 2})}}, 0.1, 0).size(), 1u);
}

TEST(Optim, ParametersWithoutGradientKeepTheirState) {
  // DINO freezes its last layer by dropping its gradient: its Adam step count must not move,
  // so it gets its own bias correction later, as in PyTorch.
  Tensor a = param({1, 2}), frozen = param({3});
  AdamW opt({{.name = "all", .params = {{"a", a}, {"frozen", frozen}}, .lr = 0.1}});
  set_grad(a, {1, 1});
  opt.step();
  opt.step();
  EXPECT_EQ(opt.state_dict().at("a.step").item(), 2);
  EXPECT_EQ(opt.state_dict().at("frozen.step").item(), 0);
  expect_values(frozen, {3});
  expect_values(opt.state_dict().at("frozen.exp_avg"), {0});
  set_grad(frozen, {1});
  opt.step();
  // First step for `frozen`: bias-corrected m / sqrt(v) = 1, so it moves by lr.
  expect_values(frozen, {3 - 0.1}, 1e-6);
}

TEST(Optim, StateDictNamesAndStrictLoad) {
  Tensor w = param({1, 2});
  AdamW opt({{.name = "g", .params = {{"layer.weight", w}}, .lr = 0.1}});
  std::vector<std::string> names;
  for (const auto& [n, t] : opt.state_dict()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"layer.weight.exp_avg", "layer.weight.exp_avg_sq", "layer.weight.step"}));
  EXPECT_EQ(opt.state_dict().at("layer.weight.step").dtype(), DType::i64);

  std::map<std::string, Tensor> sd = {{"layer.weight.exp_avg", full({2}, 0.5)},
                                      {"layer.weight.exp_avg_sq", full({2}, 0.25)},
                                      {"layer.weight.step", scalar_tensor(7, {DType::i64})}};
  opt.load_state_dict(sd);
  expect_values(opt.state_dict().at("layer.weight.exp_avg"), {0.5, 0.5});
  EXPECT_EQ(opt.state_dict().at("layer.weight.step").item(), 7);

  auto expect_error = [&](std::map<std::string, Tensor> bad, const std::string& phrase) {
    try {
      opt.load_state_dict(bad);
      ADD_FAILURE() << "no error; expected one containing '" << phrase << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  auto missing = sd;
  missing.erase("layer.weight.step");
  expect_error(missing, "missing: [layer.weight.step]");
  auto extra = sd;
  extra["other.exp_avg"] = zeros({1});
  expect_error(extra, "unexpected: [other.exp_avg]");
  auto shape = sd;
  shape["layer.weight.exp_avg"] = zeros({3});
  expect_error(shape, "'layer.weight.exp_avg' is [3] f32, this optimizer expects [2] f32");
}

TEST(Optim, RejectsBadSettings) {
  Tensor w = param({1});
  auto expect_error = [](auto make, const std::string& phrase) {
    try {
      make();
      ADD_FAILURE() << "no error; expected one containing '" << phrase << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  expect_error([&] { SGD({{.name = "g", .params = {{"w", w}}, .lr = -1}}); }, "group 'g' lr must be in [0, inf], got -1");
  expect_error([&] { SGD({{.name = "g", .params = {{"w", w}}, .lr = 1}}, {.nesterov = true}); },
               "nesterov needs momentum > 0");
  expect_error([&] { SGD({{.name = "g", .params = {{"w", w}}, .lr = 1}}, {.momentum = 1.5}); },
               "momentum must be in [0, 1), got 1.5");
  expect_error([&] { LARS({{.name = "g", .params = {{"w", w}}, .lr = 1}}, {.eta = 0}); }, "eta must be > 0");
  expect_error([&] { AdamW({{.name = "a", .params = {{"w", w}}}, {.name = "b", .params = {{"w", w}}}}); },
               "parameter 'w' appears twice (groups 'a' and 'b')");
  expect_error([&] { AdamW(std::vector<ParamGroup>{}); }, "no parameter groups");
}

// ---------------------------------------------------------------- schedules

TEST(Schedule, CosineWithWarmupAtKnownPoints) {
  // Warm-up over 4 steps from 0 to 1 (np.linspace: both ends), then cosine over 10 steps to 0.
  CosineSchedule s(1.0, 0.0, 14, 4, 0.0);
  EXPECT_DOUBLE_EQ(s(0), 0.0);
  EXPECT_DOUBLE_EQ(s(1), 1.0 / 3);
  EXPECT_DOUBLE_EQ(s(2), 2.0 / 3);
  EXPECT_DOUBLE_EQ(s(3), 1.0);
  EXPECT_DOUBLE_EQ(s(4), 1.0);                        // the cosine starts at base
  EXPECT_NEAR(s(9), 0.5, 1e-15);                      // half way: cos(pi / 2) = 0
  EXPECT_NEAR(s(13), 0.5 * (1 + std::cos(M_PI * 9 / 10)), 1e-15);
  EXPECT_DOUBLE_EQ(s(14), 0.0);                       // past the end: final
  EXPECT_DOUBLE_EQ(s(1000), 0.0);
  EXPECT_DOUBLE_EQ(CosineSchedule(1.0, 0.0, 5, 1, 0.25)(0), 0.25);  // one warm-up step is the start
}

TEST(Schedule, DinoWeightDecayCosine) {
  CosineSchedule wd(0.04, 0.4, 100);
  EXPECT_DOUBLE_EQ(wd(0), 0.04);
  EXPECT_NEAR(wd(50), 0.22, 1e-15);
  EXPECT_NEAR(wd(99), 0.4 - 0.18 * (1 + std::cos(M_PI * 0.99)), 1e-15);
  EXPECT_LT(wd(99), 0.4);
}

TEST(Schedule, RejectsBadSchedules) {
  EXPECT_THROW(CosineSchedule(1, 0, 5, 5), Error);
  EXPECT_THROW(CosineSchedule(1, 0, 5, -1), Error);
  EXPECT_THROW(CosineSchedule(1, 0, 5)(-1), Error);
  EXPECT_THROW(ema_momentum(0.996, 0, 0), Error);
  EXPECT_THROW(ema_momentum(1.5, 0, 10), Error);
}

TEST(Schedule, EmaMomentumValues) {
  EXPECT_DOUBLE_EQ(ema_momentum(0.996, 0, 100), 0.996);
  EXPECT_NEAR(ema_momentum(0.996, 50, 100), 0.998, 1e-15);
  EXPECT_NEAR(ema_momentum(0.99, 25, 100), 1 - 0.01 * (std::cos(M_PI / 4) + 1) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(ema_momentum(0.996, 100, 100), 1.0);
  EXPECT_DOUBLE_EQ(ema_momentum(0.996, 150, 100), 1.0);
  // DINO writes the same curve as a cosine schedule from tau_base to 1.
  CosineSchedule dino(0.996, 1.0, 100);
  for (int k : {0, 10, 37, 99}) EXPECT_NEAR(ema_momentum(0.996, k, 100), dino(k), 1e-15) << k;
}

TEST(Schedule, ClipGradNormByHand) {
  // Gradients (3, 4) and (12): total norm sqrt(9 + 16 + 144) = 13.
  Tensor a = param({0, 0}), b = param({0}), none = param({5});
  set_grad(a, {3, 4});
  set_grad(b, {12});
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b, none}, 20), 13);
  expect_values(a.grad(), {3, 4}, 0);  // under the limit: untouched
  EXPECT_NEAR(clip_grad_norm({a, b, none}, 6.5), 13, 1e-6);
  double c = 6.5 / (13 + 1e-6);
  expect_values(a.grad(), {3 * c, 4 * c});
  expect_values(b.grad(), {12 * c});
  EXPECT_FALSE(none.grad().defined());
  EXPECT_THROW(clip_grad_norm({a}, 0), Error);
}

// ---------------------------------------------------------------- EMA

namespace {
struct Leaf : Module {
  Leaf(double w, double stat) {
    register_parameter("weight", full({2}, w));
    register_buffer("running_mean", full({2}, stat));
    register_buffer("num_batches_tracked", full({}, stat, {DType::i64}));
  }
};
struct Net : Module {
  Net(double w, double stat, bool extra = false) {
    register_module("0", std::make_shared<Leaf>(w, stat));
    if (extra) register_parameter("head", zeros({1}));
  }
};
double at(const Module& m, const std::string& key) { return m.state_dict().at(key).to_vector()[0]; }
}  // namespace

TEST(Ema, AveragesParametersAndCopiesOrAveragesBuffers) {
  Net target(1.0, 10), online(3.0, 20);
  EmaUpdater copy_buffers(target, online);
  copy_buffers.update(0.75);
  EXPECT_DOUBLE_EQ(at(target, "0.weight"), 0.75 * 1 + 0.25 * 3);
  EXPECT_DOUBLE_EQ(at(target, "0.running_mean"), 20);
  EXPECT_DOUBLE_EQ(at(target, "0.num_batches_tracked"), 20);

  Net t2(1.0, 10), o2(3.0, 20);
  EmaUpdater ema_buffers(t2, o2, true);
  ema_buffers.update(0.5);
  EXPECT_DOUBLE_EQ(at(t2, "0.weight"), 2);
  EXPECT_DOUBLE_EQ(at(t2, "0.running_mean"), 15);
  EXPECT_DOUBLE_EQ(at(t2, "0.num_batches_tracked"), 20);  // integers are always copied
  EXPECT_THROW(ema_buffers.update(1.5), Error);
}

TEST(Ema, MismatchedModelsNameTheKeys) {
  Net target(1, 1), online(1, 1, true);
  try {
    EmaUpdater e(target, online);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("only in the target: [], only in the online model: [head]"), std::string::npos)
        << e.what();
  }
}
