// CUDA indexing kernels (kernels/cuda/index.cu) vs the CPU kernels: every dtype through the
// selecting kernels (index_select moves rows in 16-, 8-, 4-, 2- or 1-byte units depending on
// the row length: all are exercised), every dim, strided inputs, index tensors on the GPU and
// on the host; the accumulating kernels with repeated indices; and the out-of-range index
// reports (at once for host indices, through the device record for GPU ones).
//
// Tolerances: the selecting kernels are exact. The accumulating ones use atomic adds in no
// fixed order: f32 rtol/atol 1e-6 (a few repeated additions, reordered), f64 1e-14, bf16 2e-2
// (each atomic addition rounds to bf16).
#include <gtest/gtest.h>

#include "cuda/cuda_ew_util.h"
#include "kernels/cuda/index.h"
#include "kernels/index.h"
#include "test_util.h"

namespace siam::test {
namespace {

using namespace ew;

const std::vector<DType> kAll = {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8, DType::b8};

Tensor values(const Shape& s, DType dt, uint64_t seed) {
  Generator g(seed);
  return copy_to(randint(0, 100, s, g, {DType::f64}), Device::cpu(), dt);
}

Tensor indices(const std::vector<double>& v, const Shape& s) { return from_vector(v, s, {DType::i64}); }

double acc_tol(DType dt) { return dt == DType::f64 ? 1e-14 : dt == DType::f32 ? 1e-6 : 2e-2; }

TEST(CudaIndex, IndexSelectEveryDtypeDimAndUnit) {
  REQUIRE_GPU();
  Tensor idx = indices({3, 0, 3, 1, 4}, {5});
  for (DType dt : kAll)
    for (int64_t inner : {1, 2, 3, 4, 8, 16})
      for (int64_t dim : {0, 1, 2}) {
        Tensor x = values({6, 5, inner}, dt, 1);
        if (dim == 2 && inner < 5) continue;
        Tensor want = kernels::index_select(x, dim, idx);
        EXPECT_TRUE(same_bits(kernels::index_select(gpu(x), dim, gpu(idx)), want))
            << dtype_name(dt) << " inner " << inner << " dim " << dim;
        EXPECT_TRUE(same_bits(kernels::index_select(gpu(x), dim, idx), want))
            << dtype_name(dt) << " inner " << inner << " dim " << dim << " (host index)";
      }
  // Strided x and an unaligned one.
  Tensor x = values({7, 9}, DType::f32, 2);
  EXPECT_TRUE(same_bits(kernels::index_select(transpose(gpu(x), 0, 1), 1, gpu(idx)),
                        kernels::index_select(transpose(x, 0, 1), 1, idx)));
  Tensor y = values({10, 4}, DType::f32, 3);
  EXPECT_TRUE(same_bits(kernels::index_select(gpu_shifted(y, 1), 0, gpu(idx)), kernels::index_select(y, 0, idx)));
}

TEST(CudaIndex, IndexAddWithRepeatedIndices) {
  REQUIRE_GPU();
  Tensor idx = indices({2, 0, 2, 2, 5, 0, 1}, {7});
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (int64_t dim : {0, 1, 2}) {
      Shape ds = {6, 6, 6}, ss = ds;
      ss[dim] = 7;
      Tensor dst = host_randn(ds, dt, 1), src = host_randn(ss, dt, 2);
      Tensor want = copy_to(dst, Device::cpu(), dt == DType::bf16 ? DType::f32 : dt);
      kernels::index_add_(want, dim, idx, copy_to(src, Device::cpu(), want.dtype()));
      Tensor got = gpu(dst);
      kernels::index_add_(got, dim, gpu(idx), gpu(src));
      EXPECT_TRUE(near(got, want, acc_tol(dt), acc_tol(dt))) << dtype_name(dt) << " dim " << dim;
    }
  // A large one: many source rows onto few destination rows.
  Generator g(3);
  Tensor many = randint(0, 10, {20000}, g, {DType::i64});
  Tensor src = host_randn({20000, 33}, DType::f32, 4);
  Tensor want = zeros({10, 33});
  kernels::index_add_(want, 0, many, src);
  Tensor got = zeros({10, 33}, {DType::f32, kGpu});
  kernels::index_add_(got, 0, gpu(many), transpose(gpu(contiguous(transpose(src, 0, 1))), 0, 1));  // strided src
  EXPECT_TRUE(near(got, want, 1e-5, 1e-4));
}

TEST(CudaIndex, GatherEveryDtypeAndDim) {
  REQUIRE_GPU();
  for (DType dt : kAll)
    for (int64_t dim : {0, 1, 2}) {
      Tensor x = values({5, 6, 7}, dt, 5);
      Shape is = {4, 5, 3};
      Generator g(dim);
      Tensor idx = randint(0, x.shape()[dim], is, g, {DType::i64});
      Tensor want = kernels::gather(x, dim, idx);
      EXPECT_TRUE(same_bits(kernels::gather(gpu(x), dim, gpu(idx)), want)) << dtype_name(dt) << " dim " << dim;
      // Strided x (a permuted view) and a strided index.
      Tensor xp = permute(values({7, 5, 6}, dt, 6), {1, 2, 0});
      Tensor xpg = permute(gpu(values({7, 5, 6}, dt, 6)), {1, 2, 0});
      Tensor ib = randint(0, x.shape()[dim], {3, 5, 4}, g, {DType::i64});
      EXPECT_TRUE(same_bits(kernels::gather(xpg, dim, transpose(gpu(ib), 0, 2)), kernels::gather(xp, dim, transpose(ib, 0, 2))))
          << dtype_name(dt) << " dim " << dim << " (strided)";
    }
}

TEST(CudaIndex, ScatterAddWithCollisions) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (int64_t dim : {0, 1, 2}) {
      Shape ds = {5, 6, 7}, is = {4, 6, 3};
      Generator g(dim + 10);
      Tensor idx = randint(0, ds[dim], is, g, {DType::i64});
      Tensor dst = host_randn(ds, dt, 1), src = host_randn(is, dt, 2);
      DType rd = dt == DType::bf16 ? DType::f32 : dt;
      Tensor want = copy_to(dst, Device::cpu(), rd);
      kernels::scatter_add_(want, dim, idx, copy_to(src, Device::cpu(), rd));
      Tensor got = gpu(dst);
      kernels::scatter_add_(got, dim, gpu(idx), transpose(gpu(contiguous(transpose(src, 0, 2))), 0, 2));
      EXPECT_TRUE(near(got, want, acc_tol(dt), acc_tol(dt))) << dtype_name(dt) << " dim " << dim;
    }
}

TEST(CudaIndex, HostIndexOutOfRangeThrowsAtOnce) {
  REQUIRE_GPU();
  Tensor x = gpu(values({10, 3}, DType::f32, 1));
  expect_error([&] { kernels::index_select(x, 0, indices({0, 5, 10}, {3})); },
               "index_select: index 10 (element 2 of the index) is out of range for dimension 0 of size 10");
  expect_error([&] { kernels::gather(x, 1, indices({0, 3}, {1, 2})); },
               "gather: index 3 (element 1 of the index) is out of range for dimension 1 of size 3");
}

TEST(CudaIndex, DeviceIndexOutOfRangeIsReportedLater) {
  REQUIRE_GPU();
#ifndef SIAM_HAS_CUDA
  // REQUIRE_GPU skips first in a build without CUDA; gpu::check_index_errors exists only with it.
}
#else
  gpu::check_index_errors(0);  // nothing pending from earlier tests
  Tensor xh = values({10, 3}, DType::f32, 1);
  Tensor x = gpu(xh);
  Tensor good = gpu(indices({1, 2}, {2}));

