// SSL methods on a tiny encoder (tests/test_ssl_common.h): 20 steps on a fixed batch lower each
// method's loss; the EMA targets, the MoCo queue, DINO's centre, temperatures and frozen last
// layer follow their schedules exactly (compared with values computed here by hand); parameter
// groups, heads, backbones and the errors users see.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "test_util.h"
#include "nn/resnet.h"
#include "nn/vit.h"
#include "ssl/barlow.h"
#include "ssl/byol.h"
#include "ssl/dino.h"
#include "ssl/moco.h"
#include "ssl/simclr.h"
#include "ssl/simsiam.h"
#include "ssl/supervised.h"
#include "ssl/vicreg.h"
#include "test_ssl_common.h"

namespace siam::test {
namespace {

using ssl::Progress;

constexpr int kSteps = 20;

// Two views of 8 images: the second is the first plus noise, so the pairs share content.
std::vector<Tensor> two_views(uint64_t seed = 7) {
  Generator gen(seed);
  Tensor x = randn({8, 1, 8, 8}, gen);
  return {x, add(x, mul(randn({8, 1, 8, 8}, gen), 0.3))};
}

// Small heads for the tiny encoder (feature size 8).
ssl::MlpConfig small(ssl::MlpConfig m, std::vector<int64_t> dims) {
  m.dims = std::move(dims);
  return m;
}

// Every test starts layers from the same random state, whatever ran before it.
void reseed() { nn::init_generator().set_state(1234, 0); }

std::string show(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += std::to_string(x) + " ";
  return s;
}

// Momentum SGD on the method's groups; returns the loss of each step.
std::vector<double> train(ssl::Method& m, const std::vector<Tensor>& views, double lr, int64_t steps_per_epoch = 5) {
  nn::SGD opt(m.param_groups(lr, 0.0), {.momentum = 0.9});
  std::vector<double> losses;
  for (int k = 0; k < kSteps; ++k) {
    Progress p{.step = k, .steps_per_epoch = steps_per_epoch, .total_steps = kSteps};
    opt.zero_grad();
    ssl::StepOutput out = m.training_step(views, p);
    autograd::backward(out.loss);
    opt.step();
    m.after_optimizer_step(p);
    losses.push_back(out.loss.item());
    EXPECT_TRUE(std::isfinite(losses.back())) << m.name() << " step " << k;
    EXPECT_EQ(out.metrics.at("loss").item(), losses.back());
    EXPECT_TRUE(out.metrics.count("embedding_std")) << m.name();
  }
  return losses;
}

// The mean of the last 3 losses is below the first loss by `margin` (relative).
void expect_lowered(const std::vector<double>& l, double margin, const char* method) {
  const double last = (l[kSteps - 1] + l[kSteps - 2] + l[kSteps - 3]) / 3;
  EXPECT_LT(last, l[0] * (1 - margin)) << method << " losses: " << show(l);
}

std::vector<std::vector<double>> values_of(const std::vector<Tensor>& ts) {
  std::vector<std::vector<double>> v;
  for (const Tensor& t : ts) v.push_back(t.to_vector());
  return v;
}

double cosine_tau(double base, int64_t k, int64_t total) {
  return 1 - (1 - base) * (std::cos(std::numbers::pi * static_cast<double>(k) / static_cast<double>(total)) + 1) / 2;
}

// After one EMA update with momentum m: target == m before + (1 - m) online (f32 rounding).
void expect_ema(const std::vector<std::vector<double>>& before, const std::vector<Tensor>& target,
                const std::vector<Tensor>& online, double m) {
  ASSERT_EQ(before.size(), target.size());
  for (size_t i = 0; i < target.size(); ++i) {
    std::vector<double> t = target[i].to_vector(), o = online[i].to_vector();
    for (size_t j = 0; j < t.size(); ++j)
      ASSERT_NEAR(t[j], m * before[i][j] + (1 - m) * o[j], 1e-6 * (1 + std::abs(t[j]))) << "parameter " << i;
  }
}

// ---------------------------------------------------------------- 20 steps lower the loss

TEST(SslMethods, SimclrLowersItsLoss) {
  reseed();
  ssl::SimclrConfig cfg;
  cfg.projector = small(cfg.projector, {16, 8});
  cfg.temperature = 0.5;
  ssl::SimCLR m(cfg, tiny_backbone);
  expect_lowered(train(m, two_views(), 0.1), 0.05, "SimCLR");
}

// The first step contrasts against the random initial queue, an easy task; from step K/N = 2
// on, the queue holds keys of this same batch (each image's own older keys among the
// negatives), so the loss is compared with step 2, the first loss of that task.
TEST(SslMethods, MocoLowersItsLoss) {
  reseed();
  ssl::MocoConfig cfg;
  cfg.projector = small(cfg.projector, {16, 8});
  cfg.queue_size = 16;
  cfg.momentum = 0.99;
  ssl::MoCo m(cfg, tiny_backbone);
  std::vector<double> l = train(m, two_views(), 0.02);
  l.erase(l.begin(), l.begin() + 2);
  const double last = (l[l.size() - 1] + l[l.size() - 2] + l[l.size() - 3]) / 3;
  EXPECT_LT(last, l[0] * 0.95) << "MoCo losses from step 2: " << show(l);
}

TEST(SslMethods, ByolLowersItsLoss) {
  reseed();
  ssl::ByolConfig cfg;
  cfg.projector = small(cfg.projector, {16, 8});
  cfg.predictor = small(cfg.predictor, {16, 8});
  cfg.base_momentum = 0.9;
  ssl::BYOL m(cfg, tiny_backbone);
  expect_lowered(train(m, two_views(), 0.1), 0.05, "BYOL");
}

TEST(SslMethods, SimsiamLowersItsLoss) {
  reseed();
  ssl::SimsiamConfig cfg;
  cfg.projector = small(cfg.projector, {16, 16, 8});
  cfg.predictor = small(cfg.predictor, {4, 8});
  ssl::SimSiam m(cfg, tiny_backbone);
  expect_lowered(train(m, two_views(), 0.1), 0.05, "SimSiam");
}

// The stop-gradient ablation (method.simsiam.stop_gradient = false): the same loss value, but
// the gradient now also flows through the targets z1, z2, so the encoder's gradient differs.
TEST(SslMethods, SimsiamWithoutStopGradientHasTheSameLossAndAnotherGradient) {
  auto run = [](bool stop) {
    reseed();
    ssl::SimsiamConfig cfg;
    cfg.projector = small(cfg.projector, {16, 16, 8});
    cfg.predictor = small(cfg.predictor, {4, 8});
    cfg.stop_gradient = stop;
    ssl::SimSiam m(cfg, tiny_backbone);
    ssl::StepOutput out = m.training_step(two_views(), Progress{.step = 0, .steps_per_epoch = 1, .total_steps = 1});
    autograd::backward(out.loss);
    return std::pair{out.loss.item(), m.trainable_parameters()[0].second.grad().to_vector()};
  };
  auto [loss_sg, grad_sg] = run(true);
  auto [loss_nsg, grad_nsg] = run(false);
  EXPECT_NEAR(loss_sg, loss_nsg, 1e-6);
  double diff = 0;
  for (size_t i = 0; i < grad_sg.size(); ++i) diff = std::max(diff, std::abs(grad_sg[i] - grad_nsg[i]));
  EXPECT_GT(diff, 1e-4) << "the first encoder weight's gradient should change without the stop-gradient";
}

// SimCLR without a projector (method.simclr.projector = []): NT-Xent on the backbone's features.
TEST(SslMethods, SimclrWithoutProjectorUsesTheFeatures) {
  reseed();
  ssl::SimclrConfig cfg;
  cfg.projector.dims = {};
  cfg.temperature = 0.5;
  ssl::SimCLR m(cfg, tiny_backbone);
  EXPECT_EQ(m.projector->size(), 0u);
  std::vector<Tensor> v = two_views();
  ssl::StepOutput out = m.training_step(v, Progress{.step = 0, .steps_per_epoch = 1, .total_steps = 1});
  NoGradGuard ng;
  Tensor h = m.backbone().forward(cat({v[0], v[1]}, 0));
  EXPECT_NEAR(out.loss.item(), ssl::nt_xent(h, 0.5).item(), 1e-6);
}

ssl::DinoConfig tiny_dino() {
  ssl::DinoConfig cfg;
  cfg.head = {.out_dim = 16, .hidden_dim = 16, .bottleneck_dim = 8};
  cfg.warmup_teacher_temp_epochs = 3;
  return cfg;
}

// Two global 8x8 crops and two local 4x4 crops of the same images.
std::vector<Tensor> multi_crop() {
  std::vector<Tensor> v = two_views();
  v.push_back(avg_pool2d(v[0], 2, 2));
  v.push_back(avg_pool2d(v[1], 2, 2));
  return v;
}

// On one fixed batch the centre converges to the batch's mean teacher output, and subtracting it
// flattens the teacher: its entropy, the floor of the loss, rises every step. So (a) with the
// centre held at 0 the loss must fall; (b) with DINO's centring the trained student must beat
// an untrained one (learning rate 0) at every step after the first, under the same teacher.
TEST(SslMethods, DinoLowersItsLoss) {
  ssl::DinoConfig cfg = tiny_dino();
  cfg.warmup_teacher_temp_epochs = 0;
  cfg.center_momentum = 1.0;
  reseed();
  ssl::DINO held(cfg, tiny_backbone);
  expect_lowered(train(held, multi_crop(), 0.05), 0.05, "DINO (centre held)");

  cfg.center_momentum = 0.9;
  reseed();
  ssl::DINO trained(cfg, tiny_backbone);
  std::vector<double> l = train(trained, multi_crop(), 0.05);
  reseed();
  ssl::DINO untrained(cfg, tiny_backbone);
  std::vector<double> l0 = train(untrained, multi_crop(), 0.0);
  EXPECT_EQ(l[0], l0[0]);
  for (int k = 1; k < kSteps; ++k) EXPECT_LT(l[k], l0[k]) << "step " << k << "; trained " << show(l) << "untrained " << show(l0);
}

// DINO with a ViT and multi-crop: a ViT-Tiny width, 2 blocks, patch 8, made for 32 px; 2 global
// 32 px crops of 4 RGB images and 4 local 16 px crops, which the student runs through its
// position embedding resized to their 2x2 patch grid.
ssl::Backbone tiny_vit(const ssl::BackboneConfig& c) {
  auto net = std::make_shared<nn::ViT>(
      nn::ViTConfig{.size = "tiny", .patch = 8, .image_size = 32, .num_classes = 0, .drop_path = c.drop_path,
                    .depth = 2});
  return {net, net->feature_dim()};
}

std::vector<Tensor> vit_multi_crop() {
  Generator gen(11);
  Tensor x = randn({4, 3, 32, 32}, gen);
  std::vector<Tensor> v = {x, add(x, mul(randn({4, 3, 32, 32}, gen), 0.3))};
  for (int64_t i = 0; i < 4; ++i)  // the four 16x16 quadrants, of either global crop in turn
    v.push_back(contiguous(narrow(narrow(v[i % 2], 2, 16 * (i / 2), 16), 3, 16 * (i % 2), 16)));
  return v;
}

// The first loss equals DINO's formula written out here, with the student run on each crop on
// its own (step() runs each group of same-size crops as one batch; a ViT has no batch
// statistics, so only the summation order differs: f32 rounding). Then, with the centre held
// at 0 as in DinoLowersItsLoss, 20 steps lower the loss.
TEST(SslMethods, DinoTrainsAViTOnGlobalAndSmallerLocalCrops) {
  ssl::DinoConfig cfg = tiny_dino();
  cfg.backbone.drop_path = 0;  // no stochastic depth: the hand computation sees the same student
  cfg.warmup_teacher_temp_epochs = 0;
  cfg.center_momentum = 1.0;
  reseed();
  ssl::DINO m(cfg, tiny_vit);
  const std::vector<Tensor> views = vit_multi_crop();
  const int64_t b = 4, crops = static_cast<int64_t>(views.size());
  double want = 0;
  {
    NoGradGuard no_grad;
    Tensor teacher = m.teacher_head->forward(m.teacher_backbone->forward(cat({views[0], views[1]}, 0)));
    std::vector<Tensor> logp;
    for (const Tensor& v : views)
      logp.push_back(log_softmax(mul(m.head->forward(m.online_backbone().forward(v)), 1 / cfg.student_temp), 1));
    int pairs = 0;
    for (int64_t t = 0; t < 2; ++t) {
      Tensor q = softmax(mul(sub(narrow(teacher, 0, t * b, b), m.center), 1 / cfg.teacher_temp), 1);
      for (int64_t s = 0; s < crops; ++s) {
        if (s == t) continue;
        want -= mean(sum(mul(q, logp[static_cast<size_t>(s)]), {1})).item();
        ++pairs;
      }
    }
    want /= pairs;
  }
  ssl::StepOutput first = m.training_step(views, {.step = 0, .steps_per_epoch = 5, .total_steps = kSteps});
  EXPECT_NEAR(first.loss.item(), want, 1e-5 * std::abs(want));
  autograd::backward(first.loss);
  Tensor pos_embed = m.online_backbone().state_dict().at("pos_embed");
  ASSERT_TRUE(pos_embed.grad().defined());
  m.online_backbone().zero_grad();
  m.head->zero_grad();

  std::vector<double> l = train(m, views, 0.05);
  for (double x : l) EXPECT_TRUE(std::isfinite(x));
  EXPECT_EQ(l[0], first.loss.item());
  expect_lowered(l, 0.05, "DINO ViT multi-crop (centre held)");
}

TEST(SslMethods, VicregLowersItsLoss) {
  reseed();
  ssl::VicregConfig cfg;
  cfg.projector = small(cfg.projector, {16, 16});
  ssl::VICReg m(cfg, tiny_backbone);
  expect_lowered(train(m, two_views(), 0.02), 0.05, "VICReg");
}

TEST(SslMethods, BarlowLowersItsLoss) {
  reseed();
  ssl::BarlowConfig cfg;
  cfg.projector = small(cfg.projector, {16, 16});
  ssl::BarlowTwins m(cfg, tiny_backbone);
  expect_lowered(train(m, two_views(), 0.05), 0.05, "Barlow Twins");
}


// ---------------------------------------------------------------- schedules and state

// One optimizer step of `m` (SGD, lr 0.05) without after_optimizer_step, so a test can look at
// the state between the two.
struct Stepper {
  ssl::Method& m;
  nn::SGD opt;
  Stepper(ssl::Method& method, double lr = 0.05) : m(method), opt(method.param_groups(lr, 0.0), {.momentum = 0.9}) {}
  ssl::StepOutput step(const std::vector<Tensor>& views, const Progress& p) {
    opt.zero_grad();
    ssl::StepOutput out = m.training_step(views, p);
    autograd::backward(out.loss);
    opt.step();
    return out;
  }
};

std::vector<Tensor> params_of(std::initializer_list<const nn::Module*> ms) {
  std::vector<Tensor> out;
  for (const nn::Module* m : ms)
    for (const Tensor& p : m->parameters()) out.push_back(p);
  return out;
}

void expect_equal_state(const nn::Module& a, const nn::Module& b) {
  auto sa = a.state_dict(), sb = b.state_dict();
  ASSERT_EQ(sa.size(), sb.size());
  for (auto& [k, t] : sa) EXPECT_EQ(t.to_vector(), sb.at(k).to_vector()) << k;
}

TEST(SslMethods, ByolTargetFollowsTheCosineMomentum) {
  reseed();
  ssl::ByolConfig cfg;
  cfg.projector = small(cfg.projector, {16, 8});
  cfg.predictor = small(cfg.predictor, {16, 8});
  cfg.base_momentum = 0.99;
  ssl::BYOL m(cfg, tiny_backbone);
  // The target starts as a copy of the online network and takes no gradient.
  expect_equal_state(*m.target_backbone, m.backbone());
  expect_equal_state(*m.target_projector, *m.projector);
  for (const Tensor& p : params_of({m.target_backbone.get(), m.target_projector.get()})) EXPECT_FALSE(p.requires_grad());
  EXPECT_DOUBLE_EQ(m.target_momentum({.step = 0, .total_steps = 10}), 0.99);
  EXPECT_DOUBLE_EQ(m.target_momentum({.step = 5, .total_steps = 10}), 0.995);
  EXPECT_DOUBLE_EQ(m.target_momentum({.step = 10, .total_steps = 10}), 1.0);
  EXPECT_DOUBLE_EQ(m.target_momentum({.step = 12, .total_steps = 10}), 1.0);

  Stepper s(m);
  const std::vector<Tensor> target = params_of({m.target_backbone.get(), m.target_projector.get()});
  const std::vector<Tensor> online = params_of({&m.backbone(), m.projector.get()});
  for (int64_t k = 0; k < 4; ++k) {
    Progress p{.step = k, .steps_per_epoch = 2, .total_steps = 6};
    s.step(two_views(), p);
    std::vector<std::vector<double>> before = values_of(target);
    m.after_optimizer_step(p);
    expect_ema(before, target, online, cosine_tau(0.99, k, 6));
  }
  // Buffers (batch-norm statistics) are copied from the online network (nn::EmaUpdater).
  EXPECT_EQ(m.target_backbone->state_dict().at("bn1.running_mean").to_vector(),
            m.backbone().state_dict().at("bn1.running_mean").to_vector());
}

TEST(SslMethods, MocoQueueAndKeyEncoderFollowTheirRules) {
  reseed();
  ssl::MocoConfig cfg;
  cfg.projector = small(cfg.projector, {16, 8});
  cfg.queue_size = 20;  // 8 keys a step: pointer 0, 8, 16, then the third batch wraps to 4
  cfg.momentum = 0.99;
  ssl::MoCo m(cfg, tiny_backbone);
  ASSERT_EQ(m.queue.shape(), (Shape{8, 20}));
  EXPECT_EQ(m.queue_pointer(), 0);
  std::vector<double> q0 = m.queue.to_vector();
  for (int64_t c = 0; c < 20; ++c) {
    double sq = 0;
    for (int64_t d = 0; d < 8; ++d) sq += q0[d * 20 + c] * q0[d * 20 + c];
    EXPECT_NEAR(sq, 1.0, 1e-6) << "initial key " << c << " is not a unit vector";
  }
  EXPECT_DOUBLE_EQ(m.key_momentum({.step = 3, .total_steps = 10}), 0.99);

  Stepper s(m);
  const std::vector<Tensor> key = params_of({m.key_backbone.get(), m.key_projector.get()});
  const std::vector<Tensor> online = params_of({&m.backbone(), m.projector.get()});
  const std::vector<int64_t> want_ptr = {8, 16, 4};
  for (int64_t k = 0; k < 3; ++k) {
    std::vector<Tensor> views = two_views(100 + k);
    Tensor keys;  // (N, D): what the key encoder makes of view 1 before this step
    {
      NoGradGuard no_grad;
      keys = normalize(m.key_projector->forward(m.key_backbone->forward(views[1])), 1);
    }
    const int64_t ptr = m.queue_pointer();
    std::vector<double> before_queue = m.queue.to_vector();
    Progress p{.step = k, .steps_per_epoch = 10, .total_steps = 10};
    s.step(views, p);
    std::vector<std::vector<double>> before = values_of(key);
    m.after_optimizer_step(p);
    expect_ema(before, key, online, 0.99);
    EXPECT_EQ(m.queue_pointer(), want_ptr[k]);
    std::vector<double> q = m.queue.to_vector(), kv = keys.to_vector();
    for (int64_t c = 0; c < 20; ++c) {
      const int64_t slot = (c - ptr + 20) % 20;  // which key of this batch column c holds, if < 8
      for (int64_t d = 0; d < 8; ++d) {
        const double want = slot < 8 ? kv[slot * 8 + d] : before_queue[d * 20 + c];
        ASSERT_NEAR(q[d * 20 + c], want, 1e-6) << "step " << k << ", column " << c << ", dim " << d;
      }
    }
  }
  cfg.cosine_momentum = true;
  reseed();
  ssl::MoCo cosine(cfg, tiny_backbone);
  EXPECT_DOUBLE_EQ(cosine.key_momentum({.step = 3, .total_steps = 10}), cosine_tau(0.99, 3, 10));
}

TEST(SslMethods, DinoTeacherTemperatureWarmsUpLinearlyByEpoch) {
  reseed();
  ssl::DinoConfig cfg = tiny_dino();
  cfg.warmup_teacher_temp_epochs = 30;
  ssl::DINO m(cfg, tiny_backbone);
  EXPECT_DOUBLE_EQ(m.teacher_temperature(0), 0.04);
  EXPECT_NEAR(m.teacher_temperature(15), 0.04 + 15 * 0.03 / 29, 1e-15);
  EXPECT_DOUBLE_EQ(m.teacher_temperature(29), 0.07);
  EXPECT_DOUBLE_EQ(m.teacher_temperature(30), 0.07);
  EXPECT_DOUBLE_EQ(m.teacher_temperature(100), 0.07);
  m.cfg.warmup_teacher_temp_epochs = 1;  // np.linspace with one point: the warm-up value
  EXPECT_DOUBLE_EQ(m.teacher_temperature(0), 0.04);
  EXPECT_DOUBLE_EQ(m.teacher_temperature(1), 0.07);
  m.cfg.warmup_teacher_temp_epochs = 0;
  EXPECT_DOUBLE_EQ(m.teacher_temperature(0), 0.07);
}

TEST(SslMethods, DinoCentreTeacherAndFrozenLastLayerFollowTheirSchedules) {
  reseed();
  ssl::DinoConfig cfg = tiny_dino();  // warm-up over 3 epochs: 0.04, 0.055, 0.07
  ssl::DINO m(cfg, tiny_backbone);
  EXPECT_EQ(&m.backbone(), m.teacher_backbone.get());  // the teacher is evaluated
  expect_equal_state(*m.teacher_head, *m.head);
  EXPECT_EQ(m.center.to_vector(), std::vector<double>(16, 0.0));
  Stepper s(m);
  const std::vector<Tensor> teacher = params_of({m.teacher_backbone.get(), m.teacher_head.get()});
  const std::vector<Tensor> student = params_of({&m.online_backbone(), m.head.get()});
  const std::vector<double> temps = {0.04, 0.04, 0.055, 0.055, 0.07};
  for (int64_t k = 0; k < 5; ++k) {
    Progress p{.step = k, .steps_per_epoch = 2, .total_steps = 5};
    std::vector<Tensor> views = multi_crop();
    Tensor teacher_out;  // (2 B, K)
    {
      NoGradGuard no_grad;
      teacher_out = m.teacher_head->forward(m.teacher_backbone->forward(cat({views[0], views[1]}, 0)));
    }
    std::vector<double> c0 = m.center.to_vector();
    ssl::StepOutput out = s.step(views, p);
    EXPECT_NEAR(out.metrics.at("teacher_temp").item(), temps[k], 1e-7) << "step " << k;
    // Epoch 0: the last layer gets no gradient (and the optimizer leaves it alone); weight_g never does.
    EXPECT_EQ(m.head->last_layer->weight_v.grad().defined(), p.epoch() >= 1) << "step " << k;
    EXPECT_FALSE(m.head->last_layer->weight_g.grad().defined());
    EXPECT_TRUE(m.head->mlp->parameters()[0].grad().defined());
    std::vector<std::vector<double>> before = values_of(teacher);
    m.after_optimizer_step(p);
    expect_ema(before, teacher, student, cosine_tau(0.996, k, 5));
    std::vector<double> c = m.center.to_vector(), batch = mean(teacher_out, {0}).to_vector();
    for (size_t j = 0; j < c.size(); ++j)
      ASSERT_NEAR(c[j], 0.9 * c0[j] + 0.1 * batch[j], 1e-6) << "step " << k << ", centre " << j;
  }
}

// ---------------------------------------------------------------- parameter groups

std::vector<std::string> names_of(const nn::ParamGroup& g) {
  std::vector<std::string> n;
  for (auto& [name, p] : g.params) n.push_back(name);
  return n;
}

bool any_starts_with(const std::vector<nn::ParamGroup>& gs, const std::string& prefix) {
  for (const auto& g : gs)
    for (const auto& n : names_of(g))
      if (n.starts_with(prefix)) return true;
  return false;
}

TEST(SslMethods, ParameterGroupsFollowEachRecipe) {
  reseed();
  ssl::SimsiamConfig ss;
  ss.projector = small(ss.projector, {16, 16, 8});
  ss.predictor = small(ss.predictor, {4, 8});
  ssl::SimSiam simsiam(ss, tiny_backbone);
  std::vector<nn::ParamGroup> g = simsiam.param_groups(0.05, 1e-4);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1].name, "predictor");
  EXPECT_TRUE(g[1].fixed_lr);
  for (const auto& n : names_of(g[1])) EXPECT_TRUE(n.starts_with("predictor.")) << n;
  EXPECT_EQ(names_of(g[1]).size(), 5u);  // 0.weight, 1.weight, 1.bias, 3.weight, 3.bias
  nn::SGD opt(g, {.momentum = 0.9});
  opt.set_lr(1.0);
  EXPECT_EQ(opt.groups()[0].lr, 1.0);
  EXPECT_EQ(opt.groups()[1].lr, 0.05);

