// CUDA elementwise kernels (kernels/cuda/elementwise.cu) vs the CPU kernels, on shapes the op
// fixtures do not cover: sizes around the 16-byte vector width (1, 3, 4, 5, 7, 8, 9, 1023,
// 4099) and large ones (2^20 + 1, 2^24 + 3) for the vectorised path and its scalar tail;
// broadcasting patterns (per-channel bias, both operands broadcast, 0-d operands, 5-D);
// strided inputs (transposed, every other element) and unaligned ones (a view one element
// into a buffer), which take the strided and the unaligned contiguous paths.
//
// Tolerances. Binary ops, compare, where, scale_inplace: exact (bitwise). One IEEE operation
// per element in the same type on both sides; bf16 is computed in f32 and rounded to nearest
// even once, as the CPU reference (f32 on the bf16 values, then rounded) does.
// Unary ops and their backward: f32 rtol 1e-5 + atol 1e-6, f64 rtol 1e-13 + atol 1e-14:
// CUDA's expf / tanhf / erff / powf are within 2 ulp of glibc's, and the composite formulas
// (GELU, sigmoid and their derivatives) add a few ulp; bf16 rtol 8e-3 (one bf16 ulp: the f32
// results may round to neighbouring bf16 values).
// add_inplace: rtol 1e-6 (f32) / 1e-14 (f64): a + s * b may be contracted into an FMA on one
// side and not on the other (one rounding apart).
#include <gtest/gtest.h>

#include <limits>

#include "cuda/cuda_ew_util.h"
#include "kernels/elementwise.h"

namespace siam::test {
namespace {

using namespace ew;
using kernels::Binary;
using kernels::Compare;
using kernels::Unary;

const double kInf = std::numeric_limits<double>::infinity();

struct UnaryCase {
  Unary op;
  const char* name;
  double a = 0, b = 0;
  bool positive = false;  // the op needs x > 0
};

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> c = {
      {Unary::neg, "neg"},
      {Unary::exp, "exp"},
      {Unary::log, "log", 0, 0, true},
      {Unary::sqrt, "sqrt", 0, 0, true},
      {Unary::rsqrt, "rsqrt", 0, 0, true},
      {Unary::abs, "abs"},
      {Unary::relu, "relu"},
      {Unary::sigmoid, "sigmoid"},
      {Unary::tanh, "tanh"},
      {Unary::gelu_erf, "gelu_erf"},
      {Unary::gelu_tanh, "gelu_tanh"},
      {Unary::pow_scalar, "pow2.5", 2.5, 0, true},
      {Unary::pow_scalar, "pow3", 3.0},
      {Unary::pow_scalar, "pow0", 0.0},
      {Unary::add_scalar, "add_scalar", 0.75},
      {Unary::mul_scalar, "mul_scalar", -1.5},
      {Unary::clamp, "clamp", -0.5, 0.7},
      {Unary::clamp, "clamp_hi", -kInf, 0.3},
      {Unary::clamp, "clamp_lo", -0.2, kInf},
  };
  return c;
}

const std::vector<int64_t> kSizes = {1, 3, 4, 5, 7, 8, 9, 1023, 4096 + 3, (1 << 20) + 1};

// Host input of a unary case, in dt: N(0, 4), or |N(0, 4)| + 0.5 for ops that need x > 0.
Tensor unary_input(const UnaryCase& c, const Shape& s, DType dt, uint64_t seed) {
  Tensor x = host_randn(s, DType::f64, seed, 2.0);
  if (c.positive) x = kernels::unary(Unary::add_scalar, kernels::unary(Unary::abs, x), 0.5);
  return copy_to(x, Device::cpu(), dt);
}

Tensor as_f32(const Tensor& t) { return copy_to(t, Device::cpu(), DType::f32); }
Tensor as_bf16(const Tensor& t) { return copy_to(t, Device::cpu(), DType::bf16); }

double unary_rtol(DType dt) { return dt == DType::f64 ? 1e-13 : dt == DType::f32 ? 1e-5 : 8e-3; }
double unary_atol(DType dt) { return dt == DType::f64 ? 1e-14 : dt == DType::f32 ? 1e-6 : 1e-5; }

TEST(CudaElementwise, UnaryMatchesCpuAtEverySize) {
  REQUIRE_GPU();
  for (const UnaryCase& c : unary_cases())
    for (DType dt : {DType::f32, DType::f64})
      for (int64_t n : kSizes) {
        Tensor x = unary_input(c, {n}, dt, 11 + n);
        Tensor want = kernels::unary(c.op, x, c.a, c.b);
        Tensor got = kernels::unary(c.op, gpu(x), c.a, c.b);
        ASSERT_TRUE(got.device().is_cuda());
        EXPECT_TRUE(near(got, want, unary_rtol(dt), unary_atol(dt))) << c.name << " " << dtype_name(dt) << " n=" << n;
      }
}

TEST(CudaElementwise, UnaryStridedAndUnalignedInputs) {
  REQUIRE_GPU();
  for (const UnaryCase& c : unary_cases())
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor base = unary_input(c, {53, 37}, dt, 5);
      Tensor want = kernels::unary(c.op, transpose(base, 0, 1), c.a, c.b);
      Tensor got = kernels::unary(c.op, transpose(gpu(base), 0, 1), c.a, c.b);
      EXPECT_TRUE(near(got, want, unary_rtol(dt), unary_atol(dt))) << c.name << " transposed " << dtype_name(dt);
      Tensor flat = unary_input(c, {4096 + 5}, dt, 6);
      want = kernels::unary(c.op, flat, c.a, c.b);
      got = kernels::unary(c.op, gpu_shifted(flat, 1), c.a, c.b);
      EXPECT_TRUE(near(got, want, unary_rtol(dt), unary_atol(dt))) << c.name << " unaligned " << dtype_name(dt);
    }
}

