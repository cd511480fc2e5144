#pragma once
// The target network of BYOL / DINO / MoCo: an exponential moving average of the online
// network's weights, updated after every optimizer step.
#include <vector>

#include "nn/module.h"

namespace siam::nn {

class EmaUpdater {
 public:
  // target and online must have the same state-dict keys, each with the same shape and dtype;
  // a mismatch is a siam::Error listing the keys found in only one of them. With ema_buffers,
  // floating buffers (batch-norm running statistics) are averaged like the parameters;
  // otherwise, and for integer buffers always (num_batches_tracked), they are copied.
  // Both modules must outlive the updater, which holds their tensors.
  EmaUpdater(const Module& target, const Module& online, bool ema_buffers = false);

  // target = m target + (1 - m) online for every parameter (and averaged buffer); then the
  // copied buffers. m in [0, 1].
  void update(double m);

 private:
  std::vector<Tensor> avg_target_, avg_online_;    // averaged: parameters (and floating buffers)
  std::vector<Tensor> copy_target_, copy_online_;  // copied buffers
};

}  // namespace siam::nn
