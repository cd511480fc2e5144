// Augmentation sampler and CPU executor: each op against its torchvision formula on small
// images, and the sampler's ranges, probabilities and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "autograd/ops.h"
#include "data/augment.h"

using namespace siam;
using namespace siam::data;

namespace {

// image: (H, W, C) u8 with varied pixels.
Tensor make_image(int h, int w, int c, int seed = 0) {
  Tensor t = empty({h, w, c}, {DType::u8});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>((i * 37 + seed * 11 + i * i) % 256);
  return t;
}

float px(const Tensor& img, int r, int c, int ch) { return static_cast<float>(img.at({r, c, ch})); }

}  // namespace

TEST(DataAugment, IdentityReproducesTheImage) {
  for (int C : {1, 3}) {
    Tensor img = make_image(7, 5, C);
    Tensor out = augment(img, identity_params(7, 5, 7, 5));
    ASSERT_EQ(out.shape(), (Shape{C, 7, 5}));
    for (int r = 0; r < 7; ++r)
      for (int c = 0; c < 5; ++c)
        for (int ch = 0; ch < C; ++ch) {
          EXPECT_FLOAT_EQ(out.at({ch, r, c}), px(img, r, c, ch) / 255.0f);
          EXPECT_EQ(std::lround(out.at({ch, r, c}) * 255.0), px(img, r, c, ch)) << "u8 round trip";
        }
  }
}

TEST(DataAugment, CropAndBilinearResize) {
  Tensor img = make_image(8, 8, 3);
  AugmentParams p = identity_params(8, 8, 3, 2);
  p.top = 2;
  p.left = 5;
  p.height = 3;
  p.width = 2;
  Tensor out = augment(img, p);  // same size as the box: an exact crop
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 2; ++c) EXPECT_FLOAT_EQ(out.at({1, r, c}), px(img, 2 + r, 5 + c, 1) / 255.0f);
  // Halving with align_corners=False samples at 2y + 0.5: the mean of each 2 x 2 block.
  Tensor half = augment(img, identity_params(8, 8, 4, 4));
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      float want = (px(img, 2 * r, 2 * c, 0) + px(img, 2 * r, 2 * c + 1, 0) + px(img, 2 * r + 1, 2 * c, 0) +
                    px(img, 2 * r + 1, 2 * c + 1, 0)) / 4 / 255.0f;
      EXPECT_NEAR(half.at({0, r, c}), want, 1e-6);
    }
  // Upscaling clamps the source index at the top-left edge and repeats the last row and column.
  Tensor up = augment(make_image(2, 2, 1), identity_params(2, 2, 4, 4));
  Tensor src = make_image(2, 2, 1);
  EXPECT_FLOAT_EQ(up.at({0, 0, 0}), px(src, 0, 0, 0) / 255.0f);
  EXPECT_FLOAT_EQ(up.at({0, 3, 3}), px(src, 1, 1, 0) / 255.0f);
  EXPECT_NEAR(up.at({0, 0, 1}), (0.75f * px(src, 0, 0, 0) + 0.25f * px(src, 0, 1, 0)) / 255.0f, 1e-6);
}

