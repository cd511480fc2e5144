#pragma once
// CUDA twins of the fused NT-Xent and DINO losses (kernels/ssl_loss.h), same signatures and
// semantics: f32, f64 and bf16 inputs, every dot product, exponential and sum in double,
// one rounding to the input dtype per output. The loss stays on the device and the backward
// reads its incoming gradient from device memory. Reached through SIAM_ON_CUDA in
// kernels/cpu/ssl_loss.cpp.
#include "kernels/ssl_loss.h"

namespace siam::gpu {

kernels::NtXentSaved nt_xent_forward(const Tensor& z, const Tensor& positives, double temperature);
Tensor nt_xent_backward(const Tensor& grad, const Tensor& z, const Tensor& positives,
                        const kernels::NtXentSaved& saved, double temperature);
kernels::DinoSaved dino_loss_forward(const Tensor& student, const Tensor& teacher, const Tensor& center,
                                     int64_t student_crops, double student_temp, double teacher_temp);
Tensor dino_loss_backward(const Tensor& grad, const Tensor& student, const Tensor& teacher, const Tensor& center,
                          const kernels::DinoSaved& saved, int64_t student_crops, double student_temp,
                          double teacher_temp);

}  // namespace siam::gpu
