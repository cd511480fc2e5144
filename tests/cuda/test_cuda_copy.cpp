// Device copies and fills (kernels/cuda/copy.cu, reached through copy_ / fill_ / copy_to /
// contiguous / to in tensor/tensor.cpp) vs the same operations on the CPU: every one of the
// 49 dtype pairs, from strided sources into contiguous and non-contiguous destinations
// (including windows of a larger buffer, whose other elements must not change), transposes
// and permutes (the tiled path), expanded sources, host <-> device copies that convert or
// scatter on the device side, and fills of every dtype.
//
// Everything is exact: conversions go through double as on the host, bf16 rounds to nearest
// even with the same integer routine. NaNs compare equal to NaNs whatever their payload bits
// (the GPU's f64 <-> f32 conversions make canonical NaNs, the host's keep the payload).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cuda/cuda_ew_util.h"

namespace siam::test {
namespace {

using namespace ew;

const std::vector<DType> kAll = {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8, DType::b8};

// Equal values (NaN matches NaN, -0 differs from +0), shapes and dtypes.
::testing::AssertionResult same_values(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape() || got.dtype() != want.dtype())
    return ::testing::AssertionFailure() << "got " << shape_str(got.shape()) << " " << dtype_name(got.dtype())
                                         << ", expected " << shape_str(want.shape()) << " " << dtype_name(want.dtype());
  std::vector<double> g = got.to_vector(), w = want.to_vector();
  for (size_t i = 0; i < g.size(); ++i) {
    bool ok = (std::isnan(g[i]) && std::isnan(w[i])) || (g[i] == w[i] && std::signbit(g[i]) == std::signbit(w[i]));
    if (!ok)
      return ::testing::AssertionFailure() << "element " << i << ": got " << g[i] << ", expected " << w[i] << " ("
                                           << dtype_name(want.dtype()) << ", shape " << shape_str(want.shape()) << ")";
  }
  return ::testing::AssertionSuccess();
}

// Values every pair can convert without undefined behaviour: for float -> float pairs the
// special values (NaN, infinities, -0, bf16 rounding ties, subnormals, overflow to f32); for
// pairs with an integer or bool side, values in [0, 200] with fractions.
std::vector<double> values_for(DType dst, DType src, int64_t n) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  std::vector<double> special;
  if (is_floating(dst) && is_floating(src))
    special = {nan, inf, -inf, -0.0, 0.0, 1.0 + 1.0 / 256, 1.0 + 3.0 / 256, -(1.0 + 1.0 / 256), 1e-40, -3e-39,
               3.0e38, 1e300, -1e300, 1.0 / 3, 65504.0, 3.3895e38};
  else
    special = {0, 1, 2, 3, 7, 100, 127, 128, 200, 0.5, 1.5, 2.5, 199.7, 0.999};
  std::vector<double> v(n);
  Generator g(n);
  Tensor r = rand({n}, g, {DType::f64});
  for (int64_t i = 0; i < n; ++i)
    v[i] = i < static_cast<int64_t>(special.size()) ? special[i] : std::floor(r.data<double>()[i] * 2000) / 10;
  return v;
}

Tensor host_values(const Shape& s, DType dt, DType other) {
  return copy_to(from_vector(values_for(other, dt, shape_numel(s)), s, {DType::f64}), Device::cpu(), dt);
}

TEST(CudaCopy, EveryDtypePairFromStridedSource) {
  REQUIRE_GPU();
  for (DType dd : kAll)
    for (DType sd : kAll) {
      Tensor src = host_values({13, 17}, sd, dd);
      Tensor src_t = transpose(src, 0, 1);  // (17, 13), strided
      Tensor want = empty({17, 13}, {dd});
      copy_(want, src_t);
      Tensor got = empty({17, 13}, {dd, kGpu});
      copy_(got, transpose(gpu(src), 0, 1));
      EXPECT_TRUE(same_values(got, want)) << dtype_name(sd) << " -> " << dtype_name(dd) << " (strided source)";
      // Contiguous source, converting.
      Tensor want_c = empty({13, 17}, {dd});
      copy_(want_c, src);
      Tensor got_c = empty({13, 17}, {dd, kGpu});
      copy_(got_c, gpu(src));
      EXPECT_TRUE(same_values(got_c, want_c)) << dtype_name(sd) << " -> " << dtype_name(dd) << " (contiguous)";
    }
}