TEST(DataAugment, FlipGrayscaleSolarizeNormalise) {
  Tensor img = make_image(4, 6, 3);
  AugmentParams p = identity_params(4, 6, 4, 6);
  p.flip = 1;
  Tensor f = augment(img, p);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c) EXPECT_FLOAT_EQ(f.at({2, r, c}), px(img, r, 5 - c, 2) / 255.0f);

  p = identity_params(4, 6, 4, 6);
  p.grayscale = 1;
  Tensor g = augment(img, p);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c) {
      float l = (0.2989f * px(img, r, c, 0) + 0.587f * px(img, r, c, 1) + 0.114f * px(img, r, c, 2)) / 255.0f;
      EXPECT_NEAR(g.at({0, r, c}), l, 1e-6);
      EXPECT_EQ(g.at({0, r, c}), g.at({1, r, c}));
      EXPECT_EQ(g.at({0, r, c}), g.at({2, r, c}));
    }

  p = identity_params(4, 6, 4, 6);
  p.solarize = 1;
  Tensor s = augment(img, p);
  int inverted = 0;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c)
      for (int ch = 0; ch < 3; ++ch) {
        float v = px(img, r, c, ch);
        EXPECT_FLOAT_EQ(s.at({ch, r, c}), v >= 128 ? 1.0f - v / 255.0f : v / 255.0f) << v;
        inverted += v >= 128;
      }
  EXPECT_GT(inverted, 0);

  p = identity_params(4, 6, 4, 6);
  const float mean[3] = {0.5f, 0.4f, 0.3f}, stdv[3] = {0.2f, 0.25f, 0.5f};
  for (int k = 0; k < 3; ++k) {
    p.mean[k] = mean[k];
    p.std[k] = stdv[k];
  }
  Tensor n = augment(img, p);
  for (int ch = 0; ch < 3; ++ch) EXPECT_NEAR(n.at({ch, 1, 2}), (px(img, 1, 2, ch) / 255.0f - mean[ch]) / stdv[ch], 1e-5);
}

TEST(DataAugment, ColourJitterFormulas) {
  Tensor img = make_image(5, 5, 3);
  auto jitter = [&](float b, float c, float s, float h) {
    AugmentParams p = identity_params(5, 5, 5, 5);
    p.jitter = 1;
    p.brightness = b;
    p.contrast = c;
    p.saturation = s;
    p.hue = h;
    return augment(img, p);
  };
  Tensor br = jitter(0.5f, 1, 1, 0);
  EXPECT_NEAR(br.at({1, 2, 3}), 0.5f * px(img, 2, 3, 1) / 255.0f, 1e-6);
  Tensor bright = jitter(3.0f, 1, 1, 0);
  EXPECT_LE(bright.to_vector()[0], 1.0) << "clamped to 1";
  // Contrast 0: every pixel becomes the image's mean luma.
  Tensor flat = jitter(1, 0, 1, 0);
  double luma = 0;
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 5; ++c)
      luma += (0.2989 * px(img, r, c, 0) + 0.587 * px(img, r, c, 1) + 0.114 * px(img, r, c, 2)) / 255.0;
  for (double v : flat.to_vector()) EXPECT_NEAR(v, luma / 25, 1e-5);
  // Saturation 0 is grayscale.
  Tensor grey = jitter(1, 1, 0, 0);
  AugmentParams gp = identity_params(5, 5, 5, 5);
  gp.grayscale = 1;
  Tensor want = augment(img, gp);
  for (size_t i = 0; i < 75; ++i) EXPECT_NEAR(grey.to_vector()[i], want.to_vector()[i], 1e-6);
  // Hue: a third of a turn sends red to green and green to blue; grey stays grey.
  Tensor rgb = empty({1, 3, 3}, {DType::u8});
  const uint8_t pix[9] = {255, 0, 0, 0, 200, 0, 90, 90, 90};
  std::memcpy(rgb.data<uint8_t>(), pix, 9);
  AugmentParams hp = identity_params(1, 3, 1, 3);
  hp.jitter = 1;
  hp.hue = 1.0f / 3.0f;
  Tensor h = augment(rgb, hp);  // (3, 1, 3)
  EXPECT_NEAR(h.at({0, 0, 0}), 0, 1e-5);
  EXPECT_NEAR(h.at({1, 0, 0}), 1, 1e-5);
  EXPECT_NEAR(h.at({2, 0, 1}), 200 / 255.0, 1e-5);
  EXPECT_NEAR(h.at({1, 0, 1}), 0, 1e-5);
  for (int ch = 0; ch < 3; ++ch) EXPECT_NEAR(h.at({ch, 0, 2}), 90 / 255.0, 1e-6);
  // On one channel, saturation and hue change nothing.
  Tensor g1 = make_image(5, 5, 1);
  AugmentParams p1 = identity_params(5, 5, 5, 5);
  p1.jitter = 1;
  p1.saturation = 0.1f;
  p1.hue = 0.3f;
  p1.grayscale = 1;
  EXPECT_EQ(augment(g1, p1).to_vector(), augment(g1, identity_params(5, 5, 5, 5)).to_vector());
}

