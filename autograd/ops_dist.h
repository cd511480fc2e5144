#pragma once
// Differentiable collectives and synchronised batch norm: the autograd ops data-parallel
// training adds (docs/distributed.md). Every rank of the group calls them in the same order.
//
// The gradient convention is DDP's: each rank's loss is its share of the global objective
// scaled by the world size W (a local mean over b = B / W samples, or the same global loss on
// every rank), gradients flowing through a collective are summed over ranks, and the
// parameter gradients are averaged over ranks at the end (nn::GradReducer). With it, N ranks
// at global batch B give one process's gradient at batch B.
#include "autograd/ops.h"
#include "dist/dist.h"

namespace siam {

// x: (n, ...) on every rank -> (W n, ...), rank r's rows at [r n, (r + 1) n). Backward: the
// output gradient summed over ranks, then this rank's rows. One rank: x itself.
Tensor all_gather(const Tensor& x, dist::Group& group);

// Training-mode batch norm over the union of the ranks' batches: per-channel sums all-reduced
// (the mean first, then the centred sum of squares: the same two passes as one process), the
// shared mean and variance applied with the normalisation kernel, running statistics updated
// from the global statistics (unbiased variance over all ranks' values), and in backward the
// two per-channel reductions (sum of g, sum of g x_hat) all-reduced. Shapes, parameters and
// checks as batch_norm. Every rank passes the same batch size (equal shares of the batch).
Tensor sync_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, double momentum, double eps, dist::Group& group);
// The fused tail relu(sync_batch_norm(x) + residual), as batch_norm_act.
Tensor sync_batch_norm_act(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                           const Tensor& weight, const Tensor& bias, const Tensor& residual, bool relu,
                           double momentum, double eps, dist::Group& group);

}  // namespace siam
