// CUDA GEMM (cuBLASLt) and the fused linear epilogue against the CPU kernels, on what the op
// fixtures do not reach: large and odd sizes, batched and broadcast operands, stride-0 (summing)
// outputs, transposed, padded and non-unit-stride views, alpha and beta, batches past 65535,
// empty products; f32 strict, TF32, bf16 and f64.
//
// The reference is the CPU kernel in f64 on the very inputs the GPU gets (rounded to its dtype
// first). Errors are bounded relative to `scale`, the same product taken over magnitudes
// (|alpha| |op(a)| @ |op(b)| + |beta| |c|): the size of what was summed, so outputs that cancel
// to near zero are judged fairly. Bounds (error <= s * scale + o * |reference|):
//   f32   s = 1e-5          f32 accumulation; TF32 (~1e-3) would fail it
//   TF32  s = 4e-3          inputs rounded to 10 mantissa bits (2^-11 relative each, twice)
//   bf16  s = 8e-3, o = 8e-3  f32 accumulation, output (and a summing c's partial sums) rounded
//                           to 8 bits (2^-9 relative per rounding)
//   f64   s = 1e-12
// A layout mistake shows up as errors of the order of `scale` itself.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <numbers>
#include <random>
#include <sstream>

#include "autograd/ops.h"
#include "cuda/cuda_prec_util.h"
#include "kernels/gemm.h"
#include "kernels/precision.h"
#include "tensor/cuda_runtime.h"
#include "test_util.h"

namespace siam {
namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

using test::Prec;
using test::kAllPrec;
using test::prec_name;
using test::prec_dtype;

struct Bound {
  double scale_rel, out_rel, abs = 0;
};
Bound bound_of(Prec p) {
  switch (p) {
    case Prec::f32: return {1e-5, 0};
    case Prec::tf32: return {4e-3, 0};
    case Prec::bf16: return {8e-3, 8e-3};
    case Prec::f64: return {1e-12, 0};
  }
  return {0, 0};
}

// Uniform values in [-1, 1) (f64 on the CPU), rounded to dt so that the GPU and the reference
// see the same numbers.
Tensor random_values(int64_t n, DType dt, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = u(gen);
  return to(to(from_vector(v, {n}, {DType::f64}), dt), DType::f64);
}

// got and want (any device and dtype, same shape) agree within the bound, element by element.
::testing::AssertionResult within(const Tensor& got, const Tensor& want, const Tensor& scale, Bound b) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.shape()) << ", expected " << shape_str(want.shape());
  std::vector<double> g = copy_to(got, Device::cpu(), DType::f64).to_vector();
  std::vector<double> w = copy_to(want, Device::cpu(), DType::f64).to_vector();
  std::vector<double> s = copy_to(scale, Device::cpu(), DType::f64).to_vector();
  int64_t bad = -1, nbad = 0;
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    double limit = b.scale_rel * s[i] + b.out_rel * std::abs(w[i]) + b.abs;
    double excess = std::abs(g[i] - w[i]) - limit;
    if (std::isnan(g[i]) || excess > 0) {
      ++nbad;
      if (bad < 0 || std::isnan(g[i]) || excess > worst) {
        bad = int64_t(i);
        worst = std::isnan(g[i]) ? INFINITY : excess;
      }
    }
  }
  if (nbad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << nbad << " of " << g.size() << " elements off; worst at flat index " << bad
                                       << ": CUDA " << g[bad] << ", CPU " << w[bad] << ", scale " << s[bad]
                                       << " (bound " << b.scale_rel << " * scale + " << b.out_rel << " * |CPU| + "
                                       << b.abs << ")";
}

// A view (shape, strides, offset) on a 1-D base buffer.
struct View {
  Shape shape, strides;
  int64_t offset = 0;
  int64_t extent() const {  // elements the base needs
    int64_t e = offset + 1;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] == 0) return offset + 1;
      e += (shape[d] - 1) * strides[d];
    }
    return e;
  }
  Tensor on(const Tensor& base) const { return base.as_strided(shape, strides, base.offset() + offset); }
};
View dense(Shape s) { return {s, contiguous_strides(s), 0}; }
// Logical shape s; memory is row-major with the last two dims swapped (a transposed view).
View transposed(Shape s) {
  Shape m = s;
  std::swap(m[m.size() - 1], m[m.size() - 2]);
  Shape st = contiguous_strides(m);
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return {s, st, 0};
}

struct GemmCase {
  std::string name;
  bool ta, tb;
  double alpha, beta;
  View a, b, c;  // a and b as stored: op() applies on top
};

