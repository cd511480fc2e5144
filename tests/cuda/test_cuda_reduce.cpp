// CUDA reductions (kernels/cuda/reduce.cu) vs the CPU kernels: every subset of dims of 4-D
// tensors, contiguous and permuted (which selects the thread / rows / cols / copy-first
// strategies), keepdim on and off; rows long enough to be split over blocks (64M elements to a
// scalar); argmax ties and NaN resolved as the CPU's sequential scan resolves them; bit-
// identical results from run to run.
//
// Tolerances. The CPU sums in double; the GPU in f32 (f32, bf16) or f64 along fixed trees, so
// the error is bounded by a few ulps of the sum of magnitudes: |got - want| <= 1e-5 sum|x| for
// f32 (a thread adds at most ~1000 values in sequence: ~1000 * 6e-8 worst case, far less in
// practice), 1e-13 sum|x| for f64. bf16 outputs add one rounding: 8e-3 relative. max is exact.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "cuda/cuda_ew_util.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace siam::test {
namespace {

using namespace ew;

// The reference sum in f64 and the sum of magnitudes, which bounds the rounding error.
struct SumRef {
  Tensor sum, abs_sum;
};
SumRef sum_ref(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Tensor x64 = copy_to(x, Device::cpu(), DType::f64);
  return {kernels::sum(x64, dims, keepdim), kernels::sum(kernels::unary(kernels::Unary::abs, x64), dims, keepdim)};
}

// |got - want| <= rel * abs_sum + 1e-30 elementwise.
::testing::AssertionResult sum_close(const Tensor& got, const SumRef& ref, double rel) {
  if (got.shape() != ref.sum.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.shape()) << ", expected "
                                         << shape_str(ref.sum.shape());
  std::vector<double> g = got.to_vector(), w = ref.sum.to_vector(), a = ref.abs_sum.to_vector();
  for (size_t i = 0; i < g.size(); ++i)
    if (!(std::fabs(g[i] - w[i]) <= rel * a[i] + 1e-30))
      return ::testing::AssertionFailure() << "element " << i << ": got " << g[i] << ", expected " << w[i]
                                           << " (sum of magnitudes " << a[i] << ", allowed " << rel * a[i] << ")";
  return ::testing::AssertionSuccess();
}

double sum_rel(DType dt) { return dt == DType::f64 ? 1e-13 : dt == DType::f32 ? 1e-5 : 8e-3; }

std::vector<std::vector<int64_t>> all_subsets(int nd) {
  std::vector<std::vector<int64_t>> r;
  for (int mask = 0; mask < (1 << nd); ++mask) {
    std::vector<int64_t> d;
    for (int k = 0; k < nd; ++k)
      if (mask & (1 << k)) d.push_back(k);
    r.push_back(d);  // mask 0: the empty list, which means every dim
  }
  return r;
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < d.size(); ++i) os << (i ? "," : "") << d[i];
  os << "}";
  return os.str();
}

TEST(CudaReduce, SumEveryDimPatternOf4D) {
  REQUIRE_GPU();
  const std::vector<Shape> shapes = {{3, 5, 7, 9}, {4, 64, 28, 28}, {2, 3, 1, 4099}, {1, 1, 1, 1}};
  const std::vector<std::vector<int64_t>> perms = {{0, 1, 2, 3}, {0, 2, 3, 1}, {3, 1, 0, 2}};
  for (DType dt : {DType::f32, DType::f64, DType::bf16})
    for (const Shape& s : shapes)
      for (const auto& perm : perms) {
        // Permuted views of a contiguous tensor: channels-last-like and scrambled layouts.
        Shape base_shape(4);
        for (int k = 0; k < 4; ++k) base_shape[perm[k]] = s[k];
        Tensor base = host_randn(base_shape, dt, 7);
        std::vector<int64_t> inv(4);
        for (int k = 0; k < 4; ++k) inv[perm[k]] = k;
        Tensor x = permute(base, inv);  // shape s
        Tensor xg = permute(gpu(base), inv);
        ASSERT_EQ(x.shape(), s);
        for (const auto& dims : all_subsets(4))
          for (bool keepdim : {false, true}) {
            Tensor got = kernels::sum(xg, dims, keepdim);
            ASSERT_TRUE(got.device().is_cuda());
            ASSERT_EQ(got.dtype(), dt);
            EXPECT_TRUE(sum_close(got, sum_ref(x, dims, keepdim), sum_rel(dt)))
                << dtype_name(dt) << " shape " << shape_str(s) << " perm " << dims_str(perm) << " dims "
                << dims_str(dims) << " keepdim " << keepdim;
          }
      }
}

