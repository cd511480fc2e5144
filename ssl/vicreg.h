#pragma once
// VICReg (Bardes et al. 2022; facebookresearch/vicreg): invariance, variance and covariance
// terms on the two branches' projections. Each view goes through on its own.
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct VicregConfig {
  BackboneConfig backbone;
  // 8192-8192-8192: Linear -> BN -> ReLU twice, then Linear without bias.
  MlpConfig projector{.dims = {8192, 8192, 8192}, .hidden_bias = true, .hidden_batch_norm = true, .last_bias = false};
  double sim_coeff = 25, std_coeff = 25, cov_coeff = 1;
  OptimRecipe optim{.optimizer = "lars", .base_lr = 0.2, .weight_decay = 1e-6, .final_weight_decay = 1e-6,
                    .momentum = 0.9, .warmup_epochs = 10};
  LossImpl loss_impl = LossImpl::fused;  // the fused op, or the composite of primitive ops
};

class VICReg : public Method {
 public:
  explicit VICReg(const VicregConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "VICReg"; }
  // LARS groups: biases and norm parameters without weight decay or adaptation.
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;

  VicregConfig cfg;
  std::shared_ptr<nn::Sequential> projector;

 private:
  // Metrics: loss, invariance, variance, covariance, embedding_std (both branches).
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
};

}  // namespace siam::ssl
