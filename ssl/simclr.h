#pragma once
// SimCLR (Chen et al. 2020; google-research/simclr): both views through one encoder and
// projector in one batch (batch norm sees all 2N images), NT-Xent on the projections.
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct SimclrConfig {
  BackboneConfig backbone;
  // SimCLR v2's 3-layer head 2048-2048-128: BN on every layer, the last without ReLU or bias.
  // The official last BN has a scale and no shift; ours has both (see docs/ssl.md).
  MlpConfig projector{.dims = {2048, 2048, 128},
                      .hidden_bias = false,
                      .hidden_batch_norm = true,
                      .last_bias = false,
                      .last_norm = HeadNorm::batch_norm};
  double temperature = 0.1;  // official at batch 4096; 0.2-0.5 is common at small batch
  OptimRecipe optim{.optimizer = "lars", .base_lr = 0.3, .weight_decay = 1e-6, .final_weight_decay = 1e-6,
                    .momentum = 0.9, .warmup_epochs = 10};
  LossImpl loss_impl = LossImpl::fused;  // the fused op, or the composite of primitive ops
};

class SimCLR : public Method {
 public:
  explicit SimCLR(const SimclrConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "SimCLR"; }
  // LARS groups: biases and norm parameters without weight decay or adaptation.
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;

  SimclrConfig cfg;
  std::shared_ptr<nn::Sequential> projector;

 private:
  // Metrics: loss, embedding_std.
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
  bool accepts_positives() const override { return true; }
};

}  // namespace siam::ssl
