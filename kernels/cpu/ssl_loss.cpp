// Fused SSL losses on the CPU (NT-Xent and DINO here; InfoNCE, BYOL / SimSiam, VICReg and
// Barlow Twins below). Every output is written (=) into a fresh tensor;
// nothing accumulates. Dot products, exponentials and sums run in double and are rounded to the
// input dtype once. Backward passes recompute similarities and probabilities from the inputs
// and the saved log-sum-exps instead of keeping (M, M) or (T B, K) matrices alive between the
// passes. Rows are independent, so OpenMP splits them across threads.
#include "kernels/ssl_loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/ssl_loss.h"
#include "kernels/gemm.h"

namespace siam::kernels {

namespace {

constexpr double kNormEps = 1e-12;          // F.normalize's eps
constexpr int64_t kParallelMin = 1 << 15;   // multiply-adds below which threads cost more than they save

Tensor dense(const Tensor& t) { return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype()); }

void require_cpu(const Tensor& t, const char* op) {
  if (!t.device().is_cpu())
    fail(op, ": no ", t.device().str(), " kernel yet (CUDA kernels arrive with the CUDA backend)");
}

double logsumexp(const double* v, int64_t n) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < n; ++k) mx = std::max(mx, v[k]);
  double acc = 0;
  for (int64_t k = 0; k < n; ++k) acc += std::exp(v[k] - mx);
  return mx + std::log(acc);
}

// The positives of anchor i as weights over j: the mask row, or the one SimCLR partner.
struct Positives {
  const bool* mask;  // (M, M) or null
  int64_t m;
  double weight(int64_t i, int64_t j) const {
    if (mask) return mask[i * m + j] ? 1.0 : 0.0;
    return j == (i + m / 2) % m ? 1.0 : 0.0;
  }
};

// zn (M, D) in double from z, and 1 / max(||z_i||, eps) per row.
template <class T>
std::vector<double> normalized_rows(const T* z, int64_t m, int64_t d, double* inv_norm) {
  std::vector<double> zn(m * d);
  for (int64_t i = 0; i < m; ++i) {
    double sq = 0;
    for (int64_t k = 0; k < d; ++k) sq += static_cast<double>(z[i * d + k]) * z[i * d + k];
    inv_norm[i] = 1.0 / std::max(std::sqrt(sq), kNormEps);
    for (int64_t k = 0; k < d; ++k) zn[i * d + k] = z[i * d + k] * inv_norm[i];
  }
  return zn;
}

// s_ij = zn_i . zn_j / T for every j (the diagonal included; callers skip it).
void similarity_row(const std::vector<double>& zn, int64_t i, int64_t m, int64_t d, double temperature,
                    double* s) {
  const double* a = zn.data() + i * d;
  for (int64_t j = 0; j < m; ++j) {
    const double* b = zn.data() + j * d;
    double dot = 0;
    for (int64_t k = 0; k < d; ++k) dot += a[k] * b[k];
    s[j] = dot / temperature;
  }
}

}  // namespace

// ---------------------------------------------------------------- NT-Xent

NtXentSaved nt_xent_forward(const Tensor& z, const Tensor& positives, double temperature) {
  SIAM_ON_CUDA(z, gpu::nt_xent_forward(z, positives, temperature));
  require_cpu(z, "nt_xent");
  SIAM_CHECK(z.dim() == 2 && z.size(0) >= 2, "nt_xent kernel: z ", shape_str(z.shape()));
  const int64_t m = z.size(0), d = z.size(1);
  Tensor zc = dense(z), pc = positives.defined() ? dense(positives) : Tensor();
  SIAM_CHECK(!pc.defined() || (pc.dtype() == DType::b8 && pc.shape() == Shape{m, m}), "nt_xent kernel: mask");
  SIAM_CHECK(pc.defined() || m % 2 == 0, "nt_xent kernel: pairs need an even M, got ", m);
  NtXentSaved out{empty({}, {z.dtype()}), empty({m}, {DType::f64})};
  SIAM_DISPATCH_FLOAT(z.dtype(), "nt_xent", [&] {
    double* lse = out.lse.data<double>();
    std::vector<double> inv(m);
    const std::vector<double> zn = normalized_rows(zc.data<scalar_t>(), m, d, inv.data());
    const Positives pos{pc.defined() ? pc.data<bool>() : nullptr, m};
    double total = 0;
    _Pragma("omp parallel if (m * m * d > kParallelMin)")
    {
      std::vector<double> s(m);
      _Pragma("omp for schedule(static) reduction(+ : total)")
      for (int64_t i = 0; i < m; ++i) {
        similarity_row(zn, i, m, d, temperature, s.data());
        const double self = s[i];
        s[i] = -std::numeric_limits<double>::infinity();  // an anchor is not its own negative
        lse[i] = logsumexp(s.data(), m);
        s[i] = self;
        double sum_pos = 0, count = 0;
        for (int64_t j = 0; j < m; ++j) {
          const double w = pos.weight(i, j);
          sum_pos += w * s[j];
          count += w;
        }
        total += lse[i] - sum_pos / count;
      }
    }
    out.loss.data<scalar_t>()[0] = static_cast<scalar_t>(total / static_cast<double>(m));
  });
  return out;
}

