#pragma once
// Direct 3x3 convolution, stride 1, for layers with few channels (kernels/cpu/conv.cpp's
// "direct" path: the 8-channel first stage of a width-8 ResNet). There a GEMM is a skinny
// (8 x 72) @ (72 x positions) product that runs far below the BLAS rate, behind an im2col copy
// nine times the input; here each output row is built in registers from the input rows it
// reads, with no copy but a zero border.
//
// One image at a time, every function on raw row-major planes:
//  - border() copies an image (C, H, W) into a zero-bordered copy (C, Hq, Wq), the input at
//    row ph, column pw; Wq leaves room for whole vectors past the last output column;
//  - forward() adds nothing: it writes y (O, Ho, Wo) = w * x + bias from the bordered copy;
//  - grad_weight() adds (+=) one image's weight gradient into dw (O, C, 3, 3), from the
//    bordered input and the output gradient copied to rows Wr wide, zero past Wo.
// The input gradient is forward() on the output gradient with the kernel rotated by 180
// degrees and its channel axes swapped (rotated_weight()), padding 2 - pad.
//
// Vectors are GCC/Clang vector extensions of 32 bytes (AVX2 registers under x86-64-v3):
// 8 floats or 4 doubles. Output columns go in chunks of two vectors, a block of output
// channels at a time, the accumulators held in registers over the C x 9 taps.
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace siam::kernels::cpu::direct {

template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
constexpr int kLanes = 32 / sizeof(T);

template <class T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline Vec<T> splat(T s) {
  return Vec<T>{} + s;
}

// One convolution: input (C, H, W), padding (ph, pw) <= 2, output (O, Ho, Wo).
struct Geometry {
  int64_t C, H, W, O, ph, pw, Ho, Wo;
  // Output rows rounded up to whole chunks (8 values: one float chunk half, two double vectors).
  int64_t Wr() const { return (Wo + 7) / 8 * 8; }
  // The bordered copy: every tap of every rounded output column lies inside it.
  int64_t Hq() const { return Ho + 2; }
  int64_t Wq() const { return Wr() + 2; }
  int64_t plane() const { return Hq() * Wq(); }
};

inline Geometry geometry(int64_t C, int64_t H, int64_t W, int64_t O, int64_t ph, int64_t pw) {
  return {C, H, W, O, ph, pw, H + 2 * ph - 2, W + 2 * pw - 2};
}

// x: (C, H, W) -> xp: (C, Hq, Wq) (=)
template <class T>
void border(const T* x, T* xp, const Geometry& g) {
  const int64_t Wq = g.Wq(), plane = g.plane();
  std::fill(xp, xp + g.C * plane, T(0));
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t h = 0; h < g.H; ++h)
      std::copy(x + (c * g.H + h) * g.W, x + (c * g.H + h + 1) * g.W, xp + c * plane + (g.ph + h) * Wq + g.pw);
}

// Output channels [o0, o0 + OB), columns [ow0, ow0 + NV * lanes) of output row oh.
template <class T, int OB, int NV>
inline void forward_tile(const T* xp, const T* w, const T* bias, T* y, int64_t o0, int64_t oh, int64_t ow0,
                         const Geometry& g) {
  constexpr int L = kLanes<T>;
  const int64_t Wq = g.Wq(), plane = g.plane(), wstride = g.C * 9;
  Vec<T> acc[OB][NV];
  for (int b = 0; b < OB; ++b)
    for (int v = 0; v < NV; ++v) acc[b][v] = splat<T>(bias ? bias[o0 + b] : T(0));
  for (int64_t c = 0; c < g.C; ++c) {
    const T* wc = w + o0 * wstride + c * 9;
    for (int ki = 0; ki < 3; ++ki) {
      const T* row = xp + c * plane + (oh + ki) * Wq + ow0;
      for (int kj = 0; kj < 3; ++kj) {
        Vec<T> xv[NV];
        for (int v = 0; v < NV; ++v) xv[v] = load(row + kj + v * L);
        for (int b = 0; b < OB; ++b) {
          const Vec<T> s = splat<T>(wc[b * wstride + ki * 3 + kj]);
          for (int v = 0; v < NV; ++v) acc[b][v] += s * xv[v];
        }
      }
    }
  }
  const int64_t n = std::min<int64_t>(NV * L, g.Wo - ow0);
  for (int b = 0; b < OB; ++b) {
    T out[NV * L];
    std::memcpy(out, acc[b], sizeof out);
    std::copy(out, out + n, y + ((o0 + b) * g.Ho + oh) * g.Wo + ow0);
  }
}

