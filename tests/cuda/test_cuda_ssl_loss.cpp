// CUDA fused SSL losses (kernels/cuda/ssl_loss.cu) vs the CPU kernels, at training sizes the
// op fixtures do not reach: NT-Xent at M = 512 rows x 128 dims with a multi-positive mask and
// with SimCLR's pairs; DINO with 2 global + 6 local crops x 64 images x 65536 outputs; and odd
// shapes around the tile and chunk edges. Inputs are strided views on the GPU (the kernels read
// them in place) and contiguous on the CPU.
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

}  // namespace
}  // namespace siam::test