// Plain (m, n, k) product with the four transpose combinations.
std::vector<GemmCase> plain(std::string name, int64_t m, int64_t n, int64_t k) {
  std::vector<GemmCase> r;
  for (int t = 0; t < 4; ++t) {
    bool ta = t & 1, tb = t & 2;
    r.push_back({name + (ta ? "_aT" : "") + (tb ? "_bT" : ""), ta, tb, 1.0, 0.0, dense(ta ? Shape{k, m} : Shape{m, k}),
                 dense(tb ? Shape{n, k} : Shape{k, n}), dense({m, n})});
  }
  return r;
}

std::vector<GemmCase> gemm_cases() {
  std::vector<GemmCase> cs;
  for (auto [m, n, k] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {1, 17, 33}, {31, 1, 7}, {17, 33, 65}, {64, 64, 64}, {257, 129, 511}, {1000, 999, 37}})
    for (GemmCase& c : plain("mnk_" + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k), m, n, k))
      cs.push_back(c);
  // ViT-S qkv-like (odd token count) and a long reduction.
  cs.push_back({"qkv_like", false, true, 1.0, 0.0, dense({2051, 384}), dense({1152, 384}), dense({2051, 1152})});
  cs.push_back({"long_k", false, false, 1.0, 0.0, dense({1024, 4096}), dense({4096, 768}), dense({1024, 768})});
  // Batched, and attention-like q @ k^T with a transposed view of k.
  cs.push_back({"batched", false, false, 1.0, 0.0, dense({6, 33, 17}), dense({6, 17, 9}), dense({6, 33, 9})});
  cs.push_back({"attention_qk", false, true, 0.125, 0.0, dense({12, 197, 64}), dense({12, 197, 64}),
                dense({12, 197, 197})});
  // Size-1 batch dims broadcast, and stride-0 expanded operands.
  cs.push_back({"broadcast_size1", false, false, 1.0, 0.0, dense({3, 1, 5, 7}), dense({1, 4, 7, 6}), dense({3, 4, 5, 6})});
  cs.push_back({"broadcast_stride0", false, false, 1.0, 0.0, View{{3, 4, 5, 7}, {0, 0, 7, 1}, 0},
                View{{3, 4, 7, 6}, {168, 42, 6, 1}, 0}, dense({3, 4, 5, 6})});
  // c a stride-0 view: products summed over the broadcast dims (beta applied once).
  cs.push_back({"sum_dim0_beta0", false, false, 1.0, 0.0, dense({3, 4, 5, 7}), dense({3, 4, 7, 6}),
                View{{3, 4, 5, 6}, {0, 30, 6, 1}, 0}});
  cs.push_back({"sum_dim0_beta", false, false, 0.5, -0.75, dense({3, 4, 5, 7}), dense({3, 4, 7, 6}),
                View{{3, 4, 5, 6}, {0, 30, 6, 1}, 0}});
  cs.push_back({"sum_all_batch", true, false, 1.0, 0.0, dense({3, 4, 7, 5}), View{{3, 4, 7, 6}, {0, 42, 6, 1}, 0},
                View{{3, 4, 5, 6}, {0, 0, 6, 1}, 0}});
  // Batch dims that do not merge (a permuted), and a batch past cuBLASLt's 65535 per call.
  cs.push_back({"unmergeable_batch", false, false, 1.0, 0.0, View{{3, 4, 5, 7}, {35, 105, 7, 1}, 0},
                dense({3, 4, 7, 6}), dense({3, 4, 5, 6})});
  cs.push_back({"batch_70000", false, false, 1.0, 0.0, dense({70000, 2, 3}), dense({70000, 3, 2}), dense({70000, 2, 2})});
  // Layouts: column-major c, padded rows, non-unit inner strides (copied first), an offset view.
  cs.push_back({"c_column_major", false, false, 1.0, 0.0, dense({37, 19}), dense({19, 23}), transposed({37, 23})});
  cs.push_back({"padded_rows", false, false, 1.0, 0.0, View{{37, 19}, {24, 1}, 0}, View{{19, 23}, {31, 1}, 0},
                View{{37, 23}, {29, 1}, 0}});
  cs.push_back({"inner_stride2", false, false, 1.0, 0.0, View{{37, 19}, {38, 2}, 0}, View{{19, 23}, {69, 3}, 0},
                dense({37, 23})});
  cs.push_back({"offset_views", true, true, 1.0, 0.0, View{{19, 37}, {37, 1}, 3}, View{{23, 19}, {19, 1}, 1},
                View{{37, 23}, {23, 1}, 5}});
  cs.push_back({"alpha_beta", false, true, -0.75, 1.25, dense({65, 33}), dense({47, 33}), dense({65, 47})});
  // No products: c = beta c.
  cs.push_back({"k0_beta", false, false, 1.0, 0.5, dense({4, 0}), dense({0, 5}), dense({4, 5})});
  cs.push_back({"k0_beta0", false, false, 1.0, 0.0, dense({4, 0}), dense({0, 5}), dense({4, 5})});
  return cs;
}

