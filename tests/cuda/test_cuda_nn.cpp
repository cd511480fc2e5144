// CUDA normalisation, softmax, pooling and resize kernels against their CPU twins, at sizes
// beyond the op fixtures: multi-block reductions, vectorised and scalar paths (odd sizes,
// misaligned rows), channels-last batch norm, the register / block / looping row paths of
// layer norm and softmax. The reference is the CPU kernel in f64 on the same values (inputs
// drawn in f64 and rounded to the tested dtype first), so the tolerance covers only the GPU's
// arithmetic: f32 accumulation in another order, and for bf16 the rounding of the outputs.
// A second group checks determinism: the same call twice gives the same bits.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops.h"
#include "kernels/norm.h"
#include "kernels/pool.h"
#include "kernels/resize.h"
#include "kernels/softmax.h"
#include "op_harness.h"
#include "tensor/cuda_runtime.h"
#include "tensor/rng.h"

namespace siam::test {
namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

const Device kGpu = Device::cuda(0);

struct Tol {
  double rtol, atol;
};
// f32: same formula in f32 with another summation order. bf16: outputs rounded to 8 bits
// (2^-9 relative), plus f32 arithmetic inside.
Tol tol_for(DType dt, Tol f32 = {1e-4, 1e-5}) { return dt == DType::bf16 ? Tol{2e-2, 2e-2} : f32; }

// Values N(shift, scale^2) drawn in f64 and rounded to dt, returned as f64 on the host: the
// CPU reference and the GPU run see the same numbers.
Tensor draw(const Shape& s, Generator& g, DType dt, double scale = 1.0, double shift = 0.0) {
  std::vector<double> v = randn(s, g, {DType::f64}).to_vector();
  for (double& e : v) e = e * scale + shift;
  return copy_to(copy_to(from_vector(v, s, {DType::f64}), Device::cpu(), dt), Device::cpu(), DType::f64);
}

Tensor dev(const Tensor& h, DType dt) { return copy_to(h, kGpu, dt); }

// A device tensor as f64 on the host; a channels-last (N, C, H, W) one is read through its
// NHWC storage and permuted back on the host.
Tensor host(const Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous()) {
    const Shape& s = t.shape();
    Tensor nhwc = t.as_strided({s[0], s[2], s[3], s[1]}, contiguous_strides({s[0], s[2], s[3], s[1]}), t.offset());
    return contiguous(permute(copy_to(nhwc, Device::cpu(), DType::f64), {0, 3, 1, 2}));
  }
  return copy_to(t, Device::cpu(), DType::f64);
}

// An (N, C, H, W) host tensor copied to the GPU in channels-last storage.
Tensor dev_channels_last(const Tensor& h, DType dt) {
  const Shape& s = h.shape();
  Tensor d = copy_to(contiguous(permute(h, {0, 2, 3, 1})), kGpu, dt);
  return d.as_strided(s, {s[2] * s[3] * s[1], 1, s[3] * s[1], s[1]}, 0);
}

bool is_channels_last(const Tensor& t) {
  const Shape& s = t.shape();
  return t.dim() == 4 && t.stride(1) == 1 && t.stride(3) == s[1] && t.stride(2) == s[3] * s[1];
}

void expect_close(const std::string& what, const Tensor& gpu, const Tensor& cpu_ref, Tol t) {
  ASSERT_TRUE(gpu.defined()) << what << ": the CUDA kernel returned no tensor";
  ASSERT_TRUE(gpu.device().is_cuda()) << what << ": on " << gpu.device().str();
  EXPECT_TRUE(close(what, host(gpu), cpu_ref, t.rtol, t.atol, "CPU f64"));
}

std::string name(DType dt) { return dtype_name(dt); }

// ---------------------------------------------------------------- batch norm

struct BnCase {
  Shape shape;
  bool channels_last, residual, relu, training;
};

