// CUDA fused SSL losses (kernels/cuda/ssl_loss.cu) vs the CPU kernels, at training sizes the
// op fixtures do not reach: NT-Xent at M = 512 rows x 128 dims with a multi-positive mask and
// with SimCLR's pairs; DINO with 2 global + 6 local crops x 64 images x 65536 outputs; and odd
// shapes around the tile and chunk edges. Inputs are strided views on the GPU (the kernels read
// them in place) and contiguous on the CPU.
// Below them, the same for InfoNCE, the BYOL / SimSiam cosine regression, VICReg and Barlow
// Twins (their own tolerances are explained there).
//
// Tolerances: both sides compute every dot product, exponential and sum in double from the
// same input values and round each output to the dtype once; only the summation order differs
// (sequential on the CPU, block trees on the GPU), a relative 1e-15 before that rounding. So
// f32 outputs agree to within 2 ulps (rtol 3e-7; arel 1e-9 of the tensor's largest value for
// entries near zero after cancellation), f64 outputs and the f64 saved log-sum-exps to rtol
// 1e-12. bf16 inputs are compared with the CPU kernel in f64 on the same (bf16) values: one
// bf16 rounding of each output, rtol 2^-8 (half a bf16 ulp, plus the f32 step of that
// conversion).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "kernels/ssl_loss.h"
#include "tensor/cuda_runtime.h"
#include "tensor/rng.h"

