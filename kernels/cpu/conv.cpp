// Convolution CPU kernels, on BLAS GEMMs three ways and one way without:
//  - im2col, one GEMM per (batch of images, group): the general path;
//  - forward, stride 1 on wide planes: one GEMM per kernel tap over a bordered copy ("shifted");
//  - input and weight gradients of 3x3 stride-1 kernels: Winograd F(2x2, 3x3) (winograd.h);
//  - 3x3 stride-1 kernels with few channels, all three passes: direct loops (direct_conv.h).
// Every function writes (=) a fresh output. Inside, col2im adds (+=) column patches into the
// input gradient (zeroed image by image first) and the weight gradient accumulates (+=) over
// batches, per thread, before one final sum.
#include "kernels/conv.h"

#include <omp.h>

#include <algorithm>
#include <climits>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/direct_conv.h"
#include "kernels/cpu/winograd.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/dispatch.h"

namespace siam::kernels {
namespace {

namespace winograd = cpu::winograd;
namespace direct = cpu::direct;

struct Dims {
  int64_t N, C, H, W, O, G, Cg, Og, kh, kw, Ho, Wo;
  int64_t K() const { return Cg * kh * kw; }  // rows of the column matrix: (c, ki, kj)
  int64_t L() const { return Ho * Wo; }       // its columns: output positions
};

Dims dims_of(const Shape& x, const Shape& w, const ConvGeometry& p) {
  Dims d{};
  d.N = x[0], d.C = x[1], d.H = x[2], d.W = x[3];
  d.O = w[0], d.kh = w[2], d.kw = w[3];
  d.G = p.groups, d.Cg = d.C / d.G, d.Og = d.O / d.G;
  d.Ho = conv_out_size(d.H, d.kh, p.stride_h, p.pad_h, p.dil_h);
  d.Wo = conv_out_size(d.W, d.kw, p.stride_w, p.pad_w, p.dil_w);
  if (std::max({d.K(), d.L(), d.Og}) > INT_MAX) fail("conv2d: a GEMM dimension exceeds the BLAS int range");
  return d;
}

// A 1x1 kernel with unit stride and no padding reads each image as its own column matrix.
bool is_pointwise(const Dims& d, const ConvGeometry& p) {
  return d.kh == 1 && d.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// Smallest o >= 0 with o * s >= a.
int64_t first_at_least(int64_t a, int64_t s) { return a <= 0 ? 0 : (a + s - 1) / s; }

// The output columns [lo, hi) whose tap at input column ow * stride + off lies inside [0, W).
std::pair<int64_t, int64_t> valid_cols(const Dims& d, const ConvGeometry& p, int64_t off) {
  int64_t lo = std::min(first_at_least(-off, p.stride_w), d.Wo);
  int64_t hi = std::max(lo, std::min(first_at_least(d.W - off, p.stride_w), d.Wo));
  return {lo, hi};
}

// x: (Cg, H, W) -> col: (K, L) rows at row stride ld, zeros where a tap falls in the padding.
template <class T>
void im2col(const T* x, T* col, int64_t ld, const Dims& d, const ConvGeometry& p, bool parallel) {
  const int64_t K = d.K();
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < K; ++r) {
    int64_t c = r / (d.kh * d.kw), ki = r / d.kw % d.kh, kj = r % d.kw;
    int64_t off_h = ki * p.dil_h - p.pad_h, off_w = kj * p.dil_w - p.pad_w;
    auto [lo, hi] = valid_cols(d, p, off_w);
    for (int64_t oh = 0; oh < d.Ho; ++oh) {
      T* o = col + r * ld + oh * d.Wo;
      int64_t ih = oh * p.stride_h + off_h;
      if (ih < 0 || ih >= d.H) {
        for (int64_t ow = 0; ow < d.Wo; ++ow) o[ow] = T(0);
        continue;
      }
      const T* xr = x + (c * d.H + ih) * d.W;
      for (int64_t ow = 0; ow < lo; ++ow) o[ow] = T(0);
      if (p.stride_w == 1)
        for (int64_t ow = lo; ow < hi; ++ow) o[ow] = xr[ow + off_w];
      else
        for (int64_t ow = lo; ow < hi; ++ow) o[ow] = xr[ow * p.stride_w + off_w];
      for (int64_t ow = hi; ow < d.Wo; ++ow) o[ow] = T(0);
    }
  }
}

// col: (K, L) rows at row stride ld -> dx: (Cg, H, W) (+=). Channels own disjoint rows of col,
// so they run in parallel.
template <class T>
void col2im(const T* col, int64_t ld, T* dx, const Dims& d, const ConvGeometry& p, bool parallel) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < d.Cg; ++c) {
    for (int64_t ki = 0; ki < d.kh; ++ki)
      for (int64_t kj = 0; kj < d.kw; ++kj) {
        const T* in = col + ((c * d.kh + ki) * d.kw + kj) * ld;
        int64_t off_h = ki * p.dil_h - p.pad_h, off_w = kj * p.dil_w - p.pad_w;
        auto [lo, hi] = valid_cols(d, p, off_w);
        for (int64_t oh = 0; oh < d.Ho; ++oh) {
          int64_t ih = oh * p.stride_h + off_h;
          if (ih < 0 || ih >= d.H) continue;
          T* xr = dx + (c * d.H + ih) * d.W;
          const T* ir = in + oh * d.Wo;
          if (p.stride_w == 1)
            for (int64_t ow = lo; ow < hi; ++ow) xr[ow + off_w] += ir[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) xr[ow * p.stride_w + off_w] += ir[ow];
        }
      }
  }
}