TEST(CudaElementwise, UnaryBf16) {
  REQUIRE_GPU();
  for (const UnaryCase& c : unary_cases())
    for (int64_t n : {int64_t(7), int64_t(4096 + 3), int64_t(1 << 18) + 9}) {
      Tensor x = unary_input(c, {n}, DType::bf16, 21 + n);
      Tensor want = kernels::unary(c.op, as_f32(x), c.a, c.b);
      Tensor got = kernels::unary(c.op, gpu(x), c.a, c.b);
      ASSERT_EQ(got.dtype(), DType::bf16);
      EXPECT_TRUE(near(got, want, unary_rtol(DType::bf16), unary_atol(DType::bf16))) << c.name << " n=" << n;
    }
}

TEST(CudaElementwise, UnaryBackwardMatchesCpu) {
  REQUIRE_GPU();
  for (const UnaryCase& c : unary_cases())
    for (DType dt : {DType::f32, DType::f64, DType::bf16})
      for (int64_t n : {int64_t(5), int64_t(4096 + 3), int64_t(1 << 20) + 1}) {
        Tensor x = unary_input(c, {n}, dt, 31 + n);
        Tensor g = host_randn({n}, dt, 41 + n);
        if (dt == DType::bf16) {
          // The reference runs in f32 on the bf16 values; y is the bf16-rounded forward.
          Tensor y = as_bf16(kernels::unary(c.op, as_f32(x), c.a, c.b));
          Tensor want = kernels::unary_backward(c.op, as_f32(g), as_f32(x), as_f32(y), c.a, c.b);
          Tensor got = kernels::unary_backward(c.op, gpu(g), gpu(x), gpu(y), c.a, c.b);
          EXPECT_TRUE(near(got, want, unary_rtol(dt), unary_atol(dt))) << c.name << " bf16 n=" << n;
          continue;
        }
        Tensor y = kernels::unary(c.op, x, c.a, c.b);
        Tensor want = kernels::unary_backward(c.op, g, x, y, c.a, c.b);
        Tensor got = kernels::unary_backward(c.op, gpu(g), gpu(x), gpu(y), c.a, c.b);
        EXPECT_TRUE(near(got, want, unary_rtol(dt), unary_atol(dt))) << c.name << " " << dtype_name(dt) << " n=" << n;
      }
}

