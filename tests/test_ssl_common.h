#pragma once
// Shared by the SSL tests: a tiny encoder that keeps them fast, and the weight formula that
// tools/reference/gen_ssl_train.py fills its PyTorch model with (this is its twin).
#include <zlib.h>

#include <cmath>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "ssl/backbone.h"

namespace siam::test {

// conv 3x3 (C -> w) -> BN -> ReLU -> conv 3x3 stride 2 (w -> 2w) -> BN -> ReLU -> global
// average pool: (N, C, H, W) -> (N, 2w). gen_ssl_train.py's Tiny has the same names.
class TinyNet : public nn::Module {
 public:
  explicit TinyNet(int64_t in_channels = 1, int64_t width = 4) {
    conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(in_channels, width, 3, 1, 1, false));
    bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(width));
    conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(width, 2 * width, 3, 2, 1, false));
    bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(2 * width));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = relu(bn1->forward(conv1->forward(x)));
    y = relu(bn2->forward(conv2->forward(y)));
    return flatten(adaptive_avg_pool2d(y, 1, 1), 1);
  }
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm> bn1, bn2;
};

inline ssl::Backbone tiny_backbone(const ssl::BackboneConfig&) { return {std::make_shared<TinyNet>(), 8}; }

// gen_ssl_train.py's formula(name, shape): a sine wave whose phase is crc32(name) % 1000 / 100,
// rounded to f32, so the f32 and f64 runs start from the same weights (and a last-ulp
// difference between C++'s and NumPy's sin almost never survives).
inline Tensor formula(const std::string& name, const Shape& shape, DType dt) {
  const int64_t n = shape_numel(shape);
  const uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(name.data()),
                                                   static_cast<uInt>(name.size())));
  const double phase = static_cast<double>(crc % 1000) / 100.0;
  const std::string leaf = name.substr(name.rfind('.') + 1);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    const double s = std::sin(0.37 * static_cast<double>(i) + phase);
    if (leaf == "num_batches_tracked") v[i] = 0;
    else if (leaf == "running_var") v[i] = 1.0 + 0.25 * s;
    else if (leaf == "running_mean") v[i] = 0.1 * s;
    else if (shape.size() == 1 && leaf == "weight") v[i] = 1.0 + 0.1 * s;
    else if (shape.size() == 1) v[i] = 0.05 * s;
    else v[i] = s * std::sqrt(6.0 / static_cast<double>(n / shape[0]));
    v[i] = static_cast<float>(v[i]);
  }
  return from_vector(v, shape, {dt});
}

}  // namespace siam::test
