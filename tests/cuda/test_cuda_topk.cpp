// Row-wise top-k on the GPU (kernels/cuda/topk.cu) against the CPU kernel: the order is a
// strict total order (value desc, index asc, NaN as -inf), so values and indices must be
// equal to the bit, whatever the dtype, row length, k or strides.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "autograd/ops.h"
#include "kernels/precision.h"
#include "tensor/cuda_runtime.h"

using namespace siam;

namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

// (rows, n) values drawn from few distinct numbers (many ties), with some NaN and -inf.
Tensor tied(int64_t rows, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<double> v(rows * n);
  for (double& x : v) {
    const uint32_t r = rng() % 100;
    x = r == 0 ? std::nan("") : r == 1 ? -INFINITY : static_cast<double>(static_cast<int>(rng() % 37) - 18) / 8.0;
  }
  return from_vector(v, {rows, n});
}

void expect_same(const Tensor& x_cpu, int64_t k, DType dt, const std::string& what) {
  const Tensor ref_in = dt == DType::bf16 ? to(to(x_cpu, DType::bf16), DType::f32) : to(x_cpu, dt);
  auto [rv, ri] = topk(ref_in, k);
  auto [gv, gi] = topk(to(to(x_cpu, dt), Device::cuda(0)), k);
  EXPECT_EQ(to(gi, Device::cpu()).to_vector(), ri.to_vector()) << what;
  const std::vector<double> a = to(gv, Device::cpu()).to_vector(), b = rv.to_vector();
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t e = 0; e < a.size(); ++e)
    if (!(std::isnan(a[e]) && std::isnan(b[e]))) {
      EXPECT_EQ(a[e], b[e]) << what << " at " << e;
    }
}

}  // namespace

TEST(CudaTopk, EqualsTheCpuKernel) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (auto [rows, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 7, 7}, {5, 255, 11}, {17, 256, 1},
                              {9, 257, 32}, {4, 5000, 21}, {300, 1000, 10}})
      expect_same(tied(rows, n, static_cast<uint32_t>(rows * 7 + n)), k, dt,
                  std::string(dtype_name(dt)) + " " + std::to_string(rows) + " x " + std::to_string(n) + ", k " +
                      std::to_string(k));
}

TEST(CudaTopk, StridedRowsAndErrors) {
  REQUIRE_GPU();
  const Tensor x = tied(40, 30, 3);
  const Tensor xt = transpose(to(x, Device::cuda(0)), 0, 1);  // (30, 40), column-major
  auto [v, i] = topk(xt, 6);
  auto [rv, ri] = topk(transpose(x, 0, 1), 6);
  EXPECT_EQ(to(i, Device::cpu()).to_vector(), ri.to_vector());
  EXPECT_THROW(topk(to(x, Device::cuda(0)), 31), Error);
  EXPECT_THROW(topk(to(to(x, DType::i64), Device::cuda(0)), 2), Error);
}

// The nearest-neighbour search's inner step on the GPU: similarities of a block of unit
// vectors against all of them, top-k, on the device.
TEST(CudaTopk, SimilarityBlockNeighbours) {
  REQUIRE_GPU();
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  std::vector<double> f(500 * 16);
  for (double& x : f) x = normal(rng);
  const Tensor feats = normalize(from_vector(f, {500, 16}), 1);
  const Tensor dev = to(feats, Device::cuda(0));
  kernels::Tf32Guard strict(false);  // as the search runs
  auto [gv, gi] = topk(matmul(narrow(dev, 0, 100, 64), transpose(dev, 0, 1)), 11);
  auto [rv, ri] = topk(matmul(narrow(feats, 0, 100, 64), transpose(feats, 0, 1)), 11);
  const std::vector<double> a = to(gv, Device::cpu()).to_vector(), b = rv.to_vector();
  for (size_t e = 0; e < a.size(); ++e) EXPECT_NEAR(a[e], b[e], 1e-5) << e;
  // Rank 0 of query row r is its own image (similarity 1), on both devices.
  for (int64_t r = 0; r < 64; ++r) EXPECT_EQ(to(gi, Device::cpu()).at({r, 0}), 100 + r);
}