namespace siam::test {
namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

const Device kGpu = Device::cuda(0);

struct Tol {
  double rtol, arel;
};
Tol tol_for(DType dt) {
  if (dt == DType::f64) return {1e-12, 1e-14};
  if (dt == DType::bf16) return {3.92e-3, 1e-6};
  return {3e-7, 1e-9};
}

// |gpu - cpu| <= rtol |cpu| + arel max|cpu| everywhere; names the worst element.
::testing::AssertionResult agree(const std::string& what, const Tensor& gpu, const Tensor& cpu, Tol t) {
  if (!gpu.device().is_cuda()) return ::testing::AssertionFailure() << what << " is on " << gpu.device().str();
  if (gpu.shape() != cpu.shape())
    return ::testing::AssertionFailure() << what << ": CUDA " << shape_str(gpu.shape()) << ", CPU "
                                         << shape_str(cpu.shape());
  std::vector<double> g = copy_to(gpu, Device::cpu(), DType::f64).to_vector();
  std::vector<double> c = copy_to(cpu, Device::cpu(), DType::f64).to_vector();
  double mx = 0;
  for (double v : c) mx = std::max(mx, std::abs(v));
  size_t worst = 0;
  double worst_excess = 0;
  bool ok = true;
  for (size_t k = 0; k < c.size(); ++k) {
    const double err = std::abs(g[k] - c[k]), bound = t.rtol * std::abs(c[k]) + t.arel * mx;
    if (!(err <= bound)) {
      const double excess = std::isnan(err) ? INFINITY : err / std::max(bound, 1e-300);
      if (ok || excess > worst_excess) worst = k, worst_excess = excess;
      ok = false;
    }
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << " " << shape_str(cpu.shape()) << " element " << worst << ": CUDA "
                                       << g[worst] << ", CPU " << c[worst] << " (rtol " << t.rtol << ", arel "
                                       << t.arel << " of max|cpu| = " << mx << ")";
}

// A GPU copy of a CPU matrix (R, C) stored transposed, so the kernel sees strides (1, R).
Tensor gpu_transposed_view(const Tensor& cpu, DType dt) {
  Tensor t = copy_to(transpose(cpu, 0, 1), kGpu, dt);  // (C, R) contiguous
  return transpose(t, 0, 1);
}

// bool (M, M): views v of image i are rows v n + i; every other view of the same image is a
// positive.
Tensor group_mask(int64_t m, int64_t images) {
  std::vector<double> v(m * m, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) v[i * m + j] = (i != j && i % images == j % images) ? 1.0 : 0.0;
  return from_vector(v, {m, m}, {DType::b8});
}

// NT-Xent forward + backward on both devices from the same values; dt is the GPU's dtype, the
// CPU runs in f64 for bf16 (no bf16 CPU kernel) and in dt otherwise.
void nt_xent_case(int64_t m, int64_t d, int64_t images, double temperature, DType dt, uint64_t seed) {
  SCOPED_TRACE("M " + std::to_string(m) + ", D " + std::to_string(d) + ", " + dtype_name(dt) +
               (images ? ", group mask" : ", pairs"));
  Generator gen(seed);
  Tensor z = copy_to(randn({m, d}, gen, {DType::f64}), Device::cpu(), dt);  // rounded to dt once
  const DType cpu_dt = dt == DType::bf16 ? DType::f64 : dt;
  Tensor zc = copy_to(z, Device::cpu(), cpu_dt);
  Tensor mask = images ? group_mask(m, images) : Tensor();
  Tensor zg = gpu_transposed_view(z, dt);
  Tensor mask_g = images ? copy_to(mask, kGpu, DType::b8) : Tensor();

  kernels::NtXentSaved sc = kernels::nt_xent_forward(zc, mask, temperature);
  kernels::NtXentSaved sg = kernels::nt_xent_forward(zg, mask_g, temperature);
  ASSERT_TRUE(sg.loss.device().is_cuda());
  EXPECT_EQ(sg.loss.dtype(), dt);
  EXPECT_TRUE(agree("loss", sg.loss, sc.loss, tol_for(dt)));
  EXPECT_TRUE(agree("lse", sg.lse, sc.lse, tol_for(DType::f64)));

  const double upstream = 0.7;
  Tensor dzc = kernels::nt_xent_backward(full({}, upstream, {cpu_dt}), zc, mask, sc, temperature);
  kernels::NtXentSaved only_lse{Tensor(), sg.lse};  // what the autograd op keeps
  Tensor dzg = kernels::nt_xent_backward(full({}, upstream, {dt, kGpu}), zg, mask_g, only_lse, temperature);
  EXPECT_EQ(dzg.dtype(), dt);
  EXPECT_TRUE(dzg.is_contiguous());
  EXPECT_TRUE(agree("dz", dzg, dzc, tol_for(dt)));
}

TEST(CudaSslLoss, NtXentLargeGroupMaskMatchesCpu) {
  REQUIRE_GPU();
  nt_xent_case(512, 128, 128, 0.1, DType::f32, 31);  // 4 views of 128 images: 3 positives per row
  nt_xent_case(512, 128, 128, 0.1, DType::f64, 31);
}

TEST(CudaSslLoss, NtXentLargePairsMatchesCpu) {
  REQUIRE_GPU();
  nt_xent_case(512, 128, 0, 0.5, DType::f32, 32);
}

TEST(CudaSslLoss, NtXentBf16MatchesCpuOnTheSameValues) {
  REQUIRE_GPU();
  nt_xent_case(512, 128, 128, 0.2, DType::bf16, 33);
}

// Shapes below one tile, across tile edges (33, 70 rows; 3, 33, 65 dims) and a mask with
// uneven groups.
TEST(CudaSslLoss, NtXentOddShapesMatchCpu) {
  REQUIRE_GPU();
  nt_xent_case(2, 3, 0, 0.5, DType::f64, 34);
  nt_xent_case(6, 33, 0, 0.3, DType::f32, 35);
  nt_xent_case(70, 65, 9, 0.2, DType::f32, 36);
  nt_xent_case(33, 1, 11, 0.1, DType::f64, 37);
}

// A row of zeros: the clamped norm path of the backward (dz = dzn / eps).
TEST(CudaSslLoss, NtXentZeroRowMatchesCpu) {
  REQUIRE_GPU();
  Generator gen(38);
  Tensor z = randn({8, 16}, gen, {DType::f64});
  fill_(narrow(z, 0, 3, 1), 0.0);
  Tensor zg = copy_to(z, kGpu, DType::f64);
  kernels::NtXentSaved sc = kernels::nt_xent_forward(z, Tensor(), 0.5);
  kernels::NtXentSaved sg = kernels::nt_xent_forward(zg, Tensor(), 0.5);
  EXPECT_TRUE(agree("loss", sg.loss, sc.loss, tol_for(DType::f64)));
  Tensor dzc = kernels::nt_xent_backward(full({}, 1.0, {DType::f64}), z, Tensor(), sc, 0.5);
  Tensor dzg = kernels::nt_xent_backward(full({}, 1.0, {DType::f64, kGpu}), zg, Tensor(), sg, 0.5);
  EXPECT_TRUE(agree("dz", dzg, dzc, tol_for(DType::f64)));
}

// DINO forward + backward on both devices. On the GPU the teacher is a column slice of a wider
// matrix and the center a stride-2 view.
void dino_case(int64_t crops, int64_t teacher_crops, int64_t b, int64_t k, DType dt, uint64_t seed) {
  SCOPED_TRACE(std::to_string(crops) + " crops (" + std::to_string(teacher_crops) + " teacher) x " +
               std::to_string(b) + " x " + std::to_string(k) + ", " + dtype_name(dt));
  Generator gen(seed);
  const DType cpu_dt = dt == DType::bf16 ? DType::f64 : dt;
  Tensor x = copy_to(mul(randn({crops * b, k}, gen, {DType::f32}), 3.0), Device::cpu(), dt);
  Tensor y = copy_to(mul(randn({teacher_crops * b, k}, gen, {DType::f32}), 0.5), Device::cpu(), dt);
  Tensor c = copy_to(mul(randn({k}, gen, {DType::f32}), 0.1), Device::cpu(), dt);
  Tensor xc = copy_to(x, Device::cpu(), cpu_dt), yc = copy_to(y, Device::cpu(), cpu_dt),
         cc = copy_to(c, Device::cpu(), cpu_dt);

  Tensor xg = copy_to(x, kGpu, dt);
  Tensor wide = zeros({teacher_crops * b, k + 8}, {dt});  // laid out on the host, moved whole
  copy_(narrow(wide, 1, 5, k), y);
  Tensor yg = narrow(copy_to(wide, kGpu, dt), 1, 5, k);
  Tensor c2 = zeros({2 * k}, {dt});
  copy_(slice(c2, 0, 1, 2 * k, 2), c);
  Tensor cg = slice(copy_to(c2, kGpu, dt), 0, 1, 2 * k, 2);
  ASSERT_FALSE(yg.is_contiguous());
  ASSERT_FALSE(cg.is_contiguous());

  const double ts = 0.1, tt = 0.04;
  kernels::DinoSaved sc = kernels::dino_loss_forward(xc, yc, cc, crops, ts, tt);
  kernels::DinoSaved sg = kernels::dino_loss_forward(xg, yg, cg, crops, ts, tt);
  ASSERT_TRUE(sg.loss.device().is_cuda());
  EXPECT_TRUE(agree("loss", sg.loss, sc.loss, tol_for(dt)));
  EXPECT_TRUE(agree("student_lse", sg.student_lse, sc.student_lse, tol_for(DType::f64)));
  EXPECT_TRUE(agree("teacher_lse", sg.teacher_lse, sc.teacher_lse, tol_for(DType::f64)));

  const double upstream = 1.3;
  Tensor dxc = kernels::dino_loss_backward(full({}, upstream, {cpu_dt}), xc, yc, cc, sc, crops, ts, tt);
  kernels::DinoSaved kept{Tensor(), sg.student_lse, sg.teacher_lse};  // what the autograd op keeps
  Tensor dxg = kernels::dino_loss_backward(full({}, upstream, {dt, kGpu}), xg, yg, cg, kept, crops, ts, tt);
  EXPECT_EQ(dxg.dtype(), dt);
  EXPECT_TRUE(agree("d student", dxg, dxc, tol_for(dt)));
}

TEST(CudaSslLoss, DinoMultiCropLargeMatchesCpu) {
  REQUIRE_GPU();
  dino_case(8, 2, 64, 65536, DType::f32, 41);  // 2 global + 6 local crops, 64 images, 65536 outputs
}

// K below one chunk, K not a multiple of 32 across several chunks, more teacher crops, bf16.
TEST(CudaSslLoss, DinoOddShapesMatchCpu) {
  REQUIRE_GPU();
  dino_case(2, 2, 3, 100, DType::f64, 42);
  dino_case(4, 3, 5, 5000 + 7, DType::f32, 43);
  dino_case(10, 2, 4, 64, DType::f32, 44);
  dino_case(5, 2, 16, 3000, DType::bf16, 45);
}

// Same inputs, same bits: every reduction has a fixed order.
TEST(CudaSslLoss, Deterministic) {
  REQUIRE_GPU();
  Generator gen(46);
  Tensor z = copy_to(randn({256, 64}, gen), kGpu, DType::f32);
  Tensor x = copy_to(randn({6 * 8, 4096}, gen), kGpu, DType::f32);
  Tensor y = copy_to(randn({2 * 8, 4096}, gen), kGpu, DType::f32);
  Tensor c = zeros({4096}, {DType::f32, kGpu});
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  std::vector<std::vector<double>> runs;
  for (int r = 0; r < 2; ++r) {
    kernels::NtXentSaved s = kernels::nt_xent_forward(z, Tensor(), 0.1);
    Tensor dz = kernels::nt_xent_backward(one, z, Tensor(), s, 0.1);
    kernels::DinoSaved d = kernels::dino_loss_forward(x, y, c, 6, 0.1, 0.04);
    Tensor dx = kernels::dino_loss_backward(one, x, y, c, d, 6, 0.1, 0.04);
    std::vector<double> all;
    for (const Tensor& t : {s.loss, s.lse, dz, d.loss, d.student_lse, d.teacher_lse, dx}) {
      std::vector<double> v = copy_to(t, Device::cpu(), DType::f64).to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    runs.push_back(std::move(all));
  }
  EXPECT_TRUE(runs[0] == runs[1]) << "two runs on the same inputs differ";
}

// ================================================================ InfoNCE, BYOL / SimSiam, VICReg, Barlow
// These kernels copy their inputs to f64 and send the GEMM-shaped parts to the f64 GEMM
// (OpenBLAS on the CPU, cuBLASLt on the GPU), whose blocking orders a K-long sum differently:
// the f64 intermediates then differ by up to about K eps |terms| (K <= 16384: ~1e-12 of the
// terms' scale, and a covariance / gradient entry can be a cancellation of terms of the
// tensor's scale). Hence f64 outputs to rtol 1e-11 plus 1e-12 of the tensor's largest value;
// f32 outputs within 2 ulps after that (rtol 3e-7) plus 1e-9 of the largest value; bf16 as
// above (one bf16 rounding of each output: rtol 2^-8, and 1e-6 of the largest value).
Tol gemm_tol(DType dt) {
  if (dt == DType::f64) return {1e-11, 1e-12};
  if (dt == DType::bf16) return {3.92e-3, 1e-6};
  return {3e-7, 1e-9};
}

// The CPU twin of a GPU dtype: bf16 runs in f64 on the CPU (same values, no bf16 CPU kernel).
DType cpu_dtype(DType dt) { return dt == DType::bf16 ? DType::f64 : dt; }

// (R, C) values with `dt` precision: the CPU copy (in cpu_dtype) and a strided GPU view.
struct Pair {
  Tensor cpu, gpu;
};
Pair pair_of(const Tensor& f64_values, DType dt) {
  Tensor v = copy_to(f64_values, Device::cpu(), dt);  // rounded to dt once
  return {copy_to(v, Device::cpu(), cpu_dtype(dt)), gpu_transposed_view(v, dt)};
}

std::string trace(const char* what, std::initializer_list<int64_t> dims, DType dt) {
  std::string s = what;
  for (int64_t d : dims) {
    s += ' ';
    s += std::to_string(d);
  }
  s += ", ";
  s += dtype_name(dt);
  return s;
}

void info_nce_case(int64_t n, int64_t d, int64_t k, double t, DType dt, uint64_t seed) {
  SCOPED_TRACE(trace("InfoNCE N D K", {n, d, k}, dt));
  Generator gen(seed);
  Pair q = pair_of(randn({n, d}, gen, {DType::f64}), dt), key = pair_of(randn({n, d}, gen, {DType::f64}), dt);
  Pair queue = pair_of(normalize(randn({k, d}, gen, {DType::f64}), 1), dt);
  kernels::InfoNceSaved sc = kernels::info_nce_forward(q.cpu, key.cpu, queue.cpu, t);
  kernels::InfoNceSaved sg = kernels::info_nce_forward(q.gpu, key.gpu, queue.gpu, t);
  ASSERT_TRUE(sg.loss.device().is_cuda());
  EXPECT_EQ(sg.loss.dtype(), dt);
  EXPECT_TRUE(agree("loss", sg.loss, sc.loss, gemm_tol(dt)));
  EXPECT_TRUE(agree("lse", sg.lse, sc.lse, gemm_tol(DType::f64)));
  const double up = 0.7;
  kernels::InfoNceGrads gc = kernels::info_nce_backward(full({}, up, {cpu_dtype(dt)}), q.cpu, key.cpu, queue.cpu, sc,
                                                        t, {true, true, true});
  kernels::InfoNceGrads gg = kernels::info_nce_backward(full({}, up, {dt, kGpu}), q.gpu, key.gpu, queue.gpu,
                                                        {Tensor(), sg.lse}, t, {true, true, true});
  EXPECT_TRUE(agree("dq", gg.dq, gc.dq, gemm_tol(dt)));
  EXPECT_TRUE(agree("dk", gg.dk, gc.dk, gemm_tol(dt)));
  EXPECT_TRUE(agree("dqueue", gg.dqueue, gc.dqueue, gemm_tol(dt)));
  kernels::InfoNceGrads only_q = kernels::info_nce_backward(full({}, up, {dt, kGpu}), q.gpu, key.gpu, queue.gpu,
                                                            {Tensor(), sg.lse}, t, {true, false, false});
  EXPECT_FALSE(only_q.dk.defined());
  EXPECT_FALSE(only_q.dqueue.defined());
  EXPECT_TRUE(agree("dq (only)", only_q.dq, gc.dq, gemm_tol(dt)));
}

TEST(CudaSslLoss, InfoNceMatchesCpu) {
  REQUIRE_GPU();
  info_nce_case(2, 3, 1, 0.2, DType::f64, 51);
  info_nce_case(33, 65, 1000, 0.07, DType::f32, 52);
  info_nce_case(256, 128, 16384, 0.2, DType::f32, 53);  // MoCo v2's N x D, a quarter of its queue
  info_nce_case(256, 128, 4096, 0.2, DType::f64, 54);
  info_nce_case(64, 130, 4096, 0.2, DType::bf16, 55);
}

void cosine_case(int64_t n, int64_t d, DType dt, uint64_t seed, bool zero_rows = false) {
  SCOPED_TRACE(trace("cosine N D", {n, d}, dt) + (zero_rows ? ", zero rows" : ""));
  Generator gen(seed);
  std::vector<Pair> x;
  for (int i = 0; i < 4; ++i) {
    Tensor v = randn({n, d}, gen, {DType::f64});
    if (zero_rows && i == 1) fill_(narrow(v, 0, 0, 1), 0.0);  // p2's row 0: the clamped norm paths
    x.push_back(pair_of(v, dt));
  }
  for (kernels::CosineMode mode : {kernels::CosineMode::byol, kernels::CosineMode::simsiam}) {
    SCOPED_TRACE(mode == kernels::CosineMode::byol ? "byol" : "simsiam");
    Tensor lc = kernels::cosine_regression_forward(x[0].cpu, x[1].cpu, x[2].cpu, x[3].cpu, mode);
    Tensor lg = kernels::cosine_regression_forward(x[0].gpu, x[1].gpu, x[2].gpu, x[3].gpu, mode);
    EXPECT_EQ(lg.dtype(), dt);
    EXPECT_TRUE(agree("loss", lg, lc, gemm_tol(dt)));
    std::array<Tensor, 2> gc = kernels::cosine_regression_backward(full({}, 1.3, {cpu_dtype(dt)}), x[0].cpu, x[1].cpu,
                                                                   x[2].cpu, x[3].cpu, mode);
    std::array<Tensor, 2> gg = kernels::cosine_regression_backward(full({}, 1.3, {dt, kGpu}), x[0].gpu, x[1].gpu,
                                                                   x[2].gpu, x[3].gpu, mode);
    EXPECT_TRUE(agree("dp1", gg[0], gc[0], gemm_tol(dt)));
    EXPECT_TRUE(agree("dp2", gg[1], gc[1], gemm_tol(dt)));
  }
}

TEST(CudaSslLoss, CosineRegressionMatchesCpu) {
  REQUIRE_GPU();
  cosine_case(2, 3, DType::f64, 61);
  cosine_case(7, 13, DType::f64, 62, true);
  cosine_case(256, 2048, DType::f32, 63);  // SimSiam's 2048-dim projections
  cosine_case(512, 256, DType::f64, 64);   // BYOL's 256-dim
  cosine_case(64, 257, DType::bf16, 65);
}

void vicreg_case(int64_t n, int64_t d, DType dt, uint64_t seed) {
  SCOPED_TRACE(trace("VICReg N D", {n, d}, dt));
  Generator gen(seed);
  // Columns scaled 0.3 .. 2: the variance hinge is active for some dimensions only.
  std::vector<double> s(d);
  for (int64_t c = 0; c < d; ++c) s[c] = 0.3 + 1.7 * static_cast<double>(c) / static_cast<double>(d);
  Tensor scale = from_vector(s, {1, d}, {DType::f64});
  Tensor xv = mul(randn({n, d}, gen, {DType::f64}), scale);
  Pair x = pair_of(xv, dt), y = pair_of(add(xv, mul(randn({n, d}, gen, {DType::f64}), 0.5)), dt);
  for (kernels::VicregWeights w : {kernels::VicregWeights{25, 25, 1}, kernels::VicregWeights{0, 0, 1},
                                   kernels::VicregWeights{0, 1, 0}}) {
    SCOPED_TRACE("weights " + std::to_string(w.invariance) + " " + std::to_string(w.variance) + " " +
                 std::to_string(w.covariance));
    kernels::VicregTerms tc = kernels::vicreg_forward(x.cpu, y.cpu, w);
    kernels::VicregTerms tg = kernels::vicreg_forward(x.gpu, y.gpu, w);
    EXPECT_EQ(tg.loss.dtype(), dt);
    EXPECT_TRUE(agree("loss", tg.loss, tc.loss, gemm_tol(dt)));
    EXPECT_TRUE(agree("invariance", tg.invariance, tc.invariance, gemm_tol(dt)));
    EXPECT_TRUE(agree("variance", tg.variance, tc.variance, gemm_tol(dt)));
    EXPECT_TRUE(agree("covariance", tg.covariance, tc.covariance, gemm_tol(dt)));
    std::array<Tensor, 2> gc = kernels::vicreg_backward(full({}, 0.7, {cpu_dtype(dt)}), x.cpu, y.cpu, w);
    std::array<Tensor, 2> gg = kernels::vicreg_backward(full({}, 0.7, {dt, kGpu}), x.gpu, y.gpu, w);
    EXPECT_TRUE(agree("dx", gg[0], gc[0], gemm_tol(dt)));
    EXPECT_TRUE(agree("dy", gg[1], gc[1], gemm_tol(dt)));
  }
}

TEST(CudaSslLoss, VicregMatchesCpu) {
  REQUIRE_GPU();
  vicreg_case(2, 3, DType::f64, 71);
  vicreg_case(9, 7, DType::f32, 72);
  vicreg_case(256, 512, DType::f64, 73);
  vicreg_case(512, 2048, DType::f32, 74);
  vicreg_case(64, 300, DType::bf16, 75);
}

void barlow_case(int64_t n, int64_t d, DType dt, uint64_t seed) {
  SCOPED_TRACE(trace("Barlow N D", {n, d}, dt));
  Generator gen(seed);
  Tensor v = mul(randn({n, d}, gen, {DType::f64}), 1.5);
  Pair z1 = pair_of(v, dt), z2 = pair_of(add(v, randn({n, d}, gen, {DType::f64})), dt);
  for (double lambda : {0.0051, 0.5}) {
    SCOPED_TRACE("lambda " + std::to_string(lambda));
    kernels::BarlowTerms tc = kernels::barlow_forward(z1.cpu, z2.cpu, lambda);
    kernels::BarlowTerms tg = kernels::barlow_forward(z1.gpu, z2.gpu, lambda);
    EXPECT_EQ(tg.loss.dtype(), dt);
    EXPECT_TRUE(agree("loss", tg.loss, tc.loss, gemm_tol(dt)));
    EXPECT_TRUE(agree("on_diag", tg.on_diag, tc.on_diag, gemm_tol(dt)));
    EXPECT_TRUE(agree("off_diag", tg.off_diag, tc.off_diag, gemm_tol(dt)));
    for (auto [w_on, w_off] : std::vector<std::pair<double, double>>{{1.0, lambda}, {0.0, 1.0}}) {
      std::array<Tensor, 2> gc = kernels::barlow_backward(full({}, 0.7, {cpu_dtype(dt)}), z1.cpu, z2.cpu, w_on, w_off);
      std::array<Tensor, 2> gg = kernels::barlow_backward(full({}, 0.7, {dt, kGpu}), z1.gpu, z2.gpu, w_on, w_off);
      EXPECT_TRUE(agree("dz1", gg[0], gc[0], gemm_tol(dt)));
      EXPECT_TRUE(agree("dz2", gg[1], gc[1], gemm_tol(dt)));
    }
  }
}

TEST(CudaSslLoss, BarlowMatchesCpu) {
  REQUIRE_GPU();
  barlow_case(2, 3, DType::f64, 81);
  barlow_case(9, 7, DType::f32, 82);
  barlow_case(256, 512, DType::f64, 83);
  barlow_case(512, 2048, DType::f32, 84);
  barlow_case(64, 300, DType::bf16, 85);
}

// The autograd ops on CUDA tensors: the gradients land on the device, in the input dtype.
TEST(CudaSslLoss, FusedOpsRunOnDevice) {
  REQUIRE_GPU();
  Generator gen(86);
  auto leaf = [&](int64_t n, int64_t d) { return copy_to(randn({n, d}, gen), kGpu, DType::f32).requires_grad_(true); };
  Tensor q = leaf(8, 16), k = leaf(8, 16), queue = leaf(32, 16);
  Tensor x = leaf(8, 16), y = leaf(8, 16);
  Tensor loss = add(add(info_nce_fused(q, k, queue, 0.2), cosine_regression_fused(x, y, k, q, true)),
                    add(vicreg_loss_fused(x, y, 25, 25, 1)[0], barlow_loss_fused(x, y, 0.0051)[0]));
  EXPECT_TRUE(loss.device().is_cuda());
  autograd::backward(loss);
  for (const Tensor& t : {q, k, queue, x, y}) {
    ASSERT_TRUE(t.grad().defined());
    EXPECT_TRUE(t.grad().device().is_cuda());
    EXPECT_EQ(t.grad().dtype(), DType::f32);
    for (double v : copy_to(t.grad(), Device::cpu(), DType::f64).to_vector()) ASSERT_TRUE(std::isfinite(v));
  }
}

// Same inputs, same bits for the new kernels too: their own kernels have no atomics, and this
// also checks that the f64 cuBLASLt GEMMs they call are reproducible run to run.
TEST(CudaSslLoss, NewLossesDeterministic) {
  REQUIRE_GPU();
  Generator gen(87);
  Tensor a = copy_to(randn({256, 512}, gen), kGpu, DType::f32), b = copy_to(randn({256, 512}, gen), kGpu, DType::f32);
  Tensor queue = copy_to(randn({4096, 512}, gen), kGpu, DType::f32);
  Tensor one = full({}, 1.0, {DType::f32, kGpu});
  std::vector<std::vector<double>> runs;
  for (int r = 0; r < 2; ++r) {
    std::vector<Tensor> outs;
    kernels::InfoNceSaved s = kernels::info_nce_forward(a, b, queue, 0.2);
    kernels::InfoNceGrads g = kernels::info_nce_backward(one, a, b, queue, s, 0.2, {true, true, true});
    outs.insert(outs.end(), {s.loss, s.lse, g.dq, g.dk, g.dqueue});
    outs.push_back(kernels::cosine_regression_forward(a, b, b, a, kernels::CosineMode::simsiam));
    for (const Tensor& t : kernels::cosine_regression_backward(one, a, b, b, a, kernels::CosineMode::simsiam))
      outs.push_back(t);
    kernels::VicregTerms v = kernels::vicreg_forward(a, b, {25, 25, 1});
    outs.insert(outs.end(), {v.loss, v.invariance, v.variance, v.covariance});
    for (const Tensor& t : kernels::vicreg_backward(one, a, b, {25, 25, 1})) outs.push_back(t);
    kernels::BarlowTerms t3 = kernels::barlow_forward(a, b, 0.0051);
    outs.insert(outs.end(), {t3.loss, t3.on_diag, t3.off_diag});
    for (const Tensor& t : kernels::barlow_backward(one, a, b, 1.0, 0.0051)) outs.push_back(t);
    std::vector<double> all;
    for (const Tensor& t : outs) {
      std::vector<double> v2 = copy_to(t, Device::cpu(), DType::f64).to_vector();
      all.insert(all.end(), v2.begin(), v2.end());
    }
    runs.push_back(std::move(all));
  }
  EXPECT_TRUE(runs[0] == runs[1]) << "two runs on the same inputs differ";
}

}  // namespace
}  // namespace siam::test
