#include "nn/layers.h"

#include "autograd/ops_dist.h"
#include "nn/init.h"
#include "nn/precision.h"

namespace siam::nn {

Generator& init_generator() {
  static Generator g(0xC0FFEE);
  return g;
}

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  if (in <= 0 || out <= 0) fail("Linear: sizes must be positive, got in=", in, " out=", out);
  weight = register_parameter("weight", empty({out, in}));
  init::default_weight_(weight, init_generator());
  if (with_bias) {
    bias = register_parameter("bias", empty({out}));
    init::default_bias_(bias, in, init_generator());
  }
}

Tensor Linear::forward(const Tensor& x) {
  return result_cast(linear(compute_cast(x), compute_cast(weight), compute_cast(bias)));
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool with_bias,
               int64_t groups, int64_t dilation) {
  if (in % groups || out % groups)
    fail("Conv2d: channels in=", in, " out=", out, " must be divisible by groups=", groups);
  weight = register_parameter("weight", empty({out, in / groups, kernel, kernel}));
  init::default_weight_(weight, init_generator());
  if (with_bias) {
    bias = register_parameter("bias", empty({out}));
    init::default_bias_(bias, init::fan_in(weight), init_generator());
  }
  params = {stride, stride, padding, padding, dilation, dilation, groups};
}

Tensor Conv2d::forward(const Tensor& x) {
  return result_cast(conv2d(compute_cast(x), compute_cast(weight), compute_cast(bias), params));
}

BatchNorm::BatchNorm(int64_t c, bool affine, double momentum, double eps) : momentum(momentum), eps(eps) {
  if (affine) {
    weight = register_parameter("weight", ones({c}));
    bias = register_parameter("bias", zeros({c}));
  }
  running_mean = register_buffer("running_mean", zeros({c}));
  running_var = register_buffer("running_var", ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {DType::i64}));
}

// num_batches_tracked += 1 on the buffer's device, without reading it back: no host
// synchronisation, so a training step with batch norm can be captured into a CUDA graph and
// each replay still counts (exact below 2^53 batches).
static void count_batch(const Tensor& n) {
  NoGradGuard no_grad;
  copy_(n, add(siam::to(n, DType::f64), 1.0));
}

Tensor BatchNorm::forward(const Tensor& x) {
  if (is_training()) count_batch(num_batches_tracked);
  if (is_training() && sync_group && sync_group->size() > 1)
    return sync_batch_norm(x, running_mean, running_var, weight, bias, momentum, eps, *sync_group);
  return batch_norm(x, running_mean, running_var, weight, bias, is_training(), momentum, eps);
}

Tensor BatchNorm::forward_act(const Tensor& x, const Tensor& residual, bool relu) {
  if (is_training()) count_batch(num_batches_tracked);
  if (is_training() && sync_group && sync_group->size() > 1)
    return sync_batch_norm_act(x, running_mean, running_var, weight, bias, residual, relu, momentum, eps, *sync_group);
  return batch_norm_act(x, running_mean, running_var, weight, bias, residual, relu, is_training(), momentum, eps);
}

int set_sync_batch_norm(Module& m, dist::Group* group) {
  int n = 0;
  if (auto* bn = dynamic_cast<BatchNorm*>(&m)) {
    bn->sync_group = group;
    ++n;
  }
  for (auto& [name, child] : m.named_children()) n += set_sync_batch_norm(*child, group);
  return n;
}

LayerNorm::LayerNorm(int64_t dim, double eps, bool affine) : eps(eps) {
  if (affine) {
    weight = register_parameter("weight", ones({dim}));
    bias = register_parameter("bias", zeros({dim}));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, {x.size(-1)}, weight, bias, eps); }

Tensor Dropout::forward(const Tensor& x) {
  return dropout(x, p, is_training(), gen_ ? *gen_ : default_generator());
}

Tensor DropPath::forward(const Tensor& x) {
  return drop_path(x, p, is_training(), gen_ ? *gen_ : default_generator());
}

Sequential::Sequential(std::vector<ModulePtr> layers) {
  for (auto& l : layers) push_back(std::move(l));
}

void Sequential::push_back(ModulePtr m) {
  register_module(std::to_string(layers_.size()), m);
  layers_.push_back(std::move(m));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& l : layers_) y = l->forward(y);
  return y;
}

Mlp::Mlp(int64_t in, int64_t hidden, int64_t out, double drop) : drop(drop) {
  fc1 = register_module("fc1", std::make_shared<Linear>(in, hidden));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, out));
}

Tensor Mlp::forward(const Tensor& x) {
  Tensor h = dropout(gelu(fc1->forward(x)), drop, is_training(), default_generator());
  return dropout(fc2->forward(h), drop, is_training(), default_generator());
}

MultiheadSelfAttention::MultiheadSelfAttention(int64_t dim, int64_t heads, bool qkv_bias, double attn_drop,
                                               double proj_drop)
    : heads(heads), attn_drop(attn_drop), proj_drop(proj_drop) {
  if (dim % heads) fail("MultiheadSelfAttention: dim ", dim, " is not divisible by ", heads, " heads");
  qkv = register_module("qkv", std::make_shared<Linear>(dim, 3 * dim, qkv_bias));
  proj = register_module("proj", std::make_shared<Linear>(dim, dim));
}

Tensor MultiheadSelfAttention::forward(const Tensor& x) {
  int64_t n = x.size(0), l = x.size(1), d = x.size(2);
  // (N, L, 3 dim) -> (3, N, heads, L, head_dim), timm's layout
  Tensor qkv_t = permute(reshape(qkv->forward(x), {n, l, 3, heads, d / heads}), {2, 0, 3, 1, 4});
  double p = is_training() ? attn_drop : 0.0;
  Tensor o = result_cast(scaled_dot_product_attention(compute_cast(select(qkv_t, 0, 0)),
                                                      compute_cast(select(qkv_t, 0, 1)),
                                                      compute_cast(select(qkv_t, 0, 2)), p, &default_generator()));
  o = reshape(transpose(o, 1, 2), {n, l, d});
  return dropout(proj->forward(o), proj_drop, is_training(), default_generator());
}

PatchEmbed::PatchEmbed(int64_t image_size, int64_t patch, int64_t in_channels, int64_t dim)
    : image_size(image_size), patch(patch) {
  if (image_size % patch) fail("PatchEmbed: image size ", image_size, " is not divisible by patch ", patch);
  num_patches = (image_size / patch) * (image_size / patch);
  proj = register_module("proj", std::make_shared<Conv2d>(in_channels, dim, patch, patch));
}

Tensor PatchEmbed::forward(const Tensor& x) {
  if (x.dim() != 4 || x.size(2) != image_size || x.size(3) != image_size)
    fail("PatchEmbed: expected input (N, C, ", image_size, ", ", image_size, "), got ", shape_str(x.shape()));
  return transpose(flatten(proj->forward(x), 2), 1, 2);
}

}  // namespace siam::nn
