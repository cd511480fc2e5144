// The loader: batch shapes, labels, determinism (same seed, same views, with or without the
// prefetch thread), per-epoch reshuffling, drop-last, errors from the worker, and the preview.
#include <gtest/gtest.h>
#include <stb/stb_image.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "data/loader.h"
#include "data/preview.h"
#include "tensor/cuda_runtime.h"

using namespace siam;
using namespace siam::data;
namespace fs = std::filesystem;

namespace {

ImageSet synthetic(int64_t n, int h, int w, int c, int classes) {
  ImageSet s;
  s.images = empty({n, h, w, c}, {DType::u8});
  for (int64_t i = 0; i < s.images.numel(); ++i) s.images.data<uint8_t>()[i] = static_cast<uint8_t>((i * 29) ^ (i >> 5));
  s.labels = empty({n}, {DType::i64});
  for (int64_t i = 0; i < n; ++i) s.labels.data<int64_t>()[i] = i % classes;
  s.num_classes = classes;
  s.name = "synthetic";
  return s;
}

PairConfig simclr(int size, uint64_t seed) {
  PairConfig c;
  c.views = {simclr_view(size), simclr_view(size)};
  for (AugmentConfig& v : c.views) v.blur_p = 1.0f;  // exercise every op
  c.seed = seed;
  return c;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

bool same_batch(const Batch& a, const Batch& b) {
  if (a.views.size() != b.views.size() || !same_tensor(a.labels, b.labels) || !same_tensor(a.indices, b.indices))
    return false;
  for (size_t v = 0; v < a.views.size(); ++v)
    if (!same_tensor(a.views[v], b.views[v])) return false;
  return true;
}

std::vector<Batch> epoch(Loader& l, int64_t e) {
  std::vector<Batch> out;
  l.start_epoch(e);
  Batch b;
  while (l.next(b)) out.push_back(b);
  return out;
}

}  // namespace

TEST(DataLoader, ShapesLabelsAndDropLast) {
  ImageSet set = synthetic(37, 20, 20, 3, 5);
  Loader l(set, PairGenerator(simclr(16, 3), set), {8, true, true, 1});
  EXPECT_EQ(l.batches_per_epoch(), 4);
  std::vector<Batch> e0 = epoch(l, 0);
  ASSERT_EQ(e0.size(), 4u);
  std::vector<int64_t> seen;
  for (const Batch& b : e0) {
    ASSERT_EQ(b.views.size(), 2u);
    EXPECT_EQ(b.views[0].shape(), (Shape{8, 3, 16, 16}));
    EXPECT_EQ(b.views[1].dtype(), DType::f32);
    ASSERT_EQ(b.indices.shape(), (Shape{8, 2}));
    for (int64_t r = 0; r < 8; ++r) {
      int64_t img = b.indices.data<int64_t>()[r * 2];
      EXPECT_EQ(b.labels.data<int64_t>()[r], img % 5);
      EXPECT_EQ(b.indices.data<int64_t>()[r * 2 + 1], img);
      seen.push_back(img);
    }
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end()) << "no image twice in an epoch";
  EXPECT_EQ(seen.size(), 32u) << "the short last batch is dropped";

  Loader keep(set, PairGenerator(simclr(16, 3), set), {8, false, false, 1});
  std::vector<Batch> all = epoch(keep, 0);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all.back().size(), 5);
  EXPECT_TRUE(same_batch(all[2], e0[2])) << "drop_last changes only the end";
  try {
    Loader none(set, PairGenerator(simclr(16, 3), set), {64, true, true, 1});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("leaves no batch"), std::string::npos) << e.what();
  }
}

TEST(DataLoader, DeterministicBySeedAndReshuffledPerEpoch) {
  ImageSet set = synthetic(24, 12, 12, 3, 4);
  Loader a(set, PairGenerator(simclr(10, 7), set), {6, true, true, 1});
  Loader b(set, PairGenerator(simclr(10, 7), set), {6, true, false, 2});  // no prefetch, 2 threads
  Loader c(set, PairGenerator(simclr(10, 8), set), {6, true, true, 1});
  std::vector<Batch> a0 = epoch(a, 0), b0 = epoch(b, 0), c0 = epoch(c, 0), a1 = epoch(a, 1);
  for (size_t i = 0; i < a0.size(); ++i) {
    EXPECT_TRUE(same_batch(a0[i], b0[i])) << "batch " << i << ": same seed, same views";
    EXPECT_FALSE(same_batch(a0[i], c0[i])) << "batch " << i << ": another seed";
    EXPECT_TRUE(same_batch(a0[i], a.batch(0, static_cast<int64_t>(i)))) << "random access equals the stream";
  }
  EXPECT_FALSE(same_tensor(a0[0].indices, a1[0].indices)) << "a new epoch, a new order";
  std::vector<Batch> again = epoch(a, 0);
  EXPECT_TRUE(same_batch(again[3], a0[3])) << "epoch 0 replayed";
  // Restarting an epoch while a prefetch is in flight is safe.
  a.start_epoch(5);
  a.start_epoch(0);
  Batch first;
  ASSERT_TRUE(a.next(first));
  EXPECT_TRUE(same_batch(first, a0[0]));
}

