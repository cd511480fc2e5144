#include "ssl/simclr.h"

namespace siam::ssl {

SimCLR::SimCLR(const SimclrConfig& config, const BackboneFactory& make) : Method(make(config.backbone)), cfg(config) {
  projector = register_module("projector", make_mlp(feature_dim(), cfg.projector));
}

std::vector<nn::ParamGroup> SimCLR::param_groups(double lr, double weight_decay) const {
  return nn::bias_and_norm_groups(trainable_parameters(), lr, weight_decay);
}

StepOutput SimCLR::step(const std::vector<Tensor>& views, const Progress&, const Tensor& positives) {
  require_views(views, 2, 2);
  Tensor z = projector->forward(online_.module->forward(cat({views[0], views[1]}, 0)));  // (2N, out)
  Tensor loss = nt_xent(z, cfg.temperature, positives, cfg.loss_impl);
  return {loss, {{"loss", detach(loss)}, {"embedding_std", embedding_std(z)}}};
}

}  // namespace siam::ssl
