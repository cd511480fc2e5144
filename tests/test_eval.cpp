// The evaluation protocols (apps/eval.h): kNN and the linear probe against PyTorch runs of the
// same computation (tools/reference/gen_eval.py, fixtures in tests/fixtures/eval), feature
// extraction (shape, eval mode, determinism, batching), the class-balanced subset and
// semi-supervised fine-tuning on a synthetic two-class set.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "apps/eval.h"
#include "ssl/backbone.h"
#include "tensor/safetensors.h"
#include "test_ssl_common.h"

namespace siam::test {
namespace {

using apps::Normalisation;

constexpr int kEvalFormat = 1;

SafeTensors load_eval_fixture(const std::string& name) {
  const std::string path = std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/eval/" + name + ".safetensors";
  const char* regen = "regenerate with `/usr/bin/python3 tools/reference/gen_eval.py tests/fixtures/eval`";
  if (!std::filesystem::exists(path)) fail("missing fixture ", path, ": ", regen);
  SafeTensors st = load_safetensors(path);
  auto it = st.metadata.find("format_version");
  if (it == st.metadata.end() || it->second != std::to_string(kEvalFormat))
    fail("stale fixture ", path, ": format_version ", it == st.metadata.end() ? "missing" : it->second,
         ", this test expects ", kEvalFormat, ": ", regen);
  return st;
}

Tensor as(const Tensor& t, DType dt) { return copy_to(t, Device::cpu(), dt); }

// A u8 (N, H, W, C) set with labels, pixels from a formula.
data::ImageSet synthetic_set(int64_t n, int h, int w, int c, int classes) {
  data::ImageSet s;
  s.images = empty({n, h, w, c}, {DType::u8});
  s.labels = empty({n}, {DType::i64});
  uint8_t* p = s.images.data<uint8_t>();
  for (int64_t k = 0; k < s.images.numel(); ++k) p[k] = static_cast<uint8_t>((k * 37 + k / 7) % 256);
  for (int64_t i = 0; i < n; ++i) s.labels.data<int64_t>()[i] = i % classes;
  s.num_classes = classes;
  s.name = "synthetic";
  return s;
}

// ---------------------------------------------------------------- inputs and features

TEST(EvalFeatures, ToInputNormalisesEachChannel) {
  data::ImageSet s = synthetic_set(3, 5, 4, 3, 2);
  Normalisation norm{{0.5f, 0.4f, 0.3f}, {0.2f, 0.25f, 0.5f}};
  Tensor x = apps::to_input(s.images, norm);
  ASSERT_EQ(x.shape(), (Shape{3, 3, 5, 4}));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 5; ++y)
        for (int64_t xx = 0; xx < 4; ++xx) {
          const double pix = s.images.at({b, y, xx, c}) / 255.0;
          EXPECT_NEAR(x.at({b, c, y, xx}), (pix - norm.mean[c]) / norm.std[c], 1e-5);
        }
  Tensor up = apps::to_input(s.images, norm, 10, 8);
  EXPECT_EQ(up.shape(), (Shape{3, 3, 10, 8}));
  EXPECT_THROW(apps::to_input(empty({2, 4, 4}, {DType::u8}), norm), Error);
}

TEST(EvalFeatures, ShapeEvalModeAndDeterminism) {
  data::ImageSet s = synthetic_set(7, 6, 6, 3, 2);
  TinyNet net(3, 4);
  net.train();
  const Tensor mean_before = clone(net.bn1->running_mean);
  Tensor f = apps::extract_features(net, s, Normalisation{}, 3);
  ASSERT_EQ(f.shape(), (Shape{7, 8}));
  EXPECT_EQ(f.dtype(), DType::f32);
  EXPECT_TRUE(net.is_training()) << "extract_features must leave the module in the mode it found";
  // Eval mode: running statistics are used, not updated.
  EXPECT_EQ(net.bn1->running_mean.to_vector(), mean_before.to_vector());
  // The same features whatever the batch size (each image sees the same running statistics),
  // and the same bits on a second call.
  EXPECT_EQ(apps::extract_features(net, s, Normalisation{}, 3).to_vector(), f.to_vector());
  Tensor whole = apps::extract_features(net, s, Normalisation{}, 64);
  std::vector<double> a = whole.to_vector(), b = f.to_vector();
  for (size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(a[k], b[k], 1e-6 * (1 + std::abs(b[k])));
  EXPECT_THROW(apps::extract_features(net, s, Normalisation{}, 0), Error);
}

TEST(EvalFeatures, ViTInputIsResizedToItsImageSize) {
  ssl::Backbone vit = ssl::make_backbone({.arch = "vit_tiny", .image_size = 8, .patch = 4});
  data::ImageSet s = synthetic_set(2, 6, 6, 3, 2);
  Tensor f = apps::extract_features(*vit.module, s, Normalisation{}, 8, 8);
  EXPECT_EQ(f.shape(), (Shape{2, vit.feature_dim}));
  EXPECT_THROW(apps::extract_features(*vit.module, s, Normalisation{}, 8), Error);
}

TEST(EvalFeatures, PixelFeaturesAreTheFlattenedInput) {
  data::ImageSet s = synthetic_set(4, 3, 2, 1, 2);
  Normalisation norm{{0.5f, 0, 0}, {0.25f, 1, 1}};
  Tensor f = apps::pixel_features(s, norm);
  ASSERT_EQ(f.shape(), (Shape{4, 6}));
  EXPECT_EQ(f.to_vector(), flatten(apps::to_input(s.images, norm), 1).to_vector());
}

TEST(EvalFeatures, Top1Accuracy) {
  Tensor p = from_vector({0, 1, 2, 1}, {4}, {DType::i64}), y = from_vector({0, 1, 1, 1}, {4}, {DType::i64});
  EXPECT_DOUBLE_EQ(apps::top1_accuracy(p, y), 75.0);
  EXPECT_THROW(apps::top1_accuracy(p, from_vector({0}, {1}, {DType::i64})), Error);
}

// ---------------------------------------------------------------- kNN

// In f64 siam computes what PyTorch computed, so every prediction must match. In f32 the
// similarities carry ~1e-7 relative rounding, which exp(sim / T) turns into ~1e-6 relative on
// the votes (1/T <= 15): rows whose vote margin or k-th/(k+1)-th similarity gap is below 1e-4
// could flip without any error, so they are left out (the fixture has none or few).
TEST(Knn, MatchesPyTorchWeightedVote) {
  SafeTensors fx = load_eval_fixture("knn");
  for (DType dt : {DType::f64, DType::f32}) {
    for (int64_t k : {20, 200}) {
      for (const char* t : {"0.07", "0.1"}) {
        const std::string key = "k" + std::to_string(k) + ".t" + t;
        apps::KnnOptions o{.k = {k}, .temperature = std::stod(t), .batch_size = 32};
        std::vector<Tensor> pred =
            apps::knn_predict(as(fx.at("train"), dt), fx.at("train_labels"), as(fx.at("test"), dt), 5, o);
        ASSERT_EQ(pred.size(), 1u);
        std::vector<double> got = pred[0].to_vector(), want = fx.at("pred." + key).to_vector();
        std::vector<double> margin = fx.at("margin." + key).to_vector(), gap = fx.at("gap." + key).to_vector();
        int compared = 0;
        for (size_t r = 0; r < want.size(); ++r) {
          if (dt == DType::f32 && (margin[r] < 1e-4 || gap[r] < 1e-4)) continue;
          ++compared;
          EXPECT_EQ(got[r], want[r]) << key << " " << dtype_name(dt) << " test row " << r;
        }
        EXPECT_GE(compared, 70) << key;
      }
    }
  }
}

TEST(Knn, SeveralKInOnePassAndEval) {
  SafeTensors fx = load_eval_fixture("knn");
  apps::KnnOptions o{.k = {20, 200}, .temperature = 0.07};
  std::vector<apps::KnnResult> r = apps::knn_eval(as(fx.at("train"), DType::f64), fx.at("train_labels"),
                                                  as(fx.at("test"), DType::f64), fx.at("test_labels"), 5, o);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].k, 20);
  EXPECT_DOUBLE_EQ(r[0].top1, apps::top1_accuracy(fx.at("pred.k20.t0.07"), fx.at("test_labels")));
  EXPECT_DOUBLE_EQ(r[1].top1, apps::top1_accuracy(fx.at("pred.k200.t0.07"), fx.at("test_labels")));
}