Tensor nt_xent_backward(const Tensor& grad, const Tensor& z, const Tensor& positives, const NtXentSaved& saved,
                        double temperature) {
  SIAM_ON_CUDA(z, gpu::nt_xent_backward(grad, z, positives, saved, temperature));
  require_cpu(z, "nt_xent backward");
  const int64_t m = z.size(0), d = z.size(1);
  Tensor zc = dense(z), pc = positives.defined() ? dense(positives) : Tensor();
  Tensor dz = empty(z.shape(), {z.dtype()});
  const double scale = grad.item() / static_cast<double>(m);
  SIAM_DISPATCH_FLOAT(z.dtype(), "nt_xent backward", [&] {
    const double* lse = saved.lse.data<double>();
    std::vector<double> inv(m);
    const std::vector<double> zn = normalized_rows(zc.data<scalar_t>(), m, d, inv.data());
    const Positives pos{pc.defined() ? pc.data<bool>() : nullptr, m};
    // G_ij = dloss/ds_ij = (softmax_ij over k != i - w_ij / |P_i|) / M, G_ii = 0.
    std::vector<double> g(m * m);
    _Pragma("omp parallel if (m * m * d > kParallelMin)")
    {
      std::vector<double> s(m);
      _Pragma("omp for schedule(static)")
      for (int64_t i = 0; i < m; ++i) {
        similarity_row(zn, i, m, d, temperature, s.data());
        double count = 0;
        for (int64_t j = 0; j < m; ++j) count += pos.weight(i, j);
        for (int64_t j = 0; j < m; ++j)
          g[i * m + j] = j == i ? 0.0 : scale * (std::exp(s[j] - lse[i]) - pos.weight(i, j) / count);
      }
    }
    // s_ij depends on zn_i and zn_j: dzn_k = (1/T) sum_j (G_kj + G_jk) zn_j. Then through the
    // normalisation: dz = (dzn - zn (zn . dzn)) / ||z||, or dzn / eps where the norm was clamped.
    scalar_t* out = dz.data<scalar_t>();
    const scalar_t* pz = zc.data<scalar_t>();
    _Pragma("omp parallel if (m * m * d > kParallelMin)")
    {
      std::vector<double> dzn(d);
      _Pragma("omp for schedule(static)")
      for (int64_t k = 0; k < m; ++k) {
        std::fill(dzn.begin(), dzn.end(), 0.0);
        for (int64_t j = 0; j < m; ++j) {
          const double w = (g[k * m + j] + g[j * m + k]) / temperature;
          if (w == 0) continue;
          for (int64_t c = 0; c < d; ++c) dzn[c] += w * zn[j * d + c];
        }
        double sq = 0;
        for (int64_t c = 0; c < d; ++c) sq += static_cast<double>(pz[k * d + c]) * pz[k * d + c];
        if (sq > kNormEps * kNormEps) {
          double proj = 0;
          for (int64_t c = 0; c < d; ++c) proj += zn[k * d + c] * dzn[c];
          for (int64_t c = 0; c < d; ++c)
            out[k * d + c] = static_cast<scalar_t>((dzn[c] - zn[k * d + c] * proj) * inv[k]);
        } else {
          for (int64_t c = 0; c < d; ++c) out[k * d + c] = static_cast<scalar_t>(dzn[c] / kNormEps);
        }
      }
    }
  });
  return dz;
}

// ---------------------------------------------------------------- DINO

namespace {

struct DinoShape {
  int64_t s, t, b, k, pairs;
};

DinoShape dino_shape(const Tensor& student, const Tensor& teacher, const Tensor& center, int64_t student_crops) {
  SIAM_CHECK(student.dim() == 2 && teacher.dim() == 2 && student_crops > 0, "dino kernel shapes");
  DinoShape sh{student_crops, 0, student.size(0) / student_crops, student.size(1), 0};
  SIAM_CHECK(sh.b > 0 && sh.s * sh.b == student.size(0) && teacher.size(0) % sh.b == 0 &&
                 teacher.size(1) == sh.k && center.numel() == sh.k,
             "dino kernel shapes");
  sh.t = teacher.size(0) / sh.b;
  SIAM_CHECK(sh.t >= 1 && sh.t <= sh.s, "dino kernel: ", sh.t, " teacher crops, ", sh.s, " student crops");
  sh.pairs = sh.t * sh.s - sh.t;
  SIAM_CHECK(sh.pairs > 0, "dino kernel: no student-teacher pair");
  return sh;
}

// q_t (T rows of K) of image b: softmax((y - c) / tau_t), from the given log-sum-exps or, when
// `lse_out` is set, computing and storing them.
template <class T>
void teacher_probs(const T* y, const T* c, const DinoShape& sh, int64_t b, double tau, const double* lse_in,
                   double* lse_out, double* q) {
  for (int64_t t = 0; t < sh.t; ++t) {
    const T* row = y + (t * sh.b + b) * sh.k;
    double* qt = q + t * sh.k;
    for (int64_t k = 0; k < sh.k; ++k) qt[k] = (static_cast<double>(row[k]) - c[k]) / tau;
    double lse;
    if (lse_out) {
      lse = logsumexp(qt, sh.k);
      lse_out[t * sh.b + b] = lse;
    } else {
      lse = lse_in[t * sh.b + b];
    }
    for (int64_t k = 0; k < sh.k; ++k) qt[k] = std::exp(qt[k] - lse);
  }
}

}  // namespace

