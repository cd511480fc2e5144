// The SSL losses. The composites are written from autograd ops only; the fused losses are the
// autograd ops *_fused (autograd/ops_ssl.cpp).
// Inputs are validated here, once, for both versions.
#include "ssl/losses.h"

#include <cmath>
#include <limits>
#include <memory>


namespace siam::ssl {

namespace {

void require_matrix(const Tensor& t, const char* loss, const char* what) {
  if (!t.defined()) fail(loss, ": ", what, " is an undefined tensor");
  if (t.dim() != 2) fail(loss, ": ", what, " must be a matrix (N, D), got shape ", shape_str(t.shape()));
  if (!is_floating(t.dtype())) fail(loss, ": ", what, " must be floating point, got ", dtype_name(t.dtype()));
}

// b must have a's shape, dtype and device (the pairs of the two-branch losses).
void require_like(const Tensor& a, const Tensor& b, const char* loss, const char* na, const char* nb) {
  require_matrix(a, loss, na);
  require_matrix(b, loss, nb);
  if (a.shape() != b.shape())
    fail(loss, ": ", nb, " must have ", na, "'s shape ", shape_str(a.shape()), ", got ", shape_str(b.shape()));
  if (a.dtype() != b.dtype())
    fail(loss, ": ", nb, " is ", dtype_name(b.dtype()), " but ", na, " is ", dtype_name(a.dtype()));
  if (a.device() != b.device())
    fail(loss, ": ", nb, " is on ", b.device().str(), " but ", na, " is on ", a.device().str());
}

void require_positive(double v, const char* loss, const char* what) {
  if (!(v > 0) || !std::isfinite(v)) fail(loss, ": ", what, " must be a positive number, got ", v);
}

void require_batch(const Tensor& t, const char* loss) {
  if (t.size(0) < 2) fail(loss, ": needs a batch of at least 2 (variances over the batch), got ", t.size(0));
}

TensorOptions like(const Tensor& t) { return {t.dtype(), t.device()}; }

// bool (M, M): true off the diagonal.
Tensor off_diagonal_mask(int64_t m, const TensorOptions& o) { return lt(eye(m, o), full({}, 0.5, o)); }

// Sum of the squared off-diagonal entries of a square matrix c (D, D).
Tensor off_diagonal_sq_sum(const Tensor& c) {
  Tensor off = to(off_diagonal_mask(c.size(0), like(c)), c.dtype());
  return sum(mul(pow(c, 2), off));
}

// Reads the mask on the host: a malformed one is a user error, named by its anchor.
void check_positives(const Tensor& p, int64_t m) {
  if (p.dtype() != DType::b8) fail("nt_xent: positives must be a bool mask, got ", dtype_name(p.dtype()));
  if (p.shape() != Shape{m, m})
    fail("nt_xent: positives must be (M, M) = ", shape_str({m, m}), " for M = ", m, " embeddings, got ",
         shape_str(p.shape()));
  std::vector<double> v = copy_to(p, Device::cpu(), DType::b8).to_vector();
  for (int64_t i = 0; i < m; ++i) {
    if (v[i * m + i] != 0)
      fail("nt_xent: the positive mask marks anchor ", i, " as its own positive; the diagonal must be false");
    int64_t count = 0;
    for (int64_t j = 0; j < m; ++j) count += v[i * m + j] != 0;
    if (count == 0) fail("nt_xent: anchor ", i, " has no positive; every row of the positive mask needs one");
  }
}

// SimCLR's pairs as a mask: i <-> (i + M/2) mod M.
Tensor pair_positives(int64_t m, Device device) {
  std::vector<double> v(m * m, 0.0);
  for (int64_t i = 0; i < m; ++i) v[i * m + (i + m / 2) % m] = 1;
  return from_vector(v, {m, m}, {DType::b8, device});
}

Tensor nt_xent_composite(const Tensor& z, double temperature, const Tensor& positives) {
  const int64_t m = z.size(0);
  const TensorOptions o = like(z);
  Tensor zn = normalize(z, 1);
  Tensor s = div(matmul(zn, transpose(zn, 0, 1)), full({}, temperature, o));  // (M, M)
  // The anchor itself leaves the denominator: its logit becomes -inf before the log-sum-exp.
  Tensor self = gt(eye(m, o), full({}, 0.5, o));
  Tensor lse = logsumexp(where(self, full({}, -std::numeric_limits<double>::infinity(), o), s), 1);  // (M)
  Tensor w = to(positives.defined() ? positives : pair_positives(m, z.device()), z.dtype());          // (M, M)
  Tensor positive_mean = div(sum(mul(w, s), {1}), sum(w, {1}));                                      // (M)
  return mean(sub(lse, positive_mean));
}

Tensor dino_composite(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t crops,
                      double ts, double tt) {
  const int64_t b = student.size(0) / crops, k = student.size(1), t_crops = teacher.size(0) / b;
  const TensorOptions o = like(student);
  Tensor q = softmax(div(sub(detach(teacher), reshape(detach(center), {1, k})), full({}, tt, o)), 1);  // (T B, K)
  Tensor logp = log_softmax(div(student, full({}, ts, o)), 1);                                        // (S B, K)
  Tensor total;
  int64_t pairs = 0;
  for (int64_t t = 0; t < t_crops; ++t) {
    Tensor qt = narrow(q, 0, t * b, b);
    for (int64_t s = 0; s < crops; ++s) {
      if (s == t) continue;
      Tensor term = mean(sum(neg(mul(qt, narrow(logp, 0, s * b, b))), {1}));
      total = total.defined() ? add(total, term) : term;
      ++pairs;
    }
  }
  return mul(total, 1.0 / static_cast<double>(pairs));
}

}  // namespace

// ---------------------------------------------------------------- contrastive

Tensor nt_xent(const Tensor& z, double temperature, const Tensor& positives, LossImpl impl) {
  require_matrix(z, "nt_xent", "z");
  require_positive(temperature, "nt_xent", "temperature");
  const int64_t m = z.size(0);
  if (m < 2) fail("nt_xent: needs at least 2 embeddings, got ", m);
  if (positives.defined()) {
    check_positives(positives, m);
    if (positives.device() != z.device())
      fail("nt_xent: positives are on ", positives.device().str(), " but z is on ", z.device().str());
  } else if (m % 2 != 0) {
    fail("nt_xent: without a positive mask z holds two views of N images (2N rows), got an odd M = ", m);
  }
  return impl == LossImpl::fused ? siam::nt_xent_fused(z, temperature, positives)
                                 : nt_xent_composite(z, temperature, positives);
}

Tensor positives_from_groups(const Tensor& group) {
  if (group.dim() != 1 || group.dtype() != DType::i64)
    fail("positives_from_groups: group must be an i64 vector (M), got ", dtype_name(group.dtype()), " ",
         shape_str(group.shape()));
  const std::vector<double> g = copy_to(group, Device::cpu(), DType::i64).to_vector();
  const int64_t m = group.size(0);
  std::vector<double> v(m * m, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) v[i * m + j] = i != j && g[i] == g[j];
  return from_vector(v, {m, m}, {DType::b8, group.device()});
}

Tensor info_nce(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature, LossImpl impl) {
  require_like(q, k, "info_nce", "q", "k");
  require_matrix(queue, "info_nce", "queue");
  if (queue.size(1) != q.size(1) || queue.dtype() != q.dtype())
    fail("info_nce: queue must be (K, ", q.size(1), ") ", dtype_name(q.dtype()), " like the keys, got ",
         shape_str(queue.shape()), " ", dtype_name(queue.dtype()));
  require_positive(temperature, "info_nce", "temperature");
  if (queue.device() != q.device())
    fail("info_nce: queue is on ", queue.device().str(), " but q is on ", q.device().str());
  if (impl == LossImpl::fused) return siam::info_nce_fused(q, k, queue, temperature);
  Tensor qn = normalize(q, 1), kn = normalize(k, 1);
  Tensor positive = sum(mul(qn, kn), {1}, true);               // (N, 1)
  Tensor negatives = matmul(qn, transpose(queue, 0, 1));        // (N, K)
  Tensor logits = div(cat({positive, negatives}, 1), full({}, temperature, like(q)));
  return cross_entropy(logits, zeros({q.size(0)}, {DType::i64, q.device()}));
}

// ---------------------------------------------------------------- distillation

Tensor byol_loss(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, LossImpl impl) {
  require_like(p1, p2, "byol_loss", "p1", "p2");
  require_like(p1, z1, "byol_loss", "p1", "z1");
  require_like(p1, z2, "byol_loss", "p1", "z2");
  if (impl == LossImpl::fused) return siam::cosine_regression_fused(p1, p2, z1, z2, true);
  auto regression = [](const Tensor& p, const Tensor& z) {  // mean_b 2 - 2 cos(p_b, z_b)
    Tensor cos = sum(mul(normalize(p, 1), normalize(detach(z), 1)), {1});
    return mean(add(mul(cos, -2.0), 2.0));
  };
  return add(regression(p1, z2), regression(p2, z1));
}

Tensor simsiam_loss(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, LossImpl impl) {
  require_like(p1, p2, "simsiam_loss", "p1", "p2");
  require_like(p1, z1, "simsiam_loss", "p1", "z1");
  require_like(p1, z2, "simsiam_loss", "p1", "z2");
  if (impl == LossImpl::fused) return siam::cosine_regression_fused(p1, p2, z1, z2, false);
  Tensor c1 = mean(cosine_similarity(p1, detach(z2), 1)), c2 = mean(cosine_similarity(p2, detach(z1), 1));
  return mul(add(c1, c2), -0.5);
}

Tensor dino_loss(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t student_crops,
                 double student_temp, double teacher_temp, LossImpl impl) {
  require_matrix(student, "dino_loss", "student");
  require_matrix(teacher, "dino_loss", "teacher");
  require_positive(student_temp, "dino_loss", "student_temp");
  require_positive(teacher_temp, "dino_loss", "teacher_temp");
  const int64_t rows = student.size(0), k = student.size(1);
  if (student_crops < 2 || rows % student_crops != 0 || rows == 0)
    fail("dino_loss: the student's ", rows, " rows must split into student_crops >= 2 equal crops, got ",
         student_crops, " crops");
  const int64_t b = rows / student_crops;
  if (teacher.size(1) != k || teacher.size(0) % b != 0 || teacher.size(0) / b > student_crops ||
      teacher.size(0) == 0)
    fail("dino_loss: teacher must be (T B, K) = (T * ", b, ", ", k, ") with 1 <= T <= ", student_crops,
         " crops, got ", shape_str(teacher.shape()));
  if (center.numel() != k) fail("dino_loss: center must hold K = ", k, " values, got ", shape_str(center.shape()));
  if (teacher.dtype() != student.dtype() || center.dtype() != student.dtype())
    fail("dino_loss: teacher (", dtype_name(teacher.dtype()), ") and center (", dtype_name(center.dtype()),
         ") must have the student's dtype ", dtype_name(student.dtype()));
  return impl == LossImpl::fused ? siam::dino_loss_fused(student, teacher, center, student_crops, student_temp, teacher_temp)
                                 : dino_composite(student, teacher, center, student_crops, student_temp,
                                                  teacher_temp);
}

// ---------------------------------------------------------------- redundancy reduction

VicregLoss vicreg_loss(const Tensor& x, const Tensor& y, double sim_coeff, double std_coeff, double cov_coeff,
                       LossImpl impl) {
  require_like(x, y, "vicreg_loss", "x", "y");
  require_batch(x, "vicreg_loss");
  if (impl == LossImpl::fused) {
    std::array<Tensor, 4> t = siam::vicreg_loss_fused(x, y, sim_coeff, std_coeff, cov_coeff);
    return {t[0], t[1], t[2], t[3]};
  }
  const int64_t n = x.size(0), d = x.size(1);
  VicregLoss r;
  r.invariance = mean(pow(sub(x, y), 2));
  Tensor xc = sub(x, mean(x, {0}, true)), yc = sub(y, mean(y, {0}, true));
  auto hinge = [](const Tensor& c) { return mean(relu(add(neg(sqrt(add(var(c, {0}), 1e-4))), 1.0))); };
  r.variance = add(mul(hinge(xc), 0.5), mul(hinge(yc), 0.5));
  auto cov_term = [n, d](const Tensor& c) {
    Tensor cov = mul(matmul(transpose(c, 0, 1), c), 1.0 / static_cast<double>(n - 1));  // (D, D)
    return mul(off_diagonal_sq_sum(cov), 1.0 / static_cast<double>(d));
  };
  r.covariance = add(cov_term(xc), cov_term(yc));
  r.loss = add(add(mul(r.invariance, sim_coeff), mul(r.variance, std_coeff)), mul(r.covariance, cov_coeff));
  return r;
}

BarlowLoss barlow_twins_loss(const Tensor& z1, const Tensor& z2, double lambda, LossImpl impl) {
  require_like(z1, z2, "barlow_twins_loss", "z1", "z2");
  require_batch(z1, "barlow_twins_loss");
  if (impl == LossImpl::fused) {
    std::array<Tensor, 3> t = siam::barlow_loss_fused(z1, z2, lambda);
    return {t[0], t[1], t[2]};
  }
  const int64_t n = z1.size(0), d = z1.size(1);
  auto bn = [](const Tensor& z) { return batch_norm(z, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); };
  Tensor c = mul(matmul(transpose(bn(z1), 0, 1), bn(z2)), 1.0 / static_cast<double>(n));  // (D, D)
  Tensor diag = sum(mul(c, eye(d, like(c))), {1});                                         // (D)
  BarlowLoss r;
  r.on_diag = sum(pow(add(diag, -1.0), 2));
  r.off_diag = off_diagonal_sq_sum(c);
  r.loss = add(r.on_diag, mul(r.off_diag, lambda));
  return r;
}

// ---------------------------------------------------------------- collapse signal

Tensor embedding_std(const Tensor& z) {
  require_matrix(z, "embedding_std", "z");
  require_batch(z, "embedding_std");
  NoGradGuard no_grad;
  return mean(sqrt(var(normalize(detach(z), 1), {0})));
}

}  // namespace siam::ssl
