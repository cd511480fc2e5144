// Tensor layer: factories, views, copies across dtypes, printing, Philox RNG.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <cmath>

#include "autograd/ops.h"
#include "tensor/cuda_runtime.h"

using namespace siam;

TEST(Tensor, FactoriesShapesAndStrides) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (Shape{3, 1}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::f32);
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(z.raw_data()) % 64, 0u) << "host storage is 64-byte aligned";
  EXPECT_EQ(ones({4}, {DType::i64}).to_vector(), (std::vector<double>{1, 1, 1, 1}));
  EXPECT_EQ(full({2}, 2.5, {DType::f64}).to_vector(), (std::vector<double>{2.5, 2.5}));
  EXPECT_EQ(arange(0, 5, 2).to_vector(), (std::vector<double>{0, 2, 4}));
  EXPECT_EQ(linspace(0, 1, 5).to_vector(), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(eye(2).to_vector(), (std::vector<double>{1, 0, 0, 1}));
  EXPECT_EQ(scalar_tensor(3).dim(), 0);
  EXPECT_EQ(scalar_tensor(3).item(), 3);
  EXPECT_THROW(empty({2, -1}), Error);
  EXPECT_THROW(from_vector({1, 2, 3}, {2, 2}), Error);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor a = reshape(arange(0, 24), {2, 3, 4});
  Tensor p = permute(a, {2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.strides(), (Shape{1, 12, 4}));
  EXPECT_EQ(p.at({3, 1, 2}), a.at({1, 2, 3}));
  Tensor s = slice(a, 2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.at({1, 2, 1}), 23);
  Tensor sel = select(a, 0, 1);
  EXPECT_EQ(sel.shape(), (Shape{3, 4}));
  EXPECT_EQ(sel.at({0, 0}), 12);
  fill_(sel, -1);  // writes through to a
  EXPECT_EQ(a.at({1, 2, 3}), -1);
  EXPECT_EQ(a.at({0, 2, 3}), 11);
  Tensor e = expand(reshape(arange(0, 3), {3, 1}), {2, 3, 4});
  EXPECT_EQ(e.strides(), (Shape{0, 1, 0}));
  EXPECT_EQ(e.at({1, 2, 3}), 2);
  EXPECT_EQ(flatten(a, 1).shape(), (Shape{2, 12}));
  EXPECT_EQ(unsqueeze(a, -1).shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ(squeeze(unsqueeze(a, 1), 1).shape(), a.shape());
  EXPECT_EQ(narrow(a, 1, 1, 2).shape(), (Shape{2, 2, 4}));
}

TEST(Tensor, ViewOfNonContiguousNeedsCopyOrStrides) {
  Tensor t = transpose(reshape(arange(0, 6), {2, 3}), 0, 1);  // (3, 2), not contiguous
  EXPECT_THROW(view(t, {6}), Error);
  Tensor r = reshape(t, {6});  // copies
  EXPECT_EQ(r.to_vector(), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  // Splitting a dimension of a permuted tensor is possible without a copy.
  Tensor v = view(t, {3, 2, 1});
  EXPECT_EQ(v.at({2, 1, 0}), 5);
  EXPECT_THROW(reshape(t, {4}), Error);
  EXPECT_EQ(reshape(t, {-1, 3}).shape(), (Shape{2, 3}));
}

TEST(Tensor, DTypeConversionsAndBf16Rounding) {
  Tensor f = from_vector({1.5, -2.25, 3.0e10, 0.1}, {4});
  Tensor d = to(f, DType::f64);
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_EQ(d.at({1}), -2.25);
  Tensor i = to(f, DType::i32);
  EXPECT_EQ(i.at({0}), 1);
  // bf16 keeps 8 bits of mantissa, rounding to nearest even.
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 1.0f / 256)), 1.0f);            // tie -> even
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);  // tie -> even (up)
  EXPECT_EQ(static_cast<float>(bf16(1.0f + 1.5f / 256)), 1.0f + 2.0f / 256);
  EXPECT_TRUE(std::isnan(static_cast<float>(bf16(NAN))));
  Tensor b = to(f, DType::bf16);
  EXPECT_EQ(b.nbytes(), 8u);
  EXPECT_NEAR(b.at({3}), 0.1, 0.1 / 128);
  EXPECT_EQ(dtype_from_name("bf16"), DType::bf16);
  EXPECT_THROW(dtype_from_name("f16"), Error);
}

TEST(Tensor, PrintingIsAbridged) {
  std::string s = reshape(arange(0, 100), {10, 10}).str();
  EXPECT_NE(s.find("shape=[10, 10]"), std::string::npos);
  EXPECT_NE(s.find("dtype=f32"), std::string::npos);
  EXPECT_NE(s.find("..."), std::string::npos);
  EXPECT_NE(s.find("99"), std::string::npos);
  EXPECT_EQ(s.find("55"), std::string::npos);
}

TEST(Tensor, DeviceParsingAndCudaAbsence) {
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_THROW(Device::parse("gpu"), Error);
  if (!cuda::available()) {
    try {
      empty({2}, {DType::f32, Device::cuda(0)});
      FAIL() << "allocating on cuda without a GPU must throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    }
  }
}

// Known-answer vectors of Philox 4x32-10 (Salmon et al., Random123).
TEST(Rng, PhiloxKnownAnswers) {
  uint32_t a[4] = {0, 0, 0, 0};
  philox4x32(a, 0, 0);
  EXPECT_EQ(a[0], 0x6627e8d5u);
  EXPECT_EQ(a[3], 0x9b00dbd8u);
  uint32_t b[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
  philox4x32(b, 0xffffffffu, 0xffffffffu);
  EXPECT_EQ(b[0], 0x408f276du);
  EXPECT_EQ(b[3], 0x6d5451fdu);
  uint32_t c[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
  philox4x32(c, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(c[0], 0xd16cfe09u);
  EXPECT_EQ(c[1], 0x94fdccebu);
  EXPECT_EQ(c[2], 0x5001e420u);
  EXPECT_EQ(c[3], 0x24126ea1u);
}

// The same words tools/reference/philox.py prints for words(1234, 7, 6).
TEST(Rng, StreamMatchesPythonTwin) {
  const uint32_t want[6] = {3004048045u, 1857369626u, 2455716119u, 2253468414u, 2338637008u, 905306810u};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(philox_word(1234, 7, i), want[i]) << "word " << i;
  EXPECT_FLOAT_EQ(philox_uniform(1234, 7, 0), 0.6994344f);
}

TEST(Rng, GeneratorsAreDeterministicAndDistributed) {
  Generator g1(42), g2(42);
  EXPECT_EQ(rand({5}, g1).to_vector(), rand({5}, g2).to_vector());
  EXPECT_EQ(g1.offset(), 2u) << "5 words take 2 counter blocks";
  Tensor n = randn({20000}, g1);
  std::vector<double> v = n.to_vector();
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= v.size();
  for (double x : v) s += (x - m) * (x - m);
  s = std::sqrt(s / v.size());
  EXPECT_NEAR(m, 0, 0.03);
  EXPECT_NEAR(s, 1, 0.03);
  Tensor p = randperm(10, g1);
  std::vector<double> pv = p.to_vector();
  std::sort(pv.begin(), pv.end());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(pv[i], i);
  Tensor r = randint(3, 7, {1000}, g1);
  for (double x : r.to_vector()) EXPECT_TRUE(x >= 3 && x < 7);
  EXPECT_THROW(randint(3, 3, {1}, g1), Error);
}