TEST(Knn, HandMadeVote) {
  // Training rows at angles 0, 10, 20 degrees (class 0) and 90 degrees (class 1). A query at
  // 80 degrees: k = 1 picks class 1; k = 4 weighs exp(cos / T) over all four.
  auto at = [](double deg) { return std::vector<double>{std::cos(deg * M_PI / 180), std::sin(deg * M_PI / 180)}; };
  std::vector<double> tr;
  for (double d : {0.0, 10.0, 20.0, 90.0})
    for (double v : at(d)) tr.push_back(v);
  Tensor train = from_vector(tr, {4, 2}, {DType::f64}), labels = from_vector({0, 0, 0, 1}, {4}, {DType::i64});
  Tensor query = mul(from_vector(at(80), {1, 2}, {DType::f64}), 3.0);  // length does not matter
  auto pred = [&](int64_t k, double t) {
    return apps::knn_predict(train, labels, query, 2, {.k = {k}, .temperature = t})[0].item();
  };
  EXPECT_EQ(pred(1, 0.07), 1);
  // Class 0: exp(cos 80 / T) + exp(cos 70 / T) + exp(cos 60 / T); class 1: exp(cos 10 / T).
  auto vote0 = [](double t) {
    double s = 0;
    for (double d : {80.0, 70.0, 60.0}) s += std::exp(std::cos(d * M_PI / 180) / t);
    return s;
  };
  for (double t : {0.07, 0.1, 1.0, 10.0}) {
    const double expected = vote0(t) > std::exp(std::cos(10 * M_PI / 180) / t) ? 0 : 1;
    EXPECT_EQ(pred(4, t), expected) << "T = " << t;
  }
  // exp(sim / T) itself overflows at T = 0.001; the votes must not (the nearest wins).
  EXPECT_EQ(pred(4, 0.001), 1);
}

