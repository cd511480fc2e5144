#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/cuda/augment.h"
#include "kernels/cuda/dispatch.h"
#include "tensor/rng.h"

namespace siam::data {

namespace {

void require_range(const char* field, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi)) fail("AugmentConfig.", field, " is ", v, ", expected a value in [", lo, ", ", hi, "]");
}

void require_order(const char* lo_name, double lo, const char* hi_name, double hi) {
  if (!(lo > 0 && lo <= hi && std::isfinite(hi)))
    fail("AugmentConfig.", lo_name, " and ", hi_name, " are ", lo, " and ", hi, ", expected 0 < ", lo_name,
         " <= ", hi_name);
}

}  // namespace

void validate(const AugmentConfig& c) {
  if (c.out_h <= 0 || c.out_w <= 0 || c.out_h > 65536 || c.out_w > 65536)
    fail("AugmentConfig output size is ", c.out_h, " x ", c.out_w, ", expected sides in 1..65536");
  require_order("scale_min", c.scale_min, "scale_max", c.scale_max);
  require_order("ratio_min", c.ratio_min, "ratio_max", c.ratio_max);
  require_range("flip_p", c.flip_p, 0, 1);
  require_range("jitter_p", c.jitter_p, 0, 1);
  require_range("brightness", c.brightness, 0, 1e6);
  require_range("contrast", c.contrast, 0, 1e6);
  require_range("saturation", c.saturation, 0, 1e6);
  require_range("hue", c.hue, 0, 0.5);
  require_range("grayscale_p", c.grayscale_p, 0, 1);
  require_range("blur_p", c.blur_p, 0, 1);
  require_order("sigma_min", c.sigma_min, "sigma_max", c.sigma_max);
  require_range("blur_kernel_frac", c.blur_kernel_frac, 0, 1);
  require_range("solarize_p", c.solarize_p, 0, 1);
  require_range("solarize_threshold", c.solarize_threshold, -1e6, 1e6);
  for (int k = 0; k < 3; ++k) {
    require_range("mean", c.mean[k], -1e6, 1e6);
    if (!(c.std[k] > 0 && std::isfinite(c.std[k]))) fail("AugmentConfig.std[", k, "] is ", c.std[k], ", expected > 0");
  }
}

