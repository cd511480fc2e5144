// Op cases of the fused batch norm + residual add + ReLU (batch_norm_act). PyTorch twins with
// the same names: tools/reference/cases_norm_act.py, relu(batch_norm(x) + residual); their
// inputs keep every pre-activation away from 0, so the ReLU mask is the same in every
// precision. Tolerance as the batch-norm cases of ops_nn.cpp: double accumulation, one f32
// rounding, then the add and the ReLU (one more rounding).
#include "kernels/norm.h"
#include "op_harness.h"
#include "tensor/rng.h"
#include "test_util.h"

namespace siam::test {
namespace {

const char* kFused = "double accumulation, one f32 rounding for batch norm and one for the add; f32 saved statistics";

OpCase fused(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kFused, 1e-5, 2e-6); }

using V = const std::vector<Tensor>&;

// The running statistics every case starts from (BN_MEAN / BN_VAR in cases_nn.py), built per
// call so repeated calls (gradcheck) start from the same state.
std::pair<Tensor, Tensor> bn_stats(const Tensor& x) {
  const std::vector<double> mean{0.25, -0.5, 1.0}, var{0.5, 2.0, 1.25};
  const int64_t ch = x.size(1);
  TensorOptions o{x.dtype(), x.device()};
  return {from_vector({mean.begin(), mean.begin() + ch}, {ch}, o), from_vector({var.begin(), var.begin() + ch}, {ch}, o)};
}

Tensor bna(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& r, bool relu, bool training) {
  auto [rm, rv] = bn_stats(x);
  return batch_norm_act(x, rm, rv, w, b, r, relu, training, 0.1, 1e-5);
}

OpTable table({
    fused("batch_norm_relu_add_train", [](V x) { return bna(x[0], x[1], x[2], x[3], true, true); }),
    fused("batch_norm_relu_add_eval", [](V x) { return bna(x[0], x[1], x[2], x[3], true, false); }),
    fused("batch_norm_relu_add_2d_no_affine", [](V x) { return bna(x[0], Tensor(), Tensor(), x[1], true, true); }),
    fused("batch_norm_relu_train_pairs", [](V x) { return bna(x[0], Tensor(), Tensor(), Tensor(), true, true); }),
    fused("batch_norm_add_train_no_relu", [](V x) { return bna(x[0], x[1], x[2], x[3], false, true); }),
});

// ---------------------------------------------------------------- plain tests

// Fused vs composite (f64, CPU): the output, every gradient and the running statistics agree
// with relu(add(batch_norm(x), residual)) for each combination of the options.
TEST(BatchNormAct, MatchesComposite) {
  Generator gen(20240611);
  TensorOptions o{DType::f64};
  for (Shape shape : {Shape{6, 3}, Shape{4, 3, 3, 2}})
    for (bool training : {true, false})
      for (bool with_res : {true, false})
        for (bool relu : {true, false}) {
          const std::string what = shape_str(shape) + (training ? " train" : " eval") + (with_res ? " +res" : "") +
                                   (relu ? " relu" : "");
          Tensor x = randn(shape, gen, o), w = randn({3}, gen, o), b = randn({3}, gen, o);
          Tensor r = with_res ? randn(shape, gen, o) : Tensor(), gout = randn(shape, gen, o);
          auto run = [&](bool fused_op, std::vector<Tensor>& grads, Tensor& rm, Tensor& rv) {
            std::vector<Tensor> in{copy_to(x, x.device(), x.dtype()), copy_to(w, w.device(), w.dtype()),
                                   copy_to(b, b.device(), b.dtype())};
            if (with_res) in.push_back(copy_to(r, r.device(), r.dtype()));
            for (Tensor& t : in) t.requires_grad_(true);
            std::tie(rm, rv) = bn_stats(x);
            Tensor res = with_res ? in[3] : Tensor();
            Tensor y;
            if (fused_op) {
              y = batch_norm_act(in[0], rm, rv, in[1], in[2], res, relu, training);
            } else {
              y = batch_norm(in[0], rm, rv, in[1], in[2], training);
              if (with_res) y = add(y, res);
              if (relu) y = siam::relu(y);
            }
            autograd::backward(y, gout);
            for (Tensor& t : in) grads.push_back(t.grad());
            return y;
          };
          std::vector<Tensor> gf, gc;
          Tensor rmf, rvf, rmc, rvc;
          Tensor yf = run(true, gf, rmf, rvf), yc = run(false, gc, rmc, rvc);
          EXPECT_TRUE(close(what + " output", yf, yc, 1e-12, 1e-12, "composite"));
          for (size_t i = 0; i < gf.size(); ++i)
            EXPECT_TRUE(close(what + " gradient " + std::to_string(i), gf[i], gc[i], 1e-10, 1e-12, "composite"));
          EXPECT_TRUE(close(what + " running mean", rmf, rmc, 1e-14, 1e-14, "composite"));
          EXPECT_TRUE(close(what + " running var", rvf, rvc, 1e-14, 1e-14, "composite"));
        }
}

// Without a ReLU the residual's gradient is the incoming one, but a tensor of its own.
TEST(BatchNormAct, ResidualGradientIsACopy) {
  Tensor x = reshape(arange(0, 12, 1, {DType::f64}), {4, 3});
  Tensor g = ones({4, 3}, {DType::f64});
  auto [rm, rv] = bn_stats(x);
  kernels::NormForward f = kernels::batch_norm_act_forward(x, Tensor(), Tensor(), rm, rv, ones({4, 3}, {DType::f64}),
                                                           false, true, 0.1, 1e-5);
  kernels::NormActBackward b =
      kernels::batch_norm_act_backward(g, f.y, x, Tensor(), f.mean, f.invstd, false, true, {false, false, false, true});
  ASSERT_TRUE(b.dresidual.defined());
  EXPECT_FALSE(b.dresidual.same(g));
  EXPECT_NE(b.dresidual.raw_data(), g.raw_data());
  EXPECT_EQ(b.dresidual.to_vector(), g.to_vector());
}

TEST(BatchNormAct, ErrorsNameTheOpAndTheProblem) {
  Tensor x = ones({4, 3});
  expect_error([&] { batch_norm_act(x, Tensor(), Tensor(), ones({2}), Tensor(), Tensor(), true, true); },
               "batch_norm_act: weight must have shape [3], got [2]");
  expect_error([&] { batch_norm_act(x, Tensor(), Tensor(), Tensor(), Tensor(), ones({4, 2}), true, true); },
               "batch_norm_act: residual must have x's shape [4, 3], got [4, 2]");
  expect_error([&] { batch_norm_act(x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true, false); },
               "evaluation mode");
  expect_error([&] { batch_norm_act(ones({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true, true); },
               "more than one value per channel");
  expect_error([&] { batch_norm_act(ones({4, 3, 2}), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), true, true); },
               "expected x of shape (N, C) or (N, C, H, W)");
}

}  // namespace
}  // namespace siam::test
