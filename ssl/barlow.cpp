#include "ssl/barlow.h"

namespace siam::ssl {

BarlowTwins::BarlowTwins(const BarlowConfig& config, const BackboneFactory& make)
    : Method(make(config.backbone)), cfg(config) {
  projector = register_module("projector", make_mlp(feature_dim(), cfg.projector));
}

std::vector<nn::ParamGroup> BarlowTwins::param_groups(double lr, double weight_decay) const {
  return nn::bias_and_norm_groups(trainable_parameters(), lr, weight_decay, cfg.bias_lr_scale);
}

StepOutput BarlowTwins::step(const std::vector<Tensor>& views, const Progress&, const Tensor&) {
  require_views(views, 2, 2);
  Tensor z1 = projector->forward(online_.module->forward(views[0]));
  Tensor z2 = projector->forward(online_.module->forward(views[1]));
  // Data parallel: the cross-correlation and its batch norm over the global batch. Gathering
  // the (B, D) embeddings moves less than all-reducing the (D, D) matrix whenever B < D.
  z1 = gather(z1);
  z2 = gather(z2);
  BarlowLoss r = barlow_twins_loss(z1, z2, cfg.lambda, cfg.loss_impl);
  return {r.loss,
          {{"loss", detach(r.loss)},
           {"on_diag", detach(r.on_diag)},
           {"off_diag", detach(r.off_diag)},
           {"embedding_std", embedding_std(cat({z1, z2}, 0))}}};
}

}  // namespace siam::ssl