AugmentParams sample_augment(const AugmentConfig& cfg, int src_h, int src_w, uint64_t seed, uint64_t offset) {
  validate(cfg);
  if (src_h <= 0 || src_w <= 0) fail("sample_augment: source image is ", src_h, " x ", src_w, ", expected non-empty");
  auto uniform = [&](uint64_t w) { return static_cast<double>(philox_uniform(seed, offset, w)); };
  auto word = [&](uint64_t w) { return philox_word(seed, offset, w); };
  AugmentParams p{};
  p.src_h = src_h;
  p.src_w = src_w;
  p.out_h = cfg.out_h;
  p.out_w = cfg.out_w;

  // RandomResizedCrop.get_params: 10 tries, then a centre crop clamped to the ratio range.
  // Rounding is Python's round() (half to even), as std::nearbyint does by default.
  const double area = static_cast<double>(src_h) * src_w;
  const double log_lo = std::log(static_cast<double>(cfg.ratio_min)), log_hi = std::log(static_cast<double>(cfg.ratio_max));
  bool found = false;
  for (int t = 0; t < 10 && !found; ++t) {
    double target = area * (cfg.scale_min + (cfg.scale_max - cfg.scale_min) * uniform(2 * t));
    double aspect = std::exp(log_lo + (log_hi - log_lo) * uniform(2 * t + 1));
    double w = std::nearbyint(std::sqrt(target * aspect)), h = std::nearbyint(std::sqrt(target / aspect));
    if (w > 0 && w <= src_w && h > 0 && h <= src_h) {
      p.height = static_cast<int32_t>(h);
      p.width = static_cast<int32_t>(w);
      p.top = static_cast<int32_t>(word(20) % static_cast<uint32_t>(src_h - p.height + 1));
      p.left = static_cast<int32_t>(word(21) % static_cast<uint32_t>(src_w - p.width + 1));
      found = true;
    }
  }
  if (!found) {
    double in_ratio = static_cast<double>(src_w) / src_h;
    if (in_ratio < cfg.ratio_min) {
      p.width = src_w;
      p.height = static_cast<int32_t>(std::nearbyint(src_w / static_cast<double>(cfg.ratio_min)));
    } else if (in_ratio > cfg.ratio_max) {
      p.height = src_h;
      p.width = static_cast<int32_t>(std::nearbyint(src_h * static_cast<double>(cfg.ratio_max)));
    } else {
      p.width = src_w;
      p.height = src_h;
    }
    p.height = std::clamp(p.height, 1, src_h);
    p.width = std::clamp(p.width, 1, src_w);
    p.top = (src_h - p.height) / 2;
    p.left = (src_w - p.width) / 2;
  }

  p.flip = uniform(22) < cfg.flip_p;

  p.jitter = uniform(23) < cfg.jitter_p;
  auto factor = [&](float s, uint64_t w) {
    double lo = std::max(0.0, 1.0 - s), hi = 1.0 + s;
    return s > 0 ? static_cast<float>(lo + (hi - lo) * uniform(w)) : 1.0f;
  };
  p.brightness = p.contrast = p.saturation = 1.0f;
  p.hue = 0.0f;
  for (int k = 0; k < 4; ++k) p.order[k] = k;
  if (p.jitter) {
    p.brightness = factor(cfg.brightness, 24);
    p.contrast = factor(cfg.contrast, 25);
    p.saturation = factor(cfg.saturation, 26);
    p.hue = cfg.hue > 0 ? static_cast<float>(-cfg.hue + 2.0 * cfg.hue * uniform(27)) : 0.0f;
    for (int i = 3, w = 28; i > 0; --i, ++w) std::swap(p.order[i], p.order[word(w) % static_cast<uint32_t>(i + 1)]);
  }

  p.grayscale = uniform(31) < cfg.grayscale_p;

  p.blur = uniform(32) < cfg.blur_p;
  if (p.blur) {
    int k = static_cast<int>(cfg.blur_kernel_frac * std::min(cfg.out_h, cfg.out_w));
    p.blur_kernel = k % 2 == 0 ? k + 1 : k;
    p.blur_sigma = static_cast<float>(cfg.sigma_min + (cfg.sigma_max - cfg.sigma_min) * uniform(33));
  }

  p.solarize = uniform(34) < cfg.solarize_p;
  p.solarize_threshold = cfg.solarize_threshold;
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = cfg.mean[c];
    p.std[c] = cfg.std[c];
  }
  return p;
}

AugmentParams identity_params(int src_h, int src_w, int out_h, int out_w) {
  AugmentParams p{};
  p.src_h = src_h;
  p.src_w = src_w;
  p.height = src_h;
  p.width = src_w;
  p.out_h = out_h;
  p.out_w = out_w;
  p.brightness = p.contrast = p.saturation = 1.0f;
  for (int k = 0; k < 4; ++k) p.order[k] = k;
  p.solarize_threshold = 128.0f / 255.0f;
  for (int c = 0; c < 3; ++c) p.std[c] = 1.0f;
  return p;
}

double crop_iou(const AugmentParams& a, const AugmentParams& b) {
  int64_t ih = std::max(0, std::min(a.top + a.height, b.top + b.height) - std::max(a.top, b.top));
  int64_t iw = std::max(0, std::min(a.left + a.width, b.left + b.width) - std::max(a.left, b.left));
  int64_t inter = ih * iw;
  int64_t uni = int64_t{a.height} * a.width + int64_t{b.height} * b.width - inter;
  return uni > 0 ? static_cast<double>(inter) / static_cast<double>(uni) : 0.0;
}

// ---------------------------------------------------------------- executor