  ssl::BarlowConfig bc;
  bc.projector = small(bc.projector, {16, 16});
  ssl::BarlowTwins barlow(bc, tiny_backbone);
  g = barlow.param_groups(0.2, 1e-6);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[1].name, "bias_and_norm");
  EXPECT_DOUBLE_EQ(g[1].lr_scale, 0.024);
  EXPECT_TRUE(g[1].exclude_wd_and_adaptation);

  ssl::MocoConfig mc;
  mc.projector = small(mc.projector, {16, 8});
  mc.queue_size = 16;
  ssl::MoCo moco(mc, tiny_backbone);
  g = moco.param_groups(0.03, 1e-4);
  ASSERT_EQ(g.size(), 1u);
  EXPECT_FALSE(any_starts_with(g, "key_"));
  EXPECT_EQ(names_of(g[0]).size(), moco.backbone().parameters().size() + moco.projector->parameters().size());

  ssl::ByolConfig byc;
  byc.projector = small(byc.projector, {16, 8});
  byc.predictor = small(byc.predictor, {16, 8});
  ssl::BYOL byol(byc, tiny_backbone);
  g = byol.param_groups(0.2, 1.5e-6);
  EXPECT_FALSE(any_starts_with(g, "target_"));
  EXPECT_TRUE(any_starts_with(g, "predictor."));

  ssl::DINO dino(tiny_dino(), tiny_backbone);
  g = dino.param_groups(5e-4, 0.04);
  EXPECT_FALSE(any_starts_with(g, "teacher_"));
  EXPECT_FALSE(any_starts_with(g, "head.last_layer.weight_g"));
  EXPECT_TRUE(any_starts_with(g, "head.last_layer.weight_v"));

  // make_optimizer scales the base learning rate by batch / 256.
  std::unique_ptr<nn::Optimizer> sgd = ssl::make_optimizer(simsiam, ss.optim, 512);
  EXPECT_DOUBLE_EQ(sgd->groups()[0].lr, 0.1);
  EXPECT_NO_THROW(ssl::make_optimizer(barlow, bc.optim, 256));
  EXPECT_NO_THROW(ssl::make_optimizer(dino, dino.cfg.optim, 256));
}

