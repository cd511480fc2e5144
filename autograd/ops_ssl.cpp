// The fused SSL losses as autograd ops: one kernel for the forward, one for the backward
// (kernels/ssl_loss.h). ssl/losses.cpp holds their composite twins and the tests that they agree.
#include "autograd/ops.h"
#include "kernels/ssl_loss.h"

namespace siam {

Tensor nt_xent_fused(const Tensor& z, double temperature, const Tensor& positives) {
  kernels::NtXentSaved saved = kernels::nt_xent_forward(z, positives, temperature);
  return autograd::record("nt_xent", saved.loss, {z},
                          [zd = detach(z), positives, lse = saved.lse, temperature](const Tensor& g) {
                            kernels::NtXentSaved s{Tensor(), lse};
                            return std::vector<Tensor>{kernels::nt_xent_backward(g, zd, positives, s, temperature)};
                          });
}

Tensor dino_loss_fused(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t crops, double ts,
                  double tt) {
  kernels::DinoSaved saved = kernels::dino_loss_forward(student, teacher, center, crops, ts, tt);
  return autograd::record(
      "dino_loss", saved.loss, {student},
      [xs = detach(student), yt = detach(teacher), c = detach(center), sl = saved.student_lse,
       tl = saved.teacher_lse, crops, ts, tt](const Tensor& g) {
        kernels::DinoSaved s{Tensor(), sl, tl};
        return std::vector<Tensor>{kernels::dino_loss_backward(g, xs, yt, c, s, crops, ts, tt)};
      });
}

}  // namespace siam
