#pragma once
// CUDA twins of kernels/norm.h (same signatures, same results up to summation order).
#include "kernels/norm.h"

namespace siam::gpu {

kernels::NormForward batch_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                        const Tensor& running_mean, const Tensor& running_var,
                                        bool training, double momentum, double eps);
kernels::NormBackward batch_norm_backward(const Tensor& g, const Tensor& x, const Tensor& weight,
                                          const Tensor& mean, const Tensor& invstd, bool training,
                                          std::array<bool, 3> need);
kernels::NormForward batch_norm_act_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                            const Tensor& running_mean, const Tensor& running_var,
                                            const Tensor& residual, bool relu, bool training,
                                            double momentum, double eps);
kernels::NormActBackward batch_norm_act_backward(const Tensor& g, const Tensor& y, const Tensor& x,
                                                 const Tensor& weight, const Tensor& mean,
                                                 const Tensor& invstd, bool relu, bool training,
                                                 std::array<bool, 4> need);
Tensor batch_norm_channel_sums(const Tensor& x, const Tensor& centre);
void batch_norm_sync_dx_(const Tensor& dx, const Tensor& x, const Tensor& weight, const Tensor& mean,
                         const Tensor& invstd, const Tensor& sums, double count);
kernels::NormForward layer_norm_forward(const Tensor& x, int64_t d, const Tensor& weight,
                                        const Tensor& bias, double eps);
kernels::NormBackward layer_norm_backward(const Tensor& g, const Tensor& x, int64_t d,
                                          const Tensor& weight, const Tensor& mean,
                                          const Tensor& invstd, std::array<bool, 3> need);

}  // namespace siam::gpu
