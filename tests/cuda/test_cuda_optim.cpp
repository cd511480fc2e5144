// CUDA optimizer and EMA updates (kernels/cuda/optim.cu) vs the CPU kernels: 20 steps of each
// update over one list of 60 tensors (more than one multi-tensor batch of 48), of sizes that
// exercise every path: 1 and 7 elements (the scalar tail only), 4096 + 3 (vector groups and a
// tail), 65536 + 5 (several chunks of one tensor), 1 << 20, a conv weight (64, 3, 7, 7); every
// tenth tensor is f64 (one call updates both dtypes), and a few gradients and parameters are
// views at a 4-byte offset (the unaligned element-at-a-time path).
//
// Tolerance (per tensor: |gpu - cpu| <= rtol |cpu| + arel max|cpu|). The per-element arithmetic
// is the CPU's, operation for operation, with the same hyper-parameters rounded to the dtype;
// what may differ is which multiply-adds GCC and nvcc contract into FMAs (one rounding apart
// per operation) and LARS's norms, summed in double in another order and rounded to the dtype
// (at most one ulp of the trust ratio). Over 20 steps these stay within a few ulps of the
// largest value a tensor passes through: f32 rtol 4e-6, arel 1e-6 (8 ulps); f64 rtol 1e-13,
// arel 1e-14. A real error (a decay applied twice, a missed Nesterov term, a wrong trust ratio
// or bias correction) moves values by 1e-4 relative or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "kernels/optim.h"
#include "tensor/cuda_runtime.h"
#include "tensor/rng.h"
#include "test_util.h"

