#include "ssl/simclr.h"

namespace siam::ssl {

SimCLR::SimCLR(const SimclrConfig& config, const BackboneFactory& make) : Method(make(config.backbone)), cfg(config) {
  // No layers: NT-Xent on the backbone's features (the paper's "no projection head" ablation).
  projector = register_module("projector", cfg.projector.dims.empty() ? std::make_shared<nn::Sequential>()
                                                                      : make_mlp(feature_dim(), cfg.projector));
}

std::vector<nn::ParamGroup> SimCLR::param_groups(double lr, double weight_decay) const {
  return nn::bias_and_norm_groups(trainable_parameters(), lr, weight_decay);
}

StepOutput SimCLR::step(const std::vector<Tensor>& views, const Progress&, const Tensor& positives) {
  require_views(views, 2, 2);
  const int64_t n = views[0].size(0);
  Tensor z = projector->forward(online_.module->forward(cat({views[0], views[1]}, 0)));  // (2N, out)
  // Data parallel: NT-Xent over every rank's views, laid out as one process would have them.
  if (group_) z = cat({gather(narrow(z, 0, 0, n)), gather(narrow(z, 0, n, n))}, 0);
  Tensor loss = nt_xent(z, cfg.temperature, positives, cfg.loss_impl);
  return {loss, {{"loss", detach(loss)}, {"embedding_std", embedding_std(z)}}};
}

}  // namespace siam::ssl