TEST(DataAugment, GaussianBlur) {
  // A constant image stays constant (the kernel sums to 1, reflection keeps the value).
  Tensor flat = full({9, 9, 3}, 77, {DType::u8});
  AugmentParams p = identity_params(9, 9, 9, 9);
  p.blur = 1;
  p.blur_kernel = 5;
  p.blur_sigma = 1.5f;
  for (double v : augment(flat, p).to_vector()) EXPECT_NEAR(v, 77 / 255.0, 1e-6);
  // An impulse in the middle spreads into the symmetric separable Gaussian.
  Tensor dot = zeros({9, 9, 1}, {DType::u8});
  dot.data<uint8_t>()[4 * 9 + 4] = 255;
  Tensor b = augment(dot, p);
  double total = 0;
  for (double v : b.to_vector()) total += v;
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_NEAR(b.at({0, 4, 2}), b.at({0, 2, 4}), 1e-7);
  EXPECT_NEAR(b.at({0, 3, 3}), b.at({0, 5, 5}), 1e-7);
  double k0 = 1, k1 = std::exp(-0.5 / (1.5 * 1.5)), k2 = std::exp(-2.0 / (1.5 * 1.5));
  double norm = k0 + 2 * k1 + 2 * k2;
  EXPECT_NEAR(b.at({0, 4, 4}), (k0 / norm) * (k0 / norm), 1e-6);
  EXPECT_NEAR(b.at({0, 4, 6}), (k0 / norm) * (k2 / norm), 1e-6);
  // A kernel wider than the image keeps reflecting instead of failing.
  Tensor tiny = make_image(2, 3, 3);
  AugmentParams q = identity_params(2, 3, 2, 3);
  q.blur = 1;
  q.blur_kernel = 7;
  q.blur_sigma = 2.0f;
  for (double v : augment(tiny, q).to_vector()) EXPECT_TRUE(v >= 0 && v <= 1) << v;
}

TEST(DataAugment, SamplerIsDeterministicAndInRange) {
  AugmentConfig cfg = simclr_view(32);
  AugmentParams a = sample_augment(cfg, 40, 50, 7, 100), b = sample_augment(cfg, 40, 50, 7, 100);
  EXPECT_EQ(std::memcmp(&a, &b, sizeof a), 0);
  int differ = 0, flips = 0, jitters = 0, greys = 0, blurs = 0, fallbacks = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    AugmentParams p = sample_augment(cfg, 40, 50, 7, 16 * static_cast<uint64_t>(i + 1));
    differ += std::memcmp(&p, &a, sizeof p) != 0;
    ASSERT_TRUE(p.top >= 0 && p.left >= 0 && p.top + p.height <= 40 && p.left + p.width <= 50);
    double area = static_cast<double>(p.height) * p.width / 2000.0, ratio = static_cast<double>(p.width) / p.height;
    // Rounding the sides to whole pixels can move area and ratio slightly past the ranges.
    bool in = area >= 0.08 * 0.8 && area <= 1.0 && ratio >= 0.75 * 0.8 && ratio <= 4.0 / 3.0 * 1.25;
    fallbacks += p.height == 40 && p.width == 50;
    EXPECT_TRUE(in || (p.height == 40 && p.width == 50)) << p.height << " x " << p.width;
    flips += p.flip;
    jitters += p.jitter;
    greys += p.grayscale;
    blurs += p.blur;
    if (p.jitter) {
      EXPECT_TRUE(p.brightness >= 0.2f && p.brightness <= 1.8f);
      EXPECT_TRUE(p.hue >= -0.2f && p.hue <= 0.2f);
      int seen = 0;
      for (int k = 0; k < 4; ++k) seen |= 1 << p.order[k];
      EXPECT_EQ(seen, 15) << "order is a permutation";
    } else {
      EXPECT_EQ(p.brightness, 1.0f);
    }
    if (p.blur) {
      EXPECT_EQ(p.blur_kernel, 3) << "int(0.1 * 32) = 3, odd";
      EXPECT_TRUE(p.blur_sigma >= 0.1f && p.blur_sigma <= 2.0f);
    }
    EXPECT_EQ(p.solarize, 0);
    EXPECT_EQ(p.out_h, 32);
  }
  EXPECT_GT(differ, n - 5);
  auto near = [&](int count, double prob) { return std::abs(count / static_cast<double>(n) - prob) < 0.04; };
  EXPECT_TRUE(near(flips, 0.5)) << flips;
  EXPECT_TRUE(near(jitters, 0.8)) << jitters;
  EXPECT_TRUE(near(greys, 0.2)) << greys;
  EXPECT_TRUE(near(blurs, 0.5)) << blurs;
  EXPECT_LT(fallbacks, n / 20);
  AugmentConfig big = simclr_view(224);
  big.blur_p = 1;
  EXPECT_EQ(sample_augment(big, 300, 300, 1, 0).blur_kernel, 23) << "int(22.4) = 22, made odd";
}

