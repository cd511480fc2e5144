#include "nn/resnet.h"

#include "nn/init.h"

namespace siam::nn {

namespace {

// BasicBlock (expansion 1) and Bottleneck (expansion 4, stride on the 3x3 conv as in
// torchvision's "v1.5"), as one class: the child names match torchvision's either way.
class Block : public Module {
 public:
  Block(bool bottleneck, int64_t in, int64_t planes, int64_t stride) : bottleneck_(bottleneck) {
    int64_t out = planes * (bottleneck ? 4 : 1);
    if (bottleneck) {
      conv1 = register_module("conv1", std::make_shared<Conv2d>(in, planes, 1, 1, 0, false));
      bn1 = register_module("bn1", std::make_shared<BatchNorm>(planes));
      conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, stride, 1, false));
      bn2 = register_module("bn2", std::make_shared<BatchNorm>(planes));
      conv3 = register_module("conv3", std::make_shared<Conv2d>(planes, out, 1, 1, 0, false));
      bn3 = register_module("bn3", std::make_shared<BatchNorm>(out));
    } else {
      conv1 = register_module("conv1", std::make_shared<Conv2d>(in, planes, 3, stride, 1, false));
      bn1 = register_module("bn1", std::make_shared<BatchNorm>(planes));
      conv2 = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, 1, 1, false));
      bn2 = register_module("bn2", std::make_shared<BatchNorm>(planes));
    }
    if (stride != 1 || in != out) {
      downsample = register_module("downsample", std::make_shared<Sequential>(std::vector<ModulePtr>{
          std::make_shared<Conv2d>(in, out, 1, stride, 0, false), std::make_shared<BatchNorm>(out)}));
    }
  }

  Tensor forward(const Tensor& x) override {
    // Each BN + ReLU, and the block's last BN + residual add + ReLU, is one fused op.
    Tensor y = bn1->forward_act(conv1->forward(x), Tensor(), true);
    if (bottleneck_) y = bn2->forward_act(conv2->forward(y), Tensor(), true);
    Tensor identity = downsample ? downsample->forward(x) : x;
    return last_bn()->forward_act((bottleneck_ ? conv3 : conv2)->forward(y), identity, true);
  }

  std::shared_ptr<BatchNorm> last_bn() const { return bottleneck_ ? bn3 : bn2; }

  std::shared_ptr<Conv2d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm> bn1, bn2, bn3;
  std::shared_ptr<Sequential> downsample;

 private:
  bool bottleneck_;
};

}  // namespace

ResNet::ResNet(const ResNetConfig& cfg) : cfg_(cfg) {
  std::vector<int> blocks;
  bool bottleneck = false;
  switch (cfg.depth) {
    case 18: blocks = {2, 2, 2, 2}; break;
    case 34: blocks = {3, 4, 6, 3}; break;
    case 50: blocks = {3, 4, 6, 3}; bottleneck = true; break;
    default: fail("ResNet: depth must be 18, 34 or 50, got ", cfg.depth);
  }
  if (cfg.in_channels != 1 && cfg.in_channels != 3)
    fail("ResNet: in_channels must be 1 or 3, got ", cfg.in_channels);
  if (cfg.width < 1) fail("ResNet: width must be positive, got ", cfg.width);
  conv1_ = cfg.small_input ? std::make_shared<Conv2d>(cfg.in_channels, cfg.width, 3, 1, 1, false)
                           : std::make_shared<Conv2d>(cfg.in_channels, cfg.width, 7, 2, 3, false);
  register_module("conv1", conv1_);
  bn1_ = register_module("bn1", std::make_shared<BatchNorm>(cfg.width));
  int64_t in = cfg.width;
  const int64_t expansion = bottleneck ? 4 : 1;
  for (int s = 0; s < 4; ++s) {
    int64_t planes = cfg.width << s;
    auto stage = std::make_shared<Sequential>();
    for (int b = 0; b < blocks[s]; ++b) {
      stage->push_back(std::make_shared<Block>(bottleneck, in, planes, b == 0 && s > 0 ? 2 : 1));
      in = planes * expansion;
    }
    stages_.push_back(register_module("layer" + std::to_string(s + 1), stage));
  }
  feature_dim_ = in;
  if (cfg.num_classes > 0) fc_ = register_module("fc", std::make_shared<Linear>(in, cfg.num_classes));

  // torchvision: Kaiming-normal (fan_out, relu) convolutions, BN weight 1 / bias 0.
  for (auto& [name, p] : named_parameters()) {
    if (p.dim() == 4) init::kaiming_normal_fan_out_(p, init_generator());
  }
  if (cfg.zero_init_residual) {
    for (auto& stage : stages_)
      for (size_t i = 0; i < stage->size(); ++i) fill_(static_cast<Block&>(*(*stage)[i]).last_bn()->weight, 0);
  }
}

Tensor ResNet::feature_map(const Tensor& x) {
  if (x.dim() != 4 || x.size(1) != cfg_.in_channels)
    fail("ResNet: expected input (N, ", cfg_.in_channels, ", H, W), got ", shape_str(x.shape()));
  Tensor y = bn1_->forward_act(conv1_->forward(x), Tensor(), true);
  if (!cfg_.small_input) y = max_pool2d(y, 3, 2, 1);
  for (auto& s : stages_) y = s->forward(y);
  return y;
}

Tensor ResNet::features(const Tensor& x) { return flatten(adaptive_avg_pool2d(feature_map(x), 1, 1), 1); }

Tensor ResNet::forward(const Tensor& x) {
  Tensor f = features(x);
  return fc_ ? fc_->forward(f) : f;
}

}  // namespace siam::nn
