#pragma once
// The supervised baseline: the same backbone trained with cross-entropy on the labels through a
// linear classifier, on one augmented view per image. Not an SSL method; it is here so that
// studies can put a supervised backbone of the same architecture beside the SSL ones
// (configs/studies/invariances.toml), trained by the same loop, data and augmentations.
#include "nn/layers.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct SupervisedConfig {
  BackboneConfig backbone;
  int64_t num_classes = 10;
  double label_smoothing = 0.0;
  // torchvision's ResNet recipe: SGD, lr 0.1 per 256 images, weight decay 1e-4.
  OptimRecipe optim{.optimizer = "sgd", .base_lr = 0.1, .weight_decay = 1e-4, .final_weight_decay = 1e-4,
                    .momentum = 0.9, .warmup_epochs = 0};
};

class Supervised : public Method {
 public:
  explicit Supervised(const SupervisedConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "Supervised"; }
  bool needs_labels() const override { return true; }
  // One SGD group over every parameter (biases and norms decayed too, as torchvision's recipe).
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;

  SupervisedConfig cfg;
  std::shared_ptr<nn::Linear> classifier;  // (num_classes, feature_dim): "classifier.weight", "classifier.bias"

 private:
  // Cross-entropy of view 0's logits against the labels (set_labels). Metrics: loss,
  // train_top1 (percent of the batch classified right), embedding_std (backbone features).
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
};

}  // namespace siam::ssl
