#pragma once
// Typed CBLAS GEMM on raw row-major matrices, shared by the CPU kernels.
#include <cblas.h>
#include <omp.h>

#include <cstdint>

namespace siam::kernels::cpu {

// OpenMP shares out a batch of GEMMs, one whole product per thread, when there are enough of
// them to fill the threads or each is small; otherwise they run one after another, each threaded
// inside BLAS. Both at once would oversubscribe the cores.
inline bool share_gemms(int64_t count, int64_t m, int64_t n, int64_t k) {
  // OpenBLAS keeps a product of up to SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD = 64^3
  // multiply-adds on the calling thread anyway.
  bool small = double(m) * double(n) * double(k) <= 65536.0 * 4.0;
  return count > 1 && (small || count >= omp_get_max_threads());
}

// Holds (pthreads) OpenBLAS to one thread in its scope, while OpenMP threads each run a GEMM.
class BlasSingleThread {
 public:
  BlasSingleThread() : prev_(openblas_get_num_threads()) {
    if (prev_ > 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThread() {
    if (prev_ > 1) openblas_set_num_threads(prev_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int prev_;
};

// c (m, n) = alpha * op(a) (m, k) @ op(b) (k, n) + beta * c. Sizes must fit in int (callers check).
inline void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const float* a,
                      int64_t lda, const float* b, int64_t ldb, double beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), float(alpha), a, int(lda), b, int(ldb), float(beta), c, int(ldc));
}
inline void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                      int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

}  // namespace siam::kernels::cpu
