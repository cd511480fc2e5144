#pragma once
// Per-step schedules of the SSL recipes and gradient clipping. A schedule is a pure function
// of the step, so a checkpoint only needs the step to resume it.
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace siam::nn {

// DINO's cosine_scheduler, evaluated per step. Steps [0, warmup_steps) rise linearly from
// warmup_start to base, both ends included (np.linspace); the remaining n = total_steps -
// warmup_steps steps follow final + (base - final) (1 + cos(pi i / n)) / 2 for i = step -
// warmup_steps, so the first cosine step is base and the value approaches final. Steps past
// the end stay at final. Learning rate: warm-up then cosine; DINO's weight decay: 0.04 -> 0.4
// with no warm-up.
class CosineSchedule {
 public:
  CosineSchedule(double base, double final_value, int64_t total_steps, int64_t warmup_steps = 0,
                 double warmup_start = 0);
  double operator()(int64_t step) const;
  int64_t total_steps() const { return total_; }

 private:
  double base_, final_, start_;
  int64_t total_, warmup_;
};

// BYOL's target momentum tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 for step k of K:
// tau_base at k = 0, rising to 1 at k = K and staying there (DINO's teacher momentum 0.996 -> 1
// is the same curve).
double ema_momentum(double tau_base, int64_t step, int64_t total_steps);

// torch.nn.utils.clip_grad_norm_ (L2): the norm of all gradients of `params` taken together
// (parameters without a gradient are skipped); when c = max_norm / (norm + 1e-6) is below 1
// every gradient is scaled by c. Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace siam::nn
