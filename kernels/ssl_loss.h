#pragma once
// Fused SSL losses (no autograd): NT-Xent, DINO's multi-crop cross-entropy, MoCo's InfoNCE,
// the BYOL / SimSiam cosine regression, VICReg and Barlow Twins, forward and backward, f32 and
// f64 on the CPU (CUDA twins in kernels/cuda/ssl_loss.h add bf16). Inputs are validated by the caller (ssl/losses.cpp); these
// kernels only check their invariants. The formulas are written out in docs/ssl.md; the
// composite twins in ssl/losses.cpp compute the same values from autograd ops.
#include <array>

#include "tensor/tensor.h"

namespace siam::kernels {

// ---------------------------------------------------------------- NT-Xent
// zn_i = z_i / max(||z_i||, 1e-12), s_ij = zn_i . zn_j / T, P_i = the positives of anchor i:
//   loss = 1/M sum_i [ log sum_{k != i} exp(s_ik) - 1/|P_i| sum_{p in P_i} s_ip ]
struct NtXentSaved {
  Tensor loss;  // () in z's dtype
  Tensor lse;   // (M) f64: log sum_{k != i} exp(s_ik)
};
// z: (M, D); positives: bool (M, M), row i = positives of anchor i, or undefined for the
// SimCLR pairs i <-> (i + M/2) mod M. Every row must hold a positive and no diagonal entry.
NtXentSaved nt_xent_forward(const Tensor& z, const Tensor& positives, double temperature);
// grad: () the loss's gradient; returns dz (M, D), written (=).
Tensor nt_xent_backward(const Tensor& grad, const Tensor& z, const Tensor& positives, const NtXentSaved& saved,
                        double temperature);

// ---------------------------------------------------------------- DINO
// Student crops s < S and teacher crops t < T (T <= S; teacher crop t is student crop t), B
// images each, rows crop-major (row = crop * B + image). q_t = softmax((y_t - c) / tau_t),
// log p_s = log_softmax(x_s / tau_s), n = T S - T pairs with s != t:
//   loss = 1/(n B) sum_{t, s != t} sum_b sum_k -q_tbk log p_sbk
struct DinoSaved {
  Tensor loss;         // () in the student's dtype
  Tensor student_lse;  // (S B) f64: log sum_k exp(x_k / tau_s)
  Tensor teacher_lse;  // (T B) f64: log sum_k exp((y_k - c_k) / tau_t)
};
// student: (S B, K); teacher: (T B, K); center: (K) (any shape of K elements).
DinoSaved dino_loss_forward(const Tensor& student, const Tensor& teacher, const Tensor& center,
                            int64_t student_crops, double student_temp, double teacher_temp);
// grad: (); returns d student (S B, K), written (=). The teacher and centre get no gradient.
Tensor dino_loss_backward(const Tensor& grad, const Tensor& student, const Tensor& teacher, const Tensor& center,
                          const DinoSaved& saved, int64_t student_crops, double student_temp,
                          double teacher_temp);

// ---------------------------------------------------------------- InfoNCE (MoCo)
// qn, kn = q, k / max(||.||, 1e-12); l_i0 = qn_i . kn_i / T, l_ij = qn_i . queue_j / T (j >= 1):
//   loss = 1/N sum_i [ log sum_{j=0..K} exp(l_ij) - l_i0 ]
struct InfoNceSaved {
  Tensor loss;  // () in q's dtype
  Tensor lse;   // (N) f64: log sum_j exp(l_ij)
};
// q, k: (N, D); queue: (K, D), same dtype (its rows are used as they are, not normalised).
InfoNceSaved info_nce_forward(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature);
struct InfoNceGrads {
  Tensor dq, dk, dqueue;  // each written (=), or undefined when not asked for
};
// grad: () the loss's gradient. need: {dq, dk, dqueue}.
InfoNceGrads info_nce_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& queue,
                               const InfoNceSaved& saved, double temperature, std::array<bool, 3> need);

// ---------------------------------------------------------------- BYOL / SimSiam
// Two directions (p1, z2) and (p2, z1), cos_b = pn_b . zn_b, the targets z stop-gradient.
//   byol:    loss = sum_dir mean_b (2 - 2 cos_b); norms max(||.||, 1e-12) as normalize(), whose
//            gradient is blocked where the norm is clamped
//   simsiam: loss = -1/2 sum_dir mean_b cos_b; norms max(||.||, 1e-8) as cosine_similarity(),
//            whose gradient runs through the clamp (PyTorch's quirk)
enum class CosineMode { byol, simsiam };
// p1, p2, z1, z2: (N, D), one dtype. Returns the loss () in p1's dtype.
Tensor cosine_regression_forward(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2,
                                 CosineMode mode);
// Returns {dp1, dp2}, written (=).
std::array<Tensor, 2> cosine_regression_backward(const Tensor& grad, const Tensor& p1, const Tensor& p2,
                                                 const Tensor& z1, const Tensor& z2, CosineMode mode);

// ---------------------------------------------------------------- VICReg
// xc = x - mean_b x, C(x) = xc^T xc / (N - 1), std_j = sqrt(C_jj' + 1e-4) with the unbiased
// variance, inv = mean (x - y)^2, var = (mean_j ReLU(1 - std_x) + mean_j ReLU(1 - std_y)) / 2,
// cov = sum_{i != j} C(x)_ij^2 / D + the same for y;
//   loss = sim inv + std var + cov_w cov
struct VicregTerms {
  Tensor loss, invariance, variance, covariance;  // () each, in x's dtype
};
struct VicregWeights {
  double invariance, variance, covariance;
};
// x, y: (N, D), N >= 2.
VicregTerms vicreg_forward(const Tensor& x, const Tensor& y, VicregWeights w);
// The gradient of w.invariance inv + w.variance var + w.covariance cov (the loss, or one term
// alone): {dx, dy}, written (=).
std::array<Tensor, 2> vicreg_backward(const Tensor& grad, const Tensor& x, const Tensor& y, VicregWeights w);

// ---------------------------------------------------------------- Barlow Twins
// zh = (z - mean_b z) / sqrt(biased var_b z + 1e-5) per column, C = zh1^T zh2 / N (D, D):
//   on = sum_i (1 - C_ii)^2, off = sum_{i != j} C_ij^2, loss = on + lambda off
struct BarlowTerms {
  Tensor loss, on_diag, off_diag;  // () each, in z1's dtype
};
// z1, z2: (N, D), N >= 2.
BarlowTerms barlow_forward(const Tensor& z1, const Tensor& z2, double lambda);
// The gradient of w_on on + w_off off: {dz1, dz2}, written (=).
std::array<Tensor, 2> barlow_backward(const Tensor& grad, const Tensor& z1, const Tensor& z2, double w_on,
                                      double w_off);

}  // namespace siam::kernels