TEST(CudaCopy, EveryDtypePairIntoNonContiguousWindow) {
  REQUIRE_GPU();
  for (DType dd : kAll)
    for (DType sd : kAll) {
      // dst: a transposed (10, 7) window of a (9, 12) buffer; the rest must stay as it was.
      Tensor buf = host_values({9, 12}, dd, dd);
      Tensor src = host_values({10, 7}, sd, dd);
      Tensor buf_gpu = gpu(buf);
      copy_(transpose(narrow(narrow(buf, 0, 1, 7), 1, 2, 10), 0, 1), src);
      copy_(transpose(narrow(narrow(buf_gpu, 0, 1, 7), 1, 2, 10), 0, 1), gpu(src));
      EXPECT_TRUE(same_values(buf_gpu, buf)) << dtype_name(sd) << " -> " << dtype_name(dd);
    }
}

TEST(CudaCopy, TransposesAndPermutesAreExact) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::u8}) {
    // 2-D, sizes not multiples of the 32x32 tile.
    Tensor a = host_values({1000, 333}, dt, dt);
    EXPECT_TRUE(same_values(contiguous(transpose(gpu(a), 0, 1)), contiguous(transpose(a, 0, 1)))) << dtype_name(dt);
    // NCHW -> NHWC and back.
    Tensor x = host_randn({8, 64, 56, 56}, dt == DType::u8 ? DType::f32 : dt, 3);
    if (dt == DType::u8) x = copy_to(x, Device::cpu(), DType::u8);
    Tensor nhwc = contiguous(permute(x, {0, 2, 3, 1}));
    Tensor nhwc_gpu = contiguous(permute(gpu(x), {0, 2, 3, 1}));
    EXPECT_TRUE(same_bits(nhwc_gpu, nhwc)) << dtype_name(dt) << " NCHW -> NHWC";
    EXPECT_TRUE(same_bits(contiguous(permute(nhwc_gpu, {0, 3, 1, 2})), x)) << dtype_name(dt) << " NHWC -> NCHW";
    // Batched transpose of the last two dims, and a transpose between outer dims.
    Tensor b = host_values({16, 100, 300}, dt, dt);
    EXPECT_TRUE(same_values(contiguous(transpose(gpu(b), 1, 2)), contiguous(transpose(b, 1, 2)))) << dtype_name(dt);
    EXPECT_TRUE(same_values(contiguous(transpose(gpu(b), 0, 2)), contiguous(transpose(b, 0, 2)))) << dtype_name(dt);
  }
  Tensor big = host_randn({4096, 4097}, DType::f32, 4);
  EXPECT_TRUE(same_bits(contiguous(transpose(gpu(big), 0, 1)), contiguous(transpose(big, 0, 1))));
}

TEST(CudaCopy, ExpandedSources) {
  REQUIRE_GPU();
  Tensor row = host_randn({1, 5}, DType::f32, 1);
  EXPECT_TRUE(same_bits(contiguous(expand(gpu(row), {4, 5})), contiguous(expand(row, {4, 5}))));
  Tensor dst = zeros({5, 4}, {DType::f64});
  Tensor dst_gpu = zeros({5, 4}, {DType::f64, kGpu});
  copy_(transpose(dst, 0, 1), expand(row, {4, 5}));
  copy_(transpose(dst_gpu, 0, 1), expand(gpu(row), {4, 5}));
  EXPECT_TRUE(same_bits(dst_gpu, dst));
}

