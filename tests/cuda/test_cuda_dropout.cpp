// CUDA dropout and drop-path (kernels/cuda/dropout.cu) vs the CPU kernels: the same masks and
// the same output bits for the same (seed, offset), at sizes around the four-words-per-Philox-
// block grouping (1, 3, 4, 5, 7, ...), with offsets past 2^32 (the counter's high word), for
// every p from 0 to 1, on contiguous, strided and unaligned inputs.
//
// Exact: the keep decision is the same Philox word compared with p in double, and a kept value
// is x * scale in the tensor's type on both sides (bf16: f32 product rounded once, as the
// reference's f32 product converted to bf16).
#include <gtest/gtest.h>

#include "cuda/cuda_ew_util.h"
#include "kernels/dropout.h"

namespace siam::test {
namespace {

using namespace ew;

struct SeedOffset {
  uint64_t seed, offset;
};
const std::vector<SeedOffset> kStreams = {{0, 0}, {12345, 7}, {0xDEADBEEFCAFEull, (uint64_t(1) << 32) + 5}};
const std::vector<double> kP = {0.0, 0.1, 0.5, 0.9, 1.0};

TEST(CudaDropout, SameBitsAsCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t n : {1, 3, 4, 5, 7, 8, 1000, 4099})
      for (double p : kP)
        for (const SeedOffset& s : kStreams) {
          Tensor x = host_randn({n}, dt, 100 + n);
          Tensor want = kernels::dropout(x, p, s.seed, s.offset);
          Tensor got = kernels::dropout(gpu(x), p, s.seed, s.offset);
          ASSERT_TRUE(got.device().is_cuda());
          EXPECT_TRUE(same_bits(got, want)) << dtype_name(dt) << " n=" << n << " p=" << p << " seed=" << s.seed
                                            << " offset=" << s.offset;
        }
}

TEST(CudaDropout, LargeAndMultiDim) {
  REQUIRE_GPU();
  for (const Shape& shape : std::vector<Shape>{{(1 << 20) + 3}, {8, 197, 384}, {3, 5, 7}})
    for (double p : {0.1, 0.5})
      for (const SeedOffset& s : kStreams) {
        Tensor x = host_randn(shape, DType::f32, 7);
        EXPECT_TRUE(same_bits(kernels::dropout(gpu(x), p, s.seed, s.offset), kernels::dropout(x, p, s.seed, s.offset)))
            << shape_str(shape) << " p=" << p << " offset=" << s.offset;
      }
}

TEST(CudaDropout, StridedAndUnalignedInputs) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = host_randn({61, 45}, dt, 3);
    // The mask follows the output's row-major index, whatever the input's strides.
    EXPECT_TRUE(same_bits(kernels::dropout(transpose(gpu(x), 0, 1), 0.3, 9, 1),
                          kernels::dropout(transpose(x, 0, 1), 0.3, 9, 1)))
        << dtype_name(dt);
    Tensor y = host_randn({4099}, dt, 4);
    for (int64_t shift : {1, 2, 3})
      EXPECT_TRUE(same_bits(kernels::dropout(gpu_shifted(y, shift), 0.4, 11, (uint64_t(1) << 32) - 1),
                            kernels::dropout(y, 0.4, 11, (uint64_t(1) << 32) - 1)))
          << dtype_name(dt) << " shift " << shift;
  }
}

TEST(CudaDropout, Bf16MatchesTheF32ReferenceRounded) {
  REQUIRE_GPU();
  for (int64_t n : {5, 4099, (1 << 16) + 1})
    for (double p : {0.0, 0.25, 1.0}) {
      Tensor x = host_randn({n}, DType::bf16, 5);
      Tensor want = copy_to(kernels::dropout(copy_to(x, Device::cpu(), DType::f32), p, 3, 17), Device::cpu(), DType::bf16);
      EXPECT_TRUE(same_bits(kernels::dropout(gpu(x), p, 3, 17), want)) << "n=" << n << " p=" << p;
    }
}

TEST(CudaDropPath, SameBitsAsCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64})
    for (const Shape& shape : std::vector<Shape>{{1, 5}, {7, 3, 4}, {64, 197, 24}, {5}})
      for (double p : kP)
        for (const SeedOffset& s : kStreams) {
          Tensor x = host_randn(shape, dt, 9);
          EXPECT_TRUE(same_bits(kernels::drop_path(gpu(x), p, s.seed, s.offset),
                                kernels::drop_path(x, p, s.seed, s.offset)))
              << dtype_name(dt) << " " << shape_str(shape) << " p=" << p << " offset=" << s.offset;
        }
  // Strided input.
  Tensor x = host_randn({6, 10, 8}, DType::f32, 10);
  EXPECT_TRUE(same_bits(kernels::drop_path(permute(gpu(x), {0, 2, 1}), 0.5, 1, 2),
                        kernels::drop_path(permute(x, {0, 2, 1}), 0.5, 1, 2)));
  // bf16 against the f32 reference, rounded.
  Tensor xb = host_randn({16, 7, 5}, DType::bf16, 11);
  Tensor want = copy_to(kernels::drop_path(copy_to(xb, Device::cpu(), DType::f32), 0.5, 4, 4), Device::cpu(), DType::bf16);
  EXPECT_TRUE(same_bits(kernels::drop_path(gpu(xb), 0.5, 4, 4), want));
}

}  // namespace
}  // namespace siam::test
