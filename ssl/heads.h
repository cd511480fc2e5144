#pragma once
// Projector / predictor MLPs and the DINO head, built from nn layers with PyTorch's child
// names, so a head's state dict reads like the official code's ("projector.0.weight").
#include <memory>
#include <vector>

#include "nn/layers.h"

namespace siam::ssl {

enum class HeadNorm {
  none,
  batch_norm,            // BatchNorm1d with weight and bias
  batch_norm_no_affine,  // BatchNorm1d(affine=False): SimSiam's projector output
};

// An MLP of dims.size() Linear layers. Every hidden layer is Linear -> [BatchNorm1d] -> ReLU;
// the last is Linear -> [last_norm], without ReLU. Children are numbered as nn.Sequential
// numbers them: with BN "0" Linear, "1" BN, "2" ReLU, "3" Linear, ...
struct MlpConfig {
  std::vector<int64_t> dims;      // output size of each Linear layer; the input size comes from the backbone
  bool hidden_bias = true;        // bias on the hidden Linear layers
  bool hidden_batch_norm = true;  // affine BatchNorm1d between each hidden Linear and its ReLU
  bool last_bias = true;          // bias on the last Linear layer
  HeadNorm last_norm = HeadNorm::none;
};

// x: (N, in_dim) -> (N, dims.back()). Linear layers keep PyTorch's default initialisation.
std::shared_ptr<nn::Sequential> make_mlp(int64_t in_dim, const MlpConfig& cfg);

// ---------------------------------------------------------------- DINO

struct DinoHeadConfig {
  int64_t out_dim = 65536;       // K prototypes
  int64_t hidden_dim = 2048;
  int64_t bottleneck_dim = 256;
  int64_t n_layers = 3;          // Linear layers of the MLP before the prototypes (>= 1)
  bool use_bn = false;           // BatchNorm1d after each hidden Linear (official: off for ViT)
  bool norm_last_layer = true;   // weight_g fixed to 1: the prototypes are unit vectors
};

// torch.nn.utils.weight_norm(Linear(in, out, bias=False)): weight = g v / ||v|| row-wise, with
// parameters weight_g (out, 1) and weight_v (out, in).
class WeightNormLinear : public nn::Module {
 public:
  WeightNormLinear(int64_t in, int64_t out);
  Tensor forward(const Tensor& x) override;  // x: (N, in) -> (N, out)
  Tensor weight_g, weight_v;
  // Frozen: forward uses detached g and v, so no gradient reaches them (the optimizer then
  // skips them, as DINO's cancel_gradients_last_layer does by dropping .grad).
  bool frozen = false;
};

// DINO's head: mlp (Linear -> [BN] -> GELU, ..., Linear to the bottleneck), L2-normalise, then
// the weight-normalised last layer to K prototypes. Names: mlp.<i>.*, last_layer.weight_g,
// last_layer.weight_v. The MLP's Linear weights are trunc-normal(0.02) with zero biases; the
// last layer keeps Linear's default init with weight_g = 1 (requires_grad off when
// norm_last_layer).
class DinoHead : public nn::Module {
 public:
  DinoHead(int64_t in_dim, const DinoHeadConfig& cfg);
  Tensor forward(const Tensor& x) override;  // x: (N, in_dim) -> (N, out_dim)
  Tensor bottleneck(const Tensor& x);        // x: (N, in_dim) -> L2-normalised (N, bottleneck_dim)
  Tensor prototypes(const Tensor& b);        // b: (N, bottleneck_dim) -> (N, out_dim)
  std::shared_ptr<nn::Sequential> mlp;
  std::shared_ptr<WeightNormLinear> last_layer;
};

}  // namespace siam::ssl