// Work is cut into items of B consecutive images of one group, so that each GEMM sees B * L
// columns: per-image GEMMs on the deep layers' small planes (L = 16 or 49) spend their time
// packing the weights, not multiplying.
struct Batching {
  int64_t B;      // images per item
  int64_t items;  // ceil(N / B) * G
  bool share;     // items shared out over OpenMP threads, BLAS single-threaded in each
};

// N images in G groups, each image `cols` GEMM columns wide and `rows` scratch values per
// column; m and k are the GEMM's other sizes. Images are added to a batch up to `target`
// columns, past which a larger GEMM gains less than its scratch, growing out of the caches,
// costs (measured: 128 for im2col's deep K, 256 for Winograd's).
Batching batching(int64_t N, int64_t G, int64_t cols, int64_t rows, int64_t m, int64_t k, int64_t target) {
  constexpr int64_t kScratch = int64_t(1) << 21;  // values
  if (N == 0) return {1, 0, false};
  const int64_t L = std::max<int64_t>(cols, 1), nt = omp_get_max_threads();
  int64_t B = std::max<int64_t>(1, target / L);
  B = std::min(B, std::max<int64_t>(1, kScratch / std::max<int64_t>(rows * L, 1)));
  // Every thread gets items, and items are balanced: the same B for all but perhaps the last.
  B = std::min(B, std::max<int64_t>(1, N / nt));
  int64_t chunks = (N + B - 1) / B;
  if (nt > 1 && chunks * G > nt) chunks = (chunks * G + nt - 1) / nt * nt / G;
  chunks = std::clamp<int64_t>(chunks, 1, N);
  B = (N + chunks - 1) / chunks;
  Batching b{B, (N + B - 1) / B * G, false};
  b.share = cpu::share_gemms(b.items, m, B * L, k);
  return b;
}
Batching batching(const Dims& d, int64_t m, int64_t k) { return batching(d.N, d.G, d.L(), d.K(), m, k, 128); }

// This thread's scratch of at least n values, kept from call to call: the same layers come
// back every step, and a fresh buffer each time costs page faults and zeroing. Slots keep
// buffers that are alive at the same time apart: a GEMM batch's columns (every thread), and on
// the calling thread the transformed kernel and the weight gradient's per-thread partial sums.
enum ScratchSlot { kGemmSlot, kWeightSlot, kPartialSlot };
template <class T, int Slot = kGemmSlot>
T* thread_scratch(int64_t n) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(static_cast<size_t>(n));
  return buf.data();
}

// Calls body(item, scratch, inner_parallel) for every item. Shared out (Batching::share), each
// thread runs whole items with its own scratch; otherwise the items run in order and
// parallelise inside (im2col loops, GEMMs cut over the threads by cpu::blas_gemm).
template <class T, class F>
void for_items(const Batching& b, int64_t scratch, F body) {
  if (b.share) {
#pragma omp parallel
    {
      T* buf = thread_scratch<T>(scratch);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < b.items; ++i) body(i, buf, false);
    }
  } else {
    T* buf = thread_scratch<T>(scratch);
    for (int64_t i = 0; i < b.items; ++i) body(i, buf, true);
  }
}

