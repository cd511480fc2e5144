#include "ssl/byol.h"

#include "nn/schedule.h"

namespace siam::ssl {

BYOL::BYOL(const ByolConfig& config, const BackboneFactory& make) : Method(make(config.backbone)), cfg(config) {
  projector = register_module("projector", make_mlp(feature_dim(), cfg.projector));
  predictor = register_module("predictor", make_mlp(cfg.projector.dims.back(), cfg.predictor));
  if (cfg.predictor.dims.back() != cfg.projector.dims.back())
    fail("BYOL: the predictor must output the projection size ", cfg.projector.dims.back(), ", got ",
         cfg.predictor.dims.back());
  Backbone target = make(cfg.backbone);
  target_backbone = register_module("target_backbone", target.module);
  target_projector = register_module("target_projector", make_mlp(target.feature_dim, cfg.projector));
  init_target(*target_backbone, *online_.module);
  init_target(*target_projector, *projector);
  ema_backbone_ = std::make_unique<nn::EmaUpdater>(*target_backbone, *online_.module);
  ema_projector_ = std::make_unique<nn::EmaUpdater>(*target_projector, *projector);
}

std::vector<nn::ParamGroup> BYOL::param_groups(double lr, double weight_decay) const {
  return nn::bias_and_norm_groups(trainable_parameters(), lr, weight_decay);
}

double BYOL::target_momentum(const Progress& progress) const {
  return nn::ema_momentum(cfg.base_momentum, progress.step, progress.total_steps);
}

StepOutput BYOL::step(const std::vector<Tensor>& views, const Progress&, const Tensor&) {
  require_views(views, 2, 2);
  Tensor z1 = projector->forward(online_.module->forward(views[0]));
  Tensor z2 = projector->forward(online_.module->forward(views[1]));
  Tensor p1 = predictor->forward(z1), p2 = predictor->forward(z2);
  Tensor t1, t2;
  {
    NoGradGuard no_grad;
    t1 = target_projector->forward(target_backbone->forward(views[0]));
    t2 = target_projector->forward(target_backbone->forward(views[1]));
  }
  Tensor loss = byol_loss(p1, p2, t1, t2, cfg.loss_impl);
  return {loss, {{"loss", detach(loss)}, {"embedding_std", embedding_std(cat({z1, z2}, 0))}}};
}

void BYOL::after_optimizer_step(const Progress& progress) {
  const double tau = target_momentum(progress);
  ema_backbone_->update(tau);
  ema_projector_->update(tau);
}

}  // namespace siam::ssl