TEST(DataAugment, CropFallbackAndAsymmetricRecipes) {
  // No try can fit a 2:1..3:1 box of the full area into a square: torchvision's fallback
  // crops the centre at the nearest ratio.
  AugmentConfig c = simclr_view(8);
  c.scale_min = c.scale_max = 1.0f;
  c.ratio_min = 2.0f;
  c.ratio_max = 3.0f;
  AugmentParams p = sample_augment(c, 20, 20, 3, 0);
  EXPECT_EQ(p.width, 20);
  EXPECT_EQ(p.height, 10);
  EXPECT_EQ(p.top, 5);
  EXPECT_EQ(p.left, 0);

  auto byol = byol_views(16);
  int blur0 = 0, blur1 = 0, sol0 = 0, sol1 = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    AugmentParams v0 = sample_augment(byol[0], 16, 16, 9, 16 * i), v1 = sample_augment(byol[1], 16, 16, 9, 16 * i);
    blur0 += v0.blur;
    blur1 += v1.blur;
    sol0 += v0.solarize;
    sol1 += v1.solarize;
  }
  EXPECT_EQ(blur0, 2000);
  EXPECT_EQ(sol0, 0);
  EXPECT_NEAR(blur1 / 2000.0, 0.1, 0.03);
  EXPECT_NEAR(sol1 / 2000.0, 0.2, 0.03);

  std::vector<AugmentConfig> dino = dino_views(32, 12, 4);
  ASSERT_EQ(dino.size(), 6u);
  EXPECT_EQ(dino[1].out_h, 32);
  EXPECT_EQ(dino[5].out_w, 12);
  EXPECT_FLOAT_EQ(dino[5].scale_max, 0.4f);
  EXPECT_FLOAT_EQ(dino[0].scale_min, 0.4f);
  EXPECT_FLOAT_EQ(dino[1].solarize_p, 0.2f);
}

