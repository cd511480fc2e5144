#include "nn/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "autograd/ops.h"

namespace siam::nn {

CosineSchedule::CosineSchedule(double base, double final_value, int64_t total_steps, int64_t warmup_steps,
                               double warmup_start)
    : base_(base), final_(final_value), start_(warmup_start), total_(total_steps), warmup_(warmup_steps) {
  if (warmup_steps < 0) fail("CosineSchedule: warmup_steps must be >= 0, got ", warmup_steps);
  if (total_steps <= warmup_steps)
    fail("CosineSchedule: total_steps must exceed warmup_steps (", warmup_steps, "), got ", total_steps);
}

double CosineSchedule::operator()(int64_t step) const {
  if (step < 0) fail("CosineSchedule: step must be >= 0, got ", step);
  if (step < warmup_) {
    // np.linspace(start, base, warmup): one point is the start itself, and the last is base exactly.
    if (warmup_ == 1) return start_;
    if (step == warmup_ - 1) return base_;
    return start_ + static_cast<double>(step) * ((base_ - start_) / static_cast<double>(warmup_ - 1));
  }
  const int64_t n = total_ - warmup_;
  const int64_t i = std::min(step - warmup_, n);
  return final_ + 0.5 * (base_ - final_) * (1 + std::cos(std::numbers::pi * static_cast<double>(i) / n));
}

double ema_momentum(double tau_base, int64_t step, int64_t total_steps) {
  if (total_steps <= 0) fail("ema_momentum: total_steps must be > 0, got ", total_steps);
  if (step < 0) fail("ema_momentum: step must be >= 0, got ", step);
  if (!(tau_base >= 0 && tau_base <= 1)) fail("ema_momentum: tau_base must be in [0, 1], got ", tau_base);
  const double k = static_cast<double>(std::min(step, total_steps));
  return 1 - (1 - tau_base) * (std::cos(std::numbers::pi * k / static_cast<double>(total_steps)) + 1) / 2;
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  if (!(max_norm > 0)) fail("clip_grad_norm: max_norm must be > 0, got ", max_norm);
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  double sq = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    double n = norm(g).item();
    sq += n * n;
    grads.push_back(g);
  }
  const double total = std::sqrt(sq);
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1)
    for (const Tensor& g : grads) mul_(g, coef);
  return total;
}

}  // namespace siam::nn
