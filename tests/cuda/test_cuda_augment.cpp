// The fused CUDA augmentation kernel (kernels/cuda/augment.cu) against the CPU executor
// (data/augment.cpp), through data::augment_batch on a GPU cache and on a CPU cache.
//
// Tolerance, in [0, 1] pixel units before normalisation: one u8 step, 1/255, for every value;
// after normalisation that is (1/255) / std[c] (0.0171 for std 0.229). The arithmetic is the
// same, so in practice the two agree to float rounding (~1e-7): the only larger differences
// come from a solarize decision that rounding flips at x = threshold, where x and 1 - x differ
// by |2 threshold - 1| = 1/255 for the default 128/255. So, besides the 1/255 bound, a view
// that does not solarize must agree within 1e-4 everywhere, and the mean difference of a
// batch must stay under 1e-5: a subtly wrong border rule or op order fails those long before
// it reaches 1/255.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <sstream>

#include "autograd/ops.h"
#include "data/augment.h"
#include "data/loader.h"
#include "tensor/cuda_runtime.h"

using namespace siam;
using namespace siam::data;

namespace {

#define REQUIRE_GPU() \
  if (!cuda::available()) GTEST_SKIP() << "needs a GPU: " << cuda::unavailable_reason()

// (N, H, W, C) u8: smooth colour gradients with noise, a saturated band (clamping) and a grey
// patch (hue of a grey pixel), different in every image.
Tensor make_cache(int n, int h, int w, int c, uint32_t seed) {
  Tensor t = empty({n, h, w, c}, {DType::u8});
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-24, 24);
  uint8_t* p = t.data<uint8_t>();
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch) {
          double v = 128 + 110 * std::sin(0.21 * x + 0.9 * ch + i) * std::cos(0.17 * y - 0.4 * ch + 0.3 * i);
          if (y < h / 8) v = ch == 0 ? 255 : 0;
          const bool grey = y > h / 2 && y < h / 2 + h / 6 && x > w / 3 && x < w / 2;
          const int value = grey ? 90 + 5 * i : static_cast<int>(v) + noise(rng);
          p[((static_cast<int64_t>(i) * h + y) * w + x) * c + ch] = static_cast<uint8_t>(std::clamp(value, 0, 255));
        }
  return t;
}

enum Op : unsigned {
  kFlip = 1, kBrightness = 2, kContrast = 4, kSaturation = 8, kHue = 16, kGray = 32, kBlur = 64, kSolarize = 128,
  kAll = 255
};

// A recipe that applies exactly the ops in `ops` (probability 1, the others 0); the crop is
// always random.
AugmentConfig forced(int out_h, int out_w, unsigned ops) {
  AugmentConfig c;
  c.out_h = out_h;
  c.out_w = out_w;
  c.scale_min = 0.1f;
  c.flip_p = ops & kFlip ? 1.0f : 0.0f;
  const bool jitter = ops & (kBrightness | kContrast | kSaturation | kHue);
  c.jitter_p = jitter ? 1.0f : 0.0f;
  c.brightness = ops & kBrightness ? 0.8f : 0.0f;
  c.contrast = ops & kContrast ? 0.8f : 0.0f;
  c.saturation = ops & kSaturation ? 0.8f : 0.0f;
  c.hue = ops & kHue ? 0.4f : 0.0f;
  c.grayscale_p = ops & kGray ? 1.0f : 0.0f;
  c.blur_p = ops & kBlur ? 1.0f : 0.0f;
  c.solarize_p = ops & kSolarize ? 1.0f : 0.0f;
  return c;
}

std::vector<AugmentJob> draw(const AugmentConfig& cfg, const Tensor& cache, int views, uint64_t seed) {
  std::vector<AugmentJob> jobs;
  const int n = static_cast<int>(cache.size(0)), h = static_cast<int>(cache.size(1)), w = static_cast<int>(cache.size(2));
  for (int v = 0; v < views; ++v)
    jobs.push_back({v % n, sample_augment(cfg, h, w, seed, static_cast<uint64_t>(v) << 4)});
  return jobs;
}

std::string describe(const AugmentParams& p) {
  std::ostringstream os;
  os << "crop (" << p.top << ", " << p.left << ", " << p.height << " x " << p.width << ") of " << p.src_h << " x "
     << p.src_w << " -> " << p.out_h << " x " << p.out_w << ", flip " << p.flip << ", jitter " << p.jitter
     << " (b " << p.brightness << ", c " << p.contrast << ", s " << p.saturation << ", h " << p.hue << ", order "
     << p.order[0] << p.order[1] << p.order[2] << p.order[3] << "), gray " << p.grayscale << ", blur " << p.blur << " (k "
     << p.blur_kernel << ", sigma " << p.blur_sigma << "), solarize " << p.solarize;
  return os.str();
}