TEST(CudaElementwise, UnaryBackwardStrided) {
  REQUIRE_GPU();
  for (const UnaryCase& c : unary_cases()) {
    Tensor x = unary_input(c, {29, 31}, DType::f32, 3);
    Tensor g = host_randn({31, 29}, DType::f32, 4);
    Tensor y = kernels::unary(c.op, x, c.a, c.b);
    Tensor want = kernels::unary_backward(c.op, transpose(g, 0, 1), x, y, c.a, c.b);
    Tensor got = kernels::unary_backward(c.op, transpose(gpu(g), 0, 1), gpu_shifted(x, 1), gpu(y), c.a, c.b);
    EXPECT_TRUE(near(got, want, unary_rtol(DType::f32), unary_atol(DType::f32))) << c.name;
  }
}

struct Pattern {
  Shape a, b;
};
const std::vector<Pattern>& binary_patterns() {
  static const std::vector<Pattern> p = {
      {{1}, {1}},
      {{5}, {5}},
      {{1023}, {1023}},
      {{4096 + 3}, {4096 + 3}},
      {{(1 << 20) + 5}, {(1 << 20) + 5}},
      {{8, 16, 7, 7}, {1, 16, 1, 1}},  // per-channel, NCHW
      {{8, 16, 7, 7}, {16, 1, 1}},
      {{8, 7, 7, 16}, {16}},  // per-channel, NHWC
      {{4, 1, 5}, {1, 3, 1}},  // both broadcast
      {{}, {6, 5}},
      {{6, 5}, {}},
      {{2, 3, 4, 5, 6}, {2, 1, 4, 1, 6}},
  };
  return p;
}

const std::vector<std::pair<Binary, const char*>> kBinaryOps = {
    {Binary::add, "add"}, {Binary::sub, "sub"}, {Binary::mul, "mul"},
    {Binary::div, "div"}, {Binary::maximum, "maximum"}, {Binary::minimum, "minimum"}};

TEST(CudaElementwise, BinaryBroadcastingIsExact) {
  REQUIRE_GPU();
  for (const auto& [op, name] : kBinaryOps)
    for (const Pattern& p : binary_patterns()) {
      for (DType dt : {DType::f32, DType::f64}) {
        Tensor a = host_randn(p.a, dt, 1), b = host_randn(p.b, dt, 2);
        Tensor want = kernels::binary(op, a, b);
        Tensor got = kernels::binary(op, gpu(a), gpu(b));
        EXPECT_TRUE(same_bits(got, want)) << name << " " << shape_str(p.a) << " with " << shape_str(p.b) << " "
                                          << dtype_name(dt);
      }
      Tensor a = host_randn(p.a, DType::bf16, 3), b = host_randn(p.b, DType::bf16, 4);
      Tensor want = as_bf16(kernels::binary(op, as_f32(a), as_f32(b)));
      Tensor got = kernels::binary(op, gpu(a), gpu(b));
      EXPECT_TRUE(same_bits(got, want)) << name << " " << shape_str(p.a) << " with " << shape_str(p.b) << " bf16";
    }
}

