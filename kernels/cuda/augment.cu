// The fused augmentation kernel: one launch makes a whole batch of views from the u8 image
// cache on the GPU, one thread block per view, applying exactly the CPU executor's operations
// (data/augment.cpp) in the same order with the same formulas:
//   crop + bilinear resize (align_corners=False, no antialias; flip folded into the write)
//   -> colour jitter in params.order (brightness, contrast, saturation, hue) -> grayscale
//   -> separable Gaussian blur (reflect padding that keeps reflecting) -> solarize -> normalise,
// written as f32 or bf16, planar (B, C, H, W) or channels-last (B, H, W, C). Outputs are
// written (=).
//
// Inside a block:
//   pass 0 (only when contrast applies): the mean luma of the image as it stands before the
//     contrast op (the ops ahead of it in the order are per pixel, so they are recomputed on
//     the fly), reduced in double without atomics (bit-identical run to run);
//   pass 1: every pixel through crop, resize and the colour ops; without blur it is finished
//     (solarize, normalise) and written out, with blur it goes to an f32 scratch view;
//   pass 2 (blur): the horizontal blur row by row, one warp per row staged in shared memory,
//     in place in the scratch view;
//   pass 3 (blur): the vertical blur reading the scratch view down each column, then
//     solarize, normalise and the write.
// The pixels agree with the CPU's to float rounding (a few 1e-7; compilers contract a * b + c
// differently), except where rounding flips a solarize decision: there the two differ by
// |2 x - 1| at x = threshold, 1/255 for the default threshold 128/255.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cuda/augment.h"
#include "kernels/cuda/common.cuh"

