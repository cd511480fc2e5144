// The pretraining schema and its builders: every shipped config resolves and round-trips;
// "auto" defaults become each method's official values; explicit values stay; [method.*]
// keys map onto the ssl config structs; impossible settings are clear errors.
#include <gtest/gtest.h>

#include "tensor/cuda_runtime.h"

#include <filesystem>

#include "apps/run_config.h"
#include "nn/checkpoint.h"
#include "ssl/barlow.h"
#include "ssl/byol.h"
#include "ssl/dino.h"
#include "ssl/moco.h"
#include "ssl/simclr.h"
#include "ssl/simsiam.h"
#include "ssl/vicreg.h"

using namespace siam;
using namespace siam::apps;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

Config with(const std::vector<std::string>& sets) {
  Config c = pretrain_config();
  for (const auto& s : sets) c.set(s);
  return c;
}

Config resolved(const std::vector<std::string>& sets) {
  Config c = with(sets);
  resolve_defaults(c);
  return c;
}

}  // namespace

TEST(PretrainConfig, EveryShippedConfigResolvesAndRoundTrips) {
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(std::string(SIAM_SOURCE_DIR) + "/configs")) {
    if (e.path().extension() != ".toml") continue;
    if (e.path().parent_path().filename() == "studies") continue;  // study files (tests/test_study.cpp)
    SCOPED_TRACE(e.path().string());
    ++n;
    Config c = pretrain_config();
    c.load_file(e.path().string());
    resolve_defaults(c);
    EXPECT_NO_THROW(augment_views(c));
    EXPECT_NO_THROW(pair_config(c));
    EXPECT_NO_THROW(backbone_config(c));
    EXPECT_NO_THROW(optim_recipe(c));
    // The resolved text is what a checkpoint stores: reading it back gives the same config.
    Config back = checkpoint_config(c.to_toml(), "resolved");
    EXPECT_EQ(back.to_toml(), c.to_toml());
    Config again = back;
    resolve_defaults(again);
    EXPECT_EQ(again.to_toml(), back.to_toml()) << "resolve_defaults is idempotent";
  }
  EXPECT_GE(n, 21) << "7 official configs, 7 Fashion-MNIST and 7 64 px recipes";
}

TEST(PretrainConfig, AutoDefaultsAreEachMethodsOfficialRecipe) {
  struct Want {
    std::string method, optimizer, recipe, generator;
    double base_lr, wd, final_wd, clip;
    int64_t warmup;
  };
  const std::vector<Want> wants = {
      {"simclr", "lars", "simclr", "augmentation", 0.3, 1e-6, 1e-6, 0, 10},
      {"moco", "sgd", "mocov2", "augmentation", 0.03, 1e-4, 1e-4, 0, 0},
      {"byol", "lars", "byol", "augmentation", 0.2, 1.5e-6, 1.5e-6, 0, 10},
      {"simsiam", "sgd", "mocov2", "augmentation", 0.05, 1e-4, 1e-4, 0, 0},
      {"dino", "adamw", "dino", "multicrop", 5e-4, 0.04, 0.4, 3.0, 10},
      {"vicreg", "lars", "byol", "augmentation", 0.2, 1e-6, 1e-6, 0, 10},
      {"barlow", "lars", "byol", "augmentation", 0.2, 1e-6, 1e-6, 0, 10},
  };
  for (const auto& w : wants) {
    SCOPED_TRACE(w.method);
    Config c = resolved({"method.name=" + w.method});
    EXPECT_EQ(c.get_string("optimizer.name"), w.optimizer);
    EXPECT_EQ(c.get_string("augment.recipe"), w.recipe);
    EXPECT_EQ(c.get_string("pairs.generator"), w.generator);
    EXPECT_DOUBLE_EQ(c.get_double("optimizer.base_lr"), w.base_lr);
    EXPECT_DOUBLE_EQ(c.get_double("optimizer.weight_decay"), w.wd);
    EXPECT_DOUBLE_EQ(c.get_double("optimizer.final_weight_decay"), w.final_wd);
    EXPECT_DOUBLE_EQ(c.get_double("optimizer.clip_grad"), w.clip);
    EXPECT_EQ(c.get_string("optimizer.clip_mode"), w.method == "dino" ? "per_parameter" : "global");
    EXPECT_EQ(c.get_int("optimizer.warmup_epochs"), w.warmup);
  }
  // Fashion-MNIST by default: grey 28 px images, its folder, its statistics.
  Config c = resolved({});
  EXPECT_EQ(c.get_string("data.root"), data::kFashionMnistDir);
  EXPECT_EQ(c.get_int("backbone.in_channels"), 1);
  EXPECT_EQ(c.get_int("augment.crop_size"), 28);
  EXPECT_EQ(c.get_int("pairs.local_size"), 12);
  EXPECT_FLOAT_EQ(normalisation(c).mean[0], 0.2860f);
  EXPECT_FLOAT_EQ(normalisation(c).std[0], 0.3530f);
  c = resolved({"data.dataset=cifar10"});
  EXPECT_EQ(c.get_string("data.root"), "data/cifar-10-batches-bin");
  EXPECT_EQ(c.get_int("backbone.in_channels"), 3);
  EXPECT_EQ(c.get_int("augment.crop_size"), 32);
  EXPECT_FLOAT_EQ(normalisation(c).std[2], 0.2616f);
  EXPECT_FLOAT_EQ(normalisation(resolved({"data.mean=[0.5]", "data.std=[0.25]"})).std[0], 0.25f);
}