DinoSaved dino_loss_forward(const Tensor& student, const Tensor& teacher, const Tensor& center,
                            int64_t student_crops, double student_temp, double teacher_temp) {
  SIAM_ON_CUDA(student, gpu::dino_loss_forward(student, teacher, center, student_crops, student_temp, teacher_temp));
  require_cpu(student, "dino_loss");
  const DinoShape sh = dino_shape(student, teacher, center, student_crops);
  Tensor xs = dense(student), yt = dense(teacher), cc = dense(center);
  DinoSaved out{empty({}, {student.dtype()}), empty({sh.s * sh.b}, {DType::f64}), empty({sh.t * sh.b}, {DType::f64})};
  SIAM_DISPATCH_FLOAT(student.dtype(), "dino_loss", [&] {
    const scalar_t* x = xs.data<scalar_t>();
    const scalar_t* y = yt.data<scalar_t>();
    const scalar_t* c = cc.data<scalar_t>();
    double* slse = out.student_lse.data<double>();
    double* tlse = out.teacher_lse.data<double>();
    double total = 0;
    _Pragma("omp parallel if (sh.s * sh.b * sh.k > kParallelMin)")
    {
      std::vector<double> q(sh.t * sh.k), v(sh.k);
      _Pragma("omp for schedule(static) reduction(+ : total)")
      for (int64_t b = 0; b < sh.b; ++b) {
        teacher_probs(y, c, sh, b, teacher_temp, nullptr, tlse, q.data());
        for (int64_t s = 0; s < sh.s; ++s) {
          const scalar_t* row = x + (s * sh.b + b) * sh.k;
          for (int64_t k = 0; k < sh.k; ++k) v[k] = row[k] / student_temp;
          const double lse = logsumexp(v.data(), sh.k);
          slse[s * sh.b + b] = lse;
          // sum_k -q_k (v_k - lse) = lse - q . v, since q sums to 1.
          for (int64_t t = 0; t < sh.t; ++t) {
            if (t == s) continue;
            double dot = 0;
            for (int64_t k = 0; k < sh.k; ++k) dot += q[t * sh.k + k] * v[k];
            total += lse - dot;
          }
        }
      }
    }
    out.loss.data<scalar_t>()[0] = static_cast<scalar_t>(total / static_cast<double>(sh.pairs * sh.b));
  });
  return out;
}

Tensor dino_loss_backward(const Tensor& grad, const Tensor& student, const Tensor& teacher, const Tensor& center,
                          const DinoSaved& saved, int64_t student_crops, double student_temp,
                          double teacher_temp) {
  SIAM_ON_CUDA(student, gpu::dino_loss_backward(grad, student, teacher, center, saved, student_crops, student_temp,
                                                teacher_temp));
  require_cpu(student, "dino_loss backward");
  const DinoShape sh = dino_shape(student, teacher, center, student_crops);
  Tensor xs = dense(student), yt = dense(teacher), cc = dense(center);
  Tensor dx = empty(student.shape(), {student.dtype()});
  // d/dv_k of the student row's terms: sum_{t != s} (p_k - q_tk); v = x / tau_s.
  const double scale = grad.item() / static_cast<double>(sh.pairs * sh.b) / student_temp;
  SIAM_DISPATCH_FLOAT(student.dtype(), "dino_loss backward", [&] {
    const scalar_t* x = xs.data<scalar_t>();
    const scalar_t* y = yt.data<scalar_t>();
    const scalar_t* c = cc.data<scalar_t>();
    const double* slse = saved.student_lse.data<double>();
    const double* tlse = saved.teacher_lse.data<double>();
    scalar_t* out = dx.data<scalar_t>();
    _Pragma("omp parallel if (sh.s * sh.b * sh.k > kParallelMin)")
    {
      std::vector<double> q(sh.t * sh.k);
      _Pragma("omp for schedule(static)")
      for (int64_t b = 0; b < sh.b; ++b) {
        teacher_probs(y, c, sh, b, teacher_temp, tlse, nullptr, q.data());
        for (int64_t s = 0; s < sh.s; ++s) {
          const int64_t r = s * sh.b + b;
          const double terms = static_cast<double>(s < sh.t ? sh.t - 1 : sh.t);
          for (int64_t k = 0; k < sh.k; ++k) {
            double qsum = 0;
            for (int64_t t = 0; t < sh.t; ++t)
              if (t != s) qsum += q[t * sh.k + k];
            const double p = std::exp(x[r * sh.k + k] / student_temp - slse[r]);
            out[r * sh.k + k] = static_cast<scalar_t>(scale * (terms * p - qsum));
          }
        }
      }
    }
  });
  return dx;
}

}  // namespace siam::kernels

