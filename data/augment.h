#pragma once
// Augmentations in two halves: a sampler that draws one view's parameters from the Philox
// stream into a plain struct (AugmentParams), and an executor that applies such a struct to
// one u8 HWC image. The CPU executor here is the readable reference; a CUDA kernel is to
// reproduce its pixels from the same struct, so the struct holds every decision and number.
//
// The pipeline follows torchvision's on tensors (SimCLR, MoCo v2, BYOL, DINO recipes):
//   RandomResizedCrop (bilinear, no antialias) -> horizontal flip -> colour jitter
//   (brightness, contrast, saturation, hue in a random order, applied with a probability)
//   -> grayscale -> Gaussian blur -> solarize -> normalise (per-channel mean and std).
// Deviations from torchvision, all on purpose:
//   - pixels stay f32 in [0, 1] from the resize on; torchvision on u8 tensors rounds back to
//     u8 after the resize, blur and each jitter op (differences of up to about 1/255 each).
//   - the Gaussian blur pads by reflection that keeps reflecting when the kernel is wider
//     than the image (torchvision refuses such sizes).
//   - a 1-channel image stays 1-channel: saturation, hue and grayscale leave it unchanged
//     (as torchvision does), and only mean[0] and std[0] normalise it.
#include <array>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "tensor/tensor.h"