// CPU f32 planar views vs the GPU's (brought back as f32 planar), in pixel units.
void expect_close(const Tensor& cpu, const Tensor& gpu, const std::vector<AugmentJob>& jobs, const std::string& what) {
  ASSERT_EQ(cpu.shape(), gpu.shape()) << what;
  const int64_t B = cpu.size(0), C = cpu.size(1), plane = cpu.size(2) * cpu.size(3), ow = cpu.size(3);
  const float* a = cpu.data<float>();
  const float* g = gpu.data<float>();
  double worst = 0, sum = 0;
  int64_t worst_at = 0, loose = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < plane; ++i) {
        const int64_t e = (b * C + c) * plane + i;
        const double d = std::abs(static_cast<double>(a[e]) - g[e]) * jobs[b].params.std[c];
        sum += d;
        if (d > worst) {
          worst = d;
          worst_at = e;
        }
        if (d > 1e-4 && !jobs[b].params.solarize) ++loose;
      }
  const int64_t b = worst_at / (C * plane), c = worst_at / plane % C, i = worst_at % plane;
  const std::string where = "worst at view " + std::to_string(b) + ", channel " + std::to_string(c) + ", y " +
                            std::to_string(i / ow) + ", x " + std::to_string(i % ow) + ": CPU " + std::to_string(a[worst_at]) +
                            ", CUDA " + std::to_string(g[worst_at]) + " (normalised); view: " + describe(jobs[b].params);
  EXPECT_LE(worst, 1.0 / 255 + 1e-5) << what << ": more than one u8 step apart; " << where;
  EXPECT_EQ(loose, 0) << what << ": " << loose << " values of views without solarize differ by more than 1e-4; " << where;
  EXPECT_LT(sum / static_cast<double>(cpu.numel()), 1e-5) << what << ": mean difference; " << where;
}

void check(const Tensor& cache, const std::vector<AugmentJob>& jobs, const std::string& what) {
  const Tensor ref = augment_batch(cache, jobs);
  const Tensor dev = to(cache, Device::cuda(0));
  const Tensor got = to(augment_batch(dev, jobs), Device::cpu());
  expect_close(ref, got, jobs, what);
}

struct Size {
  int src_h, src_w, out_h, out_w;
};

const Size kSizes[] = {{32, 36, 28, 28}, {96, 80, 64, 64}, {256, 240, 224, 224}};

}  // namespace

TEST(CudaAugment, EveryOpAloneAndAllTogether) {
  REQUIRE_GPU();
  const std::vector<std::pair<const char*, unsigned>> recipes = {
      {"crop only", 0u},    {"flip", kFlip},     {"brightness", kBrightness}, {"contrast", kContrast},
      {"saturation", kSaturation}, {"hue", kHue}, {"grayscale", kGray},        {"blur", kBlur},
      {"solarize", kSolarize},    {"all", kAll}};
  for (const Size& s : kSizes)
    for (int C : {1, 3}) {
      const Tensor cache = make_cache(5, s.src_h, s.src_w, C, 7 + C);
      const int views = s.out_h >= 224 ? 12 : 48;
      for (const auto& [name, ops] : recipes) {
        const std::string what = std::string(name) + ", " + std::to_string(s.out_h) + " px, C = " + std::to_string(C);
        check(cache, draw(forced(s.out_h, s.out_w, ops), cache, views, 100 + ops), what);
      }
    }
}

// The jitter order matters (contrast blends with the mean of the image as it stands): all four
// ops in many random orders, with flips, grayscale and blur.
TEST(CudaAugment, RandomJitterOrdersAndRecipes) {
  REQUIRE_GPU();
  const Tensor cache = make_cache(8, 72, 72, 3, 3);
  check(cache, draw(forced(64, 64, kAll & ~kSolarize), cache, 256, 5), "all but solarize, 256 orders");
  std::vector<AugmentConfig> recipes = {simclr_view(64), mocov2_view(64)};
  for (const AugmentConfig& c : byol_views(64)) recipes.push_back(c);
  for (size_t r = 0; r < recipes.size(); ++r) check(cache, draw(recipes[r], cache, 128, 40 + r), "recipe " + std::to_string(r));
}

// Shapes the usual sizes miss: non-square outputs, upscaling from a small source, a blur
// kernel wider than the view (reflection continues), 1 x N views.
TEST(CudaAugment, OddShapesAndWideBlur) {
  REQUIRE_GPU();
  for (int C : {1, 3}) {
    const Tensor cache = make_cache(3, 21, 17, C, 11);
    check(cache, draw(forced(37, 23, kAll), cache, 24, 1), "37 x 23 from 21 x 17");
    AugmentConfig wide = forced(12, 9, kBlur | kContrast);
    wide.blur_kernel_frac = 1.0f;  // a 9-tap kernel on a 9-wide view
    check(cache, draw(wide, cache, 16, 2), "blur kernel as wide as the view");
    AugmentConfig wider = forced(12, 12, kBlur);
    wider.blur_kernel_frac = 1.0f;  // 13 taps on 12 x 12
    wider.sigma_min = 3.0f;
    wider.sigma_max = 9.0f;
    check(cache, draw(wider, cache, 16, 3), "blur kernel wider than the view");
    check(cache, draw(forced(1, 30, kAll), cache, 8, 4), "1 x 30 views");
    check(cache, draw(forced(30, 1, kAll), cache, 8, 5), "30 x 1 views");
  }
}