TEST(CudaElementwise, BinaryStridedAndUnalignedInputs) {
  REQUIRE_GPU();
  for (const auto& [op, name] : kBinaryOps)
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
      Tensor a = host_randn({45, 33}, dt, 7), b = host_randn({33, 45}, dt, 8);
      Tensor at = transpose(a, 0, 1);  // (33, 45), strided
      Tensor wa = dt == DType::bf16 ? as_f32(at) : at, wb = dt == DType::bf16 ? as_f32(b) : b;
      Tensor want = kernels::binary(op, wa, wb);
      if (dt == DType::bf16) want = as_bf16(want);
      Tensor got = kernels::binary(op, transpose(gpu(a), 0, 1), gpu(b));
      EXPECT_TRUE(same_bits(got, want)) << name << " transposed " << dtype_name(dt);

      Tensor c = host_randn({4096 + 7}, dt, 9), d = host_randn({4096 + 7}, dt, 10);
      want = kernels::binary(op, dt == DType::bf16 ? as_f32(c) : c, dt == DType::bf16 ? as_f32(d) : d);
      if (dt == DType::bf16) want = as_bf16(want);
      got = kernels::binary(op, gpu_shifted(c, 1), gpu(d));
      EXPECT_TRUE(same_bits(got, want)) << name << " unaligned " << dtype_name(dt);

      // Every other element of a row: slice with step 2.
      Tensor e = host_randn({6, 200}, dt, 11), f = host_randn({6, 100}, dt, 12);
      Tensor es = slice(e, 1, 0, 200, 2);
      want = kernels::binary(op, dt == DType::bf16 ? as_f32(es) : es, dt == DType::bf16 ? as_f32(f) : f);
      if (dt == DType::bf16) want = as_bf16(want);
      got = kernels::binary(op, slice(gpu(e), 1, 0, 200, 2), gpu(f));
      EXPECT_TRUE(same_bits(got, want)) << name << " step 2 " << dtype_name(dt);
    }
}

TEST(CudaElementwise, BinaryAddLarge) {
  REQUIRE_GPU();
  const int64_t n = (int64_t(1) << 24) + 3;
  Tensor a = host_randn({n}, DType::f32, 13), b = host_randn({n}, DType::f32, 14);
  EXPECT_TRUE(same_bits(kernels::binary(Binary::add, gpu(a), gpu(b)), kernels::binary(Binary::add, a, b)));
}

TEST(CudaElementwise, BinaryRejectsMixedDtypesAndDevices) {
  REQUIRE_GPU();
  Tensor a = gpu(host_randn({4}, DType::f32, 1));
  EXPECT_THROW(kernels::binary(Binary::add, a, gpu(host_randn({4}, DType::f64, 1))), Error);
  EXPECT_THROW(kernels::binary(Binary::add, a, host_randn({4}, DType::f32, 1)), Error);
  EXPECT_THROW(kernels::binary(Binary::add, a, gpu(host_randn({3}, DType::f32, 1))), Error);
}

// Small integers so that equal pairs occur: [-3, 3] (u8: [0, 6], bool: 0 / 1).
Tensor small_ints(const Shape& s, DType dt, uint64_t seed) {
  Generator g(seed);
  int64_t lo = dt == DType::u8 || dt == DType::b8 ? 0 : -3;
  int64_t hi = dt == DType::b8 ? 2 : lo + 7;
  return copy_to(randint(lo, hi, s, g, {DType::f64}), Device::cpu(), dt);
}

TEST(CudaElementwise, CompareEveryDtypeIsExact) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8, DType::b8})
    for (const Pattern& p : std::vector<Pattern>{{{1000}, {1000}}, {{5, 1, 7}, {1, 6, 7}}, {{}, {9}}})
      for (auto [op, name] : std::vector<std::pair<Compare, const char*>>{
               {Compare::gt, "gt"}, {Compare::lt, "lt"}, {Compare::eq, "eq"}}) {
        Tensor a = small_ints(p.a, dt, 1), b = small_ints(p.b, dt, 2);
        Tensor want = kernels::compare(op, a, b);
        Tensor got = kernels::compare(op, gpu(a), gpu(b));
        ASSERT_EQ(got.dtype(), DType::b8);
        EXPECT_TRUE(same_bits(got, want)) << name << " " << dtype_name(dt) << " " << shape_str(p.a) << " with "
                                          << shape_str(p.b);
      }
  // Strided operands.
  Tensor a = small_ints({40, 30}, DType::f32, 3), b = small_ints({30, 40}, DType::f32, 4);
  EXPECT_TRUE(same_bits(kernels::compare(Compare::eq, transpose(gpu(a), 0, 1), gpu(b)),
                        kernels::compare(Compare::eq, transpose(a, 0, 1), b)));
}

