#pragma once
// Fused optimizer and EMA updates (no autograd). Each function takes lists with one entry per
// parameter, so a CUDA version can update a whole parameter group in one multi-tensor launch;
// the CPU version makes one fused pass per entry. Every tensor of one entry has the
// parameter's shape, dtype (f32 or f64) and device, and is contiguous.
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace siam::kernels {

struct SgdHyper {
  double lr = 0, momentum = 0, weight_decay = 0;
  bool nesterov = false;
};
// PyTorch's SGD with dampening 0: d = g + wd p; buf = momentum buf + d;
// p -= lr (nesterov ? d + momentum buf : buf). `bufs` is empty when momentum is 0 (then p -= lr d).
void sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& bufs, const SgdHyper& h);

struct LarsHyper {
  double lr = 0, momentum = 0, weight_decay = 0, eta = 0;
  bool adapt = true;  // false: no trust ratio (biases and normalisation parameters)
};
// LARS as in SimCLR / BYOL / Barlow Twins: d = g + wd p; with adapt, d *= eta ||p|| / ||d||
// when both norms are > 0 (else 1); buf = momentum buf + d; p -= lr buf.
void lars_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<Tensor>& bufs, const LarsHyper& h);

struct AdamWHyper {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};
// PyTorch's AdamW: p *= 1 - lr wd; m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), where t = steps[i] is the
// parameter's step count including this update (>= 1).
void adamw_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                  const std::vector<int64_t>& steps, const AdamWHyper& h);

// targets[i] = m targets[i] + (1 - m) sources[i] (BYOL's / DINO's target network update).
void ema_update(const std::vector<Tensor>& targets, const std::vector<Tensor>& sources, double m);

}  // namespace siam::kernels