// bf16 and channels-last come from the same arithmetic as f32 planar: equal to the bit after
// the same rounding and permutation.
TEST(CudaAugment, Bf16AndChannelsLastMatchF32Planar) {
  REQUIRE_GPU();
  for (int C : {1, 3}) {
    const Tensor dev = to(make_cache(4, 40, 40, C, 21), Device::cuda(0));
    const auto jobs = draw(forced(32, 32, kAll), make_cache(4, 40, 40, C, 21), 32, 9);
    const Tensor f32 = to(augment_batch(dev, jobs, DType::f32, ViewLayout::nchw), Device::cpu());
    const Tensor nhwc = to(augment_batch(dev, jobs, DType::f32, ViewLayout::nhwc), Device::cpu());
    ASSERT_EQ(nhwc.shape(), (Shape{32, 32, 32, C}));
    EXPECT_EQ(contiguous(permute(nhwc, {0, 3, 1, 2})).to_vector(), f32.to_vector()) << "C = " << C;
    const Tensor bf = to(augment_batch(dev, jobs, DType::bf16, ViewLayout::nchw), Device::cpu());
    ASSERT_EQ(bf.dtype(), DType::bf16);
    EXPECT_EQ(bf.to_vector(), to(f32, DType::bf16).to_vector()) << "C = " << C;
    const Tensor bf_nhwc = to(augment_batch(dev, jobs, DType::bf16, ViewLayout::nhwc), Device::cpu());
    EXPECT_EQ(contiguous(permute(bf_nhwc, {0, 3, 1, 2})).to_vector(), bf.to_vector()) << "C = " << C;
  }
}

TEST(CudaAugment, SameInputsSameBits) {
  REQUIRE_GPU();
  const Tensor host = make_cache(6, 70, 70, 3, 2);
  const Tensor dev = to(host, Device::cuda(0));
  const auto jobs = draw(forced(64, 64, kAll), host, 64, 12);
  const std::vector<double> a = to(augment_batch(dev, jobs), Device::cpu()).to_vector();
  for (int r = 0; r < 3; ++r) EXPECT_EQ(to(augment_batch(dev, jobs), Device::cpu()).to_vector(), a) << "run " << r;
}

TEST(CudaAugment, RejectsJobsThatDoNotFitTheCache) {
  REQUIRE_GPU();
  const Tensor host = make_cache(2, 16, 16, 3, 1);
  const Tensor dev = to(host, Device::cuda(0));
  auto jobs = draw(forced(8, 8, 0), host, 4, 1);
  jobs[2].image = 2;
  EXPECT_THROW(augment_batch(dev, jobs), Error);
  jobs = draw(forced(8, 8, 0), host, 4, 1);
  jobs[1].params.top = 15;
  EXPECT_THROW(augment_batch(dev, jobs), Error);
  EXPECT_THROW(augment_batch(to(host, DType::f32), jobs), Error);
}

// The loader with its cache on the GPU hands out the same batches (within the kernel's
// tolerance) as the CPU loader, with the same labels, indices and kinds.
TEST(CudaAugment, LoaderOnTheGpuMatchesTheCpuLoader) {
  REQUIRE_GPU();
  ImageSet s;
  s.images = make_cache(40, 36, 36, 3, 8);
  s.labels = empty({40}, {DType::i64});
  for (int64_t i = 0; i < 40; ++i) s.labels.data<int64_t>()[i] = i % 4;
  s.num_classes = 4;
  s.name = "synthetic";
  PairConfig pc;
  pc.views = {forced(32, 32, kAll & ~kSolarize), forced(32, 32, kAll)};
  pc.seed = 3;
  PairGenerator gen(pc, s);
  Loader cpu(s, gen, {.batch_size = 16, .prefetch = true});
  Loader gpu(s, gen, {.batch_size = 16, .device = Device::cuda(0)});
  for (int64_t e = 0; e < 2; ++e) {
    cpu.start_epoch(e);
    gpu.start_epoch(e);
    Batch a, b;
    while (cpu.next(a)) {
      ASSERT_TRUE(gpu.next(b));
      EXPECT_EQ(a.labels.to_vector(), b.labels.to_vector());
      EXPECT_EQ(a.indices.to_vector(), b.indices.to_vector());
      ASSERT_EQ(b.views.size(), 2u);
      std::vector<AugmentJob> jobs[2];
      const BatchPlan plan = gen.plan_batch(e, b.index, 16);
      for (int v = 0; v < 2; ++v) {
        EXPECT_TRUE(b.views[v].device().is_cuda());
        for (int64_t r = 0; r < 16; ++r) jobs[v].push_back({plan.views[v][r].image, plan.views[v][r].params});
        expect_close(a.views[v], to(b.views[v], Device::cpu()), jobs[v],
                     "epoch " + std::to_string(e) + " batch " + std::to_string(b.index) + " view " + std::to_string(v));
      }
    }
    EXPECT_FALSE(gpu.next(b));
  }
}