TEST(CudaReduce, SumBnStyleAndColumnReductions) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    // NCHW over (N, H, W): rows of H*W split over blocks; NHWC over (N, H, W): columns.
    Tensor x = host_randn({32, 64, 56, 56}, dt, 1);
    EXPECT_TRUE(sum_close(kernels::sum(gpu(x), {0, 2, 3}, false), sum_ref(x, {0, 2, 3}, false), sum_rel(dt)));
    Tensor nhwc = host_randn({32, 28, 28, 64}, dt, 2);
    EXPECT_TRUE(sum_close(kernels::sum(gpu(nhwc), {0, 1, 2}, true), sum_ref(nhwc, {0, 1, 2}, true), sum_rel(dt)));
    // Few, short columns over many rows: (N, 3) over N.
    Tensor thin = host_randn({300000, 3}, dt, 3);
    EXPECT_TRUE(sum_close(kernels::sum(gpu(thin), {0}, false), sum_ref(thin, {0}, false), sum_rel(dt)));
    // Many short rows.
    Tensor rows = host_randn({100000, 37}, dt, 4);
    EXPECT_TRUE(sum_close(kernels::sum(gpu(rows), {1}, false), sum_ref(rows, {1}, false), sum_rel(dt)));
  }
}

TEST(CudaReduce, SumOf64MElementsToAScalar) {
  REQUIRE_GPU();
  const int64_t n = int64_t(1) << 26;
  // All ones: every partial is an integer below 2^24, so the f32 tree is exact.
  Tensor ones_gpu = ones({n}, {DType::f32, kGpu});
  EXPECT_EQ(kernels::sum(ones_gpu, {}, false).item(), static_cast<double>(n));
  EXPECT_EQ(kernels::sum(ones({n}, {DType::bf16, kGpu}), {}, false).item(), static_cast<double>(n));
  Generator g(5);
  Tensor x = rand({n}, g, {DType::f32});
  Tensor xg = gpu(x);
  Tensor got = kernels::sum(xg, {}, false);
  EXPECT_TRUE(sum_close(got, sum_ref(x, {}, false), 1e-5));
  // Deterministic: the same bits every time.
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(same_bits(kernels::sum(xg, {}, false), got)) << "run " << k;
  // Two long rows and a 2-D view that reduces across the split.
  Tensor x2 = reshape(xg, {2, n / 2});
  EXPECT_TRUE(sum_close(kernels::sum(x2, {1}, false), sum_ref(reshape(x, {2, n / 2}), {1}, false), 1e-5));
}

TEST(CudaReduce, SumOfEmptyIsZero) {
  REQUIRE_GPU();
  Tensor x = zeros({3, 0, 4}, {DType::f32, kGpu});
  Tensor s = kernels::sum(x, {1}, false);
  ASSERT_EQ(s.shape(), (Shape{3, 4}));
  EXPECT_EQ(s.to_vector(), std::vector<double>(12, 0.0));
  EXPECT_EQ(kernels::sum(x, {0}, true).numel(), 0);
}

// Values from a small set so that maxima repeat, with NaN at chosen places.
Tensor tie_heavy(const Shape& s, DType dt, uint64_t seed) {
  Generator g(seed);
  Tensor v = copy_to(randint(-2, 3, s, g, {DType::f64}), Device::cpu(), DType::f64);
  return copy_to(v, Device::cpu(), dt);
}