namespace siam::data {

// How to draw one view. Probabilities are per view, so an asymmetric recipe (BYOL: blur
// 1.0 / 0.1, solarize 0 / 0.2) is one AugmentConfig per view. Defaults: SimCLR's ImageNet
// recipe with ImageNet normalisation.
struct AugmentConfig {
  int out_h = 224, out_w = 224;
  // RandomResizedCrop: area share and aspect ratio (w / h) ranges, torchvision's algorithm.
  float scale_min = 0.08f, scale_max = 1.0f;
  float ratio_min = 3.0f / 4.0f, ratio_max = 4.0f / 3.0f;
  float flip_p = 0.5f;
  // ColorJitter strengths: brightness, contrast and saturation factors are drawn from
  // [max(0, 1 - s), 1 + s], the hue shift from [-hue, hue] (hue <= 0.5).
  float jitter_p = 0.8f;
  float brightness = 0.8f, contrast = 0.8f, saturation = 0.8f, hue = 0.2f;
  float grayscale_p = 0.2f;
  // Gaussian blur: sigma from [sigma_min, sigma_max]; the kernel side is
  // int(blur_kernel_frac * min(out_h, out_w)), made odd (SimCLR: 10% of the image side).
  float blur_p = 0.5f;
  float sigma_min = 0.1f, sigma_max = 2.0f;
  float blur_kernel_frac = 0.1f;
  float solarize_p = 0.0f;
  float solarize_threshold = 128.0f / 255.0f;  // pixels >= threshold are inverted
  std::array<float, 3> mean = {0.485f, 0.456f, 0.406f};
  std::array<float, 3> std = {0.229f, 0.224f, 0.225f};
};

// Throws siam::Error naming the field when a setting is out of range.
void validate(const AugmentConfig& cfg);

// Every decision for one view. Plain data: copyable to a GPU as bytes.
struct AugmentParams {
  int32_t src_h, src_w;                   // the source image the crop box refers to
  int32_t top, left, height, width;       // crop box in source pixels
  int32_t out_h, out_w;                   // output size
  int32_t flip;                           // 1: mirror the output horizontally
  int32_t jitter;                         // 1: apply the colour ops in `order`
  float brightness, contrast, saturation, hue;  // identity: 1, 1, 1, 0
  int32_t order[4];                       // 0 brightness, 1 contrast, 2 saturation, 3 hue
  int32_t grayscale;                      // 1: replace RGB by its luma, 3 channels
  int32_t blur;                           // 1: Gaussian blur with the kernel and sigma below
  int32_t blur_kernel;                    // odd side of the (separable) kernel
  float blur_sigma;
  int32_t solarize;                       // 1: invert pixels >= solarize_threshold
  float solarize_threshold;
  float mean[3], std[3];
};
static_assert(std::is_trivially_copyable_v<AugmentParams> && std::is_standard_layout_v<AugmentParams>);

// The Philox words one view's draw uses, starting at (seed, offset): a fixed layout so that
// each decision reads the same word whatever the others drew.
//   0..19 RandomResizedCrop tries (scale, log-ratio) x 10; 20, 21 box top and left;
//   22 flip; 23 jitter applied; 24..27 jitter factors; 28..30 jitter order (Fisher-Yates);
//   31 grayscale; 32 blur applied; 33 blur sigma; 34 solarize.
inline constexpr uint64_t kAugmentWords = 35;

// Draws one view's parameters for a src_h x src_w image. Deterministic in (seed, offset).
AugmentParams sample_augment(const AugmentConfig& cfg, int src_h, int src_w, uint64_t seed, uint64_t offset);

// Parameters that reproduce the whole image at out_h x out_w: full crop, no colour change,
// mean 0 and std 1 (so the output is pixel / 255 when the size is unchanged).
AugmentParams identity_params(int src_h, int src_w, int out_h, int out_w);

// Intersection over union of two views' crop boxes (the same source image).
double crop_iou(const AugmentParams& a, const AugmentParams& b);

// The CPU executor. src: (H, W, C) u8 contiguous with H, W = p.src_h, p.src_w and C 1 or 3;
// out: (C, p.out_h, p.out_w) f32.
void augment_cpu(const uint8_t* src, int channels, const AugmentParams& p, float* out);

// The same on tensors. image: (H, W, C) u8 -> (C, out_h, out_w) f32.
Tensor augment(const Tensor& image, const AugmentParams& p);

// ---------------------------------------------------------------- batches

// Layout of a batch of views: planar (B, C, H, W), the CPU executor's, or channels-last
// (B, H, W, C), the layout GPU convolutions are fastest in.
enum class ViewLayout { nchw, nhwc };

// One view of a batch: the cache row it shows and every decision about it. Plain data: a
// batch of these is what the GPU receives.
struct AugmentJob {
  int64_t image;
  AugmentParams params;
};
static_assert(std::is_trivially_copyable_v<AugmentJob> && std::is_standard_layout_v<AugmentJob>);

// A batch of views made from a u8 image cache on the cache's device: the CPU executor above
// for a CPU cache, the fused CUDA kernel (kernels/cuda/augment.h) for a GPU cache. Both give
// the same pixels within one u8 step (1/255 before normalisation).
// cache: (N, H, W, C) u8 contiguous, C 1 or 3; jobs: B >= 1 views whose parameters were drawn
// for H x W images, all with one output size -> (B, C, out_h, out_w) (nchw) or
// (B, out_h, out_w, C) (nhwc), f32 or bf16, a new contiguous tensor.
Tensor augment_batch(const Tensor& cache, std::span<const AugmentJob> jobs, DType dtype = DType::f32,
                     ViewLayout layout = ViewLayout::nchw);

// Recipes (methods.md). `size` is the output side. SimCLR's jitter strength s scales
// (0.8s, 0.8s, 0.8s, 0.2s).
AugmentConfig simclr_view(int size, float s = 1.0f);
AugmentConfig mocov2_view(int size);
// BYOL's asymmetric pair (also VICReg's and Barlow Twins'): blur 1.0 / 0.1, solarize 0 / 0.2.
std::array<AugmentConfig, 2> byol_views(int size);
// DINO multi-crop: two global views (scale 0.4-1; blur 1.0, then blur 0.1 + solarize 0.2)
// and n_local local views (scale 0.05-0.4, blur 0.5).
std::vector<AugmentConfig> dino_views(int global_size, int local_size, int n_local);

}  // namespace siam::data
