// The Earth Mover's Distance (apps/emd.h): assignment and transportation solvers against brute
// force on small sizes and against SciPy's values (linear_sum_assignment, linprog) stored by
// tools/reference/gen_eval.py in tests/fixtures/eval/emd.safetensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <set>

#include "apps/emd.h"
#include "autograd/ops.h"
#include "nn/layers.h"
#include "ssl/backbone.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"

namespace siam::test {
namespace {

std::vector<double> random_costs(int64_t n, int64_t m, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  std::vector<double> c = rand({n * m}, g, {DType::f64}).to_vector();
  for (double& x : c) x *= scale;
  return c;
}

// Minimum over every injective row -> column map, by enumerating column permutations.
double brute_assignment(const std::vector<double>& c, int64_t n, int64_t m) {
  std::vector<int64_t> cols(m);
  std::iota(cols.begin(), cols.end(), 0);
  double best = std::numeric_limits<double>::infinity();
  do {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += c[i * m + cols[i]];
    best = std::min(best, s);
  } while (std::next_permutation(cols.begin(), cols.end()));
  return best;
}

// The transportation problem with masses 1/n and 1/m is the assignment problem on the matrix
// replicated to L = lcm(n, m) rows and columns (each unit 1/L), divided by L.
std::vector<double> replicate(const std::vector<double>& c, int64_t n, int64_t m, int64_t L) {
  std::vector<double> r(L * L);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = 0; j < L; ++j) r[i * L + j] = c[(i / (L / n)) * m + j / (L / m)];
  return r;
}

// Exact optima in double: every solver adds the same few costs in another order.
constexpr double kTol = 1e-12;

TEST(Emd, AssignmentMatchesBruteForce) {
  uint64_t seed = 1;
  for (int64_t n = 1; n <= 6; ++n)
    for (int64_t m = n; m <= std::min<int64_t>(n + 2, 7); ++m) {
      std::vector<double> c = random_costs(n, m, seed++);
      apps::Assignment a = apps::linear_sum_assignment(c, n, m);
      EXPECT_NEAR(a.cost, brute_assignment(c, n, m), kTol) << n << " x " << m;
      std::set<int64_t> used(a.col_of_row.begin(), a.col_of_row.end());
      EXPECT_EQ(static_cast<int64_t>(used.size()), n) << "columns must be distinct";
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += c[i * m + a.col_of_row[i]];
      EXPECT_NEAR(s, a.cost, kTol);
    }
}

TEST(Emd, TransportMatchesBruteForce) {
  uint64_t seed = 100;
  for (auto [n, m] : std::vector<std::pair<int64_t, int64_t>>{{1, 3}, {2, 3}, {3, 2}, {2, 4}, {4, 2}, {2, 6}, {3, 6}, {1, 8}}) {
    const int64_t L = std::lcm(n, m);
    std::vector<double> c = random_costs(n, m, seed++, 2.0);
    EXPECT_NEAR(apps::transport_cost(c, n, m), brute_assignment(replicate(c, n, m, L), L, L) / L, kTol)
        << n << " x " << m;
  }
  // Equal counts: the transportation optimum is the assignment's, divided by n.
  std::vector<double> c = random_costs(5, 5, 7);
  EXPECT_NEAR(apps::transport_cost(c, 5, 5), apps::linear_sum_assignment(c, 5, 5).cost / 5, kTol);
}

// Larger sizes against a second exact method: Hungarian on the replicated matrix.
TEST(Emd, TransportMatchesReplicatedAssignment) {
  uint64_t seed = 200;
  for (auto [n, m] : std::vector<std::pair<int64_t, int64_t>>{{4, 6}, {6, 9}, {10, 4}, {9, 12}, {16, 12}, {7, 30}}) {
    const int64_t L = std::lcm(n, m);
    std::vector<double> c = random_costs(n, m, seed++, 2.0);
    EXPECT_NEAR(apps::transport_cost(c, n, m), apps::linear_sum_assignment(replicate(c, n, m, L), L, L).cost / L, 1e-10)
        << n << " x " << m;
  }
}

SafeTensors emd_fixture() {
  const std::string path = std::string(SIAM_SOURCE_DIR) + "/tests/fixtures/eval/emd.safetensors";
  if (!std::filesystem::exists(path))
    fail("missing fixture ", path, ": regenerate with `/usr/bin/python3 tools/reference/gen_eval.py tests/fixtures/eval`",
         " (needs python3-scipy)");
  return load_safetensors(path);
}

// SciPy's linprog (HiGHS) stops at its feasibility/optimality tolerance (1e-7 by default),
// so its transport values are compared to 1e-7; linear_sum_assignment is exact.
TEST(Emd, MatchesScipy) {
  SafeTensors fx = emd_fixture();
  int checked = 0;
  for (const auto& [name, t] : fx.tensors) {
    if (!name.ends_with(".cost")) continue;
    const std::string key = name.substr(0, name.size() - 5);
    const int64_t n = t.size(0), m = t.size(1);
    const std::vector<double> c = t.to_vector();
    const double want = fx.at(key + ".value").item();
    if (key.starts_with("assignment."))
      EXPECT_NEAR(apps::linear_sum_assignment(c, n, m).cost, want, 1e-12) << key;
    else
      EXPECT_NEAR(apps::transport_cost(c, n, m), want, 1e-7) << key;
    ++checked;
  }
  EXPECT_EQ(checked, 12);
  // The whole EMD (cosine cost from f32 features, computed in f64 on both sides).
  EXPECT_NEAR(apps::emd(fx.at("emd_a"), fx.at("emd_b")), fx.at("emd_value").item(), 1e-12);
}

TEST(Emd, CosineCostAndProperties) {
  Tensor a = from_vector({1, 0, 0, 2}, {2, 2}), b = from_vector({0, 3, 1, 1, -1, 0}, {3, 2});
  Tensor c = apps::cosine_cost(a, b);
  ASSERT_EQ(c.shape(), (Shape{2, 3}));
  EXPECT_NEAR(c.at({0, 0}), 1.0, 1e-12);
  EXPECT_NEAR(c.at({1, 0}), 0.0, 1e-12);
  EXPECT_NEAR(c.at({0, 1}), 1 - std::sqrt(0.5), 1e-7);
  EXPECT_NEAR(c.at({0, 2}), 2.0, 1e-12);
  // A set against itself (any order) is 0; a vector against its opposite, 2; a set against its
  // negation at most 2 (matching each row with its own opposite costs exactly 2).
  Tensor x = randn({9, 5}, default_generator());
  EXPECT_NEAR(apps::emd(x, index_select(x, 0, randperm(9, default_generator()))), 0.0, 1e-12);
  EXPECT_NEAR(apps::emd(narrow(x, 0, 0, 1), neg(narrow(x, 0, 0, 1))), 2.0, 1e-12);
  EXPECT_LE(apps::emd(x, neg(x)), 2.0);
  // Symmetric, also with unequal counts.
  Tensor y = randn({6, 5}, default_generator());
  EXPECT_NEAR(apps::emd(x, y), apps::emd(y, x), 1e-12);
}

TEST(Emd, SpatialFeatures) {
  ssl::Backbone r = ssl::make_backbone({.arch = "resnet18", .small_input = true, .width = 4});
  Tensor x = randn({2, 3, 16, 16}, default_generator());
  // Small-input ResNet-18: strides 1, 2, 2, 2 -> a 2 x 2 map of 8 x 4 channels.
  EXPECT_EQ(apps::spatial_features(*r.module, x).shape(), (Shape{2, 4, 32}));
  ssl::Backbone v = ssl::make_backbone({.arch = "vit_tiny", .image_size = 8, .patch = 4});
  EXPECT_EQ(apps::spatial_features(*v.module, contiguous(slice(slice(x, 2, 0, 8), 3, 0, 8))).shape(), (Shape{2, 4, 192}));
  nn::Linear other(3, 2);
  EXPECT_THROW(apps::spatial_features(other, x), Error);
}

// Two views drawn with no randomness at all (full crop, no flip, no colour) are the same
// image, so every pair's EMD is 0; views of different crops are not.
TEST(Emd, ViewEmdOfIdenticalViewsIsZero) {
  data::ImageSet s;
  s.images = empty({6, 12, 12, 3}, {DType::u8});
  uint8_t* p = s.images.data<uint8_t>();
  for (int64_t k = 0; k < s.images.numel(); ++k) p[k] = static_cast<uint8_t>((k * 53) % 251);
  s.labels = zeros({6}, {DType::i64});
  s.num_classes = 1;
  s.name = "noise";
  data::AugmentConfig same{.out_h = 12, .out_w = 12, .scale_min = 1, .scale_max = 1, .ratio_min = 1, .ratio_max = 1,
                           .flip_p = 0, .jitter_p = 0, .grayscale_p = 0, .blur_p = 0};
  ssl::Backbone r = ssl::make_backbone({.arch = "resnet18", .small_input = true, .width = 4});
  r.module->train();
  data::PairConfig pc;
  pc.views = {same, same};
  data::PairGenerator gen(pc, s);
  std::vector<double> e = apps::view_emd(*r.module, s, gen, 6, 4);
  ASSERT_EQ(e.size(), 6u);
  for (double v : e) EXPECT_NEAR(v, 0.0, 1e-6);
  EXPECT_TRUE(r.module->is_training()) << "view_emd must leave the module in the mode it found";
  data::AugmentConfig crop = same;
  crop.scale_min = 0.1f;
  crop.scale_max = 0.3f;
  pc.views = {crop, crop};
  pc.seed = 4;
  data::PairGenerator diverse(pc, s);
  for (double v : apps::view_emd(*r.module, s, diverse, 6)) EXPECT_GT(v, 1e-4);
  EXPECT_THROW(apps::view_emd(*r.module, s, gen, 7), Error);
}

TEST(Emd, Errors) {
  EXPECT_THROW(apps::linear_sum_assignment({1, 2, 3, 4, 5, 6}, 3, 2), Error);  // more rows than columns
  EXPECT_THROW(apps::linear_sum_assignment({1, 2, 3}, 2, 2), Error);           // size
  EXPECT_THROW(apps::transport_cost({1, std::nan(""), 3, 4}, 2, 2), Error);
  EXPECT_THROW(apps::emd(zeros({3, 4}), zeros({3, 5})), Error);
}

}  // namespace
}  // namespace siam::test
