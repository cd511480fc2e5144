// Device storage: allocation from the stream-ordered pool and host<->device copies.
// Skips with the reason where no GPU can be used.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "tensor/cuda_runtime.h"

using namespace siam;

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

TEST(CudaStorage, RoundTripAllDtypes) {
  REQUIRE_GPU();
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8}) {
    Tensor h = to(reshape(arange(0, 12), {3, 4}), t);
    Tensor d = to(h, Device::cuda(0));
    EXPECT_TRUE(d.device().is_cuda());
    Tensor back = to(d, Device::cpu());
    EXPECT_EQ(back.to_vector(), h.to_vector()) << dtype_name(t);
  }
}

TEST(CudaStorage, StridedAndConvertingCopies) {
  REQUIRE_GPU();
  Tensor h = transpose(reshape(arange(0, 6), {2, 3}), 0, 1);
  Tensor d = empty({3, 2}, {DType::f64, Device::cuda(0)});
  copy_(d, h);  // strided f32 host -> contiguous f64 device
  EXPECT_EQ(d.to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  Tensor d2 = copy_to(d, Device::cuda(0), DType::f64);  // device -> device
  EXPECT_EQ(d2.to_vector(), d.to_vector());
  fill_(d2, 2.5);
  EXPECT_EQ(d2.to_vector(), std::vector<double>(6, 2.5));
}

TEST(CudaStorage, PoolTracksAndReusesMemory) {
  REQUIRE_GPU();
  size_t before = cuda::pool_bytes_in_use(0);
  {
    Tensor big = empty({1 << 20}, {DType::f32, Device::cuda(0)});
    cuda::synchronize(0);
    EXPECT_GE(cuda::pool_bytes_in_use(0), before + (4u << 20));
  }
  cuda::synchronize(0);
  EXPECT_LE(cuda::pool_bytes_in_use(0), before + 4096);
  auto devs = cuda::devices();
  ASSERT_FALSE(devs.empty());
  EXPECT_GT(devs[0].total_memory, 0u);
}

TEST(CudaStorage, ReportsWhyNoGpu) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present";
  EXPECT_FALSE(cuda::unavailable_reason().empty());
  EXPECT_THROW(empty({2}, {DType::f32, Device::cuda(0)}), Error);
}
