// Mined semantic positives: the exact cosine kNN search against a brute-force reference (ties,
// block boundaries, k past the number of images), the neighbour file, the threshold applied
// by the mined pair generator, `siam mine` end to end on a tiny checkpoint, pretrain's
// mine-once-then-reuse path, and on real Fashion-MNIST pixels, neighbours that share their
// anchor's class far more often than chance.
#include <gtest/gtest.h>
#include <stb/stb_image_write.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>

#include "apps/eval.h"
#include "apps/mine.h"
#include "apps/pretrain.h"
#include "apps/run_config.h"
#include "autograd/ops.h"
#include "data/datasets.h"
#include "data/pairs.h"
#include "nn/checkpoint.h"
#include "tensor/safetensors.h"
#include "test_util.h"

namespace siam::test {
namespace {

namespace fs = std::filesystem;

// The reference: every other image ranked by (similarity desc, index asc), computed in double.
struct Ranked {
  std::vector<std::vector<int64_t>> idx;
  std::vector<std::vector<double>> sim;
};
Ranked brute_force(const std::vector<std::vector<double>>& x, int64_t k) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<std::vector<double>> u = x;
  for (auto& row : u) {
    double s = 0;
    for (double v : row) s += v * v;
    s = std::max(std::sqrt(s), 1e-12);
    for (double& v : row) v /= s;
  }
  Ranked r;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<std::pair<double, int64_t>> c;
    for (int64_t j = 0; j < n; ++j) {
      if (j == i) continue;
      double d = 0;
      for (size_t e = 0; e < u[i].size(); ++e) d += u[i][e] * u[j][e];
      c.push_back({d, j});
    }
    std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    r.idx.emplace_back();
    r.sim.emplace_back();
    for (int64_t t = 0; t < std::min<int64_t>(k, n - 1); ++t) {
      r.idx.back().push_back(c[t].second);
      r.sim.back().push_back(c[t].first);
    }
  }
  return r;
}

Tensor to_tensor(const std::vector<std::vector<double>>& x, DType dt = DType::f32) {
  std::vector<double> flat;
  for (const auto& row : x) flat.insert(flat.end(), row.begin(), row.end());
  return from_vector(flat, {static_cast<int64_t>(x.size()), static_cast<int64_t>(x[0].size())}, {dt});
}

// Rows with four entries of +-1 among 16: norm 2, so the normalised entries (+-0.5), their
// products and every partial sum are exact in f32 whatever the GEMM's order. Drawn from a pool
// of 9 patterns, so many rows repeat (similarity exactly 1) and many similarities tie.
std::vector<std::vector<double>> tied_features(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<double>> pool;
  for (int p = 0; p < 9; ++p) {
    std::vector<double> v(16, 0.0);
    std::vector<int> pos(16);
    std::iota(pos.begin(), pos.end(), 0);
    std::shuffle(pos.begin(), pos.end(), rng);
    for (int e = 0; e < 4; ++e) v[pos[e]] = rng() % 2 ? 1.0 : -1.0;
    pool.push_back(v);
  }
  std::vector<std::vector<double>> x;
  for (int i = 0; i < n; ++i) x.push_back(pool[rng() % pool.size()]);
  return x;
}

TEST(Mining, ExactSearchEqualsBruteForceWithTies) {
  const auto x = tied_features(37, 5);
  const Ranked ref = brute_force(x, 6);
  for (int64_t block : {1, 8, 36, 37, 100}) {
    data::Neighbours nb = apps::nearest_neighbours(to_tensor(x), 6, block);
    ASSERT_EQ(nb.indices.shape(), (Shape{37, 6}));
    ASSERT_EQ(nb.similarities.dtype(), DType::f32);
    for (int64_t i = 0; i < 37; ++i)
      for (int64_t t = 0; t < 6; ++t) {
        EXPECT_EQ(nb.indices.at({i, t}), static_cast<double>(ref.idx[i][t])) << "block " << block << " row " << i << " rank " << t;
        EXPECT_EQ(nb.similarities.at({i, t}), ref.sim[i][t]) << "block " << block << " row " << i << " rank " << t;
      }
  }
}