void check_batch_norm(const BnCase& c, DType dt) {
  const std::string what = name(dt) + " " + shape_str(c.shape) + (c.channels_last ? " NHWC" : "") +
                           (c.training ? " train" : " eval") + (c.residual ? " +res" : "") + (c.relu ? " relu" : "");
  SCOPED_TRACE(what);
  Generator g(7);
  const int64_t C = c.shape[1];
  Tensor x = draw(c.shape, g, dt, 2.0, 0.5), w = draw({C}, g, dt), b = draw({C}, g, dt);
  Tensor r = c.residual ? draw(c.shape, g, dt) : Tensor(), gy = draw(c.shape, g, dt);
  Tensor rm = draw({C}, g, dt, 0.3), rv = copy_to(copy_to(add(mul(rm, rm), 0.5), Device::cpu(), dt), Device::cpu(), DType::f64);
  Tensor rm_gpu = dev(rm, dt), rv_gpu = dev(rv, dt);
  Tensor rm_cpu = clone(rm), rv_cpu = clone(rv);

  auto to_dev = [&](const Tensor& h) { return c.channels_last ? dev_channels_last(h, dt) : dev(h, dt); };
  Tensor xg = to_dev(x), rg = c.residual ? to_dev(r) : Tensor(), gg = to_dev(gy);
  kernels::NormForward fc = kernels::batch_norm_act_forward(x, w, b, rm_cpu, rv_cpu, r, c.relu, c.training, 0.1, 1e-5);
  kernels::NormForward fg = kernels::batch_norm_act_forward(xg, dev(w, dt), dev(b, dt), rm_gpu, rv_gpu, rg, c.relu,
                                                            c.training, 0.1, 1e-5);
  const Tol t = tol_for(dt);
  expect_close("y", fg.y, fc.y, t);
  if (c.channels_last) {
    EXPECT_TRUE(is_channels_last(fg.y)) << "a channels-last x gives a channels-last y";
  }
  EXPECT_EQ(fg.mean.dtype(), dt == DType::bf16 ? DType::f32 : dt) << "statistics are kept in the accumulation type";
  expect_close("mean", fg.mean, fc.mean, tol_for(dt, {1e-5, 1e-6}));
  expect_close("invstd", fg.invstd, fc.invstd, tol_for(dt, {1e-5, 1e-6}));
  expect_close("running_mean", rm_gpu, rm_cpu, tol_for(dt, {1e-5, 1e-6}));
  expect_close("running_var", rv_gpu, rv_cpu, tol_for(dt, {1e-5, 1e-6}));

  // Backward from the forward's own statistics on each side. The ReLU mask can differ where y
  // is within rounding of 0; those few elements are compared with the mask the GPU used.
  kernels::NormActBackward bc = kernels::batch_norm_act_backward(gy, fc.y, x, w, fc.mean, fc.invstd, c.relu,
                                                                 c.training, {true, true, true, c.residual});
  kernels::NormActBackward bg = kernels::batch_norm_act_backward(gg, fg.y, xg, dev(w, dt), fg.mean, fg.invstd, c.relu,
                                                                 c.training, {true, true, true, c.residual});
  if (c.relu) {
    // Reference again, with the GPU's mask (its y rounded to dt) and its statistics.
    Tensor ygpu = host(fg.y);
    bc = kernels::batch_norm_act_backward(gy, ygpu, x, w, host(fg.mean), host(fg.invstd), c.relu, c.training,
                                          {true, true, true, c.residual});
  }
  const Tol tg = tol_for(dt, {1e-4, 1e-4});
  expect_close("dx", bg.dx, bc.dx, tg);
  if (c.channels_last) {
    EXPECT_TRUE(is_channels_last(bg.dx)) << "a channels-last x gives a channels-last dx";
  }
  // Parameter gradients are sums over N*H*W values: absolute error grows with that count.
  const double m = static_cast<double>(x.numel() / C);
  const Tol tp = dt == DType::bf16 ? Tol{2e-2, 2e-2 * std::sqrt(m)} : Tol{1e-4, 1e-6 * m};
  expect_close("dweight", bg.dweight, bc.dweight, tp);
  expect_close("dbias", bg.dbias, bc.dbias, tp);
  if (c.residual) expect_close("dresidual", bg.dresidual, bc.dresidual, tg);
}

