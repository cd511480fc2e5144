#include "ssl/dino.h"

#include "nn/schedule.h"

namespace siam::ssl {

DINO::DINO(const DinoConfig& config, const BackboneFactory& make) : Method(make(config.backbone)), cfg(config) {
  if (cfg.global_crops < 1) fail("DINO: global_crops must be >= 1, got ", cfg.global_crops);
  if (cfg.warmup_teacher_temp_epochs < 0)
    fail("DINO: warmup_teacher_temp_epochs must be >= 0, got ", cfg.warmup_teacher_temp_epochs);
  if (!(cfg.center_momentum >= 0 && cfg.center_momentum <= 1))
    fail("DINO: center_momentum must be in [0, 1], got ", cfg.center_momentum);
  head = register_module("head", std::make_shared<DinoHead>(feature_dim(), cfg.head));
  BackboneConfig teacher_cfg = cfg.backbone;
  teacher_cfg.drop_path = 0;
  Backbone teacher = make(teacher_cfg);
  teacher_backbone = register_module("teacher_backbone", teacher.module);
  teacher_head = register_module("teacher_head", std::make_shared<DinoHead>(teacher.feature_dim, cfg.head));
  init_target(*teacher_backbone, *online_.module);
  init_target(*teacher_head, *head);
  ema_backbone_ = std::make_unique<nn::EmaUpdater>(*teacher_backbone, *online_.module);
  ema_head_ = std::make_unique<nn::EmaUpdater>(*teacher_head, *head);
  center = register_buffer("center", zeros({1, cfg.head.out_dim}));
}

std::vector<nn::ParamGroup> DINO::param_groups(double lr, double weight_decay) const {
  return nn::bias_and_norm_groups(trainable_parameters(), lr, weight_decay);
}

double DINO::teacher_momentum(const Progress& progress) const {
  return nn::ema_momentum(cfg.base_momentum, progress.step, progress.total_steps);
}

double DINO::teacher_temperature(int64_t epoch) const {
  const int64_t w = cfg.warmup_teacher_temp_epochs;
  if (epoch >= w) return cfg.teacher_temp;
  if (w == 1) return cfg.warmup_teacher_temp;
  return cfg.warmup_teacher_temp +
         static_cast<double>(epoch) * ((cfg.teacher_temp - cfg.warmup_teacher_temp) / static_cast<double>(w - 1));
}

StepOutput DINO::step(const std::vector<Tensor>& views, const Progress& progress, const Tensor&) {
  const size_t globals = static_cast<size_t>(cfg.global_crops);
  if (views.size() < std::max<size_t>(globals, 2))
    fail("DINO: expected the ", globals, " global crops and at least 2 views in all, got ", views.size(), " views");
  for (size_t v = 1; v < globals; ++v)
    if (views[v].shape() != views[0].shape())
      fail("DINO: global crop ", v, " is ", shape_str(views[v].shape()), " but global crop 0 is ",
           shape_str(views[0].shape()));
  Tensor teacher_out;
  {
    NoGradGuard no_grad;
    std::vector<Tensor> g(views.begin(), views.begin() + static_cast<std::ptrdiff_t>(globals));
    teacher_out = teacher_head->forward(teacher_backbone->forward(cat(g, 0)));  // (G B, K)
  }
  std::vector<Tensor> feats;
  for (size_t v = 0; v < views.size();) {
    size_t end = v + 1;
    while (end < views.size() && views[end].shape() == views[v].shape()) ++end;
    std::vector<Tensor> same(views.begin() + static_cast<std::ptrdiff_t>(v),
                             views.begin() + static_cast<std::ptrdiff_t>(end));
    feats.push_back(online_.module->forward(cat(same, 0)));
    v = end;
  }
  head->last_layer->frozen = progress.epoch() < cfg.freeze_last_layer_epochs;
  Tensor b = head->bottleneck(cat(feats, 0));                    // (S B, bottleneck)
  Tensor student_out = head->prototypes(b);                      // (S B, K)
  const double tt = teacher_temperature(progress.epoch());
  Tensor loss = dino_loss(student_out, teacher_out, center, static_cast<int64_t>(views.size()), cfg.student_temp,
                          tt, cfg.loss_impl);
  {
    NoGradGuard no_grad;
    batch_center_ = mean(teacher_out, {0}, true);
  }
  average(batch_center_);  // data parallel: the centre moves by the global batch's mean
  return {loss,
          {{"loss", detach(loss)},
           {"teacher_temp", full({}, tt, {loss.dtype(), loss.device()})},
           {"embedding_std", embedding_std(b)}}};
}

void DINO::after_optimizer_step(const Progress& progress) {
  if (!batch_center_.defined()) fail("DINO: after_optimizer_step called before a training_step");
  const double m = teacher_momentum(progress);
  ema_backbone_->update(m);
  ema_head_->update(m);
  NoGradGuard no_grad;
  copy_(center, add(mul(center, cfg.center_momentum), mul(batch_center_, 1 - cfg.center_momentum)));
  batch_center_ = Tensor();
}

}  // namespace siam::ssl
