#pragma once
// ResNet-18/34/50 with torchvision's structure, parameter names and initialisation.
#include "nn/layers.h"

namespace siam::nn {

struct ResNetConfig {
  int depth = 50;               // 18, 34 or 50
  int64_t in_channels = 3;      // 1 for grayscale data
  bool small_input = false;     // 3x3 stride-1 first conv, no max-pool (28-64 px images)
  int64_t num_classes = 1000;   // 0 removes the classifier: forward returns pooled features
  bool zero_init_residual = false;  // zero the last BN weight of each block
  int64_t width = 64;           // stem and first-stage channels, doubled per stage (torchvision: 64)
};

class ResNet : public Module {
 public:
  explicit ResNet(const ResNetConfig& cfg);
  Tensor forward(const Tensor& x) override;     // x: (N, C, H, W) -> (N, classes) or (N, feat)
  Tensor features(const Tensor& x);             // global-pool output (N, feature_dim)
  Tensor feature_map(const Tensor& x);          // last stage output (N, feature_dim, h, w)
  int64_t feature_dim() const { return feature_dim_; }
  const ResNetConfig& config() const { return cfg_; }

 private:
  ResNetConfig cfg_;
  int64_t feature_dim_ = 0;
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm> bn1_;
  std::vector<std::shared_ptr<Sequential>> stages_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace siam::nn