TEST(CudaBatchNorm, MatchesCpu) {
  REQUIRE_GPU();
  const std::vector<BnCase> cases = {
      {{64, 256, 14, 14}, false, false, false, true},  // the brief's size: vectors of 4 (14*14 % 8 = 4)
      {{64, 256, 14, 14}, true, true, true, true},     // channels-last, fused
      {{8, 64, 16, 16}, false, true, true, true},      // 16-byte vectors
      {{3, 5, 7, 7}, false, false, true, true},        // S = 49: one value at a time
      {{2, 3, 5, 6}, false, true, false, false},       // S = 30: pairs; eval
      {{4, 13, 5, 5}, true, false, true, true},        // channels-last with C = 13: scalar rows
      {{4, 24, 3, 3}, true, true, true, false},        // channels-last eval
      {{1000, 64}, false, true, true, true},           // (N, C): rows
      {{37, 5}, false, false, false, true},
      {{512, 3, 1, 1}, false, false, false, true},     // S = 1: rows
      {{2, 2048, 7, 7}, false, false, true, true},     // many channels, short planes
  };
  for (DType dt : {DType::f32, DType::bf16})
    for (const BnCase& c : cases) check_batch_norm(c, dt);
}

TEST(CudaBatchNorm, F64MatchesCpuTightly) {
  REQUIRE_GPU();
  Generator g(3);
  Tensor x = draw({16, 8, 9, 9}, g, DType::f64, 3.0, -1.0), w = draw({8}, g, DType::f64), b = draw({8}, g, DType::f64);
  Tensor gy = draw({16, 8, 9, 9}, g, DType::f64);
  Tensor rm = zeros({8}, {DType::f64}), rv = ones({8}, {DType::f64});
  Tensor rmg = dev(rm, DType::f64), rvg = dev(rv, DType::f64);
  kernels::NormForward fc = kernels::batch_norm_forward(x, w, b, rm, rv, true, 0.1, 1e-5);
  kernels::NormForward fg = kernels::batch_norm_forward(dev(x, DType::f64), dev(w, DType::f64), dev(b, DType::f64), rmg,
                                                        rvg, true, 0.1, 1e-5);
  expect_close("y", fg.y, fc.y, {1e-12, 1e-12});
  expect_close("running_var", rvg, rv, {1e-12, 1e-12});
  kernels::NormBackward bc = kernels::batch_norm_backward(gy, x, w, fc.mean, fc.invstd, true, {true, true, true});
  kernels::NormBackward bg = kernels::batch_norm_backward(dev(gy, DType::f64), dev(x, DType::f64), dev(w, DType::f64),
                                                          fg.mean, fg.invstd, true, {true, true, true});
  expect_close("dx", bg.dx, bc.dx, {1e-10, 1e-12});
  expect_close("dweight", bg.dweight, bc.dweight, {1e-10, 1e-10});
  expect_close("dbias", bg.dbias, bc.dbias, {1e-10, 1e-10});
}

