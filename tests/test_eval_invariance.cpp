// The invariance measurement (apps/invariance.h): the score on a hand-made activation matrix
// whose answer is worked out below, and the set builders (transformed data sets, folders).
#include <gtest/gtest.h>
#include <stb/stb_image_write.h>

#include <cmath>
#include <filesystem>

#include "apps/invariance.h"

namespace siam::test {
namespace {

namespace fs = std::filesystem;

TEST(Invariance, FiringPercentile) {
  EXPECT_DOUBLE_EQ(apps::firing_percentile(2), 50.0);
  EXPECT_DOUBLE_EQ(apps::firing_percentile(3), 200.0 / 3);
  EXPECT_DOUBLE_EQ(apps::firing_percentile(10), 90.0);
  EXPECT_DOUBLE_EQ(apps::firing_percentile(20), 95.0);
  EXPECT_DOUBLE_EQ(apps::firing_percentile(1000), 95.0);
  EXPECT_THROW(apps::firing_percentile(1), Error);
}

// 11 images in 4 sets: A = 0..2 and B = 3..5 (class 0), C = 6..8 and D = 9..10 (class 1; D
// has 2 images and is skipped). 2 classes: percentile 50, the threshold is the sorted
// activations' element 5 (rank 0.5 x 10).
//   neuron 0: 5 6 7 | 0 0 0 | 8 0 0 | 9 9     t = 5, fires on 6 7 8 9 9: G = 5/11.
//             A: 2/3; B never fires (skipped); C: 1/3.  L_0 = 2/3, L_1 = 1/3.
//             L/G: class 0 22/15, class 1 11/15.
//   neuron 1: 1 .. 11                          t = 6, fires on 7 .. 11: G = 5/11.
//             A, B never fire; C: 3/3.  class 0: no part; class 1: L/G = 11/5.
//   neuron 2: all 0                            G = 0: no part.
//   neuron 3: 1 x 10, then 2                   t = 1, fires on image 10 only (set D, skipped).
// K = 1: class 0 22/15, class 1 11/5 = 33/15 -> mean 55/30, x (100 - 50) = 275/3.
// K = 10 (more than the neurons taking part: all of them): class 0 22/15, class 1
// (11/15 + 33/15) / 2 = 22/15 -> 22/15 x 50 = 220/3.
TEST(Invariance, HandMadeActivations) {
  const std::vector<std::vector<double>> neurons = {
      {5, 6, 7, 0, 0, 0, 8, 0, 0, 9, 9},
      {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
      {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2},
  };
  std::vector<double> a(11 * 4);
  for (int i = 0; i < 4; ++i)
    for (int n = 0; n < 11; ++n) a[n * 4 + i] = neurons[i][n];
  for (DType dt : {DType::f32, DType::f64}) {
    apps::InvarianceScore s = apps::invariance_score(from_vector(a, {11, 4}, {dt}), {0, 3, 6, 9, 11}, {0, 0, 1, 1}, 2,
                                                     {1, 10});
    EXPECT_DOUBLE_EQ(s.percentile, 50.0);
    EXPECT_EQ(s.sets_used, 3);
    EXPECT_EQ(s.classes_scored, 2);
    ASSERT_EQ(s.score.size(), 2u);
    EXPECT_NEAR(s.score[0], 275.0 / 3, 1e-12);
    EXPECT_NEAR(s.score[1], 220.0 / 3, 1e-12);
  }
}

// 10 classes of 2 sets of 5 images: 90th percentile (rank 0.9 x 99 = 89.1 in the sorted
// activations).
struct TenClasses {
  std::vector<int64_t> start = {0};
  std::vector<int> cls;
  TenClasses() {
    for (int c = 0; c < 10; ++c)
      for (int s = 0; s < 2; ++s) {
        start.push_back(start.back() + 5);
        cls.push_back(c);
      }
  }
  // One neuron firing (1) on the images where fires(class, set, image) holds, 0 elsewhere.
  template <class F>
  Tensor neuron(F fires) const {
    std::vector<double> a;
    for (int c = 0; c < 10; ++c)
      for (int s = 0; s < 2; ++s)
        for (int i = 0; i < 5; ++i) a.push_back(fires(c, s, i) ? 1.0 : 0.0);
    return from_vector(a, {100, 1}, {DType::f64});
  }
};

TEST(Invariance, PerfectNeuronScoresHundred) {
  TenClasses t;
  // Every image of the first set of classes 0 and 1 fires: 10 of 100 above the threshold 0.1,
  // G = 0.1; in those classes L = 1, L/G = 10; the other classes have no firing set (no part).
  apps::InvarianceScore s =
      apps::invariance_score(t.neuron([](int c, int s, int) { return c < 2 && s == 0; }), t.start, t.cls, 10, {10});
  EXPECT_EQ(s.classes_scored, 2);
  EXPECT_NEAR(s.score[0], 100.0, 1e-12);
  // One image of the first set of every class: G = 0.1, L = 1/5 everywhere: 20.
  s = apps::invariance_score(t.neuron([](int, int s, int i) { return s == 0 && i == 0; }), t.start, t.cls, 10, {10});
  EXPECT_EQ(s.classes_scored, 10);
  EXPECT_NEAR(s.score[0], 20.0, 1e-12);
  // Half the images fire: the threshold is 1 and nothing is above it, so no neuron takes part.
  EXPECT_THROW(apps::invariance_score(t.neuron([](int, int s, int) { return s == 0; }), t.start, t.cls, 10), Error);
}

TEST(Invariance, Errors) {
  Tensor a = zeros({6, 2});
  EXPECT_THROW(apps::invariance_score(a, {0, 3, 5}, {0, 1}, 2), Error);       // does not end at N
  EXPECT_THROW(apps::invariance_score(a, {0, 3, 6}, {0, 2}, 2), Error);       // class out of range
  EXPECT_THROW(apps::invariance_score(a, {0, 3, 6}, {0, 1}, 2, {0}), Error);  // K = 0
  EXPECT_THROW(apps::invariance_score(a, {0, 2, 4, 6}, {0, 1, 1}, 2), Error);  // no set of 3
}

data::ImageSet gradient_set(int64_t n, int h, int w, int c, int classes) {
  data::ImageSet s;
  s.images = empty({n, h, w, c}, {DType::u8});
  s.labels = empty({n}, {DType::i64});
  uint8_t* p = s.images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < c; ++k) p[((i * h + y) * w + x) * c + k] = static_cast<uint8_t>(20 + 7 * x + 5 * y + 30 * k + i);
    s.labels.data<int64_t>()[i] = i % classes;
  }
  s.num_classes = classes;
  s.name = "gradient";
  return s;
}

TEST(Invariance, TransformedSets) {
  data::ImageSet src = gradient_set(30, 10, 12, 3, 3);  // 10 images per class
  for (auto t : {apps::Transformation::occlusion, apps::Transformation::viewpoint,
                 apps::Transformation::illumination, apps::Transformation::instance}) {
    apps::InvarianceSets s = apps::make_invariance_sets(src, t, 2, 5, 9);
    SCOPED_TRACE(s.name);
    ASSERT_EQ(s.num_sets(), 6);  // 2 per class; instance: 10 / 5 = 2 sets of 5 per class
    EXPECT_EQ(s.set_start, (std::vector<int64_t>{0, 5, 10, 15, 20, 25, 30}));
    EXPECT_EQ(s.set_class, (std::vector<int>{0, 0, 1, 1, 2, 2}));
    EXPECT_EQ(s.images.images.shape(), (Shape{30, 10, 12, 3}));
    EXPECT_EQ(s.images.labels.to_vector()[7], 0);
    EXPECT_EQ(s.images.labels.to_vector()[12], 1);
    EXPECT_EQ(apps::parse_transformation(s.name), t);
    // Same seed, same sets.
    EXPECT_EQ(apps::make_invariance_sets(src, t, 2, 5, 9).images.images.to_vector(), s.images.images.to_vector());
  }
  const size_t bytes = 10 * 12 * 3;
  auto image = [&](const apps::InvarianceSets& set, int64_t i) {
    std::vector<double> v = set.images.images.to_vector();
    return std::vector<double>(v.begin() + i * bytes, v.begin() + (i + 1) * bytes);
  };
  auto grey_share = [&](const std::vector<double>& v) {
    int64_t g = 0;
    for (double x : v) g += x == 128;
    return static_cast<double>(g) / static_cast<double>(v.size());
  };
  // The same seed picks the same targets for every transformation. The middle viewpoint is
  // no rotation and no foreshortening, and occlusion level 0 covers nothing: both are the
  // target itself.
  apps::InvarianceSets occ = apps::make_invariance_sets(src, apps::Transformation::occlusion, 1, 7, 3);
  apps::InvarianceSets view = apps::make_invariance_sets(src, apps::Transformation::viewpoint, 1, 7, 3);
  EXPECT_EQ(image(occ, 0), image(view, 3));
  EXPECT_NE(image(view, 0), image(view, 3));
  // Level 6: 60% of the image grey (rounded to whole pixels; a few target pixels are 128 too).
  EXPECT_NEAR(grey_share(image(occ, 6)) - grey_share(image(occ, 0)), 0.6, 0.05);
  // Illumination: brightness grows with the level.
  apps::InvarianceSets ill = apps::make_invariance_sets(src, apps::Transformation::illumination, 1, 7, 3);
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
  };
  for (int l = 1; l < 7; ++l) EXPECT_GT(mean(image(ill, l)), mean(image(ill, l - 1)));
  EXPECT_THROW(apps::make_invariance_sets(src, apps::Transformation::occlusion, 1, 2), Error);
  EXPECT_THROW(apps::parse_transformation("rotation"), Error);
}

