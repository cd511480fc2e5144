#include "ssl/supervised.h"

namespace siam::ssl {

Supervised::Supervised(const SupervisedConfig& config, const BackboneFactory& make)
    : Method(make(config.backbone)), cfg(config) {
  if (cfg.num_classes < 2) fail("Supervised: num_classes must be at least 2, got ", cfg.num_classes);
  classifier = register_module("classifier", std::make_shared<nn::Linear>(feature_dim(), cfg.num_classes));
}

std::vector<nn::ParamGroup> Supervised::param_groups(double lr, double weight_decay) const {
  return {nn::ParamGroup{.name = "weights", .params = trainable_parameters(), .lr = lr, .weight_decay = weight_decay}};
}

StepOutput Supervised::step(const std::vector<Tensor>& views, const Progress&, const Tensor&) {
  require_views(views, 1, 2);
  const Tensor& y = labels_;
  if (!y.defined() || y.dim() != 1 || y.size(0) != views[0].size(0))
    fail("Supervised: needs the batch's labels, one per image (", views[0].size(0), "), got ",
         y.defined() ? shape_str(y.shape()) : "none");
  Tensor f = online_.module->forward(views[0]);  // (N, feature_dim)
  Tensor logits = classifier->forward(f);         // (N, num_classes)
  Tensor loss = cross_entropy(logits, y, cfg.label_smoothing);
  Tensor top1;
  {
    NoGradGuard no_grad;
    const Tensor predicted = max(logits, 1).second;  // (N) i64
    const Tensor hits = siam::to(eq(predicted, y), logits.dtype());
    top1 = mul(mean(hits), 100.0);
  }
  return {loss, {{"loss", detach(loss)}, {"train_top1", top1}, {"embedding_std", embedding_std(f)}}};
}

}  // namespace siam::ssl