template <class T, int OB>
void forward_rows(const T* xp, const T* w, const T* bias, T* y, int64_t o0, const Geometry& g) {
  constexpr int64_t chunk = 2 * kLanes<T>;
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    int64_t ow0 = 0;
    for (; ow0 + chunk <= g.Wr(); ow0 += chunk) forward_tile<T, OB, 2>(xp, w, bias, y, o0, oh, ow0, g);
    if (ow0 < g.Wo) forward_tile<T, OB, 1>(xp, w, bias, y, o0, oh, ow0, g);
  }
}

// xp: (C, Hq, Wq) bordered, w: (O, C, 3, 3), bias: (O) or null -> y: (O, Ho, Wo) (=)
template <class T>
void forward(const T* xp, const T* w, const T* bias, T* y, const Geometry& g) {
  int64_t o0 = 0;
  for (; o0 + 4 <= g.O; o0 += 4) forward_rows<T, 4>(xp, w, bias, y, o0, g);
  for (; o0 < g.O; ++o0) forward_rows<T, 1>(xp, w, bias, y, o0, g);
}

// w: (O, C, 3, 3) -> wr: (C, O, 3, 3), each kernel rotated by 180 degrees (=)
template <class T>
void rotated_weight(const T* w, T* wr, int64_t O, int64_t C) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int t = 0; t < 9; ++t) wr[(c * O + o) * 9 + 8 - t] = w[(o * C + c) * 9 + t];
}

// gy: (O, Ho, Wo) -> gyp: (O, Ho, Wr), zero past Wo (=)
template <class T>
void pad_rows(const T* gy, T* gyp, const Geometry& g) {
  const int64_t Wr = g.Wr();
  for (int64_t r = 0; r < g.O * g.Ho; ++r) {
    std::copy(gy + r * g.Wo, gy + (r + 1) * g.Wo, gyp + r * Wr);
    std::fill(gyp + r * Wr + g.Wo, gyp + (r + 1) * Wr, T(0));
  }
}

// Output channels [o0, o0 + OB) of dw.
template <class T, int OB>
void grad_weight_block(const T* gyp, const T* xp, T* dw, int64_t o0, const Geometry& g) {
  constexpr int L = kLanes<T>;
  const int64_t Wq = g.Wq(), Wr = g.Wr(), plane = g.plane();
  for (int64_t c = 0; c < g.C; ++c)
    for (int ki = 0; ki < 3; ++ki) {
      Vec<T> acc[OB][3] = {};
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        const T* row = xp + c * plane + (oh + ki) * Wq;
        for (int64_t ow0 = 0; ow0 < Wr; ow0 += L) {
          Vec<T> gv[OB];
          for (int b = 0; b < OB; ++b) gv[b] = load(gyp + ((o0 + b) * g.Ho + oh) * Wr + ow0);
          for (int kj = 0; kj < 3; ++kj) {
            const Vec<T> xv = load(row + ow0 + kj);
            for (int b = 0; b < OB; ++b) acc[b][kj] += gv[b] * xv;
          }
        }
      }
      for (int b = 0; b < OB; ++b)
        for (int kj = 0; kj < 3; ++kj) {
          T s = 0;
          for (int l = 0; l < L; ++l) s += acc[b][kj][l];
          dw[((o0 + b) * g.C + c) * 9 + ki * 3 + kj] += s;
        }
    }
}

// gyp: (O, Ho, Wr) zero past Wo, xp: (C, Hq, Wq) bordered -> dw: (O, C, 3, 3) (+=)
template <class T>
void grad_weight(const T* gyp, const T* xp, T* dw, const Geometry& g) {
  int64_t o0 = 0;
  for (; o0 + 2 <= g.O; o0 += 2) grad_weight_block<T, 2>(gyp, xp, dw, o0, g);
  for (; o0 < g.O; ++o0) grad_weight_block<T, 1>(gyp, xp, dw, o0, g);
}

}  // namespace siam::kernels::cpu::direct