// ================================================================ InfoNCE, BYOL / SimSiam, VICReg, Barlow
// These four work on f64 copies of their inputs (one conversion in, one rounding out) and hand
// their GEMM-shaped parts (InfoNCE's queue logits, the covariance / cross-correlation matrices)
// to the f64 BLAS GEMM of kernels/gemm.h. Per-row and per-column sums run in a fixed order.

namespace siam::kernels {

namespace {

const TensorOptions kF64{DType::f64};

Tensor f64_copy(const Tensor& t) { return copy_to(t, Device::cpu(), DType::f64); }

// A () tensor of `dtype` holding v, rounded once.
Tensor scalar_of(double v, DType dtype) {
  Tensor t = empty({}, {DType::f64});
  t.data<double>()[0] = v;
  return copy_to(t, Device::cpu(), dtype);
}

void require_pair(const Tensor& a, const Tensor& b, const char* op) {
  SIAM_CHECK(a.dim() == 2 && a.shape() == b.shape() && a.dtype() == b.dtype(), op, " kernel: shapes ",
             shape_str(a.shape()), " and ", shape_str(b.shape()));
  require_cpu(b, op);
}

// Row-wise L2 normalisation of x (n, d) in place: inv[i] = 1 / max(||x_i||, eps), sq[i] = ||x_i||^2.
void normalize_rows(double* x, int64_t n, int64_t d, double eps, double* inv, double* sq) {
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += x[i * d + c] * x[i * d + c];
    sq[i] = s;
    inv[i] = 1.0 / std::max(std::sqrt(s), eps);
    for (int64_t c = 0; c < d; ++c) x[i * d + c] *= inv[i];
  }
}

// normalize()'s backward for one row: dx = (dxn - xn (xn . dxn)) / ||x||, or dxn / eps where
// the norm was clamped (normalize clamps ||x||^2 and the clamp blocks that path).
void normalize_row_backward(const double* xn, const double* dxn, int64_t d, double inv, double sq, double eps,
                            double* dx) {
  if (sq >= eps * eps) {
    double proj = 0;
    for (int64_t c = 0; c < d; ++c) proj += xn[c] * dxn[c];
    for (int64_t c = 0; c < d; ++c) dx[c] = (dxn[c] - xn[c] * proj) * inv;
  } else {
    for (int64_t c = 0; c < d; ++c) dx[c] = dxn[c] / eps;
  }
}

}  // namespace

// ---------------------------------------------------------------- InfoNCE

namespace {

void info_nce_check(const Tensor& q, const Tensor& k, const Tensor& queue, const char* op) {
  require_pair(q, k, op);
  SIAM_CHECK(queue.dim() == 2 && queue.size(1) == q.size(1) && queue.dtype() == q.dtype(), op, " kernel: queue ",
             shape_str(queue.shape()));
  require_cpu(queue, op);
}

// qn, kn (normalised in place), the queue, and the negative logits qn queue^T / T.
struct InfoNceParts {
  Tensor qn, kn, queue, neg;
  std::vector<double> qinv, qsq, kinv, ksq, pos;  // pos_i = qn_i . kn_i / T
};

InfoNceParts info_nce_parts(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature) {
  const int64_t n = q.size(0), d = q.size(1), kq = queue.size(0);
  InfoNceParts p{f64_copy(q), f64_copy(k), f64_copy(queue), empty({n, kq}, kF64), std::vector<double>(n),
                 std::vector<double>(n), std::vector<double>(n), std::vector<double>(n), std::vector<double>(n)};
  double* qn = p.qn.data<double>();
  double* kn = p.kn.data<double>();
  normalize_rows(qn, n, d, kNormEps, p.qinv.data(), p.qsq.data());
  normalize_rows(kn, n, d, kNormEps, p.kinv.data(), p.ksq.data());
  for (int64_t i = 0; i < n; ++i) {
    double dot = 0;
    for (int64_t c = 0; c < d; ++c) dot += qn[i * d + c] * kn[i * d + c];
    p.pos[i] = dot / temperature;
  }
  if (kq > 0) gemm(false, true, 1.0 / temperature, p.qn, p.queue, 0.0, p.neg);
  return p;
}

}  // namespace