TEST(PretrainConfig, ExplicitValuesStay) {
  // A weight decay given without its end value keeps the method's ratio (DINO 10x, others 1x).
  Config c = resolved({"method.name=dino", "optimizer.weight_decay=0.01"});
  EXPECT_DOUBLE_EQ(c.get_double("optimizer.final_weight_decay"), 0.1);
  c = resolved({"optimizer.weight_decay=1e-4"});
  EXPECT_DOUBLE_EQ(c.get_double("optimizer.final_weight_decay"), 1e-4);
  c = resolved({"optimizer.name=sgd", "optimizer.base_lr=0.5", "augment.recipe=byol", "augment.blur_p=[0.0, 0.0]"});
  EXPECT_EQ(c.get_string("optimizer.name"), "sgd");
  EXPECT_DOUBLE_EQ(c.get_double("optimizer.base_lr"), 0.5);
  EXPECT_EQ(c.get_list("augment.blur_p"), (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(c.get_list("augment.solarize_p"), (std::vector<double>{0.0, 0.2})) << "the byol recipe's";
}

TEST(PretrainConfig, AugmentViewsAndPairsFollowTheKeys) {
  std::vector<data::AugmentConfig> v =
      augment_views(resolved({"augment.scale=[0.3, 0.9]", "augment.jitter_strength=0.5", "augment.blur_p=[1.0, 0.0]"}));
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].out_h, 28);
  EXPECT_FLOAT_EQ(v[0].scale_min, 0.3f);
  EXPECT_FLOAT_EQ(v[1].scale_max, 0.9f);
  EXPECT_FLOAT_EQ(v[0].brightness, 0.4f) << "SimCLR's 0.8 s with s = 0.5";
  EXPECT_FLOAT_EQ(v[0].hue, 0.1f);
  EXPECT_FLOAT_EQ(v[0].blur_p, 1.0f);
  EXPECT_FLOAT_EQ(v[1].blur_p, 0.0f);
  EXPECT_FLOAT_EQ(v[0].mean[0], 0.2860f);

  v = augment_views(resolved({"method.name=dino", "pairs.local_crops=3", "pairs.local_size=10"}));
  ASSERT_EQ(v.size(), 5u);
  EXPECT_EQ(v[4].out_h, 10);
  EXPECT_FLOAT_EQ(v[4].scale_max, 0.4f);
  EXPECT_FLOAT_EQ(v[0].scale_min, 0.4f) << "DINO's global crops";

  data::PairConfig p = pair_config(resolved({"pairs.generator=overlap", "pairs.iou=interval", "pairs.iou_range=[0.1, 0.3]"}));
  EXPECT_EQ(p.kind, data::PairKind::augmentation);
  EXPECT_EQ(p.overlap.kind, data::OverlapConstraint::Kind::interval);
  EXPECT_DOUBLE_EQ(p.overlap.hi, 0.3);
  p = pair_config(resolved({"pairs.generator=semantic", "pairs.semantic_mode=all_pairs", "run.seed=7"}));
  EXPECT_EQ(p.kind, data::PairKind::semantic);
  EXPECT_EQ(p.semantic_mode, data::SemanticMode::all_pairs);
  EXPECT_EQ(p.seed, 7u);
}