// Weight-gradient sums that every batch adds into, kept per thread (threads run batches side
// by side) in `groups` equal slices (one per conv group). A thread's first product into a slice
// writes it (GEMM beta 0) and later ones add, so nothing is zeroed first; sum() then adds up
// the slices that were written, in thread order.
template <class T>
class Partials {
 public:
  Partials(int threads, int64_t size, int64_t groups)
      : threads_(threads), size_(size), groups_(groups), data_(thread_scratch<T, kPartialSlot>(threads * size)),
        used_(static_cast<size_t>(threads * groups), 0) {}
  T* slice(int thread) { return data_ + thread * size_; }
  // The GEMM beta for `thread`'s next product into group g's slice.
  double beta(int thread, int64_t g) {
    char& u = used_[static_cast<size_t>(thread * groups_ + g)];
    const double b = u ? 1.0 : 0.0;
    u = 1;
    return b;
  }
  // out: size values (=); may be slice(0).
  void sum(T* out) const {
    const int64_t per = size_ / groups_;
#pragma omp parallel for schedule(static) if (size_ * threads_ > 32768)
    for (int64_t e = 0; e < size_; ++e) {
      const int64_t g = e / per;
      T s = 0;
      for (int t = 0; t < threads_; ++t)
        if (used_[static_cast<size_t>(t * groups_ + g)]) s += data_[t * size_ + e];
      out[e] = s;
    }
  }

 private:
  int threads_;
  int64_t size_, groups_;
  T* data_;
  std::vector<char> used_;
};

// The images [n0, n0 + nb) of item i and their group.
struct Item {
  int64_t n0, nb, g;
};
Item item_of(int64_t i, const Dims& d, const Batching& b) {
  int64_t n0 = i / d.G * b.B;
  return {n0, std::min(b.B, d.N - n0), i % d.G};
}

// Rows [row0, row0 + rows) of each image's (rows_total, L) plane, images [n0, n0 + nb) of t:
// (N, rows_total, L) -> buf: (rows, nb * L), image b in columns [b L, (b + 1) L).
template <class T>
void gather(const T* t, T* buf, int64_t n0, int64_t nb, int64_t rows_total, int64_t row0, int64_t rows, int64_t L) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const T* src = t + ((n0 + b) * rows_total + row0 + r) * L;
      std::copy(src, src + L, buf + (r * nb + b) * L);
    }
}

// The backward passes of 3x3 kernels with stride 1, no dilation and one group go through
// Winograd F(2x2, 3x3) (kernels/cpu/winograd.h): 16 multiply-adds per output tile and channel
// pair instead of 36, and no im2col. Padding up to 2 keeps the input gradient's padding
// (2 - pad) non-negative. With few channels the transforms cost more than the multiply-adds
// saved (the 1-channel stem's weight gradient: five times slower than im2col), hence the
// channel floor.
//
// The forward pass stays on im2col. Winograd rounds the transformed kernel G g G^T to f32, an
// error shared by every output of the layer, like perturbing the weights by a fraction of an
// ulp; in a deep net in training mode that flips the sign of pre-activations sitting within
// ~1e-7 of zero, and the ReLU turns the flip into a gradient change far above f32 rounding
// (tests/test_models.cpp's small ResNet-18 fixture shows it: 1e-2 on early-layer gradients,
// the same as perturbing the conv weights by 2e-7 under im2col). Gradients are linear in the
// backward passes' rounding, so there Winograd costs nothing beyond it.
bool use_winograd(const Dims& d, const ConvGeometry& p) {
  constexpr int64_t kMinChannels = 16;
  return d.kh == 3 && d.kw == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 &&
         d.G == 1 && p.pad_h <= 2 && p.pad_w <= 2 && d.Ho > 0 && d.Wo > 0 && std::min(d.C, d.O) >= kMinChannels;
}