InfoNceSaved info_nce_forward(const Tensor& q, const Tensor& k, const Tensor& queue, double temperature) {
  SIAM_ON_CUDA(q, gpu::info_nce_forward(q, k, queue, temperature));
  require_cpu(q, "info_nce");
  info_nce_check(q, k, queue, "info_nce");
  const int64_t n = q.size(0), kq = queue.size(0);
  InfoNceParts p = info_nce_parts(q, k, queue, temperature);
  InfoNceSaved out{Tensor(), empty({n}, kF64)};
  double* lse = out.lse.data<double>();
  const double* neg = p.neg.data<double>();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    double mx = p.pos[i];
    for (int64_t j = 0; j < kq; ++j) mx = std::max(mx, neg[i * kq + j]);
    double acc = std::exp(p.pos[i] - mx);
    for (int64_t j = 0; j < kq; ++j) acc += std::exp(neg[i * kq + j] - mx);
    lse[i] = mx + std::log(acc);
    total += lse[i] - p.pos[i];
  }
  out.loss = scalar_of(total / static_cast<double>(n), q.dtype());
  return out;
}

InfoNceGrads info_nce_backward(const Tensor& grad, const Tensor& q, const Tensor& k, const Tensor& queue,
                               const InfoNceSaved& saved, double temperature, std::array<bool, 3> need) {
  SIAM_ON_CUDA(q, gpu::info_nce_backward(grad, q, k, queue, saved, temperature, need));
  require_cpu(q, "info_nce backward");
  info_nce_check(q, k, queue, "info_nce backward");
  const int64_t n = q.size(0), d = q.size(1), kq = queue.size(0);
  SIAM_CHECK(saved.lse.defined() && saved.lse.dtype() == DType::f64 && saved.lse.numel() == n,
             "info_nce backward: saved lse");
  InfoNceParts p = info_nce_parts(q, k, queue, temperature);
  const double* lse = saved.lse.data<double>();
  const double g = grad.item() / static_cast<double>(n);
  // G = dloss/dlogits: g (softmax - onehot(0)); the negatives' part overwrites neg in place.
  std::vector<double> g0(n);
  double* gneg = p.neg.data<double>();
  for (int64_t i = 0; i < n; ++i) {
    g0[i] = g * (std::exp(p.pos[i] - lse[i]) - 1.0);
    for (int64_t j = 0; j < kq; ++j) gneg[i * kq + j] = g * std::exp(gneg[i * kq + j] - lse[i]);
  }
  const double* qn = p.qn.data<double>();
  const double* kn = p.kn.data<double>();
  InfoNceGrads out;
  std::vector<double> row(d);
  if (need[0]) {  // dqn = (g0 kn + Gneg queue) / T
    Tensor dqn = zeros({n, d}, kF64);
    if (kq > 0) gemm(false, false, 1.0 / temperature, p.neg, p.queue, 0.0, dqn);
    double* a = dqn.data<double>();
    Tensor dq = empty({n, d}, kF64);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = 0; c < d; ++c) a[i * d + c] += g0[i] * kn[i * d + c] / temperature;
      normalize_row_backward(qn + i * d, a + i * d, d, p.qinv[i], p.qsq[i], kNormEps, dq.data<double>() + i * d);
    }
    out.dq = copy_to(dq, Device::cpu(), q.dtype());
  }
  if (need[1]) {  // dkn = g0 qn / T
    Tensor dk = empty({n, d}, kF64);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t c = 0; c < d; ++c) row[c] = g0[i] * qn[i * d + c] / temperature;
      normalize_row_backward(kn + i * d, row.data(), d, p.kinv[i], p.ksq[i], kNormEps, dk.data<double>() + i * d);
    }
    out.dk = copy_to(dk, Device::cpu(), k.dtype());
  }
  if (need[2]) {  // dqueue = Gneg^T qn / T
    Tensor du = zeros({kq, d}, kF64);
    if (kq > 0) gemm(true, false, 1.0 / temperature, p.neg, p.qn, 0.0, du);
    out.dqueue = copy_to(du, Device::cpu(), queue.dtype());
  }
  return out;
}

// ---------------------------------------------------------------- BYOL / SimSiam