// A strided x that is neither contiguous nor channels-last goes through a contiguous copy.
TEST(CudaBatchNorm, StridedInput) {
  REQUIRE_GPU();
  Generator g(5);
  Tensor big = draw({6, 4, 10, 10}, g, DType::f32);
  Tensor x = slice(big, 3, 1, 9, 2);  // (6, 4, 10, 4), stride 2 along W
  Tensor xg = slice(dev(big, DType::f32), 3, 1, 9, 2);
  kernels::NormForward fc = kernels::batch_norm_forward(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
  kernels::NormForward fg = kernels::batch_norm_forward(xg, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
  expect_close("y", fg.y, fc.y, tol_for(DType::f32));
}

TEST(CudaBatchNorm, Deterministic) {
  REQUIRE_GPU();
  Generator g(11);
  for (bool cl : {false, true}) {
    Tensor x = draw({32, 64, 28, 28}, g, DType::f32), gy = draw({32, 64, 28, 28}, g, DType::f32);
    Tensor xg = cl ? dev_channels_last(x, DType::f32) : dev(x, DType::f32);
    Tensor gg = cl ? dev_channels_last(gy, DType::f32) : dev(gy, DType::f32);
    Tensor w = dev(ones({64}), DType::f32);
    auto run = [&] {
      kernels::NormForward f = kernels::batch_norm_forward(xg, w, Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
      kernels::NormBackward b = kernels::batch_norm_backward(gg, xg, w, f.mean, f.invstd, true, {true, true, false});
      return std::vector<std::vector<double>>{host(f.y).to_vector(), host(f.mean).to_vector(), host(f.invstd).to_vector(),
                                              host(b.dx).to_vector(), host(b.dweight).to_vector()};
    };
    EXPECT_TRUE(run() == run()) << (cl ? "channels-last" : "NCHW") << ": two runs differ";
  }
}

TEST(CudaBatchNorm, AutogradOpRunsOnGpu) {
  REQUIRE_GPU();
  Generator g(13);
  Tensor x = dev(draw({4, 3, 5, 5}, g, DType::f32), DType::f32).requires_grad_(true);
  Tensor r = dev(draw({4, 3, 5, 5}, g, DType::f32), DType::f32).requires_grad_(true);
  Tensor w = dev(ones({3}), DType::f32).requires_grad_(true);
  Tensor rm = dev(zeros({3}), DType::f32), rv = dev(ones({3}), DType::f32);
  Tensor y = batch_norm_act(x, rm, rv, w, Tensor(), r, true, true);
  autograd::backward(y, dev(ones({4, 3, 5, 5}), DType::f32));
  ASSERT_TRUE(x.grad().defined() && r.grad().defined() && w.grad().defined());
  EXPECT_TRUE(x.grad().device().is_cuda());
  // The residual's gradient is the incoming one where y > 0, else 0.
  std::vector<double> yv = host(y).to_vector(), gr = host(r.grad()).to_vector();
  for (size_t i = 0; i < yv.size(); ++i) ASSERT_EQ(gr[i], yv[i] > 0 ? 1.0 : 0.0) << "element " << i;
}

// ---------------------------------------------------------------- layer norm

void check_layer_norm(int64_t rows, int64_t d, bool affine, DType dt) {
  const std::string what = name(dt) + " rows " + std::to_string(rows) + " x " + std::to_string(d) + (affine ? " affine" : "");
  SCOPED_TRACE(what);
  Generator g(17);
  Tensor x = draw({rows, d}, g, dt, 1.5, 0.3), gy = draw({rows, d}, g, dt);
  Tensor w = affine ? draw({d}, g, dt) : Tensor(), b = affine ? draw({d}, g, dt) : Tensor();
  Tensor wg = affine ? dev(w, dt) : Tensor(), bg = affine ? dev(b, dt) : Tensor();
  kernels::NormForward fc = kernels::layer_norm_forward(x, d, w, b, 1e-5);
  kernels::NormForward fg = kernels::layer_norm_forward(dev(x, dt), d, wg, bg, 1e-5);
  expect_close("y", fg.y, fc.y, tol_for(dt));
  expect_close("mean", fg.mean, fc.mean, tol_for(dt, {1e-5, 1e-6}));
  expect_close("invstd", fg.invstd, fc.invstd, tol_for(dt, {1e-5, 1e-6}));
  kernels::NormBackward bc = kernels::layer_norm_backward(gy, x, d, w, fc.mean, fc.invstd, {true, affine, affine});
  kernels::NormBackward bgr = kernels::layer_norm_backward(dev(gy, dt), dev(x, dt), d, wg, fg.mean, fg.invstd,
                                                           {true, affine, affine});
  expect_close("dx", bgr.dx, bc.dx, tol_for(dt, {1e-4, 1e-4}));
  if (affine) {
    const Tol tp = dt == DType::bf16 ? Tol{2e-2, 2e-2 * std::sqrt(double(rows))} : Tol{1e-4, 1e-6 * double(rows)};
    expect_close("dweight", bgr.dweight, bc.dweight, tp);
    expect_close("dbias", bgr.dbias, bc.dbias, tp);
  }
}

TEST(CudaLayerNorm, MatchesCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    check_layer_norm(4096, 384, true, dt);   // ViT-S rows: warp path, 16-byte vectors
    check_layer_norm(1000, 1000, true, dt);  // warp path, 8 vectors a lane
    check_layer_norm(300, 197, true, dt);    // odd rows: one value at a time
    check_layer_norm(33, 7, false, dt);      // tiny rows
    check_layer_norm(64, 3000, true, dt);    // block per row, registers
    check_layer_norm(5, 20000, true, dt);    // block per row, re-reading the row
    check_layer_norm(2, 1024, false, dt);    // fewer rows than warps of a block
  }
}

TEST(CudaLayerNorm, F64MatchesCpuTightly) {
  REQUIRE_GPU();
  Generator g(19);
  Tensor x = draw({50, 96}, g, DType::f64), gy = draw({50, 96}, g, DType::f64), w = draw({96}, g, DType::f64);
  kernels::NormForward fc = kernels::layer_norm_forward(x, 96, w, Tensor(), 1e-5);
  kernels::NormForward fg = kernels::layer_norm_forward(dev(x, DType::f64), 96, dev(w, DType::f64), Tensor(), 1e-5);
  expect_close("y", fg.y, fc.y, {1e-12, 1e-12});
  kernels::NormBackward bc = kernels::layer_norm_backward(gy, x, 96, w, fc.mean, fc.invstd, {true, true, true});
  kernels::NormBackward bg = kernels::layer_norm_backward(dev(gy, DType::f64), dev(x, DType::f64), 96,
                                                          dev(w, DType::f64), fg.mean, fg.invstd, {true, true, true});
  expect_close("dx", bg.dx, bc.dx, {1e-10, 1e-12});
  expect_close("dweight", bg.dweight, bc.dweight, {1e-10, 1e-10});
  expect_close("dbias", bg.dbias, bc.dbias, {1e-10, 1e-10});
}

TEST(CudaLayerNorm, Deterministic) {
  REQUIRE_GPU();
  Generator g(23);
  for (int64_t d : {384, 3000}) {
    Tensor x = dev(draw({2048, d}, g, DType::f32), DType::f32), gy = dev(draw({2048, d}, g, DType::f32), DType::f32);
    Tensor w = dev(draw({d}, g, DType::f32), DType::f32);
    auto run = [&] {
      kernels::NormForward f = kernels::layer_norm_forward(x, d, w, Tensor(), 1e-5);
      kernels::NormBackward b = kernels::layer_norm_backward(gy, x, d, w, f.mean, f.invstd, {true, true, true});
      return std::vector<std::vector<double>>{host(f.y).to_vector(), host(b.dx).to_vector(), host(b.dweight).to_vector(),
                                              host(b.dbias).to_vector()};
    };
    EXPECT_TRUE(run() == run()) << "d = " << d << ": two runs differ";
  }
}

// ---------------------------------------------------------------- softmax

void check_softmax(const Shape& shape, int64_t dim, bool log, DType dt, bool transpose_first = false) {
  const std::string what = name(dt) + (log ? " log_softmax " : " softmax ") + shape_str(shape) + " dim " +
                           std::to_string(dim) + (transpose_first ? " transposed" : "");
  SCOPED_TRACE(what);
  Generator g(29);
  Tensor x = draw(shape, g, dt, 3.0), gy = draw(shape, g, dt);
  Tensor xg = dev(x, dt);
  if (transpose_first) {
    x = transpose(x, 0, 1);
    xg = transpose(xg, 0, 1);
    gy = contiguous(transpose(gy, 0, 1));
  }
  Tensor yc = kernels::softmax(x, dim, log), yg = kernels::softmax(xg, dim, log);
  // Softmax values are in [0, 1]; log-softmax values grow with the row length.
  expect_close("y", yg, yc, tol_for(dt, {1e-5, log ? 1e-5 : 1e-7}));
  // The backward from each side's own y: the GPU's y (rounded to dt) feeds the reference too.
  Tensor yh = host(yg);
  Tensor dc = kernels::softmax_backward(gy, yh, dim, log), dg = kernels::softmax_backward(dev(gy, dt), yg, dim, log);
  expect_close("dx", dg, dc, tol_for(dt, {1e-4, 1e-5}));
}

TEST(CudaSoftmax, MatchesCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16})
    for (bool log : {false, true}) {
      check_softmax({3000, 197}, 1, log, dt);   // attention rows: warp path, scalar loads
      check_softmax({500, 1000}, 1, log, dt);   // warp path, vectors
      check_softmax({64, 4096}, 1, log, dt);    // block per row
      check_softmax({4, 65536}, 1, log, dt);    // rows re-read by a block
      check_softmax({7, 12}, 0, log, dt);       // leading dim: column path
      check_softmax({6, 50, 9}, 1, log, dt);    // middle dim
      check_softmax({5, 33}, 1, log, dt, true); // a transposed view, made contiguous first
      check_softmax({1, 1}, 1, log, dt);
    }
}