// gy: (N, O, Ho, Wo), w: (O, C, 3, 3) -> dx: (N, C, H, W) (=): the forward algorithm on gy with
// the kernel rotated 180 degrees and its channel axes swapped, padding 2 - pad.
template <class T>
void winograd_grad_input(const T* gy, const T* w, T* dx, const Dims& d, const ConvGeometry& p) {
  const winograd::Plane q = winograd::plane(d.O, d.Ho, d.Wo, d.C, 2 - p.pad_h, 2 - p.pad_w);
  const int64_t tiles = q.tiles(), in_img = d.O * d.L(), out_img = d.C * d.H * d.W;
  const int64_t p_img = q.hp() * q.wp() * q.Cin, q_img = 4 * tiles * q.Cout;  // channels-last copies
  T* U = thread_scratch<T, kWeightSlot>(16 * d.O * d.C);  // (16, O, C): Cin = O, Cout = C
  winograd::rotated_weight_transform(w, U, d.O, d.C);
  const int64_t per_tile = 16 * (q.Cin + q.Cout) + (p_img + q_img + tiles - 1) / tiles;
  const Batching bt = batching(d.N, 1, tiles, per_tile, q.Cout, q.Cin, 256);
  for_items<T>(bt, per_tile * bt.B * tiles, [&](int64_t i, T* buf, bool inner) {
    const int64_t n0 = i * bt.B, nb = std::min(bt.B, d.N - n0), ld = nb * tiles;
    T* P = buf;
    T* V = P + nb * p_img;
    T* M = V + 16 * ld * q.Cin;
    T* Q = M + 16 * ld * q.Cout;
    winograd::to_channels_last(gy + n0 * in_img, in_img, nb, q.Cin, q.H, q.W, P, q.hp(), q.wp(), q.ph, q.pw, inner);
    winograd::input_transform(P, nb, V, ld, q, inner);
    for (int64_t xi = 0; xi < 16; ++xi)
      cpu::blas_gemm(false, false, ld, q.Cout, q.Cin, 1.0, V + xi * ld * q.Cin, q.Cin, U + xi * q.Cin * q.Cout, q.Cout,
                     0.0, M + xi * ld * q.Cout, q.Cout);
    winograd::output_transform(M, ld, nb, Q, q, inner);
    winograd::from_channels_last(Q, 2 * q.th, 2 * q.tw, nb, q.Cout, q.Ho, q.Wo, dx + n0 * out_img, out_img, inner);
  });
}

// gy: (N, O, Ho, Wo), x: (N, C, H, W) -> dw: (O, C, 3, 3) (=)
template <class T>
void winograd_grad_weight(const T* gy, const T* x, T* dw, const Dims& d, const ConvGeometry& p) {
  const winograd::Plane q = winograd::plane(d.C, d.H, d.W, d.O, p.pad_h, p.pad_w);
  const int64_t tiles = q.tiles(), x_img = d.C * d.H * d.W, gy_img = d.O * d.L(), size = 16 * d.O * d.C;
  const int64_t p_img = q.hp() * q.wp() * d.C, g_img = 4 * tiles * d.O;  // channels-last copies
  const int64_t per_tile = 16 * (d.C + d.O) + (p_img + g_img + tiles - 1) / tiles;
  const Batching bt = batching(d.N, 1, tiles, per_tile, d.O, d.C, 256);
  // Every image adds into all of dU (16, O, C).
  Partials<T> dU(bt.share ? omp_get_max_threads() : 1, size, 1);
  for_items<T>(bt, per_tile * bt.B * tiles, [&](int64_t i, T* buf, bool inner) {
    const int64_t n0 = i * bt.B, nb = std::min(bt.B, d.N - n0), ld = nb * tiles;
    T* P = buf;
    T* G = P + nb * p_img;
    T* V = G + nb * g_img;
    T* dM = V + 16 * ld * d.C;
    const int t = inner ? 0 : omp_get_thread_num();
    winograd::to_channels_last(x + n0 * x_img, x_img, nb, d.C, d.H, d.W, P, q.hp(), q.wp(), p.pad_h, p.pad_w, inner);
    winograd::input_transform(P, nb, V, ld, q, inner);
    // The output gradient zero-padded to whole tiles.
    winograd::to_channels_last(gy + n0 * gy_img, gy_img, nb, d.O, d.Ho, d.Wo, G, 2 * q.th, 2 * q.tw, 0, 0, inner);
    winograd::grad_output_transform(G, nb, dM, ld, q, inner);
    const double beta = dU.beta(t, 0);
    for (int64_t xi = 0; xi < 16; ++xi)
      cpu::blas_gemm(true, false, d.O, d.C, ld, 1.0, dM + xi * ld * d.O, d.O, V + xi * ld * d.C, d.C, beta,
                     dU.slice(t) + xi * d.O * d.C, d.C);
  });
  dU.sum(dU.slice(0));
  winograd::weight_grad_transform(dU.slice(0), dw, d.O, d.C);
}