TEST(PretrainConfig, MethodKeysMapOntoTheSslConfigs) {
  const std::vector<std::string> small = {"backbone.small_input=true", "backbone.width=4"};
  auto build = [&](std::vector<std::string> sets) {
    sets.insert(sets.end(), small.begin(), small.end());
    return make_method(with(sets));
  };
  auto m = build({"method.simclr.projector=[16, 8]", "method.simclr.temperature=0.3"});
  auto* simclr = dynamic_cast<ssl::SimCLR*>(m.get());
  ASSERT_NE(simclr, nullptr);
  EXPECT_EQ(simclr->cfg.projector.dims, (std::vector<int64_t>{16, 8}));
  EXPECT_DOUBLE_EQ(simclr->cfg.temperature, 0.3);
  EXPECT_EQ(simclr->cfg.backbone.width, 4);
  EXPECT_EQ(simclr->cfg.optim.optimizer, "lars");

  m = build({"method.name=moco", "method.moco.projector=[16, 8]", "method.moco.queue_size=50", "method.moco.momentum=0.9"});
  auto* moco = dynamic_cast<ssl::MoCo*>(m.get());
  ASSERT_NE(moco, nullptr);
  EXPECT_EQ(moco->queue.shape(), (Shape{8, 50}));
  EXPECT_DOUBLE_EQ(moco->cfg.momentum, 0.9);

  m = build({"method.name=simsiam", "method.simsiam.projector=[16]", "method.simsiam.predictor=[4, 16]",
             "method.simsiam.fix_predictor_lr=false"});
  auto* simsiam = dynamic_cast<ssl::SimSiam*>(m.get());
  ASSERT_NE(simsiam, nullptr);
  EXPECT_FALSE(simsiam->cfg.fix_predictor_lr);

  m = build({"method.name=dino", "method.dino.out_dim=32", "method.dino.hidden_dim=16", "method.dino.bottleneck_dim=8",
             "method.dino.teacher_temp=0.05", "method.dino.loss_impl=composite"});
  auto* dino = dynamic_cast<ssl::DINO*>(m.get());
  ASSERT_NE(dino, nullptr);
  EXPECT_EQ(dino->center.shape(), (Shape{1, 32}));
  EXPECT_DOUBLE_EQ(dino->cfg.teacher_temp, 0.05);
  EXPECT_EQ(dino->cfg.loss_impl, ssl::LossImpl::composite);
  EXPECT_DOUBLE_EQ(dino->cfg.optim.final_weight_decay, 0.4);

  m = build({"method.name=byol", "method.byol.projector=[16, 8]", "method.byol.predictor=[16, 8]"});
  EXPECT_STREQ(m->name(), "BYOL");
  for (const char* name : {"vicreg", "barlow"}) {
    std::string n = name;
    m = build({"method.name=" + n, "method." + n + ".projector=[16, 8]"});
    EXPECT_EQ(m->feature_dim(), 32) << n;
  }
  // The same seed, the same initial weights.
  auto a = build({"run.seed=3"}), b = build({"run.seed=3"}), c = build({"run.seed=4"});
  const Tensor wa = a->state_dict().at("backbone.conv1.weight"), wb = b->state_dict().at("backbone.conv1.weight"),
               wc = c->state_dict().at("backbone.conv1.weight");
  EXPECT_EQ(wa.to_vector(), wb.to_vector());
  EXPECT_NE(wa.to_vector(), wc.to_vector());
}

TEST(PretrainConfig, LossImplKeyPicksFusedOrCompositeForEveryMethod) {
  auto impl_of = [](const std::string& n, const std::string& v) {
    std::vector<std::string> sets = {"method.name=" + n, "backbone.small_input=true", "backbone.width=4"};
    if (!v.empty()) sets.push_back("method." + n + ".loss_impl=" + v);
    auto m = make_method(with(sets));
    if (auto* x = dynamic_cast<ssl::SimCLR*>(m.get())) return x->cfg.loss_impl;
    if (auto* x = dynamic_cast<ssl::MoCo*>(m.get())) return x->cfg.loss_impl;
    if (auto* x = dynamic_cast<ssl::BYOL*>(m.get())) return x->cfg.loss_impl;
    if (auto* x = dynamic_cast<ssl::SimSiam*>(m.get())) return x->cfg.loss_impl;
    if (auto* x = dynamic_cast<ssl::DINO*>(m.get())) return x->cfg.loss_impl;
    if (auto* x = dynamic_cast<ssl::VICReg*>(m.get())) return x->cfg.loss_impl;
    if (auto* x = dynamic_cast<ssl::BarlowTwins*>(m.get())) return x->cfg.loss_impl;
    ADD_FAILURE() << "unknown method class for " << n;
    return ssl::LossImpl::fused;
  };
  for (const std::string n : {"simclr", "moco", "byol", "simsiam", "dino", "vicreg", "barlow"}) {
    EXPECT_EQ(impl_of(n, ""), ssl::LossImpl::fused) << n;
    EXPECT_EQ(impl_of(n, "composite"), ssl::LossImpl::composite) << n;
    EXPECT_EQ(impl_of(n, "fused"), ssl::LossImpl::fused) << n;
    const std::string e = error_of([&] { resolved({"method." + n + ".loss_impl=fast"}); });
    EXPECT_NE(e.find("method." + n + ".loss_impl must be one of fused, composite"), std::string::npos) << e;
  }
}

