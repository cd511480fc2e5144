// CUDA test main: registers the CUDA-vs-CPU parity tests of every op case, then runs
// GoogleTest. Every CUDA test skips with the reason where no GPU can be used.
#include <gtest/gtest.h>

namespace siam::test {
void register_cuda_op_tests();
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  siam::test::register_cuda_op_tests();
  return RUN_ALL_TESTS();
}
