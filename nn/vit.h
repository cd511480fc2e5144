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
  int64_t depth = 12;          // transformer blocks (timm's tiny/small/base: 12; fewer for tests)
};

class ViT : public Module {
 public:
  explicit ViT(const ViTConfig& cfg);
  // x: (N, C, H, W) with H and W multiples of the patch, any size: when the patch grid
  // (H/p, W/p) is not the position embedding's (image_size/p squared), the embedding's patch
  // part is resized to it by differentiable bicubic interpolation (resize_pos_embed), as DINO's
  // interpolate_pos_encoding does for multi-crop; at image_size nothing is interpolated.
  Tensor forward(const Tensor& x) override;  // -> (N, classes) or (N, dim)
  Tensor features(const Tensor& x);          // class token after the final norm (N, dim)
  Tensor tokens(const Tensor& x);            // all tokens after the final norm (N, 1 + H/p W/p, dim)
  int64_t feature_dim() const { return dim_; }
  const ViTConfig& config() const { return cfg_; }
  // Loads a state dict whose pos_embed was made for another image size: the patch grid of
  // the position embedding is resized by bicubic interpolation (as timm does).
  void load_state_dict_resized(std::map<std::string, Tensor> sd, bool strict = true);
  // pos_embed: (1, 1 + g*g, dim) -> (1, 1 + gh*gw, dim): the class-token entry unchanged, the
  // g x g patch grid resized to gh x gw; differentiable. Equals PyTorch's
  //   torch.cat([pe[:, :1], F.interpolate(pe[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2),
  //             size=(gh, gw), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
  //             .reshape(1, gh * gw, dim)], 1)
  // (DINOv2's interpolate_pos_encoding with interpolate_offset = 0, which passes size=; DINO v1
  // and DINOv2's default offset 0.1 pass scale_factor=(gh + 0.1) / g instead: the same output
  // size, sampled at slightly different positions).
  static Tensor resize_pos_embed(const Tensor& pos_embed, int64_t gh, int64_t gw);
  std::string describe() const;  // e.g. "ViT-small/16 (image_size 224)", for error messages

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