  // index_select: the bad row reads as zeros, the others are right; check_index_errors reports.
  Tensor out = kernels::index_select(x, 0, gpu(indices({4, 10, 0}, {3})));
  expect_error([] { gpu::check_index_errors(0); },
               "index_select: index 10 (element 1 of the index) is out of range for dimension 0 of size 10");
  std::vector<double> o = out.to_vector(), xv = xh.to_vector();
  EXPECT_EQ(std::vector<double>(o.begin(), o.begin() + 3), std::vector<double>(xv.begin() + 12, xv.begin() + 15));
  EXPECT_EQ(std::vector<double>(o.begin() + 3, o.begin() + 6), std::vector<double>(3, 0.0));
  EXPECT_EQ(std::vector<double>(o.begin() + 6, o.end()), std::vector<double>(xv.begin(), xv.begin() + 3));
  // Re-armed after the report.
  kernels::index_select(x, 0, good);
  EXPECT_NO_THROW(gpu::check_index_errors(0));

  // gather's bad index is reported by the next index op.
  kernels::gather(x, 1, gpu(indices({0, -1}, {1, 2})));
  cuda::synchronize(0);
  expect_error([&] { kernels::index_select(x, 0, good); },
               "gather: index -1 (element 1 of the index) is out of range for dimension 1 of size 3");
  EXPECT_NO_THROW(gpu::check_index_errors(0));

  // The accumulating kernels drop the bad addition and keep the others.
  Tensor dst = zeros({4, 2}, {DType::f32, kGpu});
  kernels::index_add_(dst, 0, gpu(indices({1, 7}, {2})), ones({2, 2}, {DType::f32, kGpu}));
  expect_error([] { gpu::check_index_errors(0); }, "index_add_: index 7 (element 1 of the index)");
  EXPECT_EQ(dst.to_vector(), (std::vector<double>{0, 0, 1, 1, 0, 0, 0, 0}));
  Tensor dst2 = zeros({3, 2}, {DType::f64, kGpu});
  kernels::scatter_add_(dst2, 0, gpu(indices({2, 3}, {1, 2})), ones({1, 2}, {DType::f64, kGpu}));
  expect_error([] { gpu::check_index_errors(0); }, "scatter_add_: index 3 (element 1 of the index)");
  EXPECT_EQ(dst2.to_vector(), (std::vector<double>{0, 0, 0, 0, 1, 0}));
}
#endif

}  // namespace
}  // namespace siam::test
