// Op cases: normalisation, softmax and losses, vectors, joining, indexing, dropout. PyTorch
// twins with the same names: tools/reference/cases_nn.py. Tolerances (f32 vs the f64
// PyTorch reference):
//  kExact  - copies and one multiply per element (views, cat, indexing, dropout).
//  kFused  - fused kernels that compute in double and round once, but read the f32-rounded
//            mean / invstd / softmax output the forward saved: a few f32 ulps, plus an
//            absolute floor for gradients that are small differences of O(1) terms.
//  kChain  - compositions of several f32 ops (cross_entropy, normalize, cosine_similarity):
//            each op rounds, so errors add up over a handful of roundings.
#include <gtest/gtest.h>

#include "test_util.h"
#include "op_harness.h"
#include "tensor/safetensors.h"

namespace siam::test {
namespace {

const char* kExact = "f32 rounding of a copy or one multiply per element";
const char* kFused = "double accumulation, one f32 rounding, f32 saved statistics; gradients cancel O(1) terms";
const char* kChain = "a chain of f32 ops, each rounding once (log_softmax, gather, sums, divisions)";

// Observed worst errors: exact 3e-7 abs; fused 4e-7 abs (batch_norm_4d_train gradients);
// chain 9e-7 abs (cross_entropy_soft_smoothing_sum, a sum of 5 losses of size ~10).
OpCase exact(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kExact, 1e-6, 1e-6); }
OpCase fused(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kFused, 1e-5, 2e-6); }
OpCase chain(std::string name, OpFn fn) { return op_case(std::move(name), std::move(fn), kChain, 1e-5, 5e-6); }

using V = const std::vector<Tensor>&;

// The running statistics every batch-norm case starts from (BN_MEAN / BN_VAR in cases_nn.py),
// built per call so repeated calls (gradcheck) start from the same state.
const std::vector<double> kBnMean{0.25, -0.5, 1.0}, kBnVar{0.5, 2.0, 1.25};
std::pair<Tensor, Tensor> bn_stats(const Tensor& x) {
  int64_t ch = x.size(1);
  TensorOptions o{x.dtype()};
  return {from_vector({kBnMean.begin(), kBnMean.begin() + ch}, {ch}, o),
          from_vector({kBnVar.begin(), kBnVar.begin() + ch}, {ch}, o)};
}
Tensor bn(const Tensor& x, const Tensor& w, const Tensor& b, bool training) {
  auto [rm, rv] = bn_stats(x);
  return batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5);
}

constexpr uint64_t kDropSeed = 0x5EED00001234ull;  // DROP_SEED in cases_nn.py

// Pieces scaled 1, 2, 3, ... and joined again: each piece's gradient differs.
Tensor rejoin_scaled(const std::vector<Tensor>& parts, int64_t dim) {
  std::vector<Tensor> scaled;
  for (size_t i = 0; i < parts.size(); ++i) scaled.push_back(mul(parts[i], static_cast<double>(i + 1)));
  return cat(scaled, dim);
}