// ---------------------------------------------------------------- heads and backbones

TEST(SslHeads, MlpFollowsItsConfig) {
  reseed();
  ssl::SimsiamConfig cfg;
  auto p = ssl::make_mlp(8, small(cfg.projector, {16, 16, 4}));
  std::map<std::string, Tensor> sd = p->state_dict();
  EXPECT_EQ(sd.at("0.weight").shape(), (Shape{16, 8}));
  EXPECT_FALSE(sd.count("0.bias"));      // hidden Linear without bias (BN follows)
  EXPECT_TRUE(sd.count("1.weight"));     // affine hidden BN
  EXPECT_EQ(sd.at("6.weight").shape(), (Shape{4, 16}));
  EXPECT_FALSE(sd.count("6.bias"));
  EXPECT_TRUE(sd.count("7.running_mean"));
  EXPECT_FALSE(sd.count("7.weight"));    // the last BN has no affine parameters
  Tensor y = p->forward(randn({5, 8}));
  EXPECT_EQ(y.shape(), (Shape{5, 4}));

  ssl::MocoConfig moco;  // no BN: Linear, ReLU, Linear as MoCo's fc.0 / fc.2
  sd = ssl::make_mlp(8, small(moco.projector, {16, 4}))->state_dict();
  EXPECT_EQ(sd.size(), 4u);
  EXPECT_TRUE(sd.count("2.bias"));
}