TEST(CudaSoftmax, F64MatchesCpuTightly) {
  REQUIRE_GPU();
  Generator g(31);
  for (const Shape& s : {Shape{40, 197}, Shape{3, 2000}, Shape{9, 20000}})
    for (bool log : {false, true}) {
      Tensor x = draw(s, g, DType::f64, 4.0), gy = draw(s, g, DType::f64);
      Tensor yc = kernels::softmax(x, 1, log), yg = kernels::softmax(dev(x, DType::f64), 1, log);
      expect_close("y " + shape_str(s), yg, yc, {1e-12, 1e-14});
      expect_close("dx " + shape_str(s), kernels::softmax_backward(dev(gy, DType::f64), yg, 1, log),
                   kernels::softmax_backward(gy, yc, 1, log), {1e-11, 1e-13});
    }
}

TEST(CudaSoftmax, NonFiniteRowsAsCpu) {
  REQUIRE_GPU();
  const double inf = INFINITY;
  Tensor x = from_vector({-inf, -inf, -inf, 1.0, NAN, 2.0, -inf, 0.5, 3.0}, {3, 3}, {DType::f64});
  for (bool log : {false, true}) {
    std::vector<double> c = kernels::softmax(x, 1, log).to_vector();
    std::vector<double> gv = host(kernels::softmax(dev(x, DType::f32), 1, log)).to_vector();
    for (size_t i = 0; i < c.size(); ++i) {
      if (std::isnan(c[i])) {
        EXPECT_TRUE(std::isnan(gv[i])) << "element " << i;
      } else if (std::isinf(c[i])) {
        EXPECT_EQ(gv[i], c[i]) << "element " << i;
      } else {
        EXPECT_NEAR(gv[i], c[i], 1e-6 * (1 + std::abs(c[i]))) << "element " << i;
      }
    }
  }
}

