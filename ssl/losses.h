#pragma once
// The SSL losses, each differentiable. Every loss has a fused kernel (kernels/ssl_loss.h, CPU
// and CUDA, exposed as the autograd ops *_fused in autograd/ops.h) and a composite written from
// autograd ops; `impl` selects one (fused by default) and the tests hold them equal. Formulas,
// defaults and the official code they follow: docs/ssl.md.
#include "autograd/ops.h"

namespace siam::ssl {

enum class LossImpl { fused, composite };

// ---------------------------------------------------------------- contrastive

// NT-Xent over M embeddings with multi-positive support (SupCon's L_out averaging):
//   zn = z / ||z||, s_ij = zn_i . zn_j / T,
//   loss = 1/M sum_i [ log sum_{k != i} exp(s_ik) - 1/|P_i| sum_{p in P_i} s_ip ].
// z: (M, D), the views stacked view-major (rows [0, N) view 1, [N, 2N) view 2).
// positives: bool (M, M), row i marks the positives of anchor i (no diagonal entry, at least
// one per row), or undefined for SimCLR's pairs i <-> (i + M/2) mod M (M even).
Tensor nt_xent(const Tensor& z, double temperature, const Tensor& positives = Tensor(),
               LossImpl impl = LossImpl::fused);

// The positive mask where i and j (i != j) are positives when group[i] == group[j].
// group: i64 (M). SimCLR pairs: group = [0 .. N-1, 0 .. N-1]; semantic (class) positives:
// the labels of the stacked views.
Tensor positives_from_groups(const Tensor& group);

// MoCo's InfoNCE: qn, kn = q, k L2-normalised; logits = [qn . kn, qn queue^T] / T (N, 1 + K),
// cross-entropy towards index 0, averaged over the batch.
// q: (N, D) queries; k: (N, D) positive keys; queue: (K, D) negative keys (already normalised).
// Like the official code, every input that requires a gradient gets one (MoCo's keys and queue
// come from the momentum encoder and a buffer, which do not).
Tensor info_nce(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature,
                LossImpl impl = LossImpl::fused);

// ---------------------------------------------------------------- distillation

// BYOL: mean_b [2 - 2 cos(p1_b, sg z2_b)] + mean_b [2 - 2 cos(p2_b, sg z1_b)] (the official sum
// of the two directions). p1, p2: online predictions (N, D); z1, z2: target projections (N, D),
// whose gradient is stopped here.
Tensor byol_loss(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2,
                 LossImpl impl = LossImpl::fused);

// SimSiam: -1/2 [mean_b cos(p1, sg z2) + mean_b cos(p2, sg z1)] (cosine with eps 1e-8).
// p1, p2: predictions (N, D); z1, z2: projections (N, D), gradient stopped here.
Tensor simsiam_loss(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2,
                    LossImpl impl = LossImpl::fused);

// DINO: q_t = softmax((teacher_t - center) / teacher_temp), log p_s = log_softmax(student_s /
// student_temp), the mean over the T S - T pairs (t, s != t) of mean_b sum_k -q_tbk log p_sbk.
// student: (S B, K) the S crops crop-major (row = crop * B + image), global crops first;
// teacher: (T B, K) the T <= S global crops; center: (1, K) or (K). The teacher and the centre
// get no gradient (the stop-gradient of DINO).
Tensor dino_loss(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t student_crops,
                 double student_temp, double teacher_temp, LossImpl impl = LossImpl::fused);

// ---------------------------------------------------------------- redundancy reduction

struct VicregLoss {
  Tensor loss;        // sim_coeff invariance + std_coeff variance + cov_coeff covariance
  Tensor invariance;  // mean((x - y)^2)
  Tensor variance;    // (mean ReLU(1 - std_x) + mean ReLU(1 - std_y)) / 2, std = sqrt(Var + 1e-4)
  Tensor covariance;  // sum_{i != j} C(x)_ij^2 / D + the same for y, C with N - 1
};
// x, y: (N, D) the two branches' embeddings; N >= 2. Every field is differentiable.
VicregLoss vicreg_loss(const Tensor& x, const Tensor& y, double sim_coeff = 25, double std_coeff = 25,
                       double cov_coeff = 1, LossImpl impl = LossImpl::fused);

struct BarlowLoss {
  Tensor loss;      // on_diag + lambda off_diag
  Tensor on_diag;   // sum_i (1 - C_ii)^2
  Tensor off_diag;  // sum_{i != j} C_ij^2
};
// C = BN(z1)^T BN(z2) / N with non-affine batch statistics (biased variance, eps 1e-5).
// z1, z2: (N, D); N >= 2. Every field is differentiable.
BarlowLoss barlow_twins_loss(const Tensor& z1, const Tensor& z2, double lambda = 0.0051,
                             LossImpl impl = LossImpl::fused);

// ---------------------------------------------------------------- collapse signal

// The mean over dimensions of the per-dimension standard deviation (unbiased, over the batch)
// of the L2-normalised embeddings: about 1/sqrt(D) when healthy, 0 when collapsed. No graph.
// z: (N, D), N >= 2.
Tensor embedding_std(const Tensor& z);

}  // namespace siam::ssl