TEST(SslHeads, DinoHeadNamesNormalisationAndUnitPrototypes) {
  reseed();
  ssl::DinoHead h(8, {.out_dim = 6, .hidden_dim = 12, .bottleneck_dim = 4});
  std::map<std::string, Tensor> sd = h.state_dict();
  for (const char* k : {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.4.weight", "mlp.4.bias",
                        "last_layer.weight_g", "last_layer.weight_v"})
    EXPECT_TRUE(sd.count(k)) << k;
  EXPECT_EQ(sd.size(), 8u);
  EXPECT_EQ(sd.at("last_layer.weight_g").shape(), (Shape{6, 1}));
  EXPECT_EQ(sd.at("last_layer.weight_v").shape(), (Shape{6, 4}));
  EXPECT_EQ(sd.at("last_layer.weight_g").to_vector(), std::vector<double>(6, 1.0));
  EXPECT_FALSE(h.last_layer->weight_g.requires_grad());
  EXPECT_EQ(sd.at("mlp.0.bias").to_vector(), std::vector<double>(12, 0.0));
  // Unit bottleneck and unit prototypes: every logit is a cosine, and a basis vector e_j reads
  // column j of the row-normalised v.
  Tensor b = h.bottleneck(randn({3, 8}));
  for (double n : norm(b, {1}).to_vector()) EXPECT_NEAR(n, 1.0, 1e-6);
  Tensor v = h.last_layer->weight_v;
  Tensor logits = h.prototypes(eye(4));  // (4, 6)
  Tensor want = transpose(div(v, norm(v, {1}, true)), 0, 1);
  std::vector<double> a = logits.to_vector(), w = want.to_vector();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], w[i], 1e-6);
}