// ---------------------------------------------------------------- pooling

void check_pool(const Shape& xs, int64_t k, int64_t s, int64_t p, DType dt) {
  const std::string what = name(dt) + " " + shape_str(xs) + " k" + std::to_string(k) + " s" + std::to_string(s) + " p" +
                           std::to_string(p);
  SCOPED_TRACE(what);
  Generator g(37);
  Tensor x = draw(xs, g, dt);
  Tensor xg = dev(x, dt);
  auto [yc, ic] = kernels::max_pool2d(x, k, s, p);
  auto [yg, ig] = kernels::max_pool2d(xg, k, s, p);
  expect_close("max y", yg, yc, {0, 0});
  EXPECT_EQ(copy_to(ig, Device::cpu(), DType::i64).to_vector(), ic.to_vector()) << "argmax";
  Tensor gy = draw(yc.shape(), g, dt);
  expect_close("max dx", kernels::max_pool2d_backward(dev(gy, dt), ig, xs), kernels::max_pool2d_backward(gy, ic, xs),
               tol_for(dt, {1e-6, 1e-6}));
  Tensor ac = kernels::avg_pool2d(x, k, s, p), ag = kernels::avg_pool2d(xg, k, s, p);
  expect_close("avg y", ag, ac, tol_for(dt, {1e-6, 1e-6}));
  Tensor ga = draw(ac.shape(), g, dt);
  expect_close("avg dx", kernels::avg_pool2d_backward(dev(ga, dt), xs, k, s, p),
               kernels::avg_pool2d_backward(ga, xs, k, s, p), tol_for(dt, {1e-6, 1e-6}));
}

void check_adaptive(const Shape& xs, int64_t oh, int64_t ow, DType dt) {
  SCOPED_TRACE(name(dt) + " adaptive " + shape_str(xs) + " -> " + std::to_string(oh) + "x" + std::to_string(ow));
  Generator g(41);
  Tensor x = draw(xs, g, dt);
  Tensor yc = kernels::adaptive_avg_pool2d(x, oh, ow), yg = kernels::adaptive_avg_pool2d(dev(x, dt), oh, ow);
  expect_close("y", yg, yc, tol_for(dt, {1e-6, 1e-6}));
  Tensor gy = draw(yc.shape(), g, dt);
  expect_close("dx", kernels::adaptive_avg_pool2d_backward(dev(gy, dt), xs), kernels::adaptive_avg_pool2d_backward(gy, xs),
               tol_for(dt, {1e-6, 1e-6}));
}