namespace {

void cosine_check(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, const char* op) {
  require_pair(p1, p2, op);
  require_pair(p1, z1, op);
  require_pair(p1, z2, op);
}

double cosine_eps(CosineMode mode) { return mode == CosineMode::byol ? 1e-12 : 1e-8; }

// Visits every row b of both directions with (p_b, z_b) as double rows and the direction index.
template <class F>
void for_cosine_rows(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2, F&& f) {
  const int64_t n = p1.size(0), d = p1.size(1);
  Tensor ps[2] = {f64_copy(p1), f64_copy(p2)}, zs[2] = {f64_copy(z2), f64_copy(z1)};
  for (int dir = 0; dir < 2; ++dir)
    for (int64_t b = 0; b < n; ++b) f(dir, b, ps[dir].data<double>() + b * d, zs[dir].data<double>() + b * d, d);
}

struct CosRow {
  double cos, ip, sqp;  // pn . zn, 1 / max(||p||, eps), ||p||^2
};
CosRow cos_row(const double* p, const double* z, int64_t d, double eps) {
  double sp = 0, sz = 0;
  for (int64_t c = 0; c < d; ++c) {
    sp += p[c] * p[c];
    sz += z[c] * z[c];
  }
  const double ip = 1.0 / std::max(std::sqrt(sp), eps), iz = 1.0 / std::max(std::sqrt(sz), eps);
  double cos = 0;
  for (int64_t c = 0; c < d; ++c) cos += (p[c] * ip) * (z[c] * iz);
  return {cos, ip, sp};
}

}  // namespace

Tensor cosine_regression_forward(const Tensor& p1, const Tensor& p2, const Tensor& z1, const Tensor& z2,
                                 CosineMode mode) {
  SIAM_ON_CUDA(p1, gpu::cosine_regression_forward(p1, p2, z1, z2, mode));
  require_cpu(p1, "cosine_regression");
  cosine_check(p1, p2, z1, z2, "cosine_regression");
  const double eps = cosine_eps(mode);
  double sum[2] = {0, 0};
  for_cosine_rows(p1, p2, z1, z2, [&](int dir, int64_t, const double* p, const double* z, int64_t d) {
    const double c = cos_row(p, z, d, eps).cos;
    sum[dir] += mode == CosineMode::byol ? 2.0 - 2.0 * c : c;
  });
  const double n = static_cast<double>(p1.size(0));
  const double loss = mode == CosineMode::byol ? sum[0] / n + sum[1] / n : -0.5 * (sum[0] / n + sum[1] / n);
  return scalar_of(loss, p1.dtype());
}

std::array<Tensor, 2> cosine_regression_backward(const Tensor& grad, const Tensor& p1, const Tensor& p2,
                                                 const Tensor& z1, const Tensor& z2, CosineMode mode) {
  SIAM_ON_CUDA(p1, gpu::cosine_regression_backward(grad, p1, p2, z1, z2, mode));
  require_cpu(p1, "cosine_regression backward");
  cosine_check(p1, p2, z1, z2, "cosine_regression backward");
  const int64_t n = p1.size(0), d = p1.size(1);
  const double eps = cosine_eps(mode);
  const double dcos = grad.item() * (mode == CosineMode::byol ? -2.0 : -0.5) / static_cast<double>(n);
  Tensor dp[2] = {empty({n, d}, kF64), empty({n, d}, kF64)};
  for_cosine_rows(p1, p2, z1, z2, [&](int dir, int64_t b, const double* p, const double* z, int64_t) {
    const CosRow r = cos_row(p, z, d, eps);
    double sz = 0;
    for (int64_t c = 0; c < d; ++c) sz += z[c] * z[c];
    const double iz = 1.0 / std::max(std::sqrt(sz), eps);
    double* o = dp[dir].data<double>() + b * d;
    // dcos/dpn = zn. normalize() (BYOL) blocks the gradient through a clamped norm;
    // cosine_similarity (SimSiam) lets it through, so its formula holds everywhere.
    if (mode == CosineMode::byol && r.sqp < eps * eps) {
      for (int64_t c = 0; c < d; ++c) o[c] = dcos * z[c] * iz / eps;
    } else {
      for (int64_t c = 0; c < d; ++c) o[c] = dcos * (z[c] * iz - p[c] * r.ip * r.cos) * r.ip;
    }
  });
  return {copy_to(dp[0], Device::cpu(), p1.dtype()), copy_to(dp[1], Device::cpu(), p1.dtype())};
}

// ---------------------------------------------------------------- VICReg

namespace {

constexpr double kVicregEps = 1e-4;
constexpr double kBarlowEps = 1e-5;

// Centres the columns of x (n, d) in place; returns the column means.
std::vector<double> center_columns(double* x, int64_t n, int64_t d) {
  std::vector<double> mean(d, 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < d; ++c) mean[c] += x[b * d + c];
  for (int64_t c = 0; c < d; ++c) mean[c] /= static_cast<double>(n);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < d; ++c) x[b * d + c] -= mean[c];
  return mean;
}

// Column sums of squares of x (n, d).
std::vector<double> column_sq(const double* x, int64_t n, int64_t d) {
  std::vector<double> s(d, 0.0);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < d; ++c) s[c] += x[b * d + c] * x[b * d + c];
  return s;
}

// Sum of the squared off-diagonal entries of c (d, d).
double off_diagonal_sq(const double* c, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j)
      if (i != j) s += c[i * d + j] * c[i * d + j];
  return s;
}