// Stride 1, no dilation, one group and wide planes: the forward pass as one GEMM per kernel
// tap over a zero-bordered copy of the image, each reading the copy shifted by its tap, on the
// bordered grid's Ho x Wp positions (the Wp - Wo columns past each row are computed and
// dropped). No im2col matrix, kh kw times the input, is written, and each image's GEMMs are
// wide enough on their own. Narrower planes lose more to the dropped columns than they save
// (measured: 28 wide gains ~20%, 14 wide breaks even).
bool use_shifted(const Dims& d, const ConvGeometry& p) {
  constexpr int64_t kMinWidth = 24, kMinChannels = 16;
  return p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && d.G == 1 && d.kh * d.kw > 1 &&
         d.Wo >= kMinWidth && d.C >= kMinChannels;
}

// x: (N, C, H, W), w: (O, C, kh, kw), bias: (O) or null -> y: (N, O, Ho, Wo)
template <class T>
void shifted_forward(const T* x, const T* w, const T* bias, T* y, const Dims& d, const ConvGeometry& p) {
  const int64_t taps = d.kh * d.kw, Hp = d.H + 2 * p.pad_h, Wp = d.W + 2 * p.pad_w;
  // Each channel's bordered plane, plus room for the last tap's read past it (into dropped
  // columns only).
  const int64_t plane = Hp * Wp + d.kw, grid = d.Ho * Wp;
  T* wt = thread_scratch<T, kWeightSlot>(taps * d.O * d.C);  // (taps, O, C)
  for (int64_t oc = 0; oc < d.O * d.C; ++oc)
    for (int64_t t = 0; t < taps; ++t) wt[t * d.O * d.C + oc] = w[oc * taps + t];
  const Batching bt{1, d.N, cpu::share_gemms(d.N, d.O, grid, d.C)};
  for_items<T>(bt, d.C * plane + d.O * grid, [&](int64_t n, T* buf, bool) {
    T* xp = buf;
    T* yg = buf + d.C * plane;
    for (int64_t c = 0; c < d.C; ++c) {
      T* pc = xp + c * plane;
      const T* xc = x + (n * d.C + c) * d.H * d.W;
      std::fill(pc, pc + p.pad_h * Wp, T(0));
      for (int64_t h = 0; h < d.H; ++h) {
        T* row = pc + (p.pad_h + h) * Wp;
        std::fill(row, row + p.pad_w, T(0));
        std::copy(xc + h * d.W, xc + (h + 1) * d.W, row + p.pad_w);
        std::fill(row + p.pad_w + d.W, row + Wp, T(0));
      }
      std::fill(pc + (p.pad_h + d.H) * Wp, pc + plane, T(0));
    }
    for (int64_t t = 0; t < taps; ++t)
      cpu::blas_gemm(false, false, d.O, grid, d.C, 1.0, wt + t * d.O * d.C, d.C, xp + t / d.kw * Wp + t % d.kw, plane,
                     t ? 1.0 : 0.0, yg, grid);
    for (int64_t o = 0; o < d.O; ++o) {
      const T add = bias ? bias[o] : T(0);
      for (int64_t oh = 0; oh < d.Ho; ++oh) {
        const T* src = yg + o * grid + oh * Wp;
        T* dst = y + ((n * d.O + o) * d.Ho + oh) * d.Wo;
        for (int64_t ow = 0; ow < d.Wo; ++ow) dst[ow] = src[ow] + add;
      }
    }
  });
}

// 3x3 kernels with stride 1, no dilation and one group, and 4-15 channels on both sides (a
// width-8 ResNet's first stage) run direct loops (kernels/cpu/direct_conv.h) in all three
// passes (the 1-channel stem and 16 channels measured faster on the GEMM paths): their GEMMs are too skinny for BLAS and their im2col copies cost as
// much as the products. Images are shared out over the threads; the weight gradient sums
// per-thread partials in thread order, so results do not depend on timing.
bool use_direct(const Dims& d, const ConvGeometry& p) {
  constexpr int64_t kMinChannels = 4, kMaxChannels = 15;
  return d.kh == 3 && d.kw == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 &&
         d.G == 1 && p.pad_h <= 2 && p.pad_w <= 2 && d.Ho > 0 && d.Wo > 0 && std::min(d.C, d.O) >= kMinChannels &&
         std::max(d.C, d.O) <= kMaxChannels;
}