TEST(SslBackbone, ResnetAndVitWithoutClassifier) {
  reseed();
  ssl::Backbone v = ssl::make_backbone({.arch = "vit_tiny", .image_size = 32, .patch = 8});
  EXPECT_EQ(v.feature_dim, 192);
  EXPECT_FALSE(v.module->state_dict().count("head.weight"));
  EXPECT_EQ(v.module->forward(randn({2, 3, 32, 32})).shape(), (Shape{2, 192}));

  // A method's backbone() is the encoder with torchvision names and no prefix; no classifier.
  ssl::SimclrConfig cfg;
  cfg.backbone = {.arch = "resnet18", .in_channels = 1, .small_input = true};
  cfg.projector = small(cfg.projector, {32, 16});
  ssl::SimCLR m(cfg);
  EXPECT_EQ(m.feature_dim(), 512);
  std::map<std::string, Tensor> sd = m.backbone().state_dict();
  EXPECT_EQ(sd.at("conv1.weight").shape(), (Shape{64, 1, 3, 3}));
  EXPECT_FALSE(sd.count("fc.weight"));
  EXPECT_TRUE(sd.count("layer4.1.bn2.running_var"));
  EXPECT_TRUE(m.state_dict().count("backbone.layer4.1.bn2.running_var"));
  EXPECT_EQ(m.forward(randn({2, 1, 16, 16})).shape(), (Shape{2, 512}));
}