TEST(PretrainConfig, ImpossibleSettingsAreClearErrors) {
  struct Case {
    std::vector<std::string> sets;
    std::string phrase;
  };
  const std::vector<Case> cases = {
      {{"method.name=swav"}, "method.name must be one of simclr, moco, byol, simsiam, dino, vicreg, barlow, supervised, got 'swav'"},
      {{"data.dataset=imagenet"}, "data.dataset must be one of fashion_mnist, mnist, cifar10"},
      {{"data.dataset=folder"}, "data.root must name the image folder"},
      {{"run.device=tpu"}, "run.device must be one of auto, cpu, cuda, got 'tpu'"},
      {{"run.epochs=0"}, "run.epochs must be >= 1, got 0"},
      {{"augment.blur_p=[0.5]"}, "augment.blur_p must list 2 probabilities"},
      {{"augment.scale=[0.9, 0.2]"}, "augment.scale must be [lo, hi]"},
      {{"augment.recipe=autoaugment"}, "augment.recipe must be one of simclr, mocov2, byol, dino"},
      {{"backbone.in_channels=3"}, "backbone.in_channels is 3 but the data set's images have 1 channel(s)"},
      {{"method.simclr.projector=[128, 0]"}, "method.simclr.projector holds 0"},
      {{"method.name=moco", "method.byol.projector=[1.5]"}, "method.byol.projector holds 1.5"},
      {{"method.simclr.temperature=0"}, "method.simclr.temperature must be a positive number"},
      {{"method.byol.projector=[64, 32]"}, "method.byol.predictor must end in the projector's output size 32, got 256"},
      {{"pairs.generator=multicrop"}, "only dino takes"},
      {{"pairs.generator=temporal"}, "data.dataset must be 'folder'"},
      {{"pairs.generator=mined"}, "needs pairs.neighbours"},
      {{"method.name=dino", "backbone.arch=vit_tiny", "backbone.patch=4", "pairs.local_size=10"},
       "pairs.local_size must be a multiple of it, got 10"},
      {{"backbone.arch=vit_tiny", "backbone.image_size=32"}, "must equal augment.crop_size"},
      {{"data.heldout=0"}, "run.knn_every > 0 needs held-out images"},
      {{"optimizer.name=adam"}, "optimizer.name must be one of sgd, lars, adamw"},
      {{"optimizer.clip_mode=layer"}, "optimizer.clip_mode must be one of global, per_parameter"},
  };
  for (const auto& c : cases) {
    std::string e = error_of([&] { resolved(c.sets); });
    EXPECT_NE(e.find(c.phrase), std::string::npos) << c.sets[0] << ": " << e;
  }
  // DINO's local crops (12 px of 28 by default) reach a ViT at their own size (patch 4 divides 12).
  EXPECT_NO_THROW(resolved({"method.name=dino", "backbone.arch=vit_tiny", "backbone.patch=4"}));
  if (cuda::available()) {
    EXPECT_EQ(resolve_device(resolved({"run.device=cuda"})), Device::cuda(0));
    EXPECT_EQ(resolve_device(resolved({})), Device::cuda(0));
  } else {
    std::string e = error_of([&] { resolve_device(resolved({"run.device=cuda"})); });
    EXPECT_NE(e.find("no GPU can be used"), std::string::npos) << e;
    EXPECT_EQ(resolve_device(resolved({})), Device::cpu());
  }
  EXPECT_EQ(resolve_device(resolved({"run.device=cpu"})), Device::cpu());
}

TEST(PretrainConfig, LoadBackboneRefusesWeightsThatDoNotFitTheConfig) {
  const std::string path = (fs::temp_directory_path() / ("siam_lb_" + std::to_string(::getpid()) + ".safetensors")).string();
  Config c = resolved({"backbone.small_input=true", "backbone.width=4"});
  ssl::Backbone b = make_backbone(c);
  nn::Checkpoint ck;
  ck.sections["backbone"] = b.module->state_dict();
  ck.config = c.to_toml();
  nn::save_checkpoint(path, ck);
  LoadedBackbone lb = load_backbone(path);
  EXPECT_EQ(lb.feature_dim, 32);
  EXPECT_EQ(lb.config.get_int("backbone.width"), 4);

  ck.config = resolved({"backbone.small_input=true", "backbone.width=8"}).to_toml();
  nn::save_checkpoint(path, ck);
  std::string e = error_of([&] { load_backbone(path); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("do not fit the architecture"), std::string::npos) << e;
  fs::remove(path);
}