TEST(Knn, Errors) {
  Tensor train = zeros({4, 3}), labels = from_vector({0, 1, 0, 1}, {4}, {DType::i64});
  EXPECT_THROW(apps::knn_predict(train, labels, zeros({2, 3}), 2, {.k = {5}}), Error);   // k > N
  EXPECT_THROW(apps::knn_predict(train, labels, zeros({2, 4}), 2, {.k = {2}}), Error);   // D differs
  EXPECT_THROW(apps::knn_predict(train, from_vector({0, 1, 2, 1}, {4}, {DType::i64}), zeros({2, 3}), 2, {.k = {2}}),
               Error);  // label out of range
  EXPECT_THROW(apps::knn_predict(train, labels, zeros({2, 3}), 2, {.k = {2}, .temperature = 0}), Error);
  try {
    apps::knn_predict(train, from_vector({0, -1, 0, 1}, {4}, {DType::i64}), zeros({2, 3}), 2, {.k = {2}});
    ADD_FAILURE() << "no error for an unlabelled row";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unlabelled"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- linear probe

apps::LinearProbeOptions fixture_recipe(const SafeTensors& fx, bool standardise, DType dt) {
  return {.epochs = 5, .lr = 0.5, .momentum = 0.9, .weight_decay = 1e-3, .batch_size = 64,
          .standardise = standardise, .seed = 7, .init_weight = as(fx.at("init_weight"), dt),
          .init_bias = as(fx.at("init_bias"), dt)};
}

void expect_close(const Tensor& got, const Tensor& want, double rtol, double atol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  std::vector<double> a = got.to_vector(), b = want.to_vector();
  for (size_t k = 0; k < a.size(); ++k) EXPECT_NEAR(a[k], b[k], atol + rtol * std::abs(b[k])) << what << "[" << k << "]";
}

// f64: the same 25 SGD steps as PyTorch's f64 run, only the order of a few sums differs, so
// weights agree to 1e-9 and both accuracies exactly. f32: 25 steps of f32 rounding (~1e-7 per
// operation, growing slowly through momentum) stay far below 1e-4 relative; an accuracy may
// differ by one test point near the decision boundary (1 of 100 = 1 point).
TEST(LinearProbe, MatchesPyTorchRecipe) {
  SafeTensors fx = load_eval_fixture("linear");
  for (const char* run : {"std", "raw"}) {
    for (DType dt : {DType::f64, DType::f32}) {
      const std::string what = std::string(run) + " " + dtype_name(dt);
      apps::LinearProbeResult r =
          apps::linear_probe(as(fx.at("train"), dt), fx.at("train_labels"), as(fx.at("test"), dt),
                             fx.at("test_labels"), 4, fixture_recipe(fx, std::string(run) == "std", dt));
      const double rtol = dt == DType::f64 ? 1e-9 : 1e-4, atol = dt == DType::f64 ? 1e-12 : 1e-5;
      expect_close(r.weight, fx.at(std::string(run) + ".weight"), rtol, atol, what + " weight");
      expect_close(r.bias, fx.at(std::string(run) + ".bias"), rtol, atol, what + " bias");
      expect_close(from_vector(r.epoch_loss, {5}, {DType::f64}), fx.at(std::string(run) + ".epoch_loss"), rtol, atol,
                   what + " epoch loss");
      const double slack = dt == DType::f64 ? 0.0 : 1.0 + 1e-9;
      EXPECT_NEAR(r.train_top1, fx.at(std::string(run) + ".train_top1").item(), slack * 100.0 / 300) << what;
      EXPECT_NEAR(r.test_top1, fx.at(std::string(run) + ".test_top1").item(), slack) << what;
    }
  }
}

// scikit-learn's L2-regularised logistic regression solves a slightly different problem to
// convergence, so only the accuracy is compared, within 3 points (3 test images of 100).
TEST(LinearProbe, AgreesWithScikitLearnWhenTrainedLonger) {
  SafeTensors fx = load_eval_fixture("linear");
  if (!fx.tensors.count("sklearn.test_top1"))
    GTEST_SKIP() << "the fixture was written without scikit-learn (apt-get install python3-sklearn)";
  apps::LinearProbeOptions o{.epochs = 60, .lr = 0.1, .batch_size = 32, .seed = 3};
  apps::LinearProbeResult r = apps::linear_probe(fx.at("train"), fx.at("train_labels"), fx.at("test"),
                                                 fx.at("test_labels"), 4, o);
  EXPECT_NEAR(r.test_top1, fx.at("sklearn.test_top1").item(), 3.0);
  EXPECT_LT(r.epoch_loss.back(), r.epoch_loss.front());
}

TEST(LinearProbe, DefaultInitIsSeeded) {
  SafeTensors fx = load_eval_fixture("linear");
  auto run = [&](uint64_t seed) {
    return apps::linear_probe(fx.at("train"), fx.at("train_labels"), fx.at("test"), fx.at("test_labels"), 4,
                              {.epochs = 2, .seed = seed})
        .weight.to_vector();
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

TEST(LinearProbe, Errors) {
  Tensor x = zeros({4, 3}), y = from_vector({0, 1, 0, 1}, {4}, {DType::i64});
  EXPECT_THROW(apps::linear_probe(x, y, zeros({2, 5}), from_vector({0, 1}, {2}, {DType::i64}), 2), Error);
  EXPECT_THROW(apps::linear_probe(x, y, zeros({2, 3}), from_vector({0, 2}, {2}, {DType::i64}), 2), Error);
  EXPECT_THROW(apps::linear_probe(x, y, x, y, 2, {.epochs = 0}), Error);
  EXPECT_THROW(apps::linear_probe(x, y, x, y, 2, {.init_weight = zeros({3, 3}), .init_bias = zeros({2})}), Error);
}

// ---------------------------------------------------------------- semi-supervised

TEST(EvalFinetune, BalancedSubsetIsPerClassAndSeeded) {
  std::vector<double> y;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 100 * (c + 1); ++i) y.push_back(c);  // 100, 200, 300 images
  Tensor labels = from_vector(y, {static_cast<int64_t>(y.size())}, {DType::i64});
  for (double frac : {0.01, 0.1}) {
    std::vector<int64_t> s = apps::balanced_subset(labels, 3, frac, 5);
    std::map<int, int> count;
    for (int64_t i : s) ++count[static_cast<int>(y[i])];
    for (int c = 0; c < 3; ++c) EXPECT_EQ(count[c], std::llround(frac * 100 * (c + 1))) << frac << " class " << c;
    EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
    EXPECT_EQ(std::set<int64_t>(s.begin(), s.end()).size(), s.size());
    EXPECT_EQ(s, apps::balanced_subset(labels, 3, frac, 5));
    EXPECT_NE(s, apps::balanced_subset(labels, 3, frac, 6));
  }
  // A class too small for its share still gets one image.
  EXPECT_EQ(apps::balanced_subset(from_vector({0, 1, 1}, {3}, {DType::i64}), 2, 0.01, 0).size(), 2u);
  EXPECT_THROW(apps::balanced_subset(labels, 3, 0.0, 0), Error);
  EXPECT_THROW(apps::balanced_subset(labels, 3, 1.5, 0), Error);
}

// Class 0 has a bright horizontal bar, class 1 a vertical one, both on noise at a random
// position: a convolutional net must learn orientation from 10% of the labels.
data::ImageSet bars(int64_t n, uint64_t seed) {
  data::ImageSet s;
  const int side = 12;
  s.images = empty({n, side, side, 1}, {DType::u8});
  s.labels = empty({n}, {DType::i64});
  Generator g(seed);
  std::vector<double> u = rand({n, side * side + 1}, g).to_vector();
  uint8_t* p = s.images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int cls = static_cast<int>(i % 2), pos = 2 + static_cast<int>(u[i * (side * side + 1)] * 8);
    for (int y = 0; y < side; ++y)
      for (int x = 0; x < side; ++x) {
        const bool bar = cls == 0 ? (y == pos || y == pos + 1) : (x == pos || x == pos + 1);
        p[(i * side + y) * side + x] = static_cast<uint8_t>(bar ? 230 : 60 * u[i * (side * side + 1) + 1 + y * side + x]);
      }
    s.labels.data<int64_t>()[i] = cls;
  }
  s.num_classes = 2;
  s.name = "bars";
  return s;
}

TEST(EvalFinetune, LearnsFromTenPercentOfTheLabels) {
  data::ImageSet train = bars(400, 1), test = bars(100, 2);
  Normalisation norm{{0.2f, 0, 0}, {0.3f, 1, 1}};
  apps::FinetuneOptions o{.fraction = 0.1, .epochs = 30, .lr = 0.05, .batch_size = 8, .seed = 4, .crop_scale_min = 0.7f};
  auto run = [&] {
    nn::init_generator().set_state(21, 0);  // the same initial weights each time
    TinyNet net(1, 4);
    apps::FinetuneResult r = apps::finetune(net, 8, train, test, norm, o);
    EXPECT_TRUE(net.is_training()) << "finetune must leave the module in the mode it found";
    return r;
  };
  apps::FinetuneResult r = run();
  EXPECT_EQ(r.labelled, 40);
  ASSERT_EQ(r.epoch_loss.size(), 30u);
  EXPECT_LT(r.epoch_loss.back(), 0.5 * r.epoch_loss.front());
  EXPECT_GE(r.test_top1, 85.0);
  apps::FinetuneResult again = run();
  EXPECT_EQ(again.epoch_loss, r.epoch_loss) << "same seed, same run";
  EXPECT_EQ(again.test_top1, r.test_top1);
}

TEST(EvalFinetune, Errors) {
  data::ImageSet train = bars(20, 1), test = bars(10, 2);
  TinyNet net(1, 4);
  EXPECT_THROW(apps::finetune(net, 8, train, test, Normalisation{}, {.fraction = 0}), Error);
  EXPECT_THROW(apps::finetune(net, 8, train, test, Normalisation{}, {.batch_size = 1}), Error);
  test.num_classes = 3;
  EXPECT_THROW(apps::finetune(net, 8, train, test, Normalisation{}, {}), Error);
}

}  // namespace
}  // namespace siam::test