void run_gemm_case(const GemmCase& k, Prec p) {
  SCOPED_TRACE(k.name + ", " + prec_name(p));
  DType dt = prec_dtype(p);
  kernels::Tf32Guard tf32(p == Prec::tf32);
  Tensor a0 = random_values(k.a.extent(), dt, 1), b0 = random_values(k.b.extent(), dt, 2);
  Tensor c0 = random_values(k.c.extent(), dt, 3);

  Tensor want = clone(c0);
  kernels::gemm(k.ta, k.tb, k.alpha, k.a.on(a0), k.b.on(b0), k.beta, k.c.on(want));
  Tensor scale = abs(c0);
  kernels::gemm(k.ta, k.tb, std::abs(k.alpha), k.a.on(abs(a0)), k.b.on(abs(b0)), std::abs(k.beta), k.c.on(scale));

  Device gpu = Device::cuda(0);
  Tensor ga = copy_to(a0, gpu, dt), gb = copy_to(b0, gpu, dt), gc = copy_to(c0, gpu, dt);
  if (k.beta == 0) fill_(gc, std::nan(""));  // beta = 0: c is only written
  kernels::gemm(k.ta, k.tb, k.alpha, k.a.on(ga), k.b.on(gb), k.beta, k.c.on(gc));
  EXPECT_TRUE(within(k.c.on(gc), k.c.on(want), k.c.on(scale), bound_of(p)));
}

TEST(CudaGemm, MatchesCpu) {
  REQUIRE_GPU();
  for (const GemmCase& k : gemm_cases())
    for (Prec p : kAllPrec) run_gemm_case(k, p);
}

// TF32 keeps 10 mantissa bits, so it rounds 1 + 2^-12 to 1; strict f32 sums 256 of them exactly.
TEST(CudaGemm, StrictF32DoesNotUseTf32) {
  REQUIRE_GPU();
  Device gpu = Device::cuda(0);
  Tensor a = full({64, 256}, 1.0 + std::ldexp(1.0, -12), {DType::f32, gpu});
  Tensor b = full({256, 48}, 1.0, {DType::f32, gpu});
  Tensor c = empty({64, 48}, {DType::f32, gpu});
  {
    kernels::Tf32Guard off(false);
    kernels::gemm(false, false, 1.0, a, b, 0.0, c);
  }
  std::vector<double> v = c.to_vector();
  double want = 256.0 * (1.0 + std::ldexp(1.0, -12));
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], want) << "element " << i << ": TF32 rounding in strict f32";
  kernels::Tf32Guard on(true);
  kernels::gemm(false, false, 1.0, a, b, 0.0, c);
  ::testing::Test::RecordProperty("tf32_result", std::to_string(c.to_vector()[0]));
}

TEST(CudaGemm, RepeatsBitForBit) {
  REQUIRE_GPU();
  Device gpu = Device::cuda(0);
  for (Prec p : {Prec::tf32, Prec::bf16}) {
    DType dt = prec_dtype(p);
    kernels::Tf32Guard tf32(p == Prec::tf32);
    Tensor a = copy_to(random_values(1024 * 2048, dt, 4), gpu, dt).as_strided({1024, 2048}, {2048, 1}, 0);
    Tensor b = copy_to(random_values(2048 * 512, dt, 5), gpu, dt).as_strided({2048, 512}, {512, 1}, 0);
    Tensor c1 = empty({1024, 512}, {dt, gpu}), c2 = empty({1024, 512}, {dt, gpu});
    kernels::gemm(false, false, 1.0, a, b, 0.0, c1);
    kernels::gemm(false, false, 1.0, a, b, 0.0, c2);
    EXPECT_EQ(c1.to_vector(), c2.to_vector()) << prec_name(p);
  }
}

TEST(CudaGemm, RejectsMixedDevicesAndIntegerDtypes) {
  REQUIRE_GPU();
  Device gpu = Device::cuda(0);
  test::expect_error([&] { kernels::gemm(false, false, 1.0, zeros({2, 3}), zeros({3, 4}, {DType::f32, gpu}), 0.0,
                                         empty({2, 4}, {DType::f32, gpu})); },
                     "gemm: operands must be on one CUDA device");
  test::expect_error([&] { kernels::gemm(false, false, 1.0, zeros({2, 3}, {DType::i32, gpu}),
                                         zeros({3, 4}, {DType::i32, gpu}), 0.0, empty({2, 4}, {DType::i32, gpu})); },
                     "gemm: CUDA kernel takes f32, f64 or bf16, got i32");
}

// ------------------------------------------------------------------ linear_epilogue