// x: (N, C, H, W), w: (O, C, 3, 3), bias: (O) or null -> y: (N, O, Ho, Wo)
template <class T>
void direct_forward(const T* x, const T* w, const T* bias, T* y, const Dims& d, const ConvGeometry& p) {
  const direct::Geometry g = direct::geometry(d.C, d.H, d.W, d.O, p.pad_h, p.pad_w);
  const Batching bt{1, d.N, d.N > 1};
  for_items<T>(bt, d.C * g.plane(), [&](int64_t n, T* buf, bool) {
    direct::border(x + n * d.C * d.H * d.W, buf, g);
    direct::forward(buf, w, bias, y + n * d.O * d.L(), g);
  });
}

// gy: (N, O, Ho, Wo), w: (O, C, 3, 3) -> dx: (N, C, H, W): the forward loops on gy with the
// kernel rotated and its channel axes swapped, padding 2 - pad.
template <class T>
void direct_grad_input(const T* gy, const T* w, T* dx, const Dims& d, const ConvGeometry& p) {
  const direct::Geometry g = direct::geometry(d.O, d.Ho, d.Wo, d.C, 2 - p.pad_h, 2 - p.pad_w);
  T* wr = thread_scratch<T, kWeightSlot>(9 * d.O * d.C);
  direct::rotated_weight(w, wr, d.O, d.C);
  const Batching bt{1, d.N, d.N > 1};
  for_items<T>(bt, d.O * g.plane(), [&](int64_t n, T* buf, bool) {
    direct::border(gy + n * d.O * d.L(), buf, g);
    direct::forward(buf, wr, static_cast<const T*>(nullptr), dx + n * d.C * d.H * d.W, g);
  });
}

// gy: (N, O, Ho, Wo), x: (N, C, H, W) -> dw: (O, C, 3, 3)
template <class T>
void direct_grad_weight(const T* gy, const T* x, T* dw, const Dims& d, const ConvGeometry& p) {
  const direct::Geometry g = direct::geometry(d.C, d.H, d.W, d.O, p.pad_h, p.pad_w);
  const int64_t size = d.O * d.C * 9, xp_size = d.C * g.plane();
  const Batching bt{1, d.N, d.N > 1};
  Partials<T> parts(bt.share ? omp_get_max_threads() : 1, size, 1);
  for_items<T>(bt, xp_size + d.O * d.Ho * g.Wr(), [&](int64_t n, T* buf, bool inner) {
    const int t = inner ? 0 : omp_get_thread_num();
    T* acc = parts.slice(t);
    if (parts.beta(t, 0) == 0.0) std::fill(acc, acc + size, T(0));
    direct::border(x + n * d.C * d.H * d.W, buf, g);
    direct::pad_rows(gy + n * d.O * d.L(), buf + xp_size, g);
    direct::grad_weight(buf + xp_size, buf, acc, g);
  });
  parts.sum(dw);
}

// x: (N, C, H, W), w: (O, K), bias: (O) or null -> y: (N, O, L)
template <class T>
void forward(const T* x, const T* w, const T* bias, T* y, const Dims& d, const ConvGeometry& p) {
  if (use_direct(d, p)) return direct_forward(x, w, bias, y, d, p);
  if (use_shifted(d, p)) return shifted_forward(x, w, bias, y, d, p);
  const int64_t K = d.K(), L = d.L();
  const bool pw = is_pointwise(d, p);
  const Batching bt = batching(d, d.Og, K);
  const bool direct = bt.B == 1;  // one image: the GEMM reads x (pointwise) and writes y in place
  const int64_t scratch = (direct && pw ? 0 : K * bt.B * L) + (direct ? 0 : d.Og * bt.B * L);
  for_items<T>(bt, scratch, [&](int64_t i, T* buf, bool inner) {
    auto [n0, nb, g] = item_of(i, d, bt);
    const int64_t ld = nb * L;
    const T* wg = w + g * d.Og * K;
    if (direct) {
      const T* xg = x + (n0 * d.C + g * d.Cg) * d.H * d.W;
      T* yg = y + (n0 * d.O + g * d.Og) * L;
      if (!pw) im2col(xg, buf, L, d, p, inner);
      if (bias)
        for (int64_t o = 0; o < d.Og; ++o) std::fill(yg + o * L, yg + (o + 1) * L, bias[g * d.Og + o]);
      cpu::blas_gemm(false, false, d.Og, L, K, 1.0, wg, K, pw ? xg : buf, L, bias ? 1.0 : 0.0, yg, L);
      return;
    }
    T* col = buf;
    T* out = buf + K * bt.B * L;
    for (int64_t b = 0; b < nb; ++b)
      im2col(x + ((n0 + b) * d.C + g * d.Cg) * d.H * d.W, col + b * L, ld, d, p, inner);
    cpu::blas_gemm(false, false, d.Og, ld, K, 1.0, wg, K, col, ld, 0.0, out, ld);
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t o = 0; o < d.Og; ++o) {
        const T* src = out + o * ld + b * L;
        T* dst = y + ((n0 + b) * d.O + g * d.Og + o) * L;
        if (bias) {
          const T v = bias[g * d.Og + o];
          for (int64_t l = 0; l < L; ++l) dst[l] = src[l] + v;
        } else {
          std::copy(src, src + L, dst);
        }
      }
  });
}