namespace {

// torchvision's rgb_to_grayscale weights.
constexpr float kR = 0.2989f, kG = 0.587f, kB = 0.114f;

float clamp01(float x) { return std::min(1.0f, std::max(0.0f, x)); }

// Crop + bilinear resize with PyTorch's align_corners=False source index, no antialias;
// the horizontal flip is folded in by writing column x to out_w - 1 - x. C is a template
// argument so the channel loop unrolls.
// src: (H, W, C) u8; out: (C, out_h, out_w) f32 in [0, 1].
template <int C>
void resized_crop(const uint8_t* src, const AugmentParams& p, float* out) {
  const int oh = p.out_h, ow = p.out_w, plane = oh * ow;
  const float sy = static_cast<float>(p.height) / oh, sx = static_cast<float>(p.width) / ow;
  // The column taps are the same for every row: compute them once.
  std::vector<int> x0(ow), x1(ow);
  std::vector<float> lx0(ow), lx1(ow);
  for (int x = 0; x < ow; ++x) {
    float fx = std::max(sx * (x + 0.5f) - 0.5f, 0.0f);
    int i0 = static_cast<int>(fx);
    x0[x] = i0 * C;
    x1[x] = (i0 + (i0 < p.width - 1 ? 1 : 0)) * C;
    lx1[x] = fx - i0;
    lx0[x] = 1.0f - lx1[x];
  }
  for (int y = 0; y < oh; ++y) {
    float fy = std::max(sy * (y + 0.5f) - 0.5f, 0.0f);
    int y0 = static_cast<int>(fy);
    int y1 = y0 + (y0 < p.height - 1 ? 1 : 0);
    float ly1 = fy - y0, ly0 = 1.0f - ly1;
    const uint8_t* row0 = src + (static_cast<int64_t>(p.top + y0) * p.src_w + p.left) * C;
    const uint8_t* row1 = src + (static_cast<int64_t>(p.top + y1) * p.src_w + p.left) * C;
    float* dst = out + y * ow;
    for (int x = 0; x < ow; ++x) {
      const int a = x0[x], b = x1[x], dx = p.flip ? ow - 1 - x : x;
      for (int c = 0; c < C; ++c) {
        float v = ly0 * (lx0[x] * row0[a + c] + lx1[x] * row0[b + c]) + ly1 * (lx0[x] * row1[a + c] + lx1[x] * row1[b + c]);
        dst[c * plane + dx] = v / 255.0f;
      }
    }
  }
}

// torchvision's _blend: ratio * img + (1 - ratio) * other, clamped to [0, 1].
float blend(float x, float other, float ratio) { return clamp01(ratio * x + (1.0f - ratio) * other); }

void adjust_brightness(float* img, int C, int plane, float f) {
  for (int i = 0; i < C * plane; ++i) img[i] = blend(img[i], 0.0f, f);
}

void adjust_contrast(float* img, int C, int plane, float f) {
  double sum = 0;
  for (int i = 0; i < plane; ++i)
    sum += C == 3 ? kR * img[i] + kG * img[plane + i] + kB * img[2 * plane + i] : img[i];
  const float mean = static_cast<float>(sum / plane);
  for (int i = 0; i < C * plane; ++i) img[i] = blend(img[i], mean, f);
}

void adjust_saturation(float* img, int plane, float f) {
  float *r = img, *g = img + plane, *b = img + 2 * plane;
  for (int i = 0; i < plane; ++i) {
    float l = kR * r[i] + kG * g[i] + kB * b[i];
    r[i] = blend(r[i], l, f);
    g[i] = blend(g[i], l, f);
    b[i] = blend(b[i], l, f);
  }
}

// torchvision's _rgb2hsv / _hsv2rgb, one pixel at a time.
void adjust_hue(float* img, int plane, float shift) {
  float *R = img, *G = img + plane, *B = img + 2 * plane;
  for (int i = 0; i < plane; ++i) {
    float r = R[i], g = G[i], b = B[i];
    float maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
    bool eqc = maxc == minc;
    float cr = maxc - minc;
    float s = cr / (eqc ? 1.0f : maxc);
    float div = eqc ? 1.0f : cr;
    float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
    float h = maxc == r ? bc - gc : (maxc == g ? 2.0f + rc - bc : 4.0f + gc - rc);
    h = h / 6.0f + 1.0f;  // in [5/6, 2): fmod(h, 1) is exactly h - floor(h)
    h -= std::floor(h);
    h += shift;
    h -= std::floor(h);
    float v = maxc;
    float h6 = h * 6.0f;
    float fl = std::floor(h6);
    float fr = h6 - fl;
    int sector = static_cast<int>(fl) % 6;
    float pp = clamp01(v * (1.0f - s));
    float q = clamp01(v * (1.0f - s * fr));
    float t = clamp01(v * (1.0f - s * (1.0f - fr)));
    switch (sector) {
      case 0: r = v; g = t; b = pp; break;
      case 1: r = q; g = v; b = pp; break;
      case 2: r = pp; g = v; b = t; break;
      case 3: r = pp; g = q; b = v; break;
      case 4: r = t; g = pp; b = v; break;
      default: r = v; g = pp; b = q; break;
    }
    R[i] = r;
    G[i] = g;
    B[i] = b;
  }
}

void to_grayscale(float* img, int plane) {
  for (int i = 0; i < plane; ++i) {
    float l = kR * img[i] + kG * img[plane + i] + kB * img[2 * plane + i];
    img[i] = img[plane + i] = img[2 * plane + i] = l;
  }
}

// Reflection without repeating the edge (torch's "reflect" padding), continued periodically so
// any kernel width works.
int reflect(int i, int n) {
  if (n == 1) return 0;
  int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

// o += w * s over n floats. Kept out of line: inlined into the blur's tap loop, GCC unrolls
// the taps and leaves this loop scalar (4x slower at 224 x 224).
[[gnu::noinline]] void axpy(float* __restrict o, const float* __restrict s, float w, int n) {
  for (int x = 0; x < n; ++x) o[x] += w * s[x];
}

// torchvision's gaussian_blur on tensors, done separably (the 2-D kernel is an outer product).
// Both passes read through reflected index tables so the inner loops run over contiguous memory.
// k is odd and > 1 (k = 1 is the identity, skipped by the caller).
void gaussian_blur(float* img, int C, int oh, int ow, int k, float sigma) {
  std::vector<float> kernel(k);
  const float half = (k - 1) * 0.5f;
  float sum = 0;
  for (int i = 0; i < k; ++i) {
    float x = -half + (2.0f * half) * i / (k - 1);
    kernel[i] = std::exp(-0.5f * (x / sigma) * (x / sigma));
    sum += kernel[i];
  }
  for (float& w : kernel) w /= sum;
  const int r = k / 2;
  std::vector<int> cols(ow + 2 * r), rows(oh + 2 * r);
  for (int j = 0; j < ow + 2 * r; ++j) cols[j] = reflect(j - r, ow);
  for (int j = 0; j < oh + 2 * r; ++j) rows[j] = reflect(j - r, oh);
  std::vector<float> pad(ow + 2 * r), tmp(static_cast<size_t>(oh) * ow);
  for (int c = 0; c < C; ++c) {
    float* ch = img + static_cast<int64_t>(c) * oh * ow;
    for (int y = 0; y < oh; ++y) {
      for (int j = 0; j < ow + 2 * r; ++j) pad[j] = ch[y * ow + cols[j]];
      for (int x = 0; x < ow; ++x) {
        float acc = 0;
        for (int i = 0; i < k; ++i) acc += kernel[i] * pad[x + i];
        tmp[y * ow + x] = acc;
      }
    }
    for (int y = 0; y < oh; ++y) {
      float* o = ch + y * ow;
      std::fill(o, o + ow, 0.0f);
      for (int i = 0; i < k; ++i) axpy(o, tmp.data() + static_cast<int64_t>(rows[y + i]) * ow, kernel[i], ow);
    }
  }
}

}  // namespace

void augment_cpu(const uint8_t* src, int C, const AugmentParams& p, float* out) {
  SIAM_CHECK(C == 1 || C == 3, "augment_cpu: ", C, " channels, expected 1 or 3");
  SIAM_CHECK(p.height > 0 && p.width > 0 && p.top >= 0 && p.left >= 0 && p.top + p.height <= p.src_h &&
                 p.left + p.width <= p.src_w && p.out_h > 0 && p.out_w > 0,
             "augment_cpu: crop box (", p.top, ", ", p.left, ", ", p.height, ", ", p.width, ") outside the ", p.src_h,
             " x ", p.src_w, " image");
  SIAM_CHECK(!p.blur || (p.blur_kernel > 0 && p.blur_kernel % 2 == 1 && p.blur_sigma > 0), "augment_cpu: blur kernel ",
             p.blur_kernel, " sigma ", p.blur_sigma, ", expected an odd kernel and sigma > 0");
  const int plane = p.out_h * p.out_w;
  if (C == 3)
    resized_crop<3>(src, p, out);
  else
    resized_crop<1>(src, p, out);
  if (p.jitter)
    for (int k = 0; k < 4; ++k) {
      // Identity factors are skipped so a disabled op costs nothing and cannot round.
      switch (p.order[k]) {
        case 0: if (p.brightness != 1.0f) adjust_brightness(out, C, plane, p.brightness); break;
        case 1: if (p.contrast != 1.0f) adjust_contrast(out, C, plane, p.contrast); break;
        case 2: if (p.saturation != 1.0f && C == 3) adjust_saturation(out, plane, p.saturation); break;
        case 3: if (p.hue != 0.0f && C == 3) adjust_hue(out, plane, p.hue); break;
      }
    }
  if (p.grayscale && C == 3) to_grayscale(out, plane);
  if (p.blur && p.blur_kernel > 1) gaussian_blur(out, C, p.out_h, p.out_w, p.blur_kernel, p.blur_sigma);
  if (p.solarize)
    for (int i = 0; i < C * plane; ++i)
      if (out[i] >= p.solarize_threshold) out[i] = 1.0f - out[i];
  for (int c = 0; c < C; ++c) {
    float m = p.mean[c], inv = 1.0f / p.std[c];
    for (int i = 0; i < plane; ++i) out[c * plane + i] = (out[c * plane + i] - m) * inv;
  }
}

Tensor augment(const Tensor& image, const AugmentParams& p) {
  if (image.dim() != 3 || image.dtype() != DType::u8 || !image.device().is_cpu())
    fail("augment: image is ", shape_str(image.shape()), " ", dtype_name(image.dtype()),
         ", expected (H, W, C) u8 on the CPU");
  if (image.size(0) != p.src_h || image.size(1) != p.src_w)
    fail("augment: image is ", image.size(0), " x ", image.size(1), ", the parameters were drawn for ", p.src_h,
         " x ", p.src_w);
  Tensor src = image.is_contiguous() ? image : copy_to(image, Device::cpu(), DType::u8);
  const int C = static_cast<int>(image.size(2));
  if (C != 1 && C != 3) fail("augment: image has ", C, " channels, expected 1 or 3");
  Tensor out = empty({C, p.out_h, p.out_w});
  augment_cpu(src.data<uint8_t>(), C, p, out.data<float>());
  return out;
}

Tensor augment_batch(const Tensor& cache, std::span<const AugmentJob> jobs, DType dtype, ViewLayout layout) {
  if (!cache.defined() || cache.dim() != 4 || cache.dtype() != DType::u8 || !cache.is_contiguous() ||
      (cache.size(3) != 1 && cache.size(3) != 3))
    fail("augment_batch: the image cache is ", cache.defined() ? shape_str(cache.shape()) + " " + dtype_name(cache.dtype()) : "undefined",
         ", expected a contiguous (N, H, W, C) u8 tensor with C = 1 or 3");
  if (dtype != DType::f32 && dtype != DType::bf16)
    fail("augment_batch: views in ", dtype_name(dtype), ", expected f32 or bf16");
  if (jobs.empty()) fail("augment_batch: no views to make");
  const int64_t N = cache.size(0), H = cache.size(1), W = cache.size(2), C = cache.size(3);
  const AugmentParams& first = jobs[0].params;
  for (size_t b = 0; b < jobs.size(); ++b) {
    const AugmentJob& j = jobs[b];
    const AugmentParams& p = j.params;
    if (j.image < 0 || j.image >= N) fail("augment_batch: view ", b, " shows image ", j.image, ", the cache has ", N);
    if (p.src_h != H || p.src_w != W)
      fail("augment_batch: view ", b, " was drawn for ", p.src_h, " x ", p.src_w, " images, the cache holds ", H, " x ", W);
    if (p.out_h != first.out_h || p.out_w != first.out_w)
      fail("augment_batch: view ", b, " is ", p.out_h, " x ", p.out_w, ", view 0 is ", first.out_h, " x ", first.out_w,
           "; a batch has one output size");
    if (!(p.height > 0 && p.width > 0 && p.top >= 0 && p.left >= 0 && p.top + p.height <= H && p.left + p.width <= W &&
          p.out_h > 0 && p.out_w > 0))
      fail("augment_batch: view ", b, ": crop box (top ", p.top, ", left ", p.left, ", ", p.height, " x ", p.width,
           ") outside the ", H, " x ", W, " image, or output ", p.out_h, " x ", p.out_w);
    if (p.blur && !(p.blur_kernel > 0 && p.blur_kernel % 2 == 1 && p.blur_sigma > 0))
      fail("augment_batch: view ", b, ": blur kernel ", p.blur_kernel, ", sigma ", p.blur_sigma,
           ", expected an odd kernel and sigma > 0");
  }
  SIAM_ON_CUDA(cache, gpu::augment_batch(cache, jobs, dtype, layout));
  if (!cache.device().is_cpu()) fail("augment_batch: no executor for a cache on ", cache.device().str(), " in this build");
  const int64_t B = static_cast<int64_t>(jobs.size()), oh = first.out_h, ow = first.out_w, plane = oh * ow;
  const Shape shape = layout == ViewLayout::nchw ? Shape{B, C, oh, ow} : Shape{B, oh, ow, C};
  Tensor out = empty(shape, {dtype});
  const uint8_t* pixels = cache.data<uint8_t>();
  const bool direct = dtype == DType::f32 && layout == ViewLayout::nchw;
  float* out_f32 = dtype == DType::f32 ? out.data<float>() : nullptr;
  bf16* out_bf16 = dtype == DType::bf16 ? out.data<bf16>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> tmp(direct ? 0 : C * plane);
#pragma omp for schedule(dynamic, 4)
    for (int64_t b = 0; b < B; ++b) {
      const uint8_t* src = pixels + jobs[b].image * H * W * C;
      if (direct) {
        augment_cpu(src, static_cast<int>(C), jobs[b].params, out_f32 + b * C * plane);
        continue;
      }
      augment_cpu(src, static_cast<int>(C), jobs[b].params, tmp.data());
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < plane; ++i) {
          const int64_t o = layout == ViewLayout::nchw ? (b * C + c) * plane + i : (b * plane + i) * C + c;
          if (out_f32)
            out_f32[o] = tmp[c * plane + i];
          else
            out_bf16[o] = bf16(tmp[c * plane + i]);
        }
    }
  }
  return out;
}