::testing::AssertionResult same_max(const std::pair<Tensor, Tensor>& got, const std::pair<Tensor, Tensor>& want) {
  auto gi = got.second.to_vector(), wi = want.second.to_vector();
  if (got.second.shape() != want.second.shape() || got.first.shape() != want.first.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.first.shape()) << ", expected "
                                         << shape_str(want.first.shape());
  if (got.second.dtype() != DType::i64) return ::testing::AssertionFailure() << "indices are not i64";
  auto gv = got.first.to_vector(), wv = want.first.to_vector();
  for (size_t i = 0; i < gi.size(); ++i) {
    bool same_value = (std::isnan(gv[i]) && std::isnan(wv[i])) || gv[i] == wv[i];
    if (gi[i] != wi[i] || !same_value)
      return ::testing::AssertionFailure() << "output " << i << ": got (" << gv[i] << ", index " << gi[i]
                                           << "), expected (" << wv[i] << ", index " << wi[i] << ")";
  }
  return ::testing::AssertionSuccess();
}

TEST(CudaReduce, MaxTiesAndNanAsOnTheCpu) {
  REQUIRE_GPU();
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    // Hand-made rows: ties, NaN first (wins), NaN later (ignored), all -inf, -0 vs 0.
    Tensor h = copy_to(from_vector({1, 3, 3, 2,  nan, 5, 1, 5,  2, nan, 7, 7,  -inf, -inf, -inf, -inf,  -0.0, 0.0, -0.0, 0.0},
                                   {5, 4}, {DType::f64}),
                       Device::cpu(), dt);
    Tensor hf = dt == DType::bf16 ? copy_to(h, Device::cpu(), DType::f32) : h;
    EXPECT_TRUE(same_max(kernels::max(gpu(h), 1, false), kernels::max(hf, 1, false))) << dtype_name(dt);
    EXPECT_TRUE(same_max(kernels::max(gpu(h), 0, true), kernels::max(hf, 0, true))) << dtype_name(dt);
    // Every dim of 4-D tensors, contiguous and permuted.
    Tensor x = tie_heavy({6, 5, 70, 9}, dt, 3);
    Tensor xf = dt == DType::bf16 ? copy_to(x, Device::cpu(), DType::f32) : x;
    for (int64_t d = 0; d < 4; ++d)
      for (bool keepdim : {false, true}) {
        EXPECT_TRUE(same_max(kernels::max(gpu(x), d, keepdim), kernels::max(xf, d, keepdim)))
            << dtype_name(dt) << " dim " << d << " keepdim " << keepdim;
        Tensor p = permute(gpu(x), {2, 0, 3, 1}), pf = permute(xf, {2, 0, 3, 1});
        EXPECT_TRUE(same_max(kernels::max(p, d, keepdim), kernels::max(pf, d, keepdim)))
            << dtype_name(dt) << " permuted, dim " << d << " keepdim " << keepdim;
      }
  }
}

TEST(CudaReduce, MaxLongRowsSplitAcrossBlocksKeepsTheFirstIndex) {
  REQUIRE_GPU();
  // Rows of 300000 (split into chunks): the maximum appears in several chunks; columns of
  // 300000 likewise.
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = tie_heavy({3, 300000}, dt, 9);
    Tensor xd = copy_to(x, Device::cpu(), DType::f64);
    double* p = xd.data<double>();
    p[0 * 300000 + 250000] = 9;
    p[0 * 300000 + 270000] = 9;
    p[1 * 300000 + 123] = 9;
    p[1 * 300000 + 299999] = 9;
    p[2 * 300000 + 0] = std::numeric_limits<double>::quiet_NaN();
    x = copy_to(xd, Device::cpu(), dt);
    EXPECT_TRUE(same_max(kernels::max(gpu(x), 1, false), kernels::max(x, 1, false))) << dtype_name(dt);
    Tensor xt = transpose(x, 0, 1);  // (300000, 3): a column reduction over dim 0
    EXPECT_TRUE(same_max(kernels::max(transpose(gpu(x), 0, 1), 0, true), kernels::max(xt, 0, true)))
        << dtype_name(dt);
    Tensor c = contiguous(xt);
    EXPECT_TRUE(same_max(kernels::max(gpu(c), 0, false), kernels::max(c, 0, false))) << dtype_name(dt);
  }
}

TEST(CudaReduce, MaxRejectsAnEmptyDim) {
  REQUIRE_GPU();
  EXPECT_THROW(kernels::max(zeros({3, 0}, {DType::f32, kGpu}), 1, false), Error);
}

}  // namespace
}  // namespace siam::test