// ---------------------------------------------------------------- positives and errors

TEST(SslMethods, SimclrTakesExtraPositives) {
  reseed();
  ssl::SimclrConfig cfg;
  cfg.projector = small(cfg.projector, {16, 8});
  ssl::SimCLR m(cfg, tiny_backbone);
  // Images 0 and 1 share a class: four positives among their views besides the pairs.
  std::vector<double> g = {0, 0, 2, 3, 4, 5, 6, 7};
  g.insert(g.end(), g.begin(), g.end());
  Tensor pos = ssl::positives_from_groups(from_vector(g, {16}, {DType::i64}));
  ssl::StepOutput with = m.training_step(two_views(), {}, pos), without = m.training_step(two_views(), {});
  EXPECT_TRUE(std::isfinite(with.loss.item()));
  EXPECT_NE(with.loss.item(), without.loss.item());
}

TEST(SslMethods, ErrorsNameTheMethodAndTheProblem) {
  reseed();
  ssl::ByolConfig bc;
  bc.projector = small(bc.projector, {16, 8});
  bc.predictor = small(bc.predictor, {16, 8});
  ssl::BYOL byol(bc, tiny_backbone);
  std::vector<Tensor> v = two_views();
  expect_error([&] { byol.training_step({v[0], v[1], v[0]}, {}); }, "BYOL: expected 2 views, got 3");
  expect_error([&] { byol.training_step({v[0], narrow(v[1], 0, 0, 4)}, {}); },
               "BYOL: view 1 holds 4 images but view 0 holds 8");
  expect_error([&] { byol.training_step({v[0], ones({8, 64})}, {}); }, "BYOL: view 1 must be (N, C, H, W), got [8, 64]");
  expect_error([&] { byol.training_step(v, {}, zeros({16, 16}, {DType::b8})); },
               "BYOL: extra positive pairs are supported by SimCLR only");
  expect_error([&] { byol.training_step(v, {.step = 0, .steps_per_epoch = 0}); }, "steps_per_epoch >= 1");
  expect_error([&] { byol.training_step({narrow(v[0], 0, 0, 1), narrow(v[1], 0, 0, 1)}, {}); },
               "BYOL: needs a batch of at least 2 images");

  ssl::MocoConfig mc;
  mc.projector = small(mc.projector, {16, 8});
  mc.queue_size = 4;
  ssl::MoCo moco(mc, tiny_backbone);
  expect_error([&] { moco.after_optimizer_step({}); }, "MoCo: after_optimizer_step called before a training_step");
  expect_error([&] { moco.training_step(v, {}); }, "MoCo: a batch of 8 keys does not fit in a queue of 4");

  ssl::DINO dino(tiny_dino(), tiny_backbone);
  expect_error([&] { dino.training_step({v[0]}, {}); }, "DINO: expected the 2 global crops and at least 2 views");
  expect_error([&] { dino.training_step({v[0], multi_crop()[2]}, {}); }, "DINO: global crop 1 is [8, 1, 4, 4]");

  expect_error([] { ssl::make_mlp(8, {}); }, "MLP head: dims must list at least one layer size");
  expect_error([] { ssl::DinoHead(8, {.n_layers = 0}); }, "DINO head: n_layers must be >= 1, got 0");
  expect_error([] { ssl::make_backbone({.arch = "resnet101"}); }, "backbone: arch must be resnet18");
  ssl::OptimRecipe bad{.optimizer = "adam"};
  expect_error([&] { ssl::make_optimizer(byol, bad, 256); }, "make_optimizer: optimizer must be sgd, lars or adamw, got 'adam'");
}

}  // namespace
// The supervised baseline fits the labels of a small batch: its loss falls and it classifies
// the batch right; without labels it is a clear error.
TEST(SslMethods, SupervisedBaselineLearnsTheLabels) {
  reseed();
  ssl::SupervisedConfig cfg;
  cfg.num_classes = 4;
  ssl::Supervised m(cfg, tiny_backbone);
  const std::vector<Tensor> views = two_views();
  expect_error([&] { m.training_step(views, Progress{.step = 0, .steps_per_epoch = 1, .total_steps = 1}); },
                     "needs the batch's labels");
  m.set_labels(from_vector({0, 1, 2, 3, 0, 1, 2, 3}, {8}, {DType::i64}));
  const std::vector<double> l = train(m, views, 0.1);
  expect_lowered(l, 0.5, "Supervised");
  ssl::StepOutput out = m.training_step(views, Progress{.step = 0, .steps_per_epoch = 1, .total_steps = 1});
  EXPECT_GE(out.metrics.at("train_top1").item(), 75.0);
}

}  // namespace siam::test
