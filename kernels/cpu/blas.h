#pragma once
// Typed CBLAS GEMM on raw row-major matrices, shared by the CPU kernels.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace siam::kernels::cpu {

// Threads. siam runs every BLAS call on one thread and parallelises with OpenMP alone: a batch
// of GEMMs is shared out one whole product per thread (share_gemms), and one large GEMM called
// outside a parallel region is cut into slices over the OpenMP threads (blas_gemm). OpenBLAS's
// own (pthreads) workers, left to spin between calls, took cores from OpenMP's threads: on
// 2 cores the CPU demo's step took about 40 ms with them and 34 ms without (docs/performance.md).
inline void blas_on_one_thread() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

// OpenMP shares out a batch of GEMMs, one whole product per thread, when there are enough of
// them to fill the threads or each is small; otherwise they run one after another, each cut
// into slices over the threads (blas_gemm).
// Products of up to 4 x 64^3 multiply-adds are not worth cutting over threads (OpenBLAS itself
// keeps up to 64^3 on one thread).
inline bool small_gemm(int64_t m, int64_t n, int64_t k) { return double(m) * double(n) * double(k) <= 65536.0 * 4.0; }

inline bool share_gemms(int64_t count, int64_t m, int64_t n, int64_t k) {
  return count > 1 && (small_gemm(m, n, k) || count >= omp_get_max_threads());
}

inline void gemm_one_thread(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const float* a, int64_t lda,
                  const float* b, int64_t ldb, double beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), float(alpha), a, int(lda), b, int(ldb), float(beta), c, int(ldc));
}
inline void gemm_one_thread(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
                  const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// c (m, n) = alpha * op(a) (m, k) @ op(b) (k, n) + beta * c. Sizes must fit in int (callers check).
// Outside a parallel region a large product is cut along the longer of m and n into one slice
// per thread (multiples of 16 rows or columns); each element is still one BLAS dot product
// over k, and the cut depends only on the sizes and the thread count, so results do not
// depend on timing.
template <class T>
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a, int64_t lda,
               const T* b, int64_t ldb, double beta, T* c, int64_t ldc) {
  blas_on_one_thread();
  const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t along = std::max(m, n);
  int64_t slices = std::min<int64_t>(nt, along / 16);
  if (slices < 2 || small_gemm(m, n, k)) {
    gemm_one_thread(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t step = (along + slices * 16 - 1) / (slices * 16) * 16;
  slices = (along + step - 1) / step;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(slices))
  for (int64_t s = 0; s < slices; ++s) {
    const int64_t lo = s * step, len = std::min(step, along - lo);
    if (m >= n)  // rows [lo, lo + len) of op(a) and c
      gemm_one_thread(ta, tb, len, n, k, alpha, a + (ta ? lo : lo * lda), lda, b, ldb, beta, c + lo * ldc, ldc);
    else  // columns [lo, lo + len) of op(b) and c
      gemm_one_thread(ta, tb, m, len, k, alpha, a, lda, b + (tb ? lo * ldb : lo), ldb, beta, c + lo, ldc);
  }
}

}  // namespace siam::kernels::cpu
