#pragma once
// Barlow Twins (Zbontar et al. 2021; facebookresearch/barlowtwins): the cross-correlation of
// the two branches' batch-normalised projections is pushed to the identity. Each view goes
// through on its own.
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct BarlowConfig {
  BackboneConfig backbone;
  // 8192-8192-8192, no biases: Linear -> BN -> ReLU twice, then Linear.
  MlpConfig projector{.dims = {8192, 8192, 8192}, .hidden_bias = false, .hidden_batch_norm = true, .last_bias = false};
  double lambda = 0.0051;        // weight of the off-diagonal term
  double bias_lr_scale = 0.024;  // biases and BN parameters train at 0.0048 / 0.2 of the rate
  OptimRecipe optim{.optimizer = "lars", .base_lr = 0.2, .weight_decay = 1e-6, .final_weight_decay = 1e-6,
                    .momentum = 0.9, .warmup_epochs = 10};
  LossImpl loss_impl = LossImpl::fused;  // the fused op, or the composite of primitive ops
};

class BarlowTwins : public Method {
 public:
  explicit BarlowTwins(const BarlowConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "BarlowTwins"; }
  // LARS groups: "weights", and "bias_and_norm" (no decay or adaptation, lr x bias_lr_scale).
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;

  BarlowConfig cfg;
  std::shared_ptr<nn::Sequential> projector;

 private:
  // Metrics: loss, on_diag, off_diag, embedding_std (both branches).
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
};

}  // namespace siam::ssl
