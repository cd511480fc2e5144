#include "ssl/vicreg.h"

namespace siam::ssl {

VICReg::VICReg(const VicregConfig& config, const BackboneFactory& make) : Method(make(config.backbone)), cfg(config) {
  projector = register_module("projector", make_mlp(feature_dim(), cfg.projector));
}

std::vector<nn::ParamGroup> VICReg::param_groups(double lr, double weight_decay) const {
  return nn::bias_and_norm_groups(trainable_parameters(), lr, weight_decay);
}

StepOutput VICReg::step(const std::vector<Tensor>& views, const Progress&, const Tensor&) {
  require_views(views, 2, 2);
  Tensor x = projector->forward(online_.module->forward(views[0]));
  Tensor y = projector->forward(online_.module->forward(views[1]));
  // Data parallel: variance and covariance over the global batch (the official code gathers too).
  x = gather(x);
  y = gather(y);
  VicregLoss r = vicreg_loss(x, y, cfg.sim_coeff, cfg.std_coeff, cfg.cov_coeff, cfg.loss_impl);
  return {r.loss,
          {{"loss", detach(r.loss)},
           {"invariance", detach(r.invariance)},
           {"variance", detach(r.variance)},
           {"covariance", detach(r.covariance)},
           {"embedding_std", embedding_std(cat({x, y}, 0))}}};
}

}  // namespace siam::ssl
