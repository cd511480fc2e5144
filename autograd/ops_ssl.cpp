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

namespace siam {

Tensor info_nce_fused(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature) {
  kernels::InfoNceSaved saved = kernels::info_nce_forward(q, k, queue, temperature);
  const std::array<bool, 3> need{q.requires_grad(), k.requires_grad(), queue.requires_grad()};
  return autograd::record("info_nce", saved.loss, {q, k, queue},
                          [qd = detach(q), kd = detach(k), ud = detach(queue), lse = saved.lse, temperature,
                           need](const Tensor& g) {
                            kernels::InfoNceGrads r =
                                kernels::info_nce_backward(g, qd, kd, ud, {Tensor(), lse}, temperature, need);
                            return std::vector<Tensor>{r.dq, r.dk, r.dqueue};
                          });
}

Tensor cosine_regression_fused(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, bool byol) {
  const kernels::CosineMode mode = byol ? kernels::CosineMode::byol : kernels::CosineMode::simsiam;
  Tensor loss = kernels::cosine_regression_forward(p1, p2, z1, z2, mode);
  // The targets z1, z2 are not inputs of the node: their gradient is stopped.
  return autograd::record(byol ? "byol_loss" : "simsiam_loss", loss, {p1, p2},
                          [a = detach(p1), b = detach(p2), c = detach(z1), d = detach(z2), mode](const Tensor& g) {
                            std::array<Tensor, 2> r = kernels::cosine_regression_backward(g, a, b, c, d, mode);
                            return std::vector<Tensor>{r[0], r[1]};
                          });
}

// The loss and each term are their own node: the backward kernel takes the weights of the
// terms, so a term alone differentiates like the composite's term.
std::array<Tensor, 4> vicreg_loss_fused(const Tensor& x, const Tensor& y, double sim_coeff, double std_coeff,
                                        double cov_coeff) {
  const kernels::VicregWeights w{sim_coeff, std_coeff, cov_coeff};
  kernels::VicregTerms t = kernels::vicreg_forward(x, y, w);
  auto node = [&](const char* name, const Tensor& out, kernels::VicregWeights wt) {
    return autograd::record(name, out, {x, y}, [xd = detach(x), yd = detach(y), wt](const Tensor& g) {
      std::array<Tensor, 2> r = kernels::vicreg_backward(g, xd, yd, wt);
      return std::vector<Tensor>{r[0], r[1]};
    });
  };
  return {node("vicreg_loss", t.loss, w), node("vicreg_invariance", t.invariance, {1, 0, 0}),
          node("vicreg_variance", t.variance, {0, 1, 0}), node("vicreg_covariance", t.covariance, {0, 0, 1})};
}

std::array<Tensor, 3> barlow_loss_fused(const Tensor& z1, const Tensor& z2, double lambda) {
  kernels::BarlowTerms t = kernels::barlow_forward(z1, z2, lambda);
  auto node = [&](const char* name, const Tensor& out, double w_on, double w_off) {
    return autograd::record(name, out, {z1, z2}, [a = detach(z1), b = detach(z2), w_on, w_off](const Tensor& g) {
      std::array<Tensor, 2> r = kernels::barlow_backward(g, a, b, w_on, w_off);
      return std::vector<Tensor>{r[0], r[1]};
    });
  };
  return {node("barlow_loss", t.loss, 1.0, lambda), node("barlow_on_diag", t.on_diag, 1.0, 0.0),
          node("barlow_off_diag", t.off_diag, 0.0, 1.0)};
}

}  // namespace siam