namespace siam::test {
namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

constexpr int kSteps = 20;
constexpr int kTensors = 60;

const Device kGpu = Device::cuda(0);

Shape shape_of(int i) {
  static const std::vector<Shape> cycle = {{1},    {7},         {4096 + 3}, {64, 3, 7, 7}, {513},
                                           {64},   {65536 + 5}, {3},       {2048 + 1},    {256, 64}};
  if (i == 5 || i == 33 || i == 57) return {1 << 20};
  return cycle[i % cycle.size()];
}
DType dtype_of(int i) { return i % 10 == 9 ? DType::f64 : DType::f32; }
// Tensors placed 4 bytes past an aligned address on the GPU.
bool misaligned(int i) { return i % 7 == 3; }

// A GPU copy of a CPU tensor; misaligned ones are a view one element into a larger buffer.
Tensor gpu_copy(const Tensor& cpu, bool offset) {
  if (!offset) return copy_to(cpu, kGpu, cpu.dtype());
  Tensor buf = zeros({cpu.numel() + 1}, {cpu.dtype(), kGpu});
  Tensor v = reshape(narrow(buf, 0, 1, cpu.numel()), cpu.shape());
  copy_(v, cpu);
  return v;
}

// The same list on both devices.
struct Twin {
  std::vector<Tensor> cpu, gpu;
};

Twin random_list(Generator& gen, double scale, bool offsets) {
  Twin t;
  for (int i = 0; i < kTensors; ++i) {
    Tensor c = mul(randn(shape_of(i), gen, {dtype_of(i)}), scale);
    t.cpu.push_back(c);
    t.gpu.push_back(gpu_copy(c, offsets && misaligned(i)));
  }
  return t;
}

Twin zero_list() {
  Twin t;
  for (int i = 0; i < kTensors; ++i) {
    t.cpu.push_back(zeros(shape_of(i), {dtype_of(i)}));
    t.gpu.push_back(zeros(shape_of(i), {dtype_of(i), kGpu}));
  }
  return t;
}

// Gradients of step s: two fixed random directions mixed differently every step, so momentum
// and moments see changing values without drawing 3M normals per step.
struct GradSource {
  std::vector<Tensor> a, b;
  explicit GradSource(Generator& gen) {
    for (int i = 0; i < kTensors; ++i) {
      a.push_back(randn(shape_of(i), gen, {dtype_of(i)}));
      b.push_back(randn(shape_of(i), gen, {dtype_of(i)}));
    }
  }
  Twin at(int step, const std::vector<int>& zero = {}) const {
    Twin t;
    for (int i = 0; i < kTensors; ++i) {
      Tensor g = add(mul(a[i], std::cos(0.3 * step)), mul(b[i], std::sin(0.7 * step + 0.1)));
      if (std::find(zero.begin(), zero.end(), i) != zero.end()) g = zeros(g.shape(), {g.dtype()});
      t.cpu.push_back(g);
      t.gpu.push_back(gpu_copy(g, misaligned(i + 1)));  // other tensors than the parameters' offsets
    }
    return t;
  }
};

std::vector<Tensor> pick(const std::vector<Tensor>& v, const std::vector<int>& idx) {
  std::vector<Tensor> out;
  for (int i : idx) out.push_back(v[i]);
  return out;
}

// Every GPU tensor of the list within the tolerance of its CPU twin; names the worst element.
::testing::AssertionResult lists_agree(const std::string& what, const std::vector<Tensor>& gpu,
                                       const std::vector<Tensor>& cpu) {
  if (gpu.size() != cpu.size()) return ::testing::AssertionFailure() << what << ": list sizes differ";
  for (size_t i = 0; i < cpu.size(); ++i) {
    if (!gpu[i].device().is_cuda()) return ::testing::AssertionFailure() << what << " " << i << " left the GPU";
    const bool f64 = cpu[i].dtype() == DType::f64;
    const double rtol = f64 ? 1e-13 : 4e-6, arel = f64 ? 1e-14 : 1e-6;
    std::vector<double> g = copy_to(gpu[i], Device::cpu(), DType::f64).to_vector();
    std::vector<double> c = copy_to(cpu[i], Device::cpu(), DType::f64).to_vector();
    double mx = 0;
    for (double v : c) mx = std::max(mx, std::abs(v));
    for (size_t k = 0; k < c.size(); ++k) {
      const double err = std::abs(g[k] - c[k]);
      if (!(err <= rtol * std::abs(c[k]) + arel * mx))
        return ::testing::AssertionFailure()
               << what << " " << i << " (" << shape_str(cpu[i].shape()) << " " << dtype_name(cpu[i].dtype())
               << ") element " << k << ": CUDA " << g[k] << ", CPU " << c[k] << ", difference " << err
               << " > " << rtol << " |cpu| + " << arel << " max|cpu| (max|cpu| = " << mx << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

void sgd_case(double momentum, bool nesterov) {
  Generator gen(21);
  Twin p = random_list(gen, 1.0, true), buf = zero_list();
  GradSource grads(gen);
  kernels::SgdHyper h{.lr = 0.1, .momentum = momentum, .weight_decay = 5e-4, .nesterov = nesterov};
  for (int s = 0; s < kSteps; ++s) {
    Twin g = grads.at(s);
    std::vector<Tensor> cb = momentum != 0 ? buf.cpu : std::vector<Tensor>{};
    std::vector<Tensor> gb = momentum != 0 ? buf.gpu : std::vector<Tensor>{};
    kernels::sgd_update(p.cpu, g.cpu, cb, h);
    kernels::sgd_update(p.gpu, g.gpu, gb, h);
  }
  EXPECT_TRUE(lists_agree("parameter", p.gpu, p.cpu));
  if (momentum != 0) {
    EXPECT_TRUE(lists_agree("momentum buffer", buf.gpu, buf.cpu));
  }
}

TEST(CudaOptim, SgdMomentumMatchesCpu) {
  REQUIRE_GPU();
  sgd_case(0.9, false);
}

TEST(CudaOptim, SgdNesterovMatchesCpu) {
  REQUIRE_GPU();
  sgd_case(0.9, true);
}

TEST(CudaOptim, SgdWithoutMomentumMatchesCpu) {
  REQUIRE_GPU();
  sgd_case(0.0, false);
}

// Three parameter groups as nn::LARS forms them: weights (adapted, decayed; tensor 1 starts at
// zero, so ||p|| = 0 and the ratio is 1 on the first step), biases and norms (not adapted, no
// decay), and an adapted group without decay where tensor 2's gradient is always zero
// (||d|| = 0: ratio 1).
TEST(CudaOptim, LarsGroupsMatchCpu) {
  REQUIRE_GPU();
  Generator gen(22);
  Twin p = random_list(gen, 0.5, true), buf = zero_list();
  fill_(p.cpu[1], 0.0);
  fill_(p.gpu[1], 0.0);
  GradSource grads(gen);
  std::vector<int> weights, biases, no_decay;
  for (int i = 0; i < kTensors; ++i) (i % 3 == 1 ? weights : i % 3 == 0 ? biases : no_decay).push_back(i);
  struct Group {
    const std::vector<int>* idx;
    kernels::LarsHyper h;
  };
  const std::vector<Group> groups = {
      {&weights, {.lr = 0.3, .momentum = 0.9, .weight_decay = 1e-4, .eta = 1e-3, .adapt = true}},
      {&biases, {.lr = 0.3, .momentum = 0.9, .weight_decay = 0, .eta = 1e-3, .adapt = false}},
      {&no_decay, {.lr = 0.2, .momentum = 0.9, .weight_decay = 0, .eta = 0.02, .adapt = true}},
  };
  for (int s = 0; s < kSteps; ++s) {
    Twin g = grads.at(s, {2});
    for (const Group& gr : groups) {
      kernels::lars_update(pick(p.cpu, *gr.idx), pick(g.cpu, *gr.idx), pick(buf.cpu, *gr.idx), gr.h);
      kernels::lars_update(pick(p.gpu, *gr.idx), pick(g.gpu, *gr.idx), pick(buf.gpu, *gr.idx), gr.h);
    }
  }
  EXPECT_TRUE(lists_agree("parameter", p.gpu, p.cpu));
  EXPECT_TRUE(lists_agree("momentum buffer", buf.gpu, buf.cpu));
  EXPECT_TRUE(lists_agree("zero-gradient parameter", {p.gpu[2]}, {p.cpu[2]}));
}

// Per-tensor step counts differ (a parameter that missed steps), so each tensor gets its own
// bias correction.
TEST(CudaOptim, AdamWMatchesCpu) {
  REQUIRE_GPU();
  Generator gen(23);
  Twin p = random_list(gen, 1.0, true), m = zero_list(), v = zero_list();
  GradSource grads(gen);
  kernels::AdamWHyper h{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.05};
  for (int s = 0; s < kSteps; ++s) {
    Twin g = grads.at(s);
    std::vector<int64_t> steps;
    for (int i = 0; i < kTensors; ++i) steps.push_back(s + 1 + i % 4);
    kernels::adamw_update(p.cpu, g.cpu, m.cpu, v.cpu, steps, h);
    kernels::adamw_update(p.gpu, g.gpu, m.gpu, v.gpu, steps, h);
  }
  EXPECT_TRUE(lists_agree("parameter", p.gpu, p.cpu));
  EXPECT_TRUE(lists_agree("first moment", m.gpu, m.cpu));
  EXPECT_TRUE(lists_agree("second moment", v.gpu, v.cpu));
}

TEST(CudaOptim, EmaMatchesCpu) {
  REQUIRE_GPU();
  Generator gen(24);
  Twin target = random_list(gen, 1.0, true);
  GradSource sources(gen);
  for (int s = 0; s < kSteps; ++s) {
    Twin src = sources.at(s);
    kernels::ema_update(target.cpu, src.cpu, 0.996);
    kernels::ema_update(target.gpu, src.gpu, 0.996);
  }
  EXPECT_TRUE(lists_agree("EMA target", target.gpu, target.cpu));
}

// The updates run without host synchronisation or host-side allocation of their own, so a
// captured graph replays them: three replays equal three eager CPU steps (the captured
// kernels keep the arguments of the capture, here the same gradients and step counts).
TEST(CudaOptim, LarsAndAdamWReplayFromACudaGraph) {
  REQUIRE_GPU();
  Generator gen(25);
  Twin p = random_list(gen, 0.5, false), buf = zero_list(), m = zero_list(), v = zero_list();
  Twin g = GradSource(gen).at(0);
  std::vector<int64_t> steps(kTensors, 1);
  kernels::LarsHyper lars{.lr = 0.3, .momentum = 0.9, .weight_decay = 1e-4, .eta = 1e-3, .adapt = true};
  kernels::AdamWHyper adamw{.lr = 1e-3, .weight_decay = 0.05};
  auto step = [&](Twin& params, bool gpu) {
    const auto& P = gpu ? params.gpu : params.cpu;
    kernels::lars_update(P, gpu ? g.gpu : g.cpu, gpu ? buf.gpu : buf.cpu, lars);
    kernels::adamw_update(P, gpu ? g.gpu : g.cpu, gpu ? m.gpu : m.cpu, gpu ? v.gpu : v.cpu, steps, adamw);
  };
  step(p, true);  // eager warm-up step on both
  step(p, false);
  cuda::Graph graph;
  graph.capture([&] { step(p, true); });
  for (int r = 0; r < 3; ++r) {
    graph.replay();
    step(p, false);
  }
  cuda::synchronize(0);
  EXPECT_TRUE(lists_agree("parameter", p.gpu, p.cpu));
  EXPECT_TRUE(lists_agree("momentum buffer", buf.gpu, buf.cpu));
  EXPECT_TRUE(lists_agree("first moment", m.gpu, m.cpu));
  EXPECT_TRUE(lists_agree("second moment", v.gpu, v.cpu));
}

// Same inputs, same bits: LARS's norms are reduced in a fixed order.
TEST(CudaOptim, LarsIsDeterministic) {
  REQUIRE_GPU();
  Generator gen(26);
  Twin p0 = random_list(gen, 0.5, false);
  Twin g = GradSource(gen).at(3);
  kernels::LarsHyper h{.lr = 0.3, .momentum = 0.9, .weight_decay = 1e-4, .eta = 1e-3, .adapt = true};
  std::vector<std::vector<double>> runs;
  for (int r = 0; r < 2; ++r) {
    std::vector<Tensor> p, buf;
    for (int i = 0; i < kTensors; ++i) {
      p.push_back(copy_to(p0.gpu[i], kGpu, p0.gpu[i].dtype()));
      buf.push_back(zeros(shape_of(i), {dtype_of(i), kGpu}));
    }
    for (int s = 0; s < 3; ++s) kernels::lars_update(p, g.gpu, buf, h);
    std::vector<double> all;
    for (const Tensor& t : p) {
      std::vector<double> v = copy_to(t, Device::cpu(), DType::f64).to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    runs.push_back(std::move(all));
  }
  EXPECT_TRUE(runs[0] == runs[1]) << "two LARS runs on the same inputs differ";
}

TEST(CudaOptim, RejectsMixedDevicesAndDtypes) {
  REQUIRE_GPU();
  Tensor p = zeros({4}, {DType::f32, kGpu});
  Tensor g_cpu = zeros({4});
  expect_error([&] { kernels::sgd_update({p}, {g_cpu}, {}, {.lr = 0.1}); }, "gradients 0");
  Tensor p16 = zeros({4}, {DType::bf16, kGpu});
  expect_error([&] { kernels::ema_update({p16}, {p16}, 0.9); }, "expected f32 or f64");
  Tensor q = zeros({4}, {DType::f32, kGpu});
  expect_error([&] { kernels::sgd_update({p, zeros({4})}, {q, zeros({4})}, {}, {.lr = 0.1}); },
               "one update takes the parameters of one device");
  Tensor bad_buf = zeros({5}, {DType::f32, kGpu});
  expect_error([&] { kernels::lars_update({p}, {q}, {bad_buf}, {.lr = 0.1, .eta = 1e-3}); },
               "momentum buffers 0");
}

}  // namespace
}  // namespace siam::test
