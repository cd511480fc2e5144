// Fused NT-Xent and DINO losses on the CPU. Every output is written (=) into a fresh tensor;
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