double gelu_tanh(double v) { return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v))); }

// The CPU twin against plain loops (runs without a GPU).
TEST(LinearEpilogue, CpuMatchesLoops) {
  int64_t rows = 5, k = 7, n = 3;
  Tensor x = random_values(rows * k, DType::f64, 6).as_strided({rows, k}, {k, 1}, 0);
  Tensor w = random_values(n * k, DType::f64, 7).as_strided({n, k}, {k, 1}, 0);
  Tensor bias = random_values(n, DType::f64, 8);
  for (auto act : {kernels::Epilogue::none, kernels::Epilogue::relu, kernels::Epilogue::gelu_tanh})
    for (bool with_bias : {true, false}) {
      Tensor y = kernels::linear_epilogue(x, w, with_bias ? bias : Tensor(), act);
      ASSERT_EQ(y.shape(), (Shape{rows, n}));
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double v = with_bias ? bias.at({j}) : 0.0;
          for (int64_t l = 0; l < k; ++l) v += x.at({i, l}) * w.at({j, l});
          if (act == kernels::Epilogue::relu) v = std::max(v, 0.0);
          if (act == kernels::Epilogue::gelu_tanh) v = gelu_tanh(v);
          EXPECT_NEAR(y.at({i, j}), v, 1e-12) << "row " << i << " col " << j << " act " << int(act);
        }
    }
  test::expect_error([&] { kernels::linear_epilogue(x, zeros({n, k + 1}, {DType::f64}), Tensor(), kernels::Epilogue::none); },
                     "linear_epilogue: expected x (rows, k) and w (n, k)");
  test::expect_error([&] { kernels::linear_epilogue(x, w, zeros({n + 1}, {DType::f64}), kernels::Epilogue::none); },
                     "linear_epilogue: bias [4] does not match the 3 outputs of w");
}

struct LinearCase {
  int64_t rows, k, n;
  bool transposed_x = false, strided_bias = false;
};

TEST(CudaLinearEpilogue, MatchesCpu) {
  REQUIRE_GPU();
  Device gpu = Device::cuda(0);
  std::vector<LinearCase> cases{{1, 7, 3}, {64, 33, 17}, {591, 384, 1159}, {128, 64, 96, true, true}};
  for (const LinearCase& lc : cases)
    for (Prec p : kAllPrec)
      for (auto act : {kernels::Epilogue::none, kernels::Epilogue::relu, kernels::Epilogue::gelu_tanh})
        for (bool with_bias : {true, false}) {
          std::ostringstream what;
          what << lc.rows << "x" << lc.k << "->" << lc.n << (lc.transposed_x ? " x^T view" : "")
               << (lc.strided_bias ? " strided bias" : "") << ", " << prec_name(p) << ", act " << int(act)
               << (with_bias ? ", bias" : ", no bias");
          SCOPED_TRACE(what.str());
          DType dt = prec_dtype(p);
          kernels::Tf32Guard tf32(p == Prec::tf32);
          View xv = lc.transposed_x ? transposed({lc.rows, lc.k}) : dense({lc.rows, lc.k});
          View bv = lc.strided_bias ? View{{lc.n}, {2}, 1} : dense({lc.n});
          Tensor x0 = random_values(xv.extent(), dt, 9), w0 = random_values(lc.n * lc.k, dt, 10);
          Tensor b0 = random_values(bv.extent(), dt, 11);
          View wv = dense({lc.n, lc.k});
          Tensor bias = with_bias ? bv.on(b0) : Tensor();
          Tensor want = kernels::linear_epilogue(xv.on(x0), wv.on(w0), bias, act);
          // Magnitudes before the activation; GELU and ReLU have slopes of at most about 1.13.
          Tensor scale = kernels::linear_epilogue(xv.on(abs(x0)), wv.on(abs(w0)),
                                                  with_bias ? bv.on(abs(b0)) : Tensor(), kernels::Epilogue::none);
          scale = mul(scale, 1.13);
          Tensor gx = copy_to(x0, gpu, dt), gw = copy_to(w0, gpu, dt), gb = copy_to(b0, gpu, dt);
          Tensor got = kernels::linear_epilogue(xv.on(gx), wv.on(gw), with_bias ? bv.on(gb) : Tensor(), act);
          ASSERT_TRUE(got.device().is_cuda());
          ASSERT_TRUE(got.is_contiguous());
          Bound b = bound_of(p);
          // cuBLASLt evaluates tanh in f32 (possibly a fast approximation): a small absolute term.
          if (act == kernels::Epilogue::gelu_tanh && p != Prec::f64) b.abs = 1e-5;
          EXPECT_TRUE(within(got, want, scale, b));
        }
}

}  // namespace
}  // namespace siam
