#pragma once
// Layers with PyTorch's parameter names and default initialisation. Each layer's forward
// takes and returns one tensor; shapes as in torch.nn.
#include <functional>

#include "nn/module.h"

namespace siam::dist {
class Group;
}

namespace siam::nn {

// The generator layers draw their initial weights from (seed it for a reproducible model).
Generator& init_generator();

class Linear : public Module {
 public:
  // weight (out, in), bias (out)
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) override;  // x: (..., in) -> (..., out)
  Tensor weight, bias;
};

class Conv2d : public Module {
 public:
  // weight (out, in/groups, k, k), bias (out) or none
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true, int64_t groups = 1, int64_t dilation = 1);
  Tensor forward(const Tensor& x) override;  // x: (N, in, H, W)
  Tensor weight, bias;
  Conv2dParams params;
};

// BatchNorm1d and BatchNorm2d (the op accepts (N, C) and (N, C, H, W)). affine=false gives
// no weight/bias; running stats tracked as PyTorch does (num_batches_tracked included).
class BatchNorm : public Module {
 public:
  explicit BatchNorm(int64_t channels, bool affine = true, double momentum = 0.1, double eps = 1e-5);
  Tensor forward(const Tensor& x) override;
  // relu(forward(x) + residual) as one fused op (batch_norm_act); residual may be undefined
  // (no add) and relu false (no ReLU). ResNet's block tails and stem use it.
  Tensor forward_act(const Tensor& x, const Tensor& residual, bool relu);
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double momentum, eps;
  // In training, the statistics over the batches of every rank of this group (SyncBN:
  // sync_batch_norm); null or a one-rank group: this process's batch only.
  dist::Group* sync_group = nullptr;
};

// Sets sync_group on every BatchNorm in `m` (PyTorch's convert_sync_batchnorm); returns how
// many it set.
int set_sync_batch_norm(Module& m, dist::Group* group);
using BatchNorm1d = BatchNorm;
using BatchNorm2d = BatchNorm;

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;  // normalises the last dim
  Tensor weight, bias;
  double eps;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
};

class GELU : public Module {
 public:
  explicit GELU(bool tanh_approximation = false) : tanh_(tanh_approximation) {}
  Tensor forward(const Tensor& x) override { return gelu(x, tanh_); }

 private:
  bool tanh_;
};

class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
};

class Dropout : public Module {
 public:
  explicit Dropout(double p, Generator* gen = nullptr) : p(p), gen_(gen) {}
  Tensor forward(const Tensor& x) override;
  double p;

 private:
  Generator* gen_;  // defaults to default_generator()
};

// Stochastic depth: drops whole samples of a residual branch.
class DropPath : public Module {
 public:
  explicit DropPath(double p, Generator* gen = nullptr) : p(p), gen_(gen) {}
  Tensor forward(const Tensor& x) override;
  double p;

 private:
  Generator* gen_;
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int64_t kernel, int64_t stride, int64_t padding = 0) : k_(kernel), s_(stride), p_(padding) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, k_, s_, p_); }

 private:
  int64_t k_, s_, p_;
};

class AdaptiveAvgPool2d : public Module {
 public:
  AdaptiveAvgPool2d(int64_t h, int64_t w) : h_(h), w_(w) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, h_, w_); }

 private:
  int64_t h_, w_;
};

// Runs its children in order; children are named "0", "1", ... as in torch.nn.Sequential.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<ModulePtr> layers);
  void push_back(ModulePtr m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return layers_.size(); }
  const ModulePtr& operator[](size_t i) const { return layers_[i]; }

 private:
  std::vector<ModulePtr> layers_;
};

// timm's Mlp: fc1 -> GELU -> drop -> fc2 -> drop.
class Mlp : public Module {
 public:
  Mlp(int64_t in, int64_t hidden, int64_t out, double drop = 0.0);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Linear> fc1, fc2;
  double drop;
};

// timm's Attention: qkv = Linear(dim, 3 dim), heads, softmax(q k^T / sqrt(d)) v, proj.
class MultiheadSelfAttention : public Module {
 public:
  MultiheadSelfAttention(int64_t dim, int64_t heads, bool qkv_bias = true, double attn_drop = 0.0,
                         double proj_drop = 0.0);
  Tensor forward(const Tensor& x) override;  // x: (N, L, dim)
  std::shared_ptr<Linear> qkv, proj;
  int64_t heads;
  double attn_drop, proj_drop;
};

// timm's PatchEmbed: Conv2d(in, dim, patch, stride patch), flattened to (N, L, dim).
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t image_size, int64_t patch, int64_t in_channels, int64_t dim);
  Tensor forward(const Tensor& x) override;  // x: (N, C, H, W) -> (N, H/p * W/p, dim)
  std::shared_ptr<Conv2d> proj;
  int64_t image_size, patch, num_patches;
};

}  // namespace siam::nn