// One VICReg branch: xc centred in place, std_j, the hinge mean and the covariance term.
struct VicregBranch {
  Tensor xc;
  std::vector<double> std;
  double hinge = 0, cov = 0;
};
VicregBranch vicreg_branch(const Tensor& x, bool with_cov) {
  const int64_t n = x.size(0), d = x.size(1);
  VicregBranch r{f64_copy(x), std::vector<double>(d)};
  double* xc = r.xc.data<double>();
  center_columns(xc, n, d);
  const std::vector<double> sq = column_sq(xc, n, d);
  for (int64_t c = 0; c < d; ++c) {
    r.std[c] = std::sqrt(sq[c] / static_cast<double>(n - 1) + kVicregEps);
    r.hinge += std::max(0.0, 1.0 - r.std[c]);
  }
  r.hinge /= static_cast<double>(d);
  if (with_cov) {
    Tensor cov = empty({d, d}, kF64);
    gemm(true, false, 1.0 / static_cast<double>(n - 1), r.xc, r.xc, 0.0, cov);
    r.cov = off_diagonal_sq(cov.data<double>(), d) / static_cast<double>(d);
  }
  return r;
}

void vicreg_check(const Tensor& x, const Tensor& y, const char* op) {
  require_pair(x, y, op);
  SIAM_CHECK(x.size(0) >= 2, op, " kernel: needs N >= 2, got ", x.size(0));
}

}  // namespace

VicregTerms vicreg_forward(const Tensor& x, const Tensor& y, VicregWeights w) {
  SIAM_ON_CUDA(x, gpu::vicreg_forward(x, y, w));
  require_cpu(x, "vicreg_loss");
  vicreg_check(x, y, "vicreg_loss");
  const int64_t n = x.size(0), d = x.size(1);
  Tensor xd = f64_copy(x), yd = f64_copy(y);
  double inv = 0;
  for (int64_t i = 0; i < n * d; ++i) {
    const double e = xd.data<double>()[i] - yd.data<double>()[i];
    inv += e * e;
  }
  inv /= static_cast<double>(n * d);
  const VicregBranch bx = vicreg_branch(x, true), by = vicreg_branch(y, true);
  const double var = 0.5 * bx.hinge + 0.5 * by.hinge, cov = bx.cov + by.cov;
  const DType dt = x.dtype();
  return {scalar_of(w.invariance * inv + w.variance * var + w.covariance * cov, dt), scalar_of(inv, dt),
          scalar_of(var, dt), scalar_of(cov, dt)};
}

std::array<Tensor, 2> vicreg_backward(const Tensor& grad, const Tensor& x, const Tensor& y, VicregWeights w) {
  SIAM_ON_CUDA(x, gpu::vicreg_backward(grad, x, y, w));
  require_cpu(x, "vicreg_loss backward");
  vicreg_check(x, y, "vicreg_loss backward");
  const int64_t n = x.size(0), d = x.size(1);
  const double g = grad.item(), nm1 = static_cast<double>(n - 1);
  Tensor xd = f64_copy(x), yd = f64_copy(y);
  std::array<Tensor, 2> out;
  for (int side = 0; side < 2; ++side) {
    VicregBranch br = vicreg_branch(side == 0 ? x : y, false);
    const double* xc = br.xc.data<double>();
    Tensor dxc = zeros({n, d}, kF64);
    double* a = dxc.data<double>();
    if (w.covariance != 0) {  // d/dxc of sum_{i != j} C_ij^2 / D = 4 xc C_off / ((N - 1) D)
      Tensor cov = empty({d, d}, kF64);
      gemm(true, false, 1.0 / nm1, br.xc, br.xc, 0.0, cov);
      for (int64_t c = 0; c < d; ++c) cov.data<double>()[c * d + c] = 0;
      gemm(false, false, 4.0 * g * w.covariance / (nm1 * static_cast<double>(d)), br.xc, cov, 0.0, dxc);
    }
    if (w.variance != 0) {  // 1/2 mean_j ReLU(1 - std_j): d/dxc_bj = -xc_bj / (2 D (N - 1) std_j) where active
      std::vector<double> coef(d, 0.0);
      for (int64_t c = 0; c < d; ++c)
        if (1.0 - br.std[c] > 0) coef[c] = -g * w.variance / (2.0 * static_cast<double>(d) * nm1 * br.std[c]);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t c = 0; c < d; ++c) a[b * d + c] += coef[c] * xc[b * d + c];
    }
    // Through the centring: dx = dxc - mean_b dxc; then the invariance term's 2 (x - y) / (N D).
    std::vector<double> mean(d, 0.0);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < d; ++c) mean[c] += a[b * d + c];
    const double inv_coef = (side == 0 ? 2.0 : -2.0) * g * w.invariance / static_cast<double>(n * d);
    const double* px = xd.data<double>();
    const double* py = yd.data<double>();
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < d; ++c)
        a[b * d + c] = a[b * d + c] - mean[c] / static_cast<double>(n) + inv_coef * (px[b * d + c] - py[b * d + c]);
    out[side] = copy_to(dxc, Device::cpu(), x.dtype());
  }
  return out;
}

