// A training step of a small network (conv + BN + ReLU + pool + linear + cross-entropy + SGD
// with momentum) captured into a CUDA graph and replayed gives the same parameters and BN
// statistics as the same steps run eagerly; the capture itself proves the step never
// synchronises with the host (a blocking call inside a capture fails it).
#include <gtest/gtest.h>

#include <memory>

#include "autograd/ops.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tensor/cuda_runtime.h"
#include "tensor/rng.h"

using namespace siam;

namespace {

struct Net {
  std::shared_ptr<nn::Sequential> body;
  std::shared_ptr<nn::Linear> head;
  std::unique_ptr<nn::SGD> opt;

  Net() {
    body = std::make_shared<nn::Sequential>(std::vector<nn::ModulePtr>{
        std::make_shared<nn::Conv2d>(3, 8, 3, 1, 1), std::make_shared<nn::BatchNorm>(8),
        std::make_shared<nn::ReLU>(), std::make_shared<nn::AdaptiveAvgPool2d>(1, 1)});
    head = std::make_shared<nn::Linear>(8, 10);
  }
  void to_cuda() {
    body->to(Device::cuda(0));
    head->to(Device::cuda(0));
    nn::NamedTensors params;
    for (auto& [n, p] : body->named_parameters()) params.push_back({"body." + n, p});
    for (auto& [n, p] : head->named_parameters()) params.push_back({"head." + n, p});
    std::vector<nn::ParamGroup> groups(1);
    groups[0].name = "all";
    groups[0].params = params;
    groups[0].lr = 0.1;
    groups[0].weight_decay = 1e-4;
    opt = std::make_unique<nn::SGD>(groups, nn::SgdOptions{.momentum = 0.9});
  }
  // The step: nothing in it reads a value back to the host.
  Tensor step(const Tensor& x, const Tensor& y) {
    Tensor logits = head->forward(flatten(body->forward(x), 1));
    Tensor loss = cross_entropy(logits, y);
    autograd::backward(loss);
    opt->step();
    opt->zero_grad();
    return loss;
  }
  std::map<std::string, Tensor> state() const {
    std::map<std::string, Tensor> s;
    for (auto& [n, t] : body->state_dict()) s["body." + n] = t;
    for (auto& [n, t] : head->state_dict()) s["head." + n] = t;
    return s;
  }
};

}  // namespace

TEST(CudaGraph, CapturedTrainingStepMatchesEager) {
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason();
  Net eager, graphed;
  graphed.body->load_state_dict(eager.body->state_dict());
  graphed.head->load_state_dict(eager.head->state_dict());
  eager.to_cuda();
  graphed.to_cuda();
  Generator gen(7);
  Tensor x = to(randn({16, 3, 12, 12}, gen), Device::cuda(0));
  Tensor y = to(from_vector({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16}, {DType::i64}), Device::cuda(0));

  const int steps = 6;
  Tensor eager_loss;
  for (int i = 0; i < steps; ++i) eager_loss = eager.step(x, y);

  graphed.step(x, y);  // warm-up: momentum buffers, library handles, algorithm choices
  cuda::Graph graph;
  Tensor graph_loss;
  graph.capture([&] { graph_loss = graphed.step(x, y); });
  for (int i = 1; i < steps; ++i) graph.replay();
  cuda::synchronize(0);

  EXPECT_NEAR(graph_loss.item(), eager_loss.item(), 1e-6 * std::abs(eager_loss.item()) + 1e-7);
  auto want = eager.state(), got = graphed.state();
  ASSERT_EQ(want.size(), got.size());
  for (auto& [name, w] : want) {
    std::vector<double> a = got.at(name).to_vector(), b = w.to_vector();
    ASSERT_EQ(a.size(), b.size()) << name;
    // Same kernels on the same data in the same order: equal up to library-internal
    // algorithm choice, which we allow one f32 ulp-level tolerance for.
    for (size_t k = 0; k < a.size(); ++k)
      ASSERT_NEAR(a[k], b[k], 1e-5 * std::abs(b[k]) + 1e-6) << name << "[" << k << "]";
  }
}

TEST(CudaGraph, HostSyncInsideCaptureIsRefused) {
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason();
  Generator gen(1);
  Tensor t = to(randn({4}, gen), Device::cuda(0));
  cuda::Graph graph;
  EXPECT_THROW(graph.capture([&] { (void)t.to_vector(); }), Error);
  EXPECT_FALSE(cuda::capturing());
  // The stream is usable again afterwards.
  EXPECT_EQ(to(t, Device::cpu()).numel(), 4);
}

TEST(CudaGraph, ReplayWithoutCaptureIsAnError) {
  cuda::Graph graph;
  EXPECT_THROW(graph.replay(), Error);
}