OpTable table({
    fused("batch_norm_2d_train", [](V x) { return bn(x[0], x[1], x[2], true); }),
    fused("batch_norm_4d_train", [](V x) { return bn(x[0], x[1], x[2], true); }),
    fused("batch_norm_train_no_affine", [](V x) { return bn(x[0], Tensor(), Tensor(), true); }),
    fused("batch_norm_4d_eval", [](V x) { return bn(x[0], x[1], x[2], false); }),
    fused("batch_norm_2d_eval_no_affine", [](V x) { return bn(x[0], Tensor(), Tensor(), false); }),

    fused("layer_norm_last", [](V x) { return layer_norm(x[0], {5}, x[1], x[2]); }),
    fused("layer_norm_last2", [](V x) { return layer_norm(x[0], {3, 4}, x[1], x[2]); }),
    fused("layer_norm_last_no_affine", [](V x) { return layer_norm(x[0], {6}, Tensor(), Tensor()); }),
    fused("layer_norm_last2_no_affine", [](V x) { return layer_norm(x[0], {3, 4}, Tensor(), Tensor()); }),

    fused("softmax_dim1", [](V x) { return softmax(x[0], 1); }),
    fused("softmax_dim0", [](V x) { return softmax(x[0], 0); }),
    fused("softmax_transposed", [](V x) { return softmax(transpose(x[0], 0, 1), 1); }),
    fused("softmax_middle_dim", [](V x) { return softmax(x[0], 1); }),
    fused("log_softmax_dim1", [](V x) { return log_softmax(x[0], 1); }),
    fused("log_softmax_dim0", [](V x) { return log_softmax(x[0], 0); }),
    fused("log_softmax_transposed", [](V x) { return log_softmax(transpose(x[0], 0, 1), 1); }),

    chain("cross_entropy_index_mean", [](V x) { return cross_entropy(x[0], x[1]); }),
    chain("cross_entropy_index_sum", [](V x) { return cross_entropy(x[0], x[1], 0.0, Reduction::sum); }),
    chain("cross_entropy_index_none", [](V x) { return cross_entropy(x[0], x[1], 0.0, Reduction::none); }),
    chain("cross_entropy_label_smoothing", [](V x) { return cross_entropy(x[0], x[1], 0.1); }),
    chain("cross_entropy_soft", [](V x) { return cross_entropy(x[0], x[1]); }),
    chain("cross_entropy_soft_smoothing_sum",
          [](V x) { return cross_entropy(x[0], x[1], 0.1, Reduction::sum); }),

    chain("normalize_dim1", [](V x) { return normalize(x[0], 1); }),
    chain("normalize_dim0", [](V x) { return normalize(x[0], 0); }),
    chain("cosine_similarity", [](V x) { return cosine_similarity(x[0], x[1], 1); }),
    chain("cosine_similarity_broadcast", [](V x) { return cosine_similarity(x[0], x[1], -1); }),

    exact("cat_dim1", [](V x) { return cat({x[0], x[1], x[2]}, 1); }),
    exact("stack_dim0", [](V x) { return stack({x[0], x[1], x[2]}, 0); }),
    exact("stack_dim2", [](V x) { return stack({x[0], x[1]}, 2); }),
    exact("split_scaled", [](V x) { return rejoin_scaled(split(x[0], 3, 0), 0); }),
    exact("chunk_scaled", [](V x) { return rejoin_scaled(chunk(x[0], 3, 1), 1); }),

    exact("index_select_repeated", [](V x) { return index_select(x[0], 0, x[1]); }),
    exact("index_select_middle", [](V x) { return index_select(x[0], 1, x[1]); }),
    exact("gather_dim1", [](V x) { return gather(x[0], 1, x[1]); }),
    exact("gather_dim0_smaller", [](V x) { return gather(x[0], 0, x[1]); }),

    // A fresh generator per call, so every gradcheck evaluation sees the same mask; words
    // are reserved first so the op runs at a non-zero offset (3 and 2 counter blocks).
    exact("dropout_train",
          [](V x) {
            Generator gen(kDropSeed);
            gen.reserve(10);
            return dropout(x[0], 0.3, true, gen);
          }),
    exact("drop_path_train",
          [](V x) {
            Generator gen(kDropSeed + 1);
            gen.reserve(5);
            return drop_path(x[0], 0.25, true, gen);
          }),
    exact("dropout_eval",
          [](V x) {
            Generator gen(kDropSeed);
            return dropout(x[0], 0.3, false, gen);
          }),
});

// ---------------------------------------------------------------- plain tests