void write_png(const fs::path& p, int h, int w, uint8_t v) {
  fs::create_directories(p.parent_path());
  std::vector<uint8_t> px(static_cast<size_t>(h) * w * 3, v);
  ASSERT_TRUE(stbi_write_png(p.c_str(), w, h, 3, px.data(), w * 3));
}

TEST(Invariance, FolderOfSets) {
  const fs::path root = fs::temp_directory_path() / ("siam-invariance-" + std::to_string(::getpid()));
  fs::remove_all(root);
  // cat: 2 sets (3 and 4 images), dog: 1 set of 3 images.
  for (int i = 0; i < 3; ++i) write_png(root / "cat" / "a" / (std::to_string(i) + ".png"), 6, 5, 10);
  for (int i = 0; i < 4; ++i) write_png(root / "cat" / "b" / (std::to_string(i) + ".png"), 6, 5, 20);
  for (int i = 0; i < 3; ++i) write_png(root / "dog" / "x" / (std::to_string(i) + ".png"), 6, 5, 30);
  apps::InvarianceSets s = apps::load_invariance_folder(root.string());
  EXPECT_EQ(s.num_classes, 2);
  EXPECT_EQ(s.set_start, (std::vector<int64_t>{0, 3, 7, 10}));
  EXPECT_EQ(s.set_class, (std::vector<int>{0, 0, 1}));
  EXPECT_EQ(s.images.images.shape(), (Shape{10, 6, 5, 3}));
  EXPECT_EQ(s.images.images.at({3, 0, 0, 0}), 20);
  EXPECT_EQ(s.images.labels.to_vector(), (std::vector<double>{0, 0, 0, 0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(s.images.class_names, (std::vector<std::string>{"cat", "dog"}));
  // Another size in a second class: an error naming the folder.
  write_png(root / "eel" / "y" / "0.png", 4, 4, 0);
  try {
    apps::load_invariance_folder(root.string());
    ADD_FAILURE() << "no error for mixed sizes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("eel"), std::string::npos) << e.what();
  }
  // ... unless a size is given.
  EXPECT_EQ(apps::load_invariance_folder(root.string(), {.height = 8, .width = 8}).images.images.shape(),
            (Shape{11, 8, 8, 3}));
  fs::remove_all(root);
  EXPECT_THROW(apps::load_invariance_folder(root.string()), Error);
}

}  // namespace
}  // namespace siam::test