TEST(DataLoader, MultiCropAndGreyImages) {
  ImageSet set = synthetic(10, 28, 28, 1, 2);
  PairConfig c;
  c.views = dino_views(24, 12, 3);
  for (AugmentConfig& v : c.views) {
    v.mean = {0.286f, 0, 0};
    v.std = {0.353f, 1, 1};
  }
  Loader l(set, PairGenerator(c, set), {5, true, true, 1});
  Batch b;
  l.start_epoch(0);
  ASSERT_TRUE(l.next(b));
  ASSERT_EQ(b.views.size(), 5u);
  EXPECT_EQ(b.views[0].shape(), (Shape{5, 1, 24, 24}));
  EXPECT_EQ(b.views[4].shape(), (Shape{5, 1, 12, 12}));
  EXPECT_EQ(b.indices.shape(), (Shape{5, 5}));
  for (double v : b.views[2].to_vector()) EXPECT_TRUE(std::isfinite(v) && v >= -0.286 / 0.353 - 1e-4 && v <= (1 - 0.286) / 0.353 + 1e-4);
}

TEST(DataLoader, WorkerErrorsReachTheCaller) {
  ImageSet set = synthetic(16, 16, 16, 3, 2);
  PairConfig c = simclr(8, 1);
  c.overlap.kind = OverlapConstraint::Kind::zero;
  c.overlap.max_tries = 20;
  for (AugmentConfig& v : c.views) v.scale_min = 0.7f;
  Loader l(set, PairGenerator(c, set), {4, true, true, 1});
  l.start_epoch(0);
  Batch b;
  EXPECT_THROW(l.next(b), Error);
  EXPECT_FALSE(l.next(b)) << "the epoch ends at a failed batch";
  EXPECT_THROW(Loader(synthetic(15, 16, 16, 3, 2), PairGenerator(simclr(8, 1), set), {4, true, true, 1}), Error)
      << "images differ from the generator's";
  Loader fresh(set, PairGenerator(simclr(8, 1), set), {4, true, true, 1});
  EXPECT_THROW(fresh.next(b), Error) << "next() before start_epoch()";
}

TEST(DataLoader, PreviewPngDecodes) {
  ImageSet set = synthetic(8, 20, 24, 3, 2);
  PairConfig c = simclr(16, 2);
  c.kind = PairKind::semantic;
  PairGenerator g(c, set);
  const std::string path = (fs::temp_directory_path() / ("siam_preview_" + std::to_string(::getpid()) + ".png")).string();
  write_preview(path, set, g, 0, 3);
  int w = 0, h = 0, comp = 0;
  unsigned char* pix = stbi_load(path.c_str(), &w, &h, &comp, 0);
  ASSERT_NE(pix, nullptr) << stbi_failure_reason();
  // Cells as large as the 20 x 24 sources, enlarged 5 times to at least 96 pixels: 100 x 120;
  // 4 columns (2 sources + 2 views) and 3 rows.
  const PreviewLayout L = preview_layout(g, 3);
  EXPECT_EQ(L.scale, 5);
  EXPECT_EQ(L.cell_h, 100);
  EXPECT_EQ(L.cell_w, 120);
  EXPECT_EQ(L.cols, 4);
  EXPECT_EQ(L.rows, 3);
  EXPECT_EQ(w, L.width);
  EXPECT_EQ(h, L.height);
  EXPECT_EQ(comp, 3);
  // The first source cell is the image itself, each pixel a 5 x 5 block (the crop boxes are
  // 2 pixels thick on block edges, so block centres show the image).
  const uint8_t* src = set.images.data<uint8_t>();
  BatchPlan plan = g.plan(0, g.epoch_order(0).data(), 1);
  int64_t anchor = plan.views[0][0].image;
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 24; ++x)
      for (int ch = 0; ch < 3; ++ch)
        ASSERT_EQ(pix[((L.cell_y(0) + 5 * y + 2) * w + L.cell_x(0) + 5 * x + 2) * 3 + ch],
                  src[((anchor * 20 + y) * 24 + x) * 3 + ch])
            << "source pixel (" << x << ", " << y << ")";
  // View 1's crop box is drawn on its source in view 1's colour (orange), top-left corner.
  const AugmentParams& p0 = plan.views[0][0].params;
  const unsigned char* corner = &pix[((L.cell_y(0) + 5 * p0.top) * w + L.cell_x(0) + 5 * p0.left) * 3];
  EXPECT_EQ(corner[0], 255);
  EXPECT_EQ(corner[1], 140);
  EXPECT_EQ(corner[2], 0);
  // View 2's cell is framed in blue.
  const unsigned char* frame = &pix[((L.cell_y(0) + 10) * w + L.cell_x(3) - 2) * 3];
  EXPECT_EQ(frame[0], 30);
  EXPECT_EQ(frame[1], 144);
  EXPECT_EQ(frame[2], 255);
  // The label line above the first row has text in it (light pixels on the dark background).
  int lit = 0;
  for (int y = L.cell_y(0) - L.label_h; y < L.cell_y(0) - 3; ++y)
    for (int x = 0; x < w; ++x) lit += pix[(y * w + x) * 3] > 200;
  EXPECT_GT(lit, 100);
  stbi_image_free(pix);
  fs::remove(path);
  EXPECT_THROW(write_preview("/nonexistent-dir/p.png", set, g, 0, 2), Error);
}

// Views made on a GPU need one; without it the loader says why at construction.
TEST(DataLoader, GpuViewsNeedAGpu) {
  if (cuda::available()) GTEST_SKIP() << "a GPU is present (tests/cuda/test_cuda_augment.cpp covers the GPU path)";
  ImageSet s = synthetic(16, 12, 12, 3, 4);
  PairGenerator gen(simclr(8, 1), s);
  EXPECT_THROW(Loader(s, gen, {.batch_size = 4, .device = Device::cuda(0)}), Error);
}