namespace siam::gpu {

namespace {

using data::AugmentJob;
using data::AugmentParams;

// torchvision's rgb_to_grayscale weights (as the CPU executor).
constexpr float kR = 0.2989f, kG = 0.587f, kB = 0.114f;
constexpr int kMaxThreads = 1024;
constexpr int kWarp = 32;

__device__ inline float clamp01(float x) { return fminf(1.0f, fmaxf(0.0f, x)); }

// torchvision's _blend.
__device__ inline float blend(float x, float other, float ratio) { return clamp01(ratio * x + (1.0f - ratio) * other); }

// Crop + bilinear resize of one output pixel (row y, unflipped column x), / 255.
// src: the image, (H, W, C) u8.
template <int C>
__device__ inline void sample(const uint8_t* __restrict__ src, const AugmentParams& p, int y, int x, float* v) {
  const float sy = static_cast<float>(p.height) / p.out_h, sx = static_cast<float>(p.width) / p.out_w;
  const float fy = fmaxf(sy * (y + 0.5f) - 0.5f, 0.0f);
  const int y0 = static_cast<int>(fy);
  const int y1 = y0 + (y0 < p.height - 1 ? 1 : 0);
  const float ly1 = fy - y0, ly0 = 1.0f - ly1;
  const float fx = fmaxf(sx * (x + 0.5f) - 0.5f, 0.0f);
  const int i0 = static_cast<int>(fx);
  const int a = i0 * C, b = (i0 + (i0 < p.width - 1 ? 1 : 0)) * C;
  const float lx1 = fx - i0, lx0 = 1.0f - lx1;
  const uint8_t* row0 = src + (static_cast<int64_t>(p.top + y0) * p.src_w + p.left) * C;
  const uint8_t* row1 = src + (static_cast<int64_t>(p.top + y1) * p.src_w + p.left) * C;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const float r = ly0 * (lx0 * row0[a + c] + lx1 * row0[b + c]) + ly1 * (lx0 * row1[a + c] + lx1 * row1[b + c]);
    v[c] = r / 255.0f;
  }
}

// torchvision's _rgb2hsv / _hsv2rgb on one pixel, as adjust_hue on the CPU.
__device__ inline void hue_shift(float* v, float shift) {
  float r = v[0], g = v[1], b = v[2];
  const float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
  const bool eqc = maxc == minc;
  const float cr = maxc - minc;
  const float s = cr / (eqc ? 1.0f : maxc);
  const float div = eqc ? 1.0f : cr;
  const float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
  float h = maxc == r ? bc - gc : (maxc == g ? 2.0f + rc - bc : 4.0f + gc - rc);
  h = h / 6.0f + 1.0f;
  h -= floorf(h);
  h += shift;
  h -= floorf(h);
  const float val = maxc;
  const float h6 = h * 6.0f;
  const float fl = floorf(h6);
  const float fr = h6 - fl;
  const int sector = static_cast<int>(fl) % 6;
  const float pp = clamp01(val * (1.0f - s));
  const float q = clamp01(val * (1.0f - s * fr));
  const float t = clamp01(val * (1.0f - s * (1.0f - fr)));
  switch (sector) {
    case 0: r = val; g = t; b = pp; break;
    case 1: r = q; g = val; b = pp; break;
    case 2: r = pp; g = val; b = t; break;
    case 3: r = pp; g = q; b = val; break;
    case 4: r = t; g = pp; b = val; break;
    default: r = val; g = pp; b = q; break;
  }
  v[0] = r;
  v[1] = g;
  v[2] = b;
}

// Jitter op `op` (0 brightness, 1 contrast, 2 saturation, 3 hue) on one pixel. Identity
// factors are skipped, as on the CPU. `mean`: the image's mean luma before the contrast op.
template <int C>
__device__ inline void jitter_op(int op, const AugmentParams& p, float mean, float* v) {
  switch (op) {
    case 0:
      if (p.brightness != 1.0f)
#pragma unroll
        for (int c = 0; c < C; ++c) v[c] = blend(v[c], 0.0f, p.brightness);
      break;
    case 1:
      if (p.contrast != 1.0f)
#pragma unroll
        for (int c = 0; c < C; ++c) v[c] = blend(v[c], mean, p.contrast);
      break;
    case 2:
      if constexpr (C == 3) {
        if (p.saturation != 1.0f) {
          const float l = kR * v[0] + kG * v[1] + kB * v[2];
#pragma unroll
          for (int c = 0; c < 3; ++c) v[c] = blend(v[c], l, p.saturation);
        }
      }
      break;
    case 3:
      if constexpr (C == 3) {
        if (p.hue != 0.0f) hue_shift(v, p.hue);
      }
      break;
    default: break;
  }
}

// Output pixel (y, X) after crop, resize, flip and the first n_ops jitter ops of the order.
template <int C>
__device__ inline void colour(const uint8_t* __restrict__ src, const AugmentParams& p, int y, int X, int n_ops,
                              float mean, float* v) {
  sample<C>(src, p, y, p.flip ? p.out_w - 1 - X : X, v);
  if (p.jitter)
    for (int k = 0; k < n_ops; ++k) jitter_op<C>(p.order[k], p, mean, v);
}

// Reflection without repeating the edge, continued periodically (as the CPU's reflect()).
__device__ inline int reflect(int i, int n) {
  if (i >= 0 && i < n) return i;  // most taps: skip the modulo
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

template <class OutT>
__device__ inline OutT to_out(float v);
template <>
__device__ inline float to_out<float>(float v) { return v; }
template <>
__device__ inline __nv_bfloat16 to_out<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Solarize, normalise and write pixel i = y * ow + X of view b.
template <int C, class OutT, bool NHWC>
__device__ inline void finish(const AugmentParams& p, float* v, OutT* __restrict__ out, int64_t b, int i, int plane) {
#pragma unroll
  for (int c = 0; c < C; ++c) {
    float x = v[c];
    if (p.solarize && x >= p.solarize_threshold) x = 1.0f - x;
    const float inv = 1.0f / p.std[c];
    x = (x - p.mean[c]) * inv;
    const int64_t o = NHWC ? (b * plane + i) * C + c : (b * C + c) * plane + i;
    out[o] = to_out<OutT>(x);
  }
}

__device__ inline double warp_sum(double v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// One block per view. cache: (N, H, W, C) u8; jobs: (B); out: (B, C, oh, ow) or (B, oh, ow, C);
// scratch: (B, C, oh, ow) f32, only touched by views that blur (null when none does).
// Dynamic shared memory: max_kernel floats of blur weights, then row_warps rows of C * ow
// floats for the horizontal pass.
template <int C, class OutT, bool NHWC>
__global__ void __launch_bounds__(kMaxThreads)
    augment_kernel(const uint8_t* __restrict__ cache, int64_t n_images, int H, int W, const AugmentJob* __restrict__ jobs,
                   OutT* __restrict__ out, float* __restrict__ scratch, int oh, int ow, int max_kernel, int row_warps) {
  __shared__ AugmentParams sp;
  __shared__ int64_t s_image;
  __shared__ double s_part[kMaxThreads / kWarp];
  __shared__ float s_mean;
  extern __shared__ float dyn[];
  const int t = threadIdx.x, nt = blockDim.x, lane = t % kWarp, warp = t / kWarp;
  const int64_t b = blockIdx.x;
  if (t == 0) {
    sp = jobs[b].params;
    // A corrupt index must not read outside the cache (the host checked it).
    s_image = min(max(jobs[b].image, int64_t{0}), n_images - 1);
  }
  __syncthreads();
  const AugmentParams& p = sp;
  const uint8_t* src = cache + s_image * H * W * C;
  const int plane = oh * ow;

  // Pass 0: the mean luma ahead of the contrast op.
  int contrast_at = -1;
  if (p.jitter && p.contrast != 1.0f)
    for (int k = 0; k < 4; ++k)
      if (p.order[k] == 1) contrast_at = k;
  if (contrast_at >= 0) {
    double acc = 0;
    for (int i = t; i < plane; i += nt) {
      float v[C];
      colour<C>(src, p, i / ow, i % ow, contrast_at, 0.0f, v);
      if constexpr (C == 3)
        acc += kR * v[0] + kG * v[1] + kB * v[2];
      else
        acc += v[0];
    }
    acc = warp_sum(acc);
    if (lane == 0) s_part[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      acc = lane < nt / kWarp ? s_part[lane] : 0.0;
      acc = warp_sum(acc);
      if (lane == 0) s_mean = static_cast<float>(acc / plane);
    }
    __syncthreads();
  }
  const float mean = contrast_at >= 0 ? s_mean : 0.0f;

  // Pass 1: every pixel through the colour ops.
  const bool blur = p.blur && p.blur_kernel > 1;
  float* view = blur ? scratch + b * C * plane : nullptr;
  for (int i = t; i < plane; i += nt) {
    float v[C];
    colour<C>(src, p, i / ow, i % ow, 4, mean, v);
    if constexpr (C == 3) {
      if (p.grayscale) v[0] = v[1] = v[2] = kR * v[0] + kG * v[1] + kB * v[2];
    }
    if (blur) {
#pragma unroll
      for (int c = 0; c < C; ++c) view[c * plane + i] = v[c];
    } else {
      finish<C, OutT, NHWC>(p, v, out, b, i, plane);
    }
  }
  if (!blur) return;  // the same for every thread of the block

  // torchvision's kernel on linspace(-(k-1)/2, (k-1)/2, k), normalised, summed in order as
  // on the CPU.
  const int k = p.blur_kernel, r = k / 2;
  float* w = dyn;
  if (t == 0) {
    const float half = (k - 1) * 0.5f, sigma = p.blur_sigma;
    float sum = 0;
    for (int i = 0; i < k; ++i) {
      const float x = -half + (2.0f * half) * i / (k - 1);
      w[i] = expf(-0.5f * (x / sigma) * (x / sigma));
      sum += w[i];
    }
    for (int i = 0; i < k; ++i) w[i] /= sum;
  }
  __syncthreads();  // the weights, and pass 1's scratch writes before pass 2 reads them

  // Pass 2: horizontal blur, one warp per row, the row (all channels) staged in shared memory.
  if (warp < row_warps) {
    float* row = dyn + max_kernel + warp * C * ow;
    for (int y = warp; y < oh; y += row_warps) {
      for (int e = lane; e < C * ow; e += kWarp) row[e] = view[(e / ow) * plane + y * ow + e % ow];
      __syncwarp();
      for (int e = lane; e < C * ow; e += kWarp) {
        const int c = e / ow, x = e % ow;
        const float* rc = row + c * ow;
        float acc = 0;
        for (int i = 0; i < k; ++i) acc += w[i] * rc[reflect(x - r + i, ow)];
        view[c * plane + y * ow + x] = acc;
      }
      __syncwarp();
    }
  }
  __syncthreads();

  // Pass 3: vertical blur, solarize, normalise, write.
  for (int i = t; i < plane; i += nt) {
    const int y = i / ow, x = i % ow;
    float v[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const float* col = view + c * plane + x;
      float acc = 0;
      for (int j = 0; j < k; ++j) acc += w[j] * col[reflect(y - r + j, oh) * ow];
      v[c] = acc;
    }
    finish<C, OutT, NHWC>(p, v, out, b, i, plane);
  }
}

// Pinned host buffers the job arrays are copied from, a few in rotation: a buffer is written
// again only after the copy that read it (kSlots uploads earlier) has finished, which on a
// stream that keeps up never waits. Per thread, like siam's stream.
class JobStaging {
 public:
  static constexpr int kSlots = 4;
  ~JobStaging() {
    // At thread or process exit the runtime may be gone already: nothing to report then.
    for (Slot& s : slots_) {
      if (s.done) cudaEventDestroy(s.done);
      if (s.host) cudaFreeHost(s.host);
    }
  }
  // Copies n bytes from src to the device pointer dst on siam's stream, asynchronously.
  void upload(void* dst, const void* src, size_t n, int device) {
    Slot& s = slots_[next_];
    next_ = (next_ + 1) % kSlots;
    if (s.done) {
      SIAM_CUDA_CHECK(cudaEventSynchronize(s.done));
      if (s.device != device) {
        SIAM_CUDA_CHECK(cudaEventDestroy(s.done));
        s.done = nullptr;
      }
    }
    if (!s.done) {
      SIAM_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
      s.device = device;
    }
    if (s.capacity < n) {
      // Grows a few times at the start of a run, then never: cudaFreeHost waits for the device.
      if (s.host) SIAM_CUDA_CHECK(cudaFreeHost(s.host));
      s.host = nullptr;
      s.capacity = 0;
      SIAM_CUDA_CHECK(cudaMallocHost(&s.host, n));
      s.capacity = n;
    }
    std::memcpy(s.host, src, n);
    SIAM_CUDA_CHECK(cudaMemcpyAsync(dst, s.host, n, cudaMemcpyHostToDevice, stream()));
    SIAM_CUDA_CHECK(cudaEventRecord(s.done, stream()));
  }

 private:
  struct Slot {
    void* host = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
    int device = -1;
  };
  Slot slots_[kSlots];
  int next_ = 0;
};

template <int C, class OutT, bool NHWC>
void launch(const Tensor& cache, const AugmentJob* jobs, int64_t B, const Tensor& out, float* scratch, int oh, int ow,
            int max_kernel, int row_warps, int threads, size_t smem) {
  auto kernel = augment_kernel<C, OutT, NHWC>;
  if (smem > 48 * 1024)
    SIAM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(B), threads, smem, stream()>>>(
      dptr<const uint8_t>(cache), cache.size(0), static_cast<int>(cache.size(1)), static_cast<int>(cache.size(2)), jobs,
      dptr<OutT>(out), scratch, oh, ow, max_kernel, row_warps);
  SIAM_CUDA_LAUNCHED();
}

}  // namespace

Tensor augment_batch(const Tensor& cache, std::span<const AugmentJob> jobs, DType dtype, data::ViewLayout layout) {
  if (!cache.defined() || !cache.device().is_cuda())
    fail("augment_batch (CUDA): the image cache is on ", cache.defined() ? cache.device().str() : std::string("nothing"),
         ", expected a CUDA tensor");
  if (cache.dim() != 4 || cache.dtype() != DType::u8 || !cache.is_contiguous() || (cache.size(3) != 1 && cache.size(3) != 3))
    fail("augment_batch (CUDA): the image cache is ", shape_str(cache.shape()), " ", dtype_name(cache.dtype()),
         ", expected a contiguous (N, H, W, C) u8 tensor with C = 1 or 3");
  if (dtype != DType::f32 && dtype != DType::bf16)
    fail("augment_batch (CUDA): views in ", dtype_name(dtype), ", expected f32 or bf16");
  if (jobs.empty()) fail("augment_batch (CUDA): no views to make");
  const int64_t N = cache.size(0), H = cache.size(1), W = cache.size(2), C = cache.size(3);
  const int64_t B = static_cast<int64_t>(jobs.size());
  const int oh = jobs[0].params.out_h, ow = jobs[0].params.out_w;
  int max_kernel = 0;
  for (int64_t b = 0; b < B; ++b) {
    const AugmentJob& j = jobs[b];
    const AugmentParams& p = j.params;
    // The kernel trusts these: a box outside the image would read outside it.
    if (j.image < 0 || j.image >= N || p.src_h != H || p.src_w != W || p.out_h != oh || p.out_w != ow || p.height <= 0 ||
        p.width <= 0 || p.top < 0 || p.left < 0 || p.top + p.height > H || p.left + p.width > W ||
        (p.blur && (p.blur_kernel <= 0 || p.blur_kernel % 2 == 0 || !(p.blur_sigma > 0))))
      fail("augment_batch (CUDA): view ", b, " (image ", j.image, ", crop ", p.top, ", ", p.left, ", ", p.height, " x ",
           p.width, " of ", p.src_h, " x ", p.src_w, ", output ", p.out_h, " x ", p.out_w, ", blur ", p.blur, "/",
           p.blur_kernel, ") does not fit the ", N, " x ", H, " x ", W, " cache or view 0's ", oh, " x ", ow, " output");
    if (p.blur && p.blur_kernel > 1) max_kernel = std::max(max_kernel, p.blur_kernel);
  }
  if (B > 2147483647LL) fail("augment_batch (CUDA): ", B, " views, at most 2^31 - 1 per batch");
  const int device = use_device(cache);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SIAM_CUDA_CHECK(cudaStreamIsCapturing(stream(), &capture));
  if (capture != cudaStreamCaptureStatusNone)
    fail("augment_batch (CUDA): called during a CUDA graph capture; its view parameters come from the host at each "
         "call, so a graph would replay stale ones: make the views outside the captured step");

  if (static_cast<int64_t>(oh) * ow * C > 2147483647LL)
    fail("augment_batch (CUDA): ", oh, " x ", ow, " views of ", C, " channels have more than 2^31 - 1 values");
  const int plane = oh * ow;
  // Large views get more threads per block: a batch is only a few blocks per SM.
  const int threads = plane >= 16384 ? 1024 : (plane >= 4096 ? 512 : 256);
  const int warps = threads / kWarp;
  // Shared memory: the blur weights and, per row warp, one row of C * ow floats.
  const size_t row_bytes = static_cast<size_t>(C) * ow * sizeof(float);
  const size_t weight_bytes = static_cast<size_t>(max_kernel) * sizeof(float);
  int row_warps = 0;
  size_t smem = 0;
  if (max_kernel > 0) {
    int optin = 0, per_sm = 0;
    SIAM_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    SIAM_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
    // As many row warps as the shared memory of the blocks an SM holds at once (2048 threads)
    // allows, so the horizontal pass does not idle most of the block.
    const size_t blocks_per_sm = 2048 / threads;
    const size_t fair = static_cast<size_t>(std::max<int64_t>(0, per_sm / static_cast<int64_t>(blocks_per_sm) - 2048));
    const size_t budget = std::max<size_t>(weight_bytes + row_bytes, std::min<size_t>(fair, weight_bytes + warps * row_bytes));
    row_warps = static_cast<int>(std::min<size_t>(warps, (budget - weight_bytes) / row_bytes));
    smem = weight_bytes + row_warps * row_bytes;
    const size_t static_bytes = sizeof(AugmentParams) + 8 + (kMaxThreads / kWarp) * 8 + 16;
    if (smem + static_bytes > static_cast<size_t>(optin))
      fail("augment_batch (CUDA): ", ow, "-pixel-wide blurred views need ", smem + static_bytes,
           " bytes of shared memory per block, this GPU gives ", optin);
  }

  const Shape shape = layout == data::ViewLayout::nchw ? Shape{B, C, oh, ow} : Shape{B, oh, ow, C};
  Tensor out = empty(shape, {dtype, cache.device()});
  Tensor scratch;
  if (max_kernel > 0) scratch = empty({B, C, oh, ow}, {DType::f32, cache.device()});
  Tensor dev_jobs = empty({B * static_cast<int64_t>(sizeof(AugmentJob))}, {DType::u8, cache.device()});
  thread_local JobStaging staging;
  staging.upload(dev_jobs.raw_data(), jobs.data(), B * sizeof(AugmentJob), device);

  const AugmentJob* dj = dptr<const AugmentJob>(dev_jobs);
  float* sc = scratch.defined() ? dptr<float>(scratch) : nullptr;
  const bool nhwc = layout == data::ViewLayout::nhwc;
  auto go = [&](auto kernel_launch) { kernel_launch(cache, dj, B, out, sc, oh, ow, max_kernel, row_warps, threads, smem); };
  if (C == 1 && dtype == DType::f32) nhwc ? go(launch<1, float, true>) : go(launch<1, float, false>);
  if (C == 1 && dtype == DType::bf16) nhwc ? go(launch<1, __nv_bfloat16, true>) : go(launch<1, __nv_bfloat16, false>);
  if (C == 3 && dtype == DType::f32) nhwc ? go(launch<3, float, true>) : go(launch<3, float, false>);
  if (C == 3 && dtype == DType::bf16) nhwc ? go(launch<3, __nv_bfloat16, true>) : go(launch<3, __nv_bfloat16, false>);
  return out;
}

}  // namespace siam::gpu