TEST(Mining, GaussianFeaturesMatchBruteForce) {
  std::mt19937 rng(11);
  std::normal_distribution<double> normal;
  std::vector<std::vector<double>> x(150, std::vector<double>(24));
  for (auto& row : x)
    for (double& v : row) v = static_cast<float>(normal(rng));  // f32-representable inputs
  const Ranked ref = brute_force(x, 10);
  for (DType dt : {DType::f32, DType::f64}) {
    data::Neighbours nb = apps::nearest_neighbours(to_tensor(x, dt), 10, 64);
    for (int64_t i = 0; i < 150; ++i)
      for (int64_t t = 0; t < 10; ++t) {
        // Similarities in rank order agree to f32 rounding; an index must agree wherever the
        // reference's neighbours are separated by more than that rounding.
        EXPECT_NEAR(nb.similarities.at({i, t}), ref.sim[i][t], 1e-5) << dtype_name(dt) << " row " << i << " rank " << t;
        const bool separated = (t == 0 || ref.sim[i][t - 1] - ref.sim[i][t] > 1e-4) &&
                               (t == 9 || ref.sim[i][t] - ref.sim[i][t + 1] > 1e-4);
        if (separated) {
          EXPECT_EQ(nb.indices.at({i, t}), static_cast<double>(ref.idx[i][t])) << dtype_name(dt) << " row " << i;
        }
      }
  }
}

TEST(Mining, KPastTheImagesListsEveryOtherImage) {
  const auto x = tied_features(4, 2);
  data::Neighbours nb = apps::nearest_neighbours(to_tensor(x), 10);
  ASSERT_EQ(nb.indices.shape(), (Shape{4, 3}));
  const Ranked ref = brute_force(x, 3);
  for (int64_t i = 0; i < 4; ++i) {
    std::vector<int64_t> got;
    for (int64_t t = 0; t < 3; ++t) {
      got.push_back(static_cast<int64_t>(nb.indices.at({i, t})));
      EXPECT_EQ(got.back(), ref.idx[i][t]);
    }
    std::sort(got.begin(), got.end());
    std::vector<int64_t> others;
    for (int64_t j = 0; j < 4; ++j)
      if (j != i) others.push_back(j);
    EXPECT_EQ(got, others) << "row " << i;
  }
  expect_error([&] { apps::nearest_neighbours(to_tensor({{1.0, 2.0}}), 3); }, "at least 2");
  expect_error([&] { apps::nearest_neighbours(to_tensor(x), 0); }, "k = 0");
  expect_error([&] { apps::nearest_neighbours(zeros({4}), 2); }, "(N, D)");
}

TEST(Mining, TopkOrdersByValueThenIndexAndCountsNanLast) {
  Tensor x = from_vector({0.5, std::nan(""), 2.0, 0.5, -INFINITY, 2.0, 1.0}, {1, 7});
  auto [v, i] = topk(x, 7);
  EXPECT_EQ(i.to_vector(), (std::vector<double>{2, 5, 6, 0, 3, 1, 4}));
  EXPECT_EQ(v.at({0, 0}), 2.0);
  EXPECT_TRUE(std::isnan(v.at({0, 5})));
  Tensor xt = transpose(from_vector({3, 1, 2, 2, 1, 3}, {3, 2}), 0, 1);  // a strided (2, 3) view
  EXPECT_EQ(topk(xt, 2).second.to_vector(), (std::vector<double>{0, 1, 2, 1}));
  expect_error([&] { topk(x, 8); }, "k = 8");
  Tensor g = from_vector({1, 2, 3}, {1, 3});
  g.requires_grad_();
  expect_error([&] { topk(g, 1); }, "not differentiable");
}

TEST(Mining, NeighbourFileRoundTripsWithProvenance) {
  const fs::path path = fs::temp_directory_path() / ("siam-neighbours-" + std::to_string(::getpid()) + ".safetensors");
  data::Neighbours nb = apps::nearest_neighbours(to_tensor(tied_features(20, 3)), 4);
  data::save_neighbours(path.string(), nb, {{"checkpoint", "a.safetensors"}, {"k", "4"}});
  data::Neighbours back = data::load_neighbours(path.string());
  EXPECT_EQ(back.indices.to_vector(), nb.indices.to_vector());
  EXPECT_EQ(back.similarities.to_vector(), nb.similarities.to_vector());
  SafeTensors st = load_safetensors(path.string());
  EXPECT_EQ(st.metadata.at("format"), "siam.neighbours");
  EXPECT_EQ(st.metadata.at("checkpoint"), "a.safetensors");
  fs::remove(path);
}

