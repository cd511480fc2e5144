#include "ssl/heads.h"

#include "nn/init.h"

namespace siam::ssl {

std::shared_ptr<nn::Sequential> make_mlp(int64_t in_dim, const MlpConfig& cfg) {
  if (cfg.dims.empty()) fail("MLP head: dims must list at least one layer size, got none");
  if (in_dim <= 0) fail("MLP head: the input size must be positive, got ", in_dim);
  for (int64_t d : cfg.dims)
    if (d <= 0) fail("MLP head: every layer size must be positive, got ", d);
  auto mlp = std::make_shared<nn::Sequential>();
  int64_t in = in_dim;
  for (size_t i = 0; i < cfg.dims.size(); ++i) {
    const int64_t out = cfg.dims[i];
    const bool last = i + 1 == cfg.dims.size();
    mlp->push_back(std::make_shared<nn::Linear>(in, out, last ? cfg.last_bias : cfg.hidden_bias));
    if (!last) {
      if (cfg.hidden_batch_norm) mlp->push_back(std::make_shared<nn::BatchNorm1d>(out));
      mlp->push_back(std::make_shared<nn::ReLU>());
    } else if (cfg.last_norm != HeadNorm::none) {
      mlp->push_back(std::make_shared<nn::BatchNorm1d>(out, cfg.last_norm == HeadNorm::batch_norm));
    }
    in = out;
  }
  return mlp;
}

// ---------------------------------------------------------------- DINO

WeightNormLinear::WeightNormLinear(int64_t in, int64_t out) {
  weight_v = register_parameter("weight_v", empty({out, in}));
  nn::init::default_weight_(weight_v, nn::init_generator());
  weight_g = register_parameter("weight_g", ones({out, 1}));
}

Tensor WeightNormLinear::forward(const Tensor& x) {
  Tensor g = frozen ? detach(weight_g) : weight_g, v = frozen ? detach(weight_v) : weight_v;
  // PyTorch's norm_except_dim(v, 2, 0): one norm per output row, no epsilon.
  Tensor w = mul(v, div(g, norm(v, {1}, true)));  // (out, in)
  return linear(x, w);
}

DinoHead::DinoHead(int64_t in_dim, const DinoHeadConfig& cfg) {
  if (cfg.n_layers < 1) fail("DINO head: n_layers must be >= 1, got ", cfg.n_layers);
  if (in_dim <= 0 || cfg.hidden_dim <= 0 || cfg.bottleneck_dim <= 0 || cfg.out_dim <= 0)
    fail("DINO head: sizes must be positive, got in ", in_dim, ", hidden ", cfg.hidden_dim, ", bottleneck ",
         cfg.bottleneck_dim, ", out ", cfg.out_dim);
  mlp = std::make_shared<nn::Sequential>();
  int64_t in = in_dim;
  for (int64_t i = 0; i + 1 < cfg.n_layers; ++i) {
    mlp->push_back(std::make_shared<nn::Linear>(in, cfg.hidden_dim));
    if (cfg.use_bn) mlp->push_back(std::make_shared<nn::BatchNorm1d>(cfg.hidden_dim));
    mlp->push_back(std::make_shared<nn::GELU>());
    in = cfg.hidden_dim;
  }
  mlp->push_back(std::make_shared<nn::Linear>(in, cfg.bottleneck_dim));
  register_module("mlp", mlp);
  // DINOHead._init_weights runs over the MLP only; the last layer is made afterwards.
  for (auto& [name, p] : mlp->named_parameters()) {
    if (name.ends_with("bias")) fill_(p, 0);
    else if (p.dim() == 2) nn::init::trunc_normal_(p, 0.02, nn::init_generator());
  }
  last_layer = register_module("last_layer", std::make_shared<WeightNormLinear>(cfg.bottleneck_dim, cfg.out_dim));
  if (cfg.norm_last_layer) last_layer->weight_g.requires_grad_(false);
}

Tensor DinoHead::bottleneck(const Tensor& x) { return normalize(mlp->forward(x), 1); }

Tensor DinoHead::prototypes(const Tensor& b) { return last_layer->forward(b); }

Tensor DinoHead::forward(const Tensor& x) { return prototypes(bottleneck(x)); }

}  // namespace siam::ssl