TEST(CudaPool, MatchesCpu) {
  REQUIRE_GPU();
  for (DType dt : {DType::f32, DType::bf16}) {
    check_pool({2, 64, 56, 56}, 3, 2, 1, dt);  // ResNet stem: overlapping windows
    check_pool({2, 64, 56, 56}, 2, 2, 0, dt);
    check_pool({3, 5, 13, 11}, 3, 1, 1, dt);   // every input in up to 9 windows
    check_pool({1, 2, 7, 9}, 4, 3, 2, dt);
    check_adaptive({2, 64, 56, 56}, 7, 7, dt);
    check_adaptive({2, 64, 7, 7}, 1, 1, dt);   // global average pool
    check_adaptive({3, 4, 13, 11}, 5, 3, dt);  // uneven windows
    check_adaptive({2, 3, 5, 7}, 9, 11, dt);   // more outputs than inputs
  }
}

// Max pooling's backward scatters in a fixed order: overlapping windows (each input the
// argmax of up to 9 outputs) still give the same bits twice.
TEST(CudaPool, Deterministic) {
  REQUIRE_GPU();
  Generator g(43);
  Tensor x = dev(draw({4, 32, 40, 40}, g, DType::f32), DType::f32);
  auto [y, idx] = kernels::max_pool2d(x, 3, 1, 1);
  Tensor gy = dev(draw(y.shape(), g, DType::f32), DType::f32);
  auto run = [&] { return host(kernels::max_pool2d_backward(gy, idx, x.shape())).to_vector(); };
  EXPECT_TRUE(run() == run());
}

// ---------------------------------------------------------------- resize

TEST(CudaResize, MatchesCpu) {
  REQUIRE_GPU();
  struct R {
    Shape x;
    int64_t oh, ow;
  };
  const std::vector<R> sizes = {{{2, 3, 7, 9}, 20, 17}, {{2, 3, 33, 40}, 8, 11}, {{1, 2, 1, 5}, 4, 1}, {{2, 4, 16, 16}, 16, 16}};
  for (DType dt : {DType::f32, DType::bf16})
    for (kernels::Resize mode : {kernels::Resize::bilinear, kernels::Resize::bicubic})
      for (bool align : {false, true})
        for (const R& r : sizes) {
          SCOPED_TRACE(name(dt) + (mode == kernels::Resize::bicubic ? " bicubic " : " bilinear ") + shape_str(r.x) +
                       " -> " + std::to_string(r.oh) + "x" + std::to_string(r.ow) + (align ? " align" : ""));
          Generator g(47);
          Tensor x = draw(r.x, g, dt);
          Tensor yc = kernels::resize(mode, x, r.oh, r.ow, align);
          expect_close("y", kernels::resize(mode, dev(x, dt), r.oh, r.ow, align), yc, tol_for(dt, {1e-5, 1e-6}));
          Tensor gy = draw(yc.shape(), g, dt);
          expect_close("dx", kernels::resize_backward(mode, dev(gy, dt), r.x, align),
                       kernels::resize_backward(mode, gy, r.x, align), tol_for(dt, {1e-5, 1e-5}));
        }
}

// ---------------------------------------------------------------- errors

TEST(CudaNn, ErrorsNameTheOpAndTheProblem) {
  REQUIRE_GPU();
  Tensor x = dev(ones({4, 3}), DType::f32);
  try {
    kernels::batch_norm_forward(x, ones({3}), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
    ADD_FAILURE() << "a CPU weight with a CUDA x was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch_norm (CUDA): weight is on cpu"), std::string::npos) << e.what();
  }
  try {
    kernels::softmax(dev(ones({4, 3}), DType::i64), 1, false);
    ADD_FAILURE() << "an i64 softmax was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("softmax (CUDA): expected f32, f64 or bf16, got i64"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace siam::test
