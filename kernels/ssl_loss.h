#pragma once
// Fused SSL losses (no autograd): NT-Xent and DINO's multi-crop cross-entropy, forward and
// backward, f32 and f64 on the CPU. Inputs are validated by the caller (ssl/losses.cpp); these
// kernels only check their invariants. The formulas are written out in docs/ssl.md; the
// composite twins in ssl/losses.cpp compute the same values from autograd ops.
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

}  // namespace siam::kernels
