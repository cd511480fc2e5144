#include "ssl/moco.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "dist/dist.h"
#include "nn/layers.h"
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

void MoCo::set_process_group(dist::Group* group) {
  Method::set_process_group(group);
  if (cfg.shuffle_bn) {
    nn::set_sync_batch_norm(*key_backbone, nullptr);
    nn::set_sync_batch_norm(*key_projector, nullptr);
  }
}

Tensor MoCo::keys(const Tensor& x, const Progress& progress) {
  NoGradGuard no_grad;
  auto encode = [&](const Tensor& in) { return normalize(key_projector->forward(key_backbone->forward(in)), 1); };
  if (!cfg.shuffle_bn || !group_ || group_->size() == 1) return encode(x);
  // Shuffle-BN: one permutation of the global batch, the same on every rank (seeded by the
  // step), so rank r encodes global rows perm[r n .. (r + 1) n) and normalises them together.
  const int64_t n = x.size(0), total = n * group_->size(), r = group_->rank();
  std::vector<int64_t> perm(static_cast<size_t>(total)), inverse(static_cast<size_t>(total));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(cfg.queue_seed * 1000003u + static_cast<uint64_t>(progress.step));
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t i = 0; i < total; ++i) inverse[static_cast<size_t>(perm[static_cast<size_t>(i)])] = i;
  const Tensor all = group_->all_gather(contiguous(x));  // (N W, C, H, W)
  const Tensor mine = from_vector(std::vector<double>(perm.begin() + r * n, perm.begin() + (r + 1) * n), {n},
                                  {DType::i64, x.device()});
  const Tensor shuffled_keys = group_->all_gather(contiguous(encode(index_select(all, 0, mine))));
  const Tensor back = from_vector(std::vector<double>(inverse.begin() + r * n, inverse.begin() + (r + 1) * n), {n},
                                  {DType::i64, x.device()});
  return index_select(shuffled_keys, 0, back);
}

StepOutput MoCo::step(const std::vector<Tensor>& views, const Progress& progress, const Tensor&) {
  require_views(views, 2, 2);
  const int64_t n = views[0].size(0) * (group_ ? group_->size() : 1);
  if (n > cfg.queue_size)
    fail("MoCo: a batch of ", n, " keys does not fit in a queue of ", cfg.queue_size);
  Tensor q = projector->forward(online_.module->forward(views[0]));  // (N, D)
  keys_ = keys(views[1], progress);
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