// The generator reads the recorded similarities: a mined row's partner is always a listed
// neighbour at or above the threshold, and a row with none becomes an augmentation pair.
TEST(Mining, ThresholdAppliesAtTrainingTime) {
  const int n = 40;
  std::mt19937 rng(4);
  std::normal_distribution<double> normal;
  std::vector<std::vector<double>> x(n, std::vector<double>(6));
  for (auto& row : x)
    for (double& v : row) v = normal(rng);
  data::Neighbours nb = apps::nearest_neighbours(to_tensor(x), 5);
  data::ImageSet images;
  images.images = zeros({n, 4, 4, 1}, {DType::u8});
  images.name = "tiny";
  data::PairConfig pc;
  pc.kind = data::PairKind::mined;
  pc.views = {data::simclr_view(4), data::simclr_view(4)};
  pc.mined_ratio = 1.0;
  pc.mined_threshold = 0.8;
  data::PairGenerator gen(pc, images, nb);
  int64_t mined = 0, plain = 0;
  for (int64_t epoch = 0; epoch < 5; ++epoch) {
    data::BatchPlan plan = gen.plan_batch(epoch, 0, n);
    for (int64_t b = 0; b < n; ++b) {
      const int64_t a = plan.views[0][b].image, p = plan.views[1][b].image;
      bool usable = false;
      for (int64_t t = 0; t < 5; ++t) usable = usable || nb.similarities.at({a, t}) >= 0.8;
      if (plan.kinds[b] == data::PairKind::mined) {
        ++mined;
        bool listed = false;
        for (int64_t t = 0; t < 5; ++t)
          listed = listed || (nb.indices.at({a, t}) == p && nb.similarities.at({a, t}) >= 0.8);
        EXPECT_TRUE(listed) << "row of image " << a << " paired with " << p;
      } else {
        ++plain;
        EXPECT_FALSE(usable) << "image " << a << " has a neighbour above the threshold but got an augmentation pair";
        EXPECT_EQ(a, p);
      }
    }
  }
  EXPECT_GT(mined, 0);
  EXPECT_GT(plain, 0);  // 6-D Gaussian features: many images have no neighbour at cosine 0.8
}