// batch_norm_running_update (cases_nn.py): two training steps from BN_MEAN / BN_VAR, momentum
// 0.1 then 0.3; the fixture's output is PyTorch's running mean and variance stacked (2, C).
TEST(BatchNorm, RunningStatsMatchPyTorch) {
  SafeTensors st = load_safetensors(fixture_dir() + "/batch_norm_running_update.safetensors");
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x1 = copy_to(st.at("input.0"), Device::cpu(), dt), x2 = copy_to(st.at("input.1"), Device::cpu(), dt);
    auto [rm, rv] = bn_stats(x1);
    batch_norm(x1, rm, rv, Tensor(), Tensor(), true, 0.1, 1e-5);
    batch_norm(x2, rm, rv, Tensor(), Tensor(), true, 0.3, 1e-5);
    std::vector<double> want = st.at("output").to_vector(), m = rm.to_vector(), v = rv.to_vector();
    // f32: the update rounds the running stats to f32 once per step.
    double tol = dt == DType::f32 ? 1e-6 : 1e-12;
    for (size_t ch = 0; ch < m.size(); ++ch) {
      EXPECT_NEAR(m[ch], want[ch], tol * (1 + std::abs(want[ch]))) << dtype_name(dt) << " mean, channel " << ch;
      EXPECT_NEAR(v[ch], want[m.size() + ch], tol * (1 + std::abs(want[m.size() + ch])))
          << dtype_name(dt) << " var, channel " << ch;
    }
  }
}

TEST(BatchNorm, EvalLeavesRunningStatsAlone) {
  Tensor x = reshape(arange(0, 12, 1, {DType::f64}), {4, 3});
  auto [rm, rv] = bn_stats(x);
  batch_norm(x, rm, rv, Tensor(), Tensor(), false);
  EXPECT_EQ(rm.to_vector(), kBnMean);
  EXPECT_EQ(rv.to_vector(), kBnVar);
}

// The mask is a function of (seed, offset): the generator advances by the reserved words.
TEST(Dropout, ReservesWordsFromTheGenerator) {
  Generator gen(7);
  Tensor x = ones({3, 5});
  dropout(x, 0.5, true, gen);
  EXPECT_EQ(gen.offset(), 4u);  // 15 words = 4 counter blocks
  drop_path(x, 0.5, true, gen);
  EXPECT_EQ(gen.offset(), 5u);  // 3 samples, one word each
  dropout(x, 0.5, false, gen);
  EXPECT_EQ(gen.offset(), 5u);  // eval draws nothing
}

TEST(NnOps, ErrorsNameTheOpAndTheProblem) {
  Tensor x = ones({4, 3});
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), ones({2}), Tensor(), true); },
               "batch_norm: weight must have shape [3], got [2]");
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false); }, "evaluation mode");
  expect_error([&] { batch_norm(ones({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true); },
               "more than one value per channel");
  expect_error([&] { layer_norm(x, {4}, Tensor(), Tensor()); }, "layer_norm: normalized_shape [4]");
  expect_error([&] { cross_entropy(x, full({4}, 3, {DType::i64})); }, "index 3");
  expect_error([&] { cross_entropy(x, ones({3}, {DType::i64})); }, "class-index target must be (N)");
  expect_error([&] { cross_entropy(x, ones({4, 2})); }, "probability target must have the logits' shape");
  expect_error([&] { index_select(x, 0, from_vector({0, 4}, {2}, {DType::i64})); },
               "index_select: index 4 (element 1 of the index) is out of range for dimension 0 of size 4");
  expect_error([&] { gather(x, 1, ones({4, 3})); }, "gather: index must be i64, got f32");
  expect_error([&] { cat({x, ones({4, 3, 1})}, 1); }, "cat: tensor 1 has shape [4, 3, 1]");
  expect_error([&] { stack({x, ones({3, 4})}, 0); }, "stack needs equal shapes");
  Generator gen(1);
  expect_error([&] { dropout(x, 1.5, true, gen); }, "dropout: p must be in [0, 1], got 1.5");
}

}  // namespace
}  // namespace siam::test