TEST(CudaElementwise, WhereBroadcastsExactly) {
  REQUIRE_GPU();
  Tensor cond = kernels::compare(Compare::gt, host_randn({5, 1, 7}, DType::f32, 1), zeros({}));
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Tensor a = host_randn({1, 6, 7}, dt, 2), b = host_randn({7}, dt, 3);
    Tensor want = dt == DType::bf16 ? as_bf16(kernels::where(cond, as_f32(a), as_f32(b))) : kernels::where(cond, a, b);
    Tensor got = kernels::where(gpu(cond), gpu(a), gpu(b));
    EXPECT_TRUE(same_bits(got, want)) << dtype_name(dt);
    // 0-d operand and a strided condition.
    Tensor c2 = kernels::compare(Compare::lt, host_randn({9, 8}, DType::f32, 4), zeros({}));
    Tensor x = host_randn({8, 9}, dt, 5), z = zeros({}, {dt});
    Tensor w2 = dt == DType::bf16 ? as_bf16(kernels::where(transpose(c2, 0, 1), as_f32(x), as_f32(z)))
                                  : kernels::where(transpose(c2, 0, 1), x, z);
    EXPECT_TRUE(same_bits(kernels::where(transpose(gpu(c2), 0, 1), gpu(x), gpu(z)), w2)) << dtype_name(dt);
  }
}

TEST(CudaElementwise, AddInplaceIntoStridedViewWithBroadcast) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    // a: a transposed window of a (40, 60) buffer; the rest of the buffer must not change.
    Tensor buf = host_randn({40, 60}, dt, 1);
    Tensor b = host_randn({40}, dt, 2);
    Tensor buf_gpu = gpu(buf);
    Tensor ref = dt == DType::bf16 ? as_f32(buf) : clone(buf);
    kernels::add_inplace(transpose(narrow(ref, 1, 3, 50), 0, 1), dt == DType::bf16 ? as_f32(b) : b, -0.75);
    kernels::add_inplace(transpose(narrow(buf_gpu, 1, 3, 50), 0, 1), gpu(b), -0.75);
    const double rtol = dt == DType::f64 ? 1e-14 : dt == DType::f32 ? 1e-6 : 8e-3;
    EXPECT_TRUE(near(buf_gpu, ref, rtol, rtol)) << dtype_name(dt);
  }
}

TEST(CudaElementwise, AddInplaceContiguousAndUnaligned) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64})
    for (int64_t n : {int64_t(3), int64_t(4096 + 5), int64_t(1 << 20) + 3})
      for (int64_t shift : {int64_t(0), int64_t(1)}) {
        Tensor a = host_randn({n}, dt, 3), b = host_randn({n}, dt, 4);
        Tensor ag = gpu_shifted(a, shift);
        Tensor ref = clone(a);
        kernels::add_inplace(ref, b, 2.5);
        kernels::add_inplace(ag, gpu(b), 2.5);
        const double rtol = dt == DType::f64 ? 1e-14 : 1e-6;
        EXPECT_TRUE(near(ag, ref, rtol, rtol)) << dtype_name(dt) << " n=" << n << " shift=" << shift;
      }
}

TEST(CudaElementwise, ScaleInplaceIsExact) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
    Tensor buf = host_randn({30, 50}, dt, 5);
    Tensor buf_gpu = gpu(buf);
    Tensor ref = dt == DType::bf16 ? as_f32(buf) : clone(buf);
    kernels::scale_inplace(slice(ref, 1, 1, 50, 3), -1.25);
    kernels::scale_inplace(slice(buf_gpu, 1, 1, 50, 3), -1.25);
    EXPECT_TRUE(same_bits(buf_gpu, dt == DType::bf16 ? as_bf16(ref) : ref)) << dtype_name(dt);
    Tensor flat = host_randn({4096 + 3}, dt, 6);
    Tensor fg = gpu(flat);
    Tensor fr = dt == DType::bf16 ? as_f32(flat) : clone(flat);
    kernels::scale_inplace(fr, 0.3);
    kernels::scale_inplace(fg, 0.3);
    EXPECT_TRUE(same_bits(fg, dt == DType::bf16 ? as_bf16(fr) : fr)) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace siam::test
