#include <gtest/gtest.h>

#include "autograd/ops.h"

using namespace siam;

TEST(Tensor, FactoriesAndViews) {
  Tensor a = arange(0, 6).impl_ptr() ? reshape(arange(0, 6), {2, 3}) : Tensor();
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_TRUE(a.is_contiguous());
  Tensor t = transpose(a, 0, 1);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.at({2, 1}), 5);
  Tensor c = contiguous(t);
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
}
