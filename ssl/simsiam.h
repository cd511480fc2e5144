#pragma once
// SimSiam (Chen & He 2021; facebookresearch/simsiam): one encoder and projector for both
// views, a predictor, and the stop-gradient; no target network. Each view goes through on its
// own (batch statistics per view), as in the official code.
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct SimsiamConfig {
  BackboneConfig backbone;
  // Projector 2048-2048-2048: Linear (no bias) -> BN -> ReLU twice, then Linear -> BN without
  // affine. The official last Linear has a frozen bias, which that BN cancels; ours has none.
  MlpConfig projector{.dims = {2048, 2048, 2048},
                      .hidden_bias = false,
                      .hidden_batch_norm = true,
                      .last_bias = false,
                      .last_norm = HeadNorm::batch_norm_no_affine};
  // Predictor 2048-512-2048: Linear (no bias) -> BN -> ReLU -> Linear (bias).
  MlpConfig predictor{.dims = {512, 2048}, .hidden_bias = false, .hidden_batch_norm = true, .last_bias = true};
  bool fix_predictor_lr = true;  // the predictor keeps the initial learning rate
  bool stop_gradient = true;     // false: the ablation (gradient through both branches), which collapses
  OptimRecipe optim{.optimizer = "sgd", .base_lr = 0.05, .weight_decay = 1e-4, .final_weight_decay = 1e-4,
                    .momentum = 0.9, .warmup_epochs = 0};
  LossImpl loss_impl = LossImpl::fused;  // the fused op, or the composite of primitive ops
};

class SimSiam : public Method {
 public:
  explicit SimSiam(const SimsiamConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "SimSiam"; }
  // "weights" (encoder and projector) and "predictor" (fixed_lr when fix_predictor_lr); both
  // decay every parameter, as the official SGD does.
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;

  SimsiamConfig cfg;
  std::shared_ptr<nn::Sequential> projector, predictor;

 private:
  // Metrics: loss, embedding_std (projections of both views).
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
};

}  // namespace siam::ssl
