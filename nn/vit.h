#pragma once
// Vision Transformer with timm's structure, parameter names and initialisation
// (VisionTransformer: patch_embed.proj, cls_token, pos_embed, blocks.i.{norm1, attn.qkv,
// attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head).
#include "nn/layers.h"

namespace siam::nn {

struct ViTConfig {
  std::string size = "small";  // tiny (192, 3 heads), small (384, 6), base (768, 12); depth 12
  int64_t patch = 16;          // 4, 8 or 16
  int64_t image_size = 224;    // divisible by patch
  int64_t in_channels = 3;
  int64_t num_classes = 1000;  // 0 removes the head: forward returns the class-token feature
  double drop_path = 0.0;      // stochastic depth, linearly increasing over blocks
  double mlp_ratio = 4.0;
};

class ViT : public Module {
 public:
  explicit ViT(const ViTConfig& cfg);
  Tensor forward(const Tensor& x) override;  // x: (N, C, H, W) -> (N, classes) or (N, dim)
  Tensor features(const Tensor& x);          // class token after the final norm (N, dim)
  Tensor tokens(const Tensor& x);            // all tokens after the final norm (N, 1 + L, dim)
  int64_t feature_dim() const { return dim_; }
  const ViTConfig& config() const { return cfg_; }
  // Loads a state dict whose pos_embed was made for another image size: the patch grid of
  // the position embedding is resized by bicubic interpolation (as timm does).
  void load_state_dict_resized(std::map<std::string, Tensor> sd, bool strict = true);

 private:
  ViTConfig cfg_;
  int64_t dim_ = 0;
  std::shared_ptr<PatchEmbed> patch_embed_;
  Tensor cls_token_, pos_embed_;
  std::vector<ModulePtr> blocks_;
  std::shared_ptr<LayerNorm> norm_;
  std::shared_ptr<Linear> head_;
};

}  // namespace siam::nn