TEST(CudaCopy, HostDeviceCopiesConvertOnTheDevice) {
  REQUIRE_GPU();
  for (DType dd : {DType::f32, DType::f64, DType::bf16, DType::i32})
    for (DType sd : {DType::f32, DType::f64, DType::bf16, DType::u8}) {
      Tensor src = host_values({21, 11}, sd, dd);
      // host (strided) -> device (a (11, 21) window of an (11, 25) buffer)
      Tensor buf = host_values({11, 25}, dd, dd);
      Tensor buf_gpu = gpu(buf);
      copy_(narrow(buf, 1, 3, 21), transpose(src, 0, 1));
      copy_(narrow(buf_gpu, 1, 3, 21), transpose(src, 0, 1));
      EXPECT_TRUE(same_values(buf_gpu, buf)) << "host " << dtype_name(sd) << " -> device " << dtype_name(dd);
      // device (strided) -> host (window)
      Tensor hbuf = host_values({11, 25}, dd, dd);
      Tensor hbuf_ref = clone(hbuf);
      copy_(narrow(hbuf, 1, 3, 21), transpose(gpu(src), 0, 1));
      copy_(narrow(hbuf_ref, 1, 3, 21), transpose(src, 0, 1));
      EXPECT_TRUE(same_values(hbuf, hbuf_ref)) << "device " << dtype_name(sd) << " -> host " << dtype_name(dd);
      // device -> host, contiguous, converting
      EXPECT_TRUE(same_values(copy_to(gpu(src), Device::cpu(), dd), copy_to(src, Device::cpu(), dd)))
          << dtype_name(sd) << " -> " << dtype_name(dd);
    }
}

TEST(CudaCopy, ContiguousAndToStayOnTheDevice) {
  REQUIRE_GPU();
  Tensor x = host_randn({7, 9}, DType::f32, 2);
  Tensor c = contiguous(transpose(gpu(x), 0, 1));
  EXPECT_TRUE(c.device().is_cuda());
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_TRUE(same_bits(c, contiguous(transpose(x, 0, 1))));
  Tensor b = to(transpose(gpu(x), 0, 1), DType::bf16);
  EXPECT_TRUE(b.device().is_cuda());
  EXPECT_TRUE(same_bits(b, copy_to(transpose(x, 0, 1), Device::cpu(), DType::bf16)));
  EXPECT_EQ(gpu(x).to_vector(), x.to_vector());
  EXPECT_EQ(transpose(gpu(x), 0, 1).to_vector(), transpose(x, 0, 1).to_vector());
}

TEST(CudaCopy, FillEveryDtypeContiguousAndStrided) {
  REQUIRE_GPU();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType dt : kAll) {
    std::vector<double> values;
    if (is_floating(dt)) values = {0.0, -0.0, 1.5, 1.0 / 3, -2.0, nan, 1e30};
    else if (dt == DType::u8) values = {0, 7, 255};
    else if (dt == DType::b8) values = {0, 1, 2.5};
    else values = {0, -1, 1e6, 7};
    for (double v : values) {
      Tensor h = zeros({37, 41}, {dt});
      Tensor d = zeros({37, 41}, {dt, kGpu});
      fill_(h, v);
      fill_(d, v);
      EXPECT_TRUE(same_bits(d, h)) << dtype_name(dt) << " fill " << v;
      // A column and a transposed window.
      const double w = dt == DType::u8 ? 9 : v + 1;
      fill_(select(h, 1, 5), w);
      fill_(select(d, 1, 5), w);
      fill_(transpose(narrow(h, 0, 2, 30), 0, 1), v == 0 ? 3 : 0);
      fill_(transpose(narrow(d, 0, 2, 30), 0, 1), v == 0 ? 3 : 0);
      EXPECT_TRUE(same_bits(d, h)) << dtype_name(dt) << " strided fill " << v;
    }
    Tensor big = full({(1 << 22) + 3}, 0.75, {dt, kGpu});
    EXPECT_TRUE(same_bits(big, full({(1 << 22) + 3}, 0.75, {dt}))) << dtype_name(dt);
  }
}

TEST(CudaCopy, RejectsMismatchedShapes) {
  REQUIRE_GPU();
  EXPECT_THROW(copy_(zeros({3}, {DType::f32, kGpu}), zeros({4}, {DType::f32, kGpu})), Error);
}

TEST(CudaCopy, AcrossDevices) {
  REQUIRE_GPU();
  if (cuda::device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  Tensor x = host_randn({30, 20}, DType::f32, 1);
  Tensor a = gpu(x);
  Tensor b = empty({20, 30}, {DType::bf16, Device::cuda(1)});
  copy_(b, transpose(a, 0, 1));
  EXPECT_TRUE(same_bits(b, copy_to(transpose(x, 0, 1), Device::cpu(), DType::bf16)));
}

}  // namespace
}  // namespace siam::test
