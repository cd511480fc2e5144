#pragma once
// CUDA twins of the fused SSL losses (kernels/ssl_loss.h), same signatures and
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

kernels::InfoNceSaved info_nce_forward(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature);
kernels::InfoNceGrads info_nce_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& queue,
                                        const kernels::InfoNceSaved& saved, double temperature,
                                        std::array<bool, 3> need);
Tensor cosine_regression_forward(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2,
                                 kernels::CosineMode mode);
std::array<Tensor, 2> cosine_regression_backward(const Tensor& grad, const Tensor& p1, const Tensor& p2,
                                                 const Tensor& z1, const Tensor& z2, kernels::CosineMode mode);
kernels::VicregTerms vicreg_forward(const Tensor& x, const Tensor& y, kernels::VicregWeights w);
std::array<Tensor, 2> vicreg_backward(const Tensor& grad, const Tensor& x, const Tensor& y,
                                      kernels::VicregWeights w);
kernels::BarlowTerms barlow_forward(const Tensor& z1, const Tensor& z2, double lambda);
std::array<Tensor, 2> barlow_backward(const Tensor& grad, const Tensor& z1, const Tensor& z2, double w_on,
                                      double w_off);

}  // namespace siam::gpu