// gy: (N, O, L), w: (O, K) -> dx: (N, C, H, W), written whole.
template <class T>
void grad_input(const T* gy, const T* w, T* dx, const Dims& d, const ConvGeometry& p) {
  if (use_direct(d, p)) return direct_grad_input(gy, w, dx, d, p);
  if (use_winograd(d, p)) return winograd_grad_input(gy, w, dx, d, p);
  const int64_t K = d.K(), L = d.L(), plane = d.Cg * d.H * d.W;
  const bool pw = is_pointwise(d, p);
  const Batching bt = batching(d, K, d.Og);
  const bool direct = bt.B == 1;
  const int64_t scratch = (direct && pw ? 0 : K * bt.B * L) + (direct ? 0 : d.Og * bt.B * L);
  for_items<T>(bt, scratch, [&](int64_t i, T* buf, bool inner) {
    auto [n0, nb, g] = item_of(i, d, bt);
    const int64_t ld = nb * L;
    const T* wg = w + g * d.Og * K;
    if (direct && pw) {
      cpu::blas_gemm(true, false, K, L, d.Og, 1.0, wg, K, gy + (n0 * d.O + g * d.Og) * L, L, 0.0,
                     dx + (n0 * d.C + g * d.Cg) * d.H * d.W, L);
      return;
    }
    T* col = buf;
    const T* gsrc = gy + (n0 * d.O + g * d.Og) * L;
    if (!direct) {
      T* gbuf = buf + K * bt.B * L;
      gather(gy, gbuf, n0, nb, d.O, g * d.Og, d.Og, L);
      gsrc = gbuf;
    }
    cpu::blas_gemm(true, false, K, ld, d.Og, 1.0, wg, K, gsrc, ld, 0.0, col, ld);
    for (int64_t b = 0; b < nb; ++b) {
      T* dxg = dx + ((n0 + b) * d.C + g * d.Cg) * d.H * d.W;
      std::fill(dxg, dxg + plane, T(0));
      col2im(col + b * L, ld, dxg, d, p, inner);
    }
  });
}

// gy: (N, O, L), x: (N, C, H, W) -> dw: (O, K)
template <class T>
void grad_weight(const T* gy, const T* x, T* dw, const Dims& d, const ConvGeometry& p) {
  if (use_direct(d, p)) return direct_grad_weight(gy, x, dw, d, p);
  if (use_winograd(d, p)) return winograd_grad_weight(gy, x, dw, d, p);
  const int64_t K = d.K(), L = d.L(), size = d.O * K;
  const bool pw = is_pointwise(d, p);
  const Batching bt = batching(d, d.Og, K);
  const bool direct = bt.B == 1;
  const int64_t scratch = (direct && pw ? 0 : K * bt.B * L) + (direct ? 0 : d.Og * bt.B * L);
  auto accumulate = [&](int64_t i, T* buf, bool inner, T* acc, double beta) {
    auto [n0, nb, g] = item_of(i, d, bt);
    const int64_t ld = nb * L;
    const T* gsrc = gy + (n0 * d.O + g * d.Og) * L;
    const T* xg = x + (n0 * d.C + g * d.Cg) * d.H * d.W;
    const T* col = xg;
    if (direct) {
      if (!pw) {
        im2col(xg, buf, L, d, p, inner);
        col = buf;
      }
    } else {
      for (int64_t b = 0; b < nb; ++b)
        im2col(x + ((n0 + b) * d.C + g * d.Cg) * d.H * d.W, buf + b * L, ld, d, p, inner);
      col = buf;
      T* gbuf = buf + K * bt.B * L;
      gather(gy, gbuf, n0, nb, d.O, g * d.Og, d.Og, L);
      gsrc = gbuf;
    }
    cpu::blas_gemm(false, true, d.Og, K, ld, 1.0, gsrc, ld, col, ld, beta, acc + g * d.Og * K, K);
  };
  if (!bt.share) {
    std::fill(dw, dw + size, T(0));
    T* buf = thread_scratch<T>(scratch);
    for (int64_t i = 0; i < bt.items; ++i) accumulate(i, buf, true, dw, 1.0);
    return;
  }
  // Images of one group all add into the same slice of dw.
  const int nt = omp_get_max_threads();
  Partials<T> parts(nt, size, d.G);
#pragma omp parallel num_threads(nt)
  {
    T* buf = thread_scratch<T>(scratch);
    const int t = omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < bt.items; ++i) accumulate(i, buf, false, parts.slice(t), parts.beta(t, i % d.G));
  }
  parts.sum(dw);
}