// ---------------------------------------------------------------- recipes

AugmentConfig simclr_view(int size, float s) {
  AugmentConfig c;
  c.out_h = c.out_w = size;
  c.brightness = c.contrast = c.saturation = 0.8f * s;
  c.hue = 0.2f * s;
  return c;
}

AugmentConfig mocov2_view(int size) {
  AugmentConfig c;
  c.out_h = c.out_w = size;
  c.scale_min = 0.2f;
  c.brightness = c.contrast = c.saturation = 0.4f;
  c.hue = 0.1f;
  return c;
}

std::array<AugmentConfig, 2> byol_views(int size) {
  AugmentConfig c;
  c.out_h = c.out_w = size;
  c.brightness = c.contrast = 0.4f;
  c.saturation = 0.2f;
  c.hue = 0.1f;
  std::array<AugmentConfig, 2> v = {c, c};
  v[0].blur_p = 1.0f;
  v[0].solarize_p = 0.0f;
  v[1].blur_p = 0.1f;
  v[1].solarize_p = 0.2f;
  return v;
}

std::vector<AugmentConfig> dino_views(int global_size, int local_size, int n_local) {
  if (n_local < 0) fail("dino_views: n_local is ", n_local, ", expected >= 0");
  std::array<AugmentConfig, 2> g = byol_views(global_size);
  for (AugmentConfig& c : g) {
    c.scale_min = 0.4f;
    c.scale_max = 1.0f;
  }
  std::vector<AugmentConfig> v(g.begin(), g.end());
  AugmentConfig local = g[0];
  local.out_h = local.out_w = local_size;
  local.scale_min = 0.05f;
  local.scale_max = 0.4f;
  local.blur_p = 0.5f;
  for (int i = 0; i < n_local; ++i) v.push_back(local);
  return v;
}

}  // namespace siam::data
