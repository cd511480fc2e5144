#include "ssl/moco.h"

#include "dist/dist.h"
#include "nn/schedule.h"

namespace siam::ssl {

MoCo::MoCo(const MocoConfig& config, const BackboneFactory& make) : Method(make(config.backbone)), cfg(config) {
  if (cfg.queue_size < 1) fail("MoCo: queue_size must be >= 1, got ", cfg.queue_size);
  if (!(cfg.momentum >= 0 && cfg.momentum <= 1)) fail("MoCo: momentum must be in [0, 1], got ", cfg.momentum);
  projector = register_module("projector", make_mlp(feature_dim(), cfg.projector));
  Backbone key = make(cfg.backbone);
  key_backbone = register_module("key_backbone", key.module);
  key_projector = register_module("key_projector", make_mlp(key.feature_dim, cfg.projector));
  init_target(*key_backbone, *online_.module);
  init_target(*key_projector, *projector);
  ema_backbone_ = std::make_unique<nn::EmaUpdater>(*key_backbone, *online_.module);
  ema_projector_ = std::make_unique<nn::EmaUpdater>(*key_projector, *projector);
  Generator gen(cfg.queue_seed);
  const int64_t dim = cfg.projector.dims.back();
  {
    NoGradGuard no_grad;
    queue = register_buffer("queue", normalize(randn({dim, cfg.queue_size}, gen), 0));
  }
  queue_ptr = register_buffer("queue_ptr", zeros({1}, {DType::i64}));
}

std::vector<nn::ParamGroup> MoCo::param_groups(double lr, double weight_decay) const {
  return {nn::ParamGroup{.name = "weights", .params = trainable_parameters(), .lr = lr, .weight_decay = weight_decay}};
}

double MoCo::key_momentum(const Progress& progress) const {
  return cfg.cosine_momentum ? nn::ema_momentum(cfg.momentum, progress.step, progress.total_steps) : cfg.momentum;
}

int64_t MoCo::queue_pointer() const {
  return static_cast<int64_t>(copy_to(queue_ptr, Device::cpu(), DType::i64).item());
}

StepOutput MoCo::step(const std::vector<Tensor>& views, const Progress&, const Tensor&) {
  require_views(views, 2, 2);
  const int64_t n = views[0].size(0) * (group_ ? group_->size() : 1);
  if (n > cfg.queue_size)
    fail("MoCo: a batch of ", n, " keys does not fit in a queue of ", cfg.queue_size);
  Tensor q = projector->forward(online_.module->forward(views[0]));  // (N, D)
  {
    NoGradGuard no_grad;
    keys_ = normalize(key_projector->forward(key_backbone->forward(views[1])), 1);
  }
  Tensor loss = info_nce(q, keys_, transpose(queue, 0, 1), cfg.temperature, cfg.loss_impl);
  {
    NoGradGuard no_grad;
    keys_ = gather(keys_);  // data parallel: every rank enqueues every rank's keys, in rank order
  }
  return {loss, {{"loss", detach(loss)}, {"embedding_std", embedding_std(q)}}};
}

void MoCo::after_optimizer_step(const Progress& progress) {
  if (!keys_.defined()) fail("MoCo: after_optimizer_step called before a training_step");
  ema_backbone_->update(key_momentum(progress));
  ema_projector_->update(key_momentum(progress));
  NoGradGuard no_grad;
  // Keys fill columns ptr, ptr + 1, ... wrapping at K (the official code needs K % N == 0 and
  // never wraps inside a batch).
  const int64_t k = cfg.queue_size, n = keys_.size(0), ptr = queue_pointer();
  Tensor cols = transpose(keys_, 0, 1);  // (D, N)
  const int64_t first = std::min(n, k - ptr);
  copy_(narrow(queue, 1, ptr, first), narrow(cols, 1, 0, first));
  if (first < n) copy_(narrow(queue, 1, 0, n - first), narrow(cols, 1, first, n - first));
  fill_(queue_ptr, static_cast<double>((ptr + n) % k));
  keys_ = Tensor();
}

}  // namespace siam::ssl