// ---------------------------------------------------------------- Barlow Twins

namespace {

// zh = (z - mean) * rstd per column (biased variance), in place; returns rstd.
std::vector<double> batch_standardize(double* z, int64_t n, int64_t d) {
  center_columns(z, n, d);
  std::vector<double> rstd = column_sq(z, n, d);
  for (int64_t c = 0; c < d; ++c) rstd[c] = 1.0 / std::sqrt(rstd[c] / static_cast<double>(n) + kBarlowEps);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < d; ++c) z[b * d + c] *= rstd[c];
  return rstd;
}

struct BarlowParts {
  Tensor zh1, zh2, c;  // (N, D), (N, D), (D, D)
  std::vector<double> rstd1, rstd2;
};
BarlowParts barlow_parts(const Tensor& z1, const Tensor& z2) {
  const int64_t n = z1.size(0), d = z1.size(1);
  BarlowParts p{f64_copy(z1), f64_copy(z2), empty({d, d}, kF64), {}, {}};
  p.rstd1 = batch_standardize(p.zh1.data<double>(), n, d);
  p.rstd2 = batch_standardize(p.zh2.data<double>(), n, d);
  gemm(true, false, 1.0 / static_cast<double>(n), p.zh1, p.zh2, 0.0, p.c);
  return p;
}

}  // namespace

BarlowTerms barlow_forward(const Tensor& z1, const Tensor& z2, double lambda) {
  SIAM_ON_CUDA(z1, gpu::barlow_forward(z1, z2, lambda));
  require_cpu(z1, "barlow_twins_loss");
  vicreg_check(z1, z2, "barlow_twins_loss");
  const int64_t d = z1.size(1);
  BarlowParts p = barlow_parts(z1, z2);
  const double* c = p.c.data<double>();
  double on = 0;
  for (int64_t i = 0; i < d; ++i) on += (c[i * d + i] - 1.0) * (c[i * d + i] - 1.0);
  const double off = off_diagonal_sq(c, d);
  const DType dt = z1.dtype();
  return {scalar_of(on + lambda * off, dt), scalar_of(on, dt), scalar_of(off, dt)};
}

std::array<Tensor, 2> barlow_backward(const Tensor& grad, const Tensor& z1, const Tensor& z2, double w_on,
                                      double w_off) {
  SIAM_ON_CUDA(z1, gpu::barlow_backward(grad, z1, z2, w_on, w_off));
  require_cpu(z1, "barlow_twins_loss backward");
  vicreg_check(z1, z2, "barlow_twins_loss backward");
  const int64_t n = z1.size(0), d = z1.size(1);
  const double g = grad.item(), nd = static_cast<double>(n);
  BarlowParts p = barlow_parts(z1, z2);
  // H = dloss/dC in place of C: 2 w_on (C_ii - 1) on the diagonal, 2 w_off C_ij off it.
  double* h = p.c.data<double>();
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j)
      h[i * d + j] = i == j ? 2.0 * g * w_on * (h[i * d + j] - 1.0) : 2.0 * g * w_off * h[i * d + j];
  Tensor dzh1 = empty({n, d}, kF64), dzh2 = empty({n, d}, kF64);
  gemm(false, true, 1.0 / nd, p.zh2, p.c, 0.0, dzh1);  // dC/dzh1: zh2 H^T / N
  gemm(false, false, 1.0 / nd, p.zh1, p.c, 0.0, dzh2);  // dC/dzh2: zh1 H / N
  // Batch norm's backward per column: dz = rstd (dzh - mean_b dzh - zh mean_b (dzh zh)).
  auto bn_backward = [n, d, nd](Tensor& dzh, const Tensor& zh_t, const std::vector<double>& rstd) {
    double* a = dzh.data<double>();
    const double* zh = zh_t.data<double>();
    std::vector<double> m1(d, 0.0), m2(d, 0.0);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < d; ++c) {
        m1[c] += a[b * d + c];
        m2[c] += a[b * d + c] * zh[b * d + c];
      }
    for (int64_t b = 0; b < n; ++b)
      for (int64_t c = 0; c < d; ++c)
        a[b * d + c] = rstd[c] * (a[b * d + c] - m1[c] / nd - zh[b * d + c] * (m2[c] / nd));
  };
  bn_backward(dzh1, p.zh1, p.rstd1);
  bn_backward(dzh2, p.zh2, p.rstd2);
  return {copy_to(dzh1, Device::cpu(), z1.dtype()), copy_to(dzh2, Device::cpu(), z1.dtype())};
}

}  // namespace siam::kernels
