#pragma once
// BYOL (Grill et al. 2020; deepmind-research/byol): the online network (encoder, projector,
// predictor) regresses the target network's projection of the other view; the target is an
// EMA of the online encoder and projector. Each view goes through the networks on its own (batch
// statistics per view), as in the official code.
#include "nn/ema.h"
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct ByolConfig {
  BackboneConfig backbone;
  // Official MLP: Linear(4096, bias) -> BN -> ReLU -> Linear(256, no bias), for both heads.
  MlpConfig projector{.dims = {4096, 256}, .hidden_bias = true, .hidden_batch_norm = true, .last_bias = false};
  MlpConfig predictor{.dims = {4096, 256}, .hidden_bias = true, .hidden_batch_norm = true, .last_bias = false};
  double base_momentum = 0.996;  // tau_base (0.99 for 100-300 epoch runs)
  OptimRecipe optim{.optimizer = "lars", .base_lr = 0.2, .weight_decay = 1.5e-6, .final_weight_decay = 1.5e-6,
                    .momentum = 0.9, .warmup_epochs = 10};
  LossImpl loss_impl = LossImpl::fused;  // the fused op, or the composite of primitive ops
};

class BYOL : public Method {
 public:
  explicit BYOL(const ByolConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "BYOL"; }
  // LARS groups: biases and norm parameters without weight decay or adaptation.
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;
  // target = tau target + (1 - tau) online with tau = target_momentum(progress).
  void after_optimizer_step(const Progress& progress) override;
  // 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 for step k of K.
  double target_momentum(const Progress& progress) const;

  ByolConfig cfg;
  std::shared_ptr<nn::Sequential> projector, predictor;
  nn::ModulePtr target_backbone;
  std::shared_ptr<nn::Sequential> target_projector;

 private:
  // Metrics: loss, embedding_std (online projections of both views).
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
  std::unique_ptr<nn::EmaUpdater> ema_backbone_, ema_projector_;
};

}  // namespace siam::ssl
