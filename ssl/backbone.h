#pragma once
// The encoder an SSL method trains: a torchvision ResNet or a timm ViT with the classifier
// removed, so forward returns the global feature (N, feature_dim) and the state dict keeps the
// names a PyTorch user loads ("conv1.weight", "blocks.0.attn.qkv.weight").
#include <functional>
#include <string>

#include "nn/module.h"

namespace siam::ssl {

struct BackboneConfig {
  std::string arch = "resnet50";  // resnet18, resnet34, resnet50, vit_tiny, vit_small or vit_base
  int64_t in_channels = 3;        // 1 for grayscale data
  bool small_input = false;       // ResNet: 3x3 stride-1 stem, no max-pool (28-64 px images)
  int64_t image_size = 224;       // ViT: the input side its position embedding is made for
  int64_t patch = 16;             // ViT: 4, 8 or 16
  double drop_path = 0.0;         // ViT: stochastic depth (DINO's student uses 0.1)
  int64_t width = 64;             // ResNet: stem and first-stage channels (64 is torchvision's; 16 for CPU runs)
};

struct Backbone {
  nn::ModulePtr module;  // forward: (N, C, H, W) -> (N, feature_dim)
  int64_t feature_dim = 0;
};

Backbone make_backbone(const BackboneConfig& cfg);

// Methods build their encoders through a factory, called once per network (online, target):
// make_backbone by default; tests pass tiny networks.
using BackboneFactory = std::function<Backbone(const BackboneConfig&)>;

}  // namespace siam::ssl
