#include "ssl/method.h"

#include "autograd/ops_dist.h"
#include "nn/layers.h"

namespace siam::ssl {

Method::Method(Backbone online) : online_(std::move(online)) {
  if (!online_.module) fail("SSL method: the backbone factory returned no module");
  if (online_.feature_dim <= 0) fail("SSL method: the backbone's feature_dim must be positive, got ", online_.feature_dim);
  register_module("backbone", online_.module);
}

Tensor Method::forward(const Tensor& x) { return backbone().forward(x); }

nn::NamedTensors Method::trainable_parameters() const {
  nn::NamedTensors out;
  for (auto& [n, p] : named_parameters())
    if (p.requires_grad()) out.emplace_back(n, p);
  return out;
}

void Method::set_process_group(dist::Group* group) {
  group_ = group;
  nn::set_sync_batch_norm(*this, group);
}

Tensor Method::gather(const Tensor& z) const {
  if (!group_ || group_->size() == 1) return z;
  return all_gather(z, *group_);
}

void Method::average(Tensor& t) const {
  if (!group_ || group_->size() == 1) return;
  NoGradGuard no_grad;
  Tensor c = contiguous(t);
  group_->all_reduce(c);
  t = mul(c, 1.0 / group_->size());
}

void Method::require_views(const std::vector<Tensor>& views, size_t lo, size_t hi) const {
  if (views.size() < lo || views.size() > hi) {
    if (lo == hi) fail(name(), ": expected ", lo, " views, got ", views.size());
    fail(name(), ": expected ", lo, " to ", hi, " views, got ", views.size());
  }
}

StepOutput Method::training_step(const std::vector<Tensor>& views, const Progress& progress,
                                 const Tensor& positives) {
  if (views.empty()) fail(name(), ": training_step needs at least one view, got none");
  for (size_t v = 0; v < views.size(); ++v) {
    const Tensor& x = views[v];
    if (!x.defined() || x.dim() != 4)
      fail(name(), ": view ", v, " must be (N, C, H, W), got ", x.defined() ? shape_str(x.shape()) : "undefined");
    if (x.size(0) != views[0].size(0))
      fail(name(), ": view ", v, " holds ", x.size(0), " images but view 0 holds ", views[0].size(0));
  }
  if (views[0].size(0) < 2)
    fail(name(), ": needs a batch of at least 2 images (batch statistics, negatives), got ", views[0].size(0));
  if (progress.step < 0 || progress.steps_per_epoch < 1 || progress.total_steps < 1)
    fail(name(), ": progress needs step >= 0, steps_per_epoch >= 1 and total_steps >= 1, got step ", progress.step,
         ", steps_per_epoch ", progress.steps_per_epoch, ", total_steps ", progress.total_steps);
  if (positives.defined() && !accepts_positives())
    fail(name(), ": extra positive pairs are supported by SimCLR only (NT-Xent's positive mask)");
  return step(views, progress, positives);
}

std::unique_ptr<nn::Optimizer> make_optimizer(const Method& method, const OptimRecipe& recipe, int64_t batch_size) {
  if (batch_size <= 0) fail("make_optimizer: batch_size must be positive, got ", batch_size);
  const double lr = recipe.base_lr * static_cast<double>(batch_size) / 256.0;
  std::vector<nn::ParamGroup> groups = method.param_groups(lr, recipe.weight_decay);
  if (recipe.optimizer == "sgd") return std::make_unique<nn::SGD>(groups, nn::SgdOptions{.momentum = recipe.momentum});
  if (recipe.optimizer == "lars")
    return std::make_unique<nn::LARS>(groups, nn::LarsOptions{.momentum = recipe.momentum});
  if (recipe.optimizer == "adamw") return std::make_unique<nn::AdamW>(groups);
  fail("make_optimizer: optimizer must be sgd, lars or adamw, got '", recipe.optimizer, "'");
}

void init_target(nn::Module& target, const nn::Module& online) {
  target.load_state_dict(online.state_dict());
  for (Tensor p : target.parameters()) p.requires_grad_(false);
}

}  // namespace siam::ssl