TEST(DataAugment, IouAndValidation) {
  AugmentParams a = identity_params(10, 10, 4, 4), b = a;
  a.top = 0, a.left = 0, a.height = 4, a.width = 4;
  b.top = 2, b.left = 2, b.height = 4, b.width = 4;
  EXPECT_DOUBLE_EQ(crop_iou(a, b), 4.0 / 28.0);
  b.left = 4;
  EXPECT_DOUBLE_EQ(crop_iou(a, b), 0.0);
  EXPECT_DOUBLE_EQ(crop_iou(a, a), 1.0);

  auto expect_bad = [](AugmentConfig c, const std::string& phrase) {
    try {
      validate(c);
      ADD_FAILURE() << "no error for " << phrase;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  AugmentConfig c;
  c.flip_p = 1.5f;
  expect_bad(c, "flip_p is 1.5");
  c = {};
  c.hue = 0.6f;
  expect_bad(c, "hue");
  c = {};
  c.scale_min = 0.9f;
  c.scale_max = 0.5f;
  expect_bad(c, "scale_min and scale_max");
  c = {};
  c.std[1] = 0;
  expect_bad(c, "std[1]");
  c = {};
  c.out_w = 0;
  expect_bad(c, "output size");
  EXPECT_THROW(augment(make_image(4, 4, 3), identity_params(5, 4, 5, 4)), Error);
  EXPECT_THROW(augment(zeros({4, 4, 3}), identity_params(4, 4, 4, 4)), Error) << "f32 image";
}

// augment_batch on a CPU cache: each view is the executor's output for its image and
// parameters; channels-last and bf16 are the same numbers permuted and rounded.
TEST(DataAugment, BatchOfViewsIsTheExecutorPerView) {
  for (int C : {1, 3}) {
    Tensor cache = empty({3, 20, 24, C}, {DType::u8});
    for (int64_t i = 0; i < cache.numel(); ++i) cache.data<uint8_t>()[i] = static_cast<uint8_t>((i * 29 + i * i / 7) % 256);
    AugmentConfig cfg = simclr_view(12);
    cfg.out_h = 16;
    cfg.blur_p = 1.0f;
    std::vector<AugmentJob> jobs;
    for (int v = 0; v < 7; ++v) jobs.push_back({(v * 2) % 3, sample_augment(cfg, 20, 24, 5, static_cast<uint64_t>(v) << 4)});
    Tensor out = augment_batch(cache, jobs);
    ASSERT_EQ(out.shape(), (Shape{7, C, 16, 12}));
    for (int v = 0; v < 7; ++v) {
      Tensor one = augment(select(cache, 0, jobs[v].image), jobs[v].params);
      EXPECT_EQ(select(out, 0, v).to_vector(), one.to_vector()) << "view " << v;
    }
    Tensor nhwc = augment_batch(cache, jobs, DType::f32, ViewLayout::nhwc);
    ASSERT_EQ(nhwc.shape(), (Shape{7, 16, 12, C}));
    EXPECT_EQ(contiguous(permute(nhwc, {0, 3, 1, 2})).to_vector(), out.to_vector());
    Tensor half = augment_batch(cache, jobs, DType::bf16);
    EXPECT_EQ(half.dtype(), DType::bf16);
    EXPECT_EQ(half.to_vector(), to(out, DType::bf16).to_vector());
  }
}

TEST(DataAugment, BatchOfViewsRejectsWhatDoesNotFit) {
  Tensor cache = zeros({2, 10, 10, 3}, {DType::u8});
  AugmentConfig cfg = simclr_view(8);
  std::vector<AugmentJob> jobs = {{0, sample_augment(cfg, 10, 10, 1, 0)}, {1, sample_augment(cfg, 10, 10, 1, 16)}};
  auto fails = [&](std::vector<AugmentJob> j, const char* fragment, DType dt = DType::f32, Tensor c = Tensor()) {
    try {
      augment_batch(c.defined() ? c : cache, j, dt);
      ADD_FAILURE() << "no error; expected one mentioning " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  auto bad = jobs;
  bad[1].image = 2;
  fails(bad, "shows image 2");
  bad = jobs;
  bad[1].params = sample_augment(simclr_view(6), 10, 10, 1, 16);
  fails(bad, "one output size");
  bad = jobs;
  bad[0].params = sample_augment(cfg, 12, 10, 1, 0);
  fails(bad, "drawn for 12 x 10");
  bad = jobs;
  bad[0].params.left = 9;
  fails(bad, "outside the 10 x 10 image");
  fails({}, "no views");
  fails(jobs, "expected f32 or bf16", DType::f64);
  fails(jobs, "(N, H, W, C) u8", DType::f32, zeros({2, 10, 10, 3}));
}
