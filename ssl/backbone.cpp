#include "ssl/backbone.h"

#include "nn/resnet.h"
#include "nn/vit.h"

namespace siam::ssl {

Backbone make_backbone(const BackboneConfig& cfg) {
  const std::string& a = cfg.arch;
  if (a == "resnet18" || a == "resnet34" || a == "resnet50") {
    auto net = std::make_shared<nn::ResNet>(nn::ResNetConfig{.depth = std::stoi(a.substr(6)),
                                                             .in_channels = cfg.in_channels,
                                                             .small_input = cfg.small_input,
                                                             .num_classes = 0,
                                                             .width = cfg.width});
    return {net, net->feature_dim()};
  }
  if (a == "vit_tiny" || a == "vit_small" || a == "vit_base") {
    auto net = std::make_shared<nn::ViT>(nn::ViTConfig{.size = a.substr(4),
                                                       .patch = cfg.patch,
                                                       .image_size = cfg.image_size,
                                                       .in_channels = cfg.in_channels,
                                                       .num_classes = 0,
                                                       .drop_path = cfg.drop_path});
    return {net, net->feature_dim()};
  }
  fail("backbone: arch must be resnet18, resnet34, resnet50, vit_tiny, vit_small or vit_base, got '", a, "'");
}

}  // namespace siam::ssl
