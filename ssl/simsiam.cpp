#include "ssl/simsiam.h"

namespace siam::ssl {

SimSiam::SimSiam(const SimsiamConfig& config, const BackboneFactory& make)
    : Method(make(config.backbone)), cfg(config) {
  projector = register_module("projector", make_mlp(feature_dim(), cfg.projector));
  predictor = register_module("predictor", make_mlp(cfg.projector.dims.back(), cfg.predictor));
  if (cfg.predictor.dims.back() != cfg.projector.dims.back())
    fail("SimSiam: the predictor must output the projection size ", cfg.projector.dims.back(), ", got ",
         cfg.predictor.dims.back());
}

std::vector<nn::ParamGroup> SimSiam::param_groups(double lr, double weight_decay) const {
  nn::NamedTensors weights, pred;
  for (auto& [n, p] : trainable_parameters()) (n.starts_with("predictor.") ? pred : weights).emplace_back(n, p);
  return {nn::ParamGroup{.name = "weights", .params = weights, .lr = lr, .weight_decay = weight_decay},
          nn::ParamGroup{.name = "predictor", .params = pred, .lr = lr, .weight_decay = weight_decay,
                         .fixed_lr = cfg.fix_predictor_lr}};
}

StepOutput SimSiam::step(const std::vector<Tensor>& views, const Progress&, const Tensor&) {
  require_views(views, 2, 2);
  Tensor z1 = projector->forward(online_.module->forward(views[0]));
  Tensor z2 = projector->forward(online_.module->forward(views[1]));
  Tensor p1 = predictor->forward(z1), p2 = predictor->forward(z2);
  // Without the stop-gradient (the paper's ablation) the same loss, differentiated through
  // both branches, collapses.
  Tensor loss = cfg.stop_gradient ? simsiam_loss(p1, p2, z1, z2, cfg.loss_impl)
                                  : mul(add(mean(cosine_similarity(p1, z2, -1, 1e-8)), mean(cosine_similarity(p2, z1, -1, 1e-8))), -0.5);
  return {loss, {{"loss", detach(loss)}, {"embedding_std", embedding_std(cat({z1, z2}, 0))}}};
}

}  // namespace siam::ssl
