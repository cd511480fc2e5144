#include "nn/vit.h"

#include <cmath>

#include "nn/init.h"

namespace siam::nn {

namespace {

class Block : public Module {
 public:
  Block(int64_t dim, int64_t heads, double mlp_ratio, double drop_path_p) {
    norm1 = register_module("norm1", std::make_shared<LayerNorm>(dim, 1e-6));
    attn = register_module("attn", std::make_shared<MultiheadSelfAttention>(dim, heads));
    norm2 = register_module("norm2", std::make_shared<LayerNorm>(dim, 1e-6));
    mlp = register_module("mlp", std::make_shared<Mlp>(dim, static_cast<int64_t>(dim * mlp_ratio), dim));
    drop_path = register_module("drop_path", std::make_shared<DropPath>(drop_path_p));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = add(x, drop_path->forward(attn->forward(norm1->forward(x))));
    return add(y, drop_path->forward(mlp->forward(norm2->forward(y))));
  }
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<MultiheadSelfAttention> attn;
  std::shared_ptr<Mlp> mlp;
  std::shared_ptr<DropPath> drop_path;  // no parameters, so the state dict is timm's
};

}  // namespace

ViT::ViT(const ViTConfig& cfg) : cfg_(cfg) {
  int64_t heads;
  if (cfg.size == "tiny") dim_ = 192, heads = 3;
  else if (cfg.size == "small") dim_ = 384, heads = 6;
  else if (cfg.size == "base") dim_ = 768, heads = 12;
  else fail("ViT: size must be tiny, small or base, got '", cfg.size, "'");
  if (cfg.patch <= 0 || cfg.image_size % cfg.patch)
    fail("ViT: image size ", cfg.image_size, " is not divisible by patch ", cfg.patch);
  patch_embed_ = register_module("patch_embed", std::make_shared<PatchEmbed>(cfg.image_size, cfg.patch,
                                                                            cfg.in_channels, dim_));
  cls_token_ = register_parameter("cls_token", zeros({1, 1, dim_}));
  pos_embed_ = register_parameter("pos_embed", zeros({1, patch_embed_->num_patches + 1, dim_}));
  auto blocks = std::make_shared<Sequential>();
  if (cfg.depth < 1) fail("ViT: depth must be >= 1, got ", cfg.depth);
  const int64_t depth = cfg.depth;
  for (int64_t i = 0; i < depth; ++i) {
    double dp = depth > 1 ? cfg.drop_path * i / (depth - 1) : 0.0;
    auto b = std::make_shared<Block>(dim_, heads, cfg.mlp_ratio, dp);
    blocks->push_back(b);
    blocks_.push_back(b);
  }
  register_module("blocks", blocks);
  norm_ = register_module("norm", std::make_shared<LayerNorm>(dim_, 1e-6));
  if (cfg.num_classes > 0) head_ = register_module("head", std::make_shared<Linear>(dim_, cfg.num_classes));

  // timm's default init: trunc-normal(.02) position embedding and Linear weights, zero
  // Linear biases, normal(1e-6) class token; the patch conv keeps PyTorch's default.
  Generator& g = init_generator();
  init::trunc_normal_(pos_embed_, 0.02, g);
  init::normal_(cls_token_, 0, 1e-6, g);
  for (auto& [name, p] : named_parameters()) {
    bool is_linear = name.find("patch_embed") == std::string::npos && name != "pos_embed" && name != "cls_token" &&
                     name.find("norm") == std::string::npos;
    if (!is_linear) continue;
    if (p.dim() == 2) init::trunc_normal_(p, 0.02, g);
    else fill_(p, 0);
  }
}

std::string ViT::describe() const {
  return "ViT-" + cfg_.size + "/" + std::to_string(cfg_.patch) + " (image_size " + std::to_string(cfg_.image_size) +
         ")";
}

Tensor ViT::resize_pos_embed(const Tensor& pos_embed, int64_t gh, int64_t gw) {
  const int64_t g = pos_embed.dim() == 3 && pos_embed.size(1) >= 1
                        ? std::lround(std::sqrt(static_cast<double>(pos_embed.size(1) - 1)))
                        : -1;
  if (pos_embed.dim() != 3 || pos_embed.size(0) != 1 || g * g + 1 != pos_embed.size(1))
    fail("ViT: pos_embed of shape ", shape_str(pos_embed.shape()), " is not (1, 1 + g*g, dim)");
  if (gh < 1 || gw < 1) fail("ViT: cannot resize the position embedding to a ", gh, "x", gw, " patch grid");
  const int64_t dim = pos_embed.size(2);
  Tensor grid = permute(reshape(slice(pos_embed, 1, 1, 1 + g * g), {1, g, g, dim}), {0, 3, 1, 2});  // (1, dim, g, g)
  Tensor resized = interpolate_bicubic(contiguous(grid), gh, gw, false);                           // (1, dim, gh, gw)
  Tensor flat = reshape(permute(resized, {0, 2, 3, 1}), {1, gh * gw, dim});
  return cat({slice(pos_embed, 1, 0, 1), flat}, 1);
}

Tensor ViT::tokens(const Tensor& x) {
  // x: (N, C, H, W). PatchEmbed::forward insists on image_size; its convolution does not.
  const int64_t p = cfg_.patch;
  if (x.dim() != 4 || x.size(1) != cfg_.in_channels || x.size(2) < p || x.size(3) < p || x.size(2) % p ||
      x.size(3) % p)
    fail(describe(), ": expected input (N, ", cfg_.in_channels, ", H, W) with H and W positive multiples of the patch ",
         p, ", got ", shape_str(x.shape()));
  const int64_t gh = x.size(2) / p, gw = x.size(3) / p, g = cfg_.image_size / p;
  Tensor t = transpose(flatten(patch_embed_->proj->forward(x), 2), 1, 2);  // (N, gh gw, dim), as PatchEmbed
  int64_t n = t.size(0);
  t = cat({expand(cls_token_, {n, 1, dim_}), t}, 1);
  t = add(t, gh == g && gw == g ? pos_embed_ : resize_pos_embed(pos_embed_, gh, gw));
  for (auto& b : blocks_) t = b->forward(t);
  return norm_->forward(t);
}

Tensor ViT::features(const Tensor& x) { return select(tokens(x), 1, 0); }

Tensor ViT::forward(const Tensor& x) {
  Tensor f = features(x);
  return head_ ? head_->forward(f) : f;
}

void ViT::load_state_dict_resized(std::map<std::string, Tensor> sd, bool strict) {
  auto it = sd.find("pos_embed");
  if (it != sd.end() && it->second.shape() != pos_embed_.shape()) {
    const Tensor& src = it->second;  // (1, 1 + g*g, dim)
    if (src.dim() != 3 || src.size(2) != dim_)
      fail("ViT: pos_embed of shape ", shape_str(src.shape()), " is not (1, 1 + g*g, ", dim_, ")");
    int64_t new_grid = cfg_.image_size / cfg_.patch;
    NoGradGuard ng;
    it->second = resize_pos_embed(siam::to(src, pos_embed_.dtype()), new_grid, new_grid);
  }
  load_state_dict(sd, strict);
}

}  // namespace siam::nn
