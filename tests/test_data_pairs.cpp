// Pair generators: each kind's invariants (same class, different images, IoU constraint,
// temporal gap, multi-crop sizes), determinism by seed and the neighbour-list file.
#include <gtest/gtest.h>

#include <cmath>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "data/pairs.h"
#include "tensor/safetensors.h"

using namespace siam;
using namespace siam::data;
namespace fs = std::filesystem;

namespace {

// n images of h x w x 3 with labels i % classes.
ImageSet synthetic(int64_t n, int h, int w, int classes) {
  ImageSet s;
  s.images = empty({n, h, w, 3}, {DType::u8});
  for (int64_t i = 0; i < s.images.numel(); ++i) s.images.data<uint8_t>()[i] = static_cast<uint8_t>(i * 13);
  s.labels = empty({n}, {DType::i64});
  for (int64_t i = 0; i < n; ++i) s.labels.data<int64_t>()[i] = i % classes;
  s.num_classes = classes;
  for (int c = 0; c < classes; ++c) s.class_names.push_back(std::string("c").append(std::to_string(c)));
  s.name = "synthetic";
  return s;
}

PairConfig config(PairKind kind, int size = 8, uint64_t seed = 1) {
  PairConfig c;
  c.kind = kind;
  c.views = {simclr_view(size), simclr_view(size)};
  c.seed = seed;
  return c;
}

bool same_params(const AugmentParams& a, const AugmentParams& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

bool same_plan(const BatchPlan& a, const BatchPlan& b) {
  if (a.rows != b.rows || a.views.size() != b.views.size()) return false;
  for (size_t v = 0; v < a.views.size(); ++v)
    for (size_t r = 0; r < a.rows.size(); ++r)
      if (a.views[v][r].image != b.views[v][r].image || !same_params(a.views[v][r].params, b.views[v][r].params))
        return false;
  return true;
}

template <class F>
void expect_error(F f, const std::string& phrase) {
  try {
    f();
    ADD_FAILURE() << "no error; expected '" << phrase << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(DataPairs, AugmentationPairsAndDeterminism) {
  ImageSet set = synthetic(40, 12, 10, 4);
  PairGenerator g(config(PairKind::augmentation), set);
  EXPECT_EQ(g.rows_per_epoch(), 40);
  std::vector<int64_t> o0 = g.epoch_order(0), o1 = g.epoch_order(1);
  std::vector<int64_t> sorted = o0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 40; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_NE(o0, o1) << "reshuffled per epoch";
  EXPECT_EQ(o0, PairGenerator(config(PairKind::augmentation), set).epoch_order(0)) << "same seed, same order";
  EXPECT_NE(o0, PairGenerator(config(PairKind::augmentation, 8, 2), set).epoch_order(0));

  BatchPlan p = g.plan_batch(0, 1, 16);
  ASSERT_EQ(p.rows.size(), 16u);
  ASSERT_EQ(p.views.size(), 2u);
  for (size_t r = 0; r < 16; ++r) {
    EXPECT_EQ(p.rows[r], o0[16 + r]);
    EXPECT_EQ(p.views[0][r].image, p.rows[r]);
    EXPECT_EQ(p.views[1][r].image, p.rows[r]);
    EXPECT_FALSE(same_params(p.views[0][r].params, p.views[1][r].params)) << "two independent views";
    EXPECT_EQ(p.kinds[r], PairKind::augmentation);
  }
  EXPECT_TRUE(same_plan(p, g.plan_batch(0, 1, 16)));
  EXPECT_TRUE(same_plan(p, PairGenerator(config(PairKind::augmentation), set).plan_batch(0, 1, 16)));
  EXPECT_EQ(g.plan_batch(0, 2, 16).rows.size(), 8u) << "the last batch is short";
  // A row's views depend on (seed, epoch, row), not on where the row falls in a batch.
  BatchPlan single = g.plan(0, &p.rows[3], 1);
  EXPECT_TRUE(same_params(single.views[1][0].params, p.views[1][3].params));
  BatchPlan next_epoch = g.plan(1, &p.rows[3], 1);
  EXPECT_FALSE(same_params(next_epoch.views[1][0].params, p.views[1][3].params));
  expect_error([&] { g.plan_batch(0, 3, 16); }, "past the epoch's 40 rows");
  expect_error([&] { g.epoch_order(-1); }, "epoch -1");
  PairConfig one_view = config(PairKind::augmentation);
  one_view.views.resize(1);
  expect_error([&] { PairGenerator(one_view, set); }, "1 view recipes, expected 2");
}

TEST(DataPairs, SemanticPairsMatched) {
  ImageSet set = synthetic(30, 8, 8, 3);
  PairGenerator g(config(PairKind::semantic), set);
  ASSERT_EQ(g.rows_per_epoch(), 30) << "as many pairs as an augmentation run";
  for (int64_t epoch : {0, 1}) {
    BatchPlan p = g.plan_batch(epoch, 0, 30);
    std::vector<int> anchors(30, 0);
    for (size_t r = 0; r < 30; ++r) {
      int64_t a = p.views[0][r].image, b = p.views[1][r].image;
      EXPECT_NE(a, b) << "two different images";
      EXPECT_EQ(a % 3, b % 3) << "of one class";
      EXPECT_EQ(p.kinds[r], PairKind::semantic);
      ++anchors[a];
    }
    for (int c : anchors) EXPECT_EQ(c, 1) << "every image anchors one row: the class composition of the data";
  }
  // Partners vary over the class.
  std::set<int64_t> partners;
  for (int64_t e = 0; e < 20; ++e) partners.insert(g.plan(e, std::vector<int64_t>{0}.data(), 1).views[1][0].image);
  EXPECT_GE(partners.size(), 5u);

  ImageSet lonely = synthetic(5, 8, 8, 3);
  lonely.labels.data<int64_t>()[2] = 1;
  lonely.labels.data<int64_t>()[4] = 2;  // labels 0 1 1 0 2: class 2 has one image
  expect_error([&] { PairGenerator(config(PairKind::semantic), lonely); }, "class 'c2' of 'synthetic' has one image");
  ImageSet unlabelled = synthetic(5, 8, 8, 1);
  unlabelled.labels.data<int64_t>()[3] = -1;
  expect_error([&] { PairGenerator(config(PairKind::semantic), unlabelled); }, "image 3 of 'synthetic' has no label");
  PairConfig overlap = config(PairKind::semantic);
  overlap.overlap.kind = OverlapConstraint::Kind::zero;
  expect_error([&] { PairGenerator(overlap, set); }, "needs two views of one image");
}

TEST(DataPairs, SemanticAllPairs) {
  ImageSet set = synthetic(9, 8, 8, 3);  // 3 classes of 3: 3 pairs each
  PairConfig c = config(PairKind::semantic);
  c.semantic_mode = SemanticMode::all_pairs;
  PairGenerator g(c, set);
  ASSERT_EQ(g.rows_per_epoch(), 9);
  BatchPlan p = g.plan_batch(0, 0, 9);
  std::set<std::pair<int64_t, int64_t>> seen;
  for (size_t r = 0; r < 9; ++r) {
    int64_t a = p.views[0][r].image, b = p.views[1][r].image;
    EXPECT_NE(a, b);
    EXPECT_EQ(a % 3, b % 3);
    seen.insert({std::min(a, b), std::max(a, b)});
  }
  EXPECT_EQ(seen.size(), 9u) << "each pair once";
}

TEST(DataPairs, CuratedListAndItsMatchedBaseline) {
  PairList list;
  list.images = synthetic(6, 8, 8, 1);
  list.pairs = {{0, 1}, {2, 3}, {4, 5}, {1, 4}};
  PairGenerator sem(config(PairKind::semantic), list);
  PairGenerator base(config(PairKind::augmentation), list);
  ASSERT_EQ(sem.rows_per_epoch(), 4);
  ASSERT_EQ(base.rows_per_epoch(), 4) << "same number of pairs per epoch";
  BatchPlan s = sem.plan_batch(0, 0, 4), b = base.plan_batch(0, 0, 4);
  for (size_t r = 0; r < 4; ++r) {
    const auto& pair = list.pairs[s.rows[r]];
    std::set<int64_t> want(pair.begin(), pair.end());
    EXPECT_EQ((std::set<int64_t>{s.views[0][r].image, s.views[1][r].image}), want);
    const auto& bp = list.pairs[b.rows[r]];
    EXPECT_EQ(b.views[0][r].image, b.views[1][r].image);
    EXPECT_TRUE(b.views[0][r].image == bp[0] || b.views[0][r].image == bp[1]);
  }
  PairList bad = list;
  bad.pairs.push_back({0, 9});
  expect_error([&] { PairGenerator(config(PairKind::semantic), bad); }, "pair 4 names image 9");
  expect_error([&] { PairGenerator(config(PairKind::temporal), list); }, "not temporal pairs");
}

TEST(DataPairs, MinedNeighbours) {
  const int64_t n = 200, k = 3;
  ImageSet set = synthetic(n, 8, 8, 4);
  Neighbours nb{empty({n, k}, {DType::i64}), empty({n, k}, {DType::f32})};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      nb.indices.data<int64_t>()[i * k + j] = j == 0 ? i : (i + 4 * j) % n;  // itself first, like a real kNN
      nb.similarities.data<float>()[i * k + j] = j == 2 && i % 2 ? 0.2f : 0.9f;
    }
  PairConfig c = config(PairKind::mined);
  c.mined_threshold = 0.5;
  c.mined_ratio = 1.0;
  PairGenerator all(c, set, nb);
  BatchPlan p = all.plan_batch(0, 0, n);
  for (int64_t r = 0; r < n; ++r) {
    int64_t a = p.views[0][r].image, b = p.views[1][r].image;
    ASSERT_EQ(p.kinds[r], PairKind::mined);
    EXPECT_NE(a, b) << "the anchor itself is not a neighbour";
    bool listed = b == (a + 4) % n || (b == (a + 8) % n && a % 2 == 0);
    EXPECT_TRUE(listed) << a << " -> " << b << ": a neighbour at or above the threshold";
    // The preview's label: the similarity of the neighbour drawn.
    EXPECT_FLOAT_EQ(all.row_info(p, r).similarity, 0.9f);
    EXPECT_EQ(all.row_info(p, r).time_gap, -1);
  }
  c.mined_ratio = 0.0;
  for (PairKind kind : PairGenerator(c, set, nb).plan_batch(0, 0, n).kinds) EXPECT_EQ(kind, PairKind::augmentation);
  c.mined_ratio = 0.5;
  int mined = 0;
  for (PairKind kind : PairGenerator(c, set, nb).plan_batch(0, 0, n).kinds) mined += kind == PairKind::mined;
  EXPECT_NEAR(mined / static_cast<double>(n), 0.5, 0.12);

  const std::string path = (fs::temp_directory_path() / ("siam_nb_" + std::to_string(::getpid()) + ".safetensors")).string();
  save_neighbours(path, nb);
  Neighbours back = load_neighbours(path);
  EXPECT_EQ(back.indices.to_vector(), nb.indices.to_vector());
  EXPECT_EQ(back.similarities.to_vector(), nb.similarities.to_vector());
  save_safetensors(path, {{"indices", nb.indices}});
  expect_error([&] { load_neighbours(path); }, "not a neighbour list");
  fs::remove(path);

  nb.indices.data<int64_t>()[5 * k + 1] = n;
  expect_error([&] { PairGenerator(c, set, nb); }, "neighbour (5, 1) is image 200");
  expect_error([&] { PairGenerator(c, synthetic(10, 8, 8, 2), nb); }, "200 rows");
  expect_error([&] { PairGenerator(config(PairKind::mined), set); }, "needs a neighbour list");
}

TEST(DataPairs, OverlapConstraint) {
  ImageSet set = synthetic(50, 32, 32, 5);
  PairConfig c = config(PairKind::augmentation, 16);
  c.overlap.kind = OverlapConstraint::Kind::zero;
  BatchPlan z = PairGenerator(c, set).plan_batch(0, 0, 50);
  for (size_t r = 0; r < 50; ++r) EXPECT_EQ(crop_iou(z.views[0][r].params, z.views[1][r].params), 0.0);

  c.overlap.kind = OverlapConstraint::Kind::interval;
  c.overlap.lo = 0.2;
  c.overlap.hi = 0.5;
  BatchPlan iv = PairGenerator(c, set).plan_batch(3, 0, 50);
  for (size_t r = 0; r < 50; ++r) {
    double iou = crop_iou(iv.views[0][r].params, iv.views[1][r].params);
    EXPECT_TRUE(iou >= 0.2 && iou <= 0.5) << iou;
  }
  // Two crops of at least 60% of the area always overlap.
  c.overlap.kind = OverlapConstraint::Kind::zero;
  for (AugmentConfig& v : c.views) v.scale_min = 0.6f;
  c.overlap.max_tries = 50;
  expect_error([&] { PairGenerator(c, set).plan_batch(0, 0, 4); }, "not met in 50 tries with crop scale [0.6, 1]");
  c.overlap.kind = OverlapConstraint::Kind::interval;
  c.overlap.lo = 0.7;
  c.overlap.hi = 0.3;
  expect_error([&] { PairGenerator(c, set); }, "IoU interval [0.7, 0.3]");
}

TEST(DataPairs, TemporalGap) {
  VideoSet v;
  v.frames = synthetic(30, 8, 8, 1);
  v.start = {0, 10, 13, 30};
  for (int64_t vid = 0; vid < 3; ++vid)
    for (int64_t f = v.start[vid]; f < v.start[vid + 1]; ++f) v.frames.labels.data<int64_t>()[f] = vid;
  PairConfig c = config(PairKind::temporal);
  c.min_gap = 3;
  c.max_gap = 5;
  PairGenerator g(c, v);
  EXPECT_EQ(g.rows_per_epoch(), 27) << "the 3-frame video has no frame with a partner 3 to 5 away";
  auto video = [&](int64_t f) { return std::upper_bound(v.start.begin(), v.start.end(), f) - v.start.begin() - 1; };
  std::set<int64_t> gaps;
  for (int64_t e = 0; e < 4; ++e) {
    BatchPlan p = g.plan_batch(e, 0, 27);
    for (size_t r = 0; r < 27; ++r) {
      int64_t a = p.views[0][r].image, b = p.views[1][r].image;
      EXPECT_EQ(video(a), video(b));
      EXPECT_GE(std::abs(a - b), 3);
      EXPECT_LE(std::abs(a - b), 5);
      EXPECT_EQ(g.row_info(p, r).time_gap, std::abs(a - b));
      EXPECT_TRUE(std::isnan(g.row_info(p, r).similarity));
      gaps.insert(b - a);
    }
  }
  EXPECT_EQ(gaps, (std::set<int64_t>{-5, -4, -3, 3, 4, 5}));
  c.min_gap = 20;
  c.max_gap = 25;
  expect_error([&] { PairGenerator(c, v); }, "the longest video has 17 frames");
  c.min_gap = 4;
  c.max_gap = 2;
  expect_error([&] { PairGenerator(c, v); }, "gap range [4, 2]");
}

TEST(DataPairs, MultiCrop) {
  ImageSet set = synthetic(12, 40, 40, 3);
  PairConfig c = config(PairKind::augmentation);
  c.views = dino_views(32, 12, 4);
  PairGenerator g(c, set);
  EXPECT_EQ(g.num_views(), 6);
  BatchPlan p = g.plan_batch(0, 0, 12);
  for (int v = 0; v < 6; ++v)
    for (size_t r = 0; r < 12; ++r) {
      const AugmentParams& q = p.views[v][r].params;
      EXPECT_EQ(q.out_h, v < 2 ? 32 : 12);
      EXPECT_EQ(p.views[v][r].image, p.rows[r]);
      double area = static_cast<double>(q.height) * q.width / 1600.0;
      if (v >= 2) {
        EXPECT_LE(area, 0.45) << "local crops are small";
      }
    }
  // With semantic pairs, even views show the anchor and odd views the partner.
  c.kind = PairKind::semantic;
  BatchPlan s = PairGenerator(c, set).plan_batch(0, 0, 12);
  for (size_t r = 0; r < 12; ++r)
    for (int v = 2; v < 6; ++v) EXPECT_EQ(s.views[v][r].image, s.views[v % 2][r].image);
}