// Raw Fashion-MNIST pixels already put images of a class together: a check that the search
// finds semantic neighbours on real data, not only on constructed features.
TEST(Mining, FashionMnistPixelNeighboursShareTheirClass) {
  if (!fs::exists(fs::path(data::kFashionMnistDir) / "train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << data::kFashionMnistDir << " not installed (apt-get install dataset-fashion-mnist)";
  data::ImageSet all = data::load_fashion_mnist("train");
  data::ImageSet s = all;
  s.images = narrow(all.images, 0, 0, 1000);
  s.labels = narrow(all.labels, 0, 0, 1000);
  Tensor f = apps::pixel_features(s, apps::Normalisation{{0.286f, 0.286f, 0.286f}, {0.353f, 0.353f, 0.353f}});
  data::Neighbours nb = apps::nearest_neighbours(f, 10, 256);
  apps::NeighbourStats st = apps::neighbour_stats(nb, s.labels);
  RecordProperty("label_agreement", std::to_string(st.label_agreement));
  EXPECT_NEAR(st.chance, 10.0, 1.0);
  EXPECT_GT(st.label_agreement, 50.0) << "mean similarity " << st.mean_similarity;
  EXPECT_GT(st.mean_similarity, 0.5);
}

// ---------------------------------------------------------------- siam mine, pretrain

// Class "h": a bright horizontal bar three pixels thick, class "v": a vertical one, at varying
// positions, over a background shared by all images plus a little noise of their own. By
// pixels, an image is closest to the others of its class with the bar at or next to its own
// position.
void write_split(const fs::path& dir, int per_class) {
  uint32_t s = 17;
  for (int cls = 0; cls < 2; ++cls)
    for (int i = 0; i < per_class; ++i) {
      std::vector<uint8_t> px(8 * 8 * 3);
      const int pos = i % 6 + 1;
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x)
          for (int c = 0; c < 3; ++c) {
            s = s * 1664525u + 1013904223u;
            const int d = (cls == 0 ? y : x) - pos;
            px[(y * 8 + x) * 3 + c] = static_cast<uint8_t>(d >= -1 && d <= 1 ? 220 : 20 + 9 * ((x * 3 + y * 5 + c) % 7) + (s >> 29));
          }
      const fs::path p = dir / (cls == 0 ? "h" : "v") / (std::to_string(i) + ".png");
      fs::create_directories(p.parent_path());
      ASSERT_TRUE(stbi_write_png(p.c_str(), 8, 8, 3, px.data(), 8 * 3));
    }
}

class MineCommand : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("siam-mine-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    write_split(root_ / "train", 16);
    write_split(root_ / "test", 4);
    config_ = (root_ / "tiny.toml").string();
    std::ofstream(config_) << "[run]\nseed = 3\nepochs = 1\nbatch_size = 8\nknn_every = 0\nlog_every = 1\n"
                           << "[method]\nname = \"simclr\"\n[method.simclr]\nprojector = [16, 8]\n"
                           << "[backbone]\narch = \"resnet18\"\nwidth = 4\nsmall_input = true\n"
                           << "[augment]\nblur_p = [0.0, 0.0]\n[optimizer]\nwarmup_epochs = 0\n"
                           << "[data]\ndataset = \"folder\"\nroot = \"" << (root_ / "train").string()
                           << "\"\ntest_root = \"" << (root_ / "test").string() << "\"\nimage_size = 8\nchannels = 3\n";
    apps::Config cfg = apps::pretrain_config();
    cfg.load_file(config_);
    apps::resolve_defaults(cfg);
    ssl::Backbone b = apps::make_backbone(cfg);
    nn::Checkpoint ck;
    ck.sections["backbone"] = b.module->state_dict();
    ck.config = cfg.to_toml();
    ck.epoch = 1;
    ck.step = 4;
    checkpoint_ = (root_ / "checkpoint.safetensors").string();
    nn::save_checkpoint(checkpoint_, ck);
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static nlohmann::json run(const apps::MineCommand& c, std::string* human = nullptr) {
    std::ostringstream out;
    apps::run_mine(c, out);
    std::string text = out.str();
    EXPECT_FALSE(text.empty());
    text.pop_back();
    const size_t nl = text.rfind('\n');
    EXPECT_NE(nl, std::string::npos) << text;
    if (human) *human = text.substr(0, nl);
    return nlohmann::json::parse(text.substr(nl + 1));
  }
  static apps::MineCommand command(const std::string& out, int64_t k = 5) {
    apps::MineCommand c;
    c.input = {checkpoint_, {}, 8};
    c.output = (root_ / out).string();
    c.k = k;
    return c;
  }

  static fs::path root_;
  static std::string config_, checkpoint_;
};
fs::path MineCommand::root_;
std::string MineCommand::config_, MineCommand::checkpoint_;

void expect_valid_list(const data::Neighbours& nb, int64_t n, int64_t k) {
  ASSERT_EQ(nb.indices.shape(), (Shape{n, k}));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < k; ++t) {
      const double j = nb.indices.at({i, t});
      EXPECT_NE(j, static_cast<double>(i)) << "image " << i << " lists itself";
      EXPECT_GE(j, 0);
      EXPECT_LT(j, n);
      if (t > 0) {
        EXPECT_LE(nb.similarities.at({i, t}), nb.similarities.at({i, t - 1})) << "row " << i << " not best first";
      }
    }
}