// gy: (N, O, L) -> db: (O), summed in double.
template <class T>
void grad_bias(const T* gy, T* db, int64_t N, int64_t O, int64_t L) {
#pragma omp parallel for schedule(static) if (N * O * L > 32768)
  for (int64_t o = 0; o < O; ++o) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* r = gy + (n * O + o) * L;
      for (int64_t l = 0; l < L; ++l) s += r[l];
    }
    db[o] = static_cast<T>(s);
  }
}

Tensor dense(const Tensor& t) {
  if (!t.device().is_cpu()) fail("conv2d: no ", t.device().str(), " kernel yet");
  return t.is_contiguous() ? t : copy_to(t, t.device(), t.dtype());
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, const ConvGeometry& p) {
  SIAM_ON_CUDA(x_in, gpu::conv2d(x_in, w_in, bias_in, p));
  Tensor x = dense(x_in), w = dense(w_in), bias = bias_in.defined() ? dense(bias_in) : Tensor();
  Dims d = dims_of(x.shape(), w.shape(), p);
  Tensor y = empty({d.N, d.O, d.Ho, d.Wo}, {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    forward(x.data<scalar_t>(), w.data<scalar_t>(), bias.defined() ? bias.data<scalar_t>() : nullptr,
            y.data<scalar_t>(), d, p);
  });
  return y;
}

Tensor conv2d_grad_input(const Tensor& gy_in, const Tensor& w_in, const Shape& x_shape, const ConvGeometry& p) {
  SIAM_ON_CUDA(gy_in, gpu::conv2d_grad_input(gy_in, w_in, x_shape, p));
  Tensor gy = dense(gy_in), w = dense(w_in);
  Dims d = dims_of(x_shape, w.shape(), p);
  Tensor dx = empty(x_shape, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "conv2d backward",
                      [&] { grad_input(gy.data<scalar_t>(), w.data<scalar_t>(), dx.data<scalar_t>(), d, p); });
  return dx;
}

Tensor conv2d_grad_weight(const Tensor& gy_in, const Tensor& x_in, const Shape& w_shape, const ConvGeometry& p) {
  SIAM_ON_CUDA(gy_in, gpu::conv2d_grad_weight(gy_in, x_in, w_shape, p));
  Tensor gy = dense(gy_in), x = dense(x_in);
  Dims d = dims_of(x.shape(), w_shape, p);
  Tensor dw = empty(w_shape, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "conv2d backward",
                      [&] { grad_weight(gy.data<scalar_t>(), x.data<scalar_t>(), dw.data<scalar_t>(), d, p); });
  return dw;
}

Tensor conv2d_grad_bias(const Tensor& gy_in) {
  SIAM_ON_CUDA(gy_in, gpu::conv2d_grad_bias(gy_in));
  Tensor gy = dense(gy_in);
  Tensor db = empty({gy.size(1)}, {gy.dtype(), gy.device()});
  SIAM_DISPATCH_FLOAT(gy.dtype(), "conv2d backward", [&] {
    grad_bias(gy.data<scalar_t>(), db.data<scalar_t>(), gy.size(0), gy.size(1), gy.size(2) * gy.size(3));
  });
  return db;
}

}  // namespace siam::kernels
