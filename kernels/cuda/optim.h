#pragma once
// CUDA twins of the fused optimizer and EMA updates (kernels/optim.h), same signatures and
// semantics. Each call updates a whole list in a few multi-tensor launches on siam's stream,
// without host synchronisation. Reached through SIAM_ON_CUDA in kernels/cpu/optim.cpp.
#include "kernels/optim.h"

namespace siam::gpu {

void sgd_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& bufs, const kernels::SgdHyper& h);
void lars_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 const std::vector<Tensor>& bufs, const kernels::LarsHyper& h);
void adamw_update(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                  const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                  const std::vector<int64_t>& steps, const kernels::AdamWHyper& h);
void ema_update(const std::vector<Tensor>& targets, const std::vector<Tensor>& sources, double m);

}  // namespace siam::gpu