TEST_F(MineCommand, WritesANeighbourFileAndReports) {
  std::string human;
  nlohmann::json j = run(command("nb/backbone.safetensors"), &human);
  EXPECT_NE(human.find("mine: "), std::string::npos) << human;
  EXPECT_NE(human.find("5 neighbours each"), std::string::npos) << human;
  EXPECT_EQ(j["command"], "mine");
  EXPECT_EQ(j["images"], 32);
  EXPECT_EQ(j["k"], 5);
  EXPECT_EQ(j["features"], "backbone");
  EXPECT_TRUE(j["label_agreement"].is_number());
  EXPECT_NEAR(j["chance"].get<double>(), 100.0 * 15 / 31, 1e-9);
  data::Neighbours nb = data::load_neighbours((root_ / "nb/backbone.safetensors").string());
  expect_valid_list(nb, 32, 5);
  EXPECT_EQ(load_safetensors((root_ / "nb/backbone.safetensors").string()).metadata.at("checkpoint"), checkpoint_);

  // Raw pixels separate the bars: the nearest image shows the same bar direction.
  apps::MineCommand c = command("nb/pixels.safetensors", 3);
  c.features = "pixels";
  j = run(c);
  EXPECT_GT(j["label_agreement"].get<double>(), 90.0);

  c = command("nb/limited.safetensors", 100);
  c.limit = 10;
  j = run(c, &human);
  EXPECT_EQ(j["images"], 10);
  EXPECT_EQ(j["k"], 9);
  EXPECT_NE(human.find("(all the other images)"), std::string::npos) << human;
  expect_valid_list(data::load_neighbours(c.output), 10, 9);
}

TEST_F(MineCommand, UserErrorsNameTheProblem) {
  apps::MineCommand c = command("nb/x.safetensors", 0);
  expect_error([&] { run(c); }, "--k 0");
  c = command("nb/x.safetensors");
  c.features = "weights";
  expect_error([&] { run(c); }, "--features weights");
  c = command("nb/x.safetensors");
  c.input.sets = {"backbone.width=8"};
  expect_error([&] { run(c); }, "only data.*, run.device");
  c = command("nb/x.safetensors");
  c.input.checkpoint = (root_ / "missing.safetensors").string();
  expect_error([&] { run(c); }, "missing.safetensors");
  c = command("");
  c.output.clear();
  expect_error([&] { run(c); }, "--out");
  c = command("nb/x.safetensors");
  c.dataset = "mnist";  // 1-channel images for a 3-channel encoder, in a folder that is not there
  EXPECT_THROW(run(c), Error);
}

TEST_F(MineCommand, PretrainMinesOnceThenReuses) {
  const std::string nb_path = (root_ / "mined" / "nb.safetensors").string();
  apps::Config cfg = apps::load_run_config(config_, {"pairs.generator=\"mined\"", "pairs.neighbours=" + apps::toml_quote(nb_path)});
  expect_error([&] { apps::prepare_mined_neighbours(cfg); }, "siam mine");

  cfg.set("pairs.mine_from=" + apps::toml_quote(checkpoint_));
  cfg.set("pairs.mine_k=4");
  const std::string first = apps::prepare_mined_neighbours(cfg);
  EXPECT_NE(first.find("mined 4 per image for 32 images"), std::string::npos) << first;
  EXPECT_NE(first.find(nb_path), std::string::npos) << first;
  expect_valid_list(data::load_neighbours(nb_path), 32, 4);
  const std::string second = apps::prepare_mined_neighbours(cfg);
  EXPECT_NE(second.find("reusing " + nb_path), std::string::npos) << second;

  // A whole run mines a missing file before training on it; a resumed or repeated run reuses it.
  fs::remove(nb_path);
  apps::PretrainOptions o;
  o.config_path = config_;
  o.sets = {"pairs.generator=\"mined\"", "pairs.neighbours=" + apps::toml_quote(nb_path),
            "pairs.mine_from=" + apps::toml_quote(checkpoint_), "pairs.mined_ratio=1.0"};
  o.output = (root_ / "run").string();
  o.console = false;
  apps::PretrainResult r = apps::pretrain(o);
  EXPECT_TRUE(r.finished);
  ASSERT_TRUE(fs::exists(nb_path));
  expect_valid_list(data::load_neighbours(nb_path), 32, 10);
  const auto written = fs::last_write_time(nb_path);
  o.output = (root_ / "run2").string();
  EXPECT_TRUE(apps::pretrain(o).finished);
  EXPECT_EQ(fs::last_write_time(nb_path), written);
}

}  // namespace
}  // namespace siam::test
