#pragma once
// Winograd F(2x2, 3x3) transforms for 3x3 convolutions with stride 1 and dilation 1 (Lavin &
// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Each 2x2 output tile is
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A
// with g the 3x3 kernel and d the 4x4 input patch under the tile, so a convolution becomes 16
// independent GEMMs (one per position xi of the 4x4 transformed tile) over channels:
//   M[xi] (T, O) = V[xi] (T, C) @ U[xi] (C, O),  U = G g G^T,  V = B^T d B,  T = tiles.
// That is 16 multiply-adds per tile and channel pair where direct convolution needs 36. The
// weight gradient is the adjoint of the same algorithm (Y is linear in g):
//   dU[xi] (O, C) = dM[xi]^T (O, T) @ V[xi] (T, C),  dM = A dY A^T,  dg = G^T dU G.
// The input gradient is the forward algorithm applied to the output gradient with the kernel
// rotated by 180 degrees and its channel axes swapped, padding 2 - pad. siam uses the two
// backward passes (kernels/cpu/conv.cpp says why the forward pass does not).
//
// The transforms work channels-last: images are first copied to (rows, cols, channels), so
// that every transform is a handful of unit-stride vector operations along the channels (a
// 4x4 patch is 16 channel vectors), whatever the plane's size. Layouts: V is (16, ld, C), M and
// dM are (16, ld, O), where ld counts the tiles of a batch of images (image b owns rows
// [b tiles, (b + 1) tiles), tiles in row-major order); U is (16, Cin, Cout) and dU (16, O, C).
// Every function writes (=) its outputs.
#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace siam::kernels::cpu::winograd {

// One convolution seen by the transforms: input planes (Cin, H, W) padded by (ph, pw) into
// output planes (Cout, Ho, Wo), Ho = H + 2 ph - 2, covered by th x tw tiles of 2x2.
struct Plane {
  int64_t Cin, H, W, Cout, ph, pw, Ho, Wo, th, tw;
  int64_t tiles() const { return th * tw; }
  // The channels-last copy of an input image: every tile's 4x4 patch inside it.
  int64_t hp() const { return 2 * th + 2; }
  int64_t wp() const { return 2 * tw + 2; }
};

inline Plane plane(int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t ph, int64_t pw) {
  Plane p{Cin, H, W, Cout, ph, pw, H + 2 * ph - 2, W + 2 * pw - 2, 0, 0};
  p.th = (p.Ho + 1) / 2;
  p.tw = (p.Wo + 1) / 2;
  return p;
}

// dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols, in blocks that stay in L1.
template <class T>
void transpose(const T* src, int64_t lds, T* dst, int64_t ldd, int64_t rows, int64_t cols) {
  constexpr int64_t kB = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kB)
    for (int64_t j0 = 0; j0 < cols; j0 += kB) {
      const int64_t i1 = std::min(rows, i0 + kB), j1 = std::min(cols, j0 + kB);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) dst[j * ldd + i] = src[i * lds + j];
    }
}

#if defined(__AVX2__)
// f32: 8x8 blocks transposed in registers (unpack, shuffle, lane permute), the edges as above.
inline void transpose(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t i = 0; i < r8; i += 8)
    for (int64_t j = 0; j < c8; j += 8) {
      const float* s = src + i * lds + j;
      __m256 r[8], t[8], u[8];
      for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(s + k * lds);
      for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
      }
      for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      float* d = dst + j * ldd + i;
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(d + k * ldd, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(d + (k + 4) * ldd, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
      }
    }
  if (c8 < cols) transpose<float>(src + c8, lds, dst + c8 * ldd, ldd, r8, cols - c8);
  if (r8 < rows) transpose<float>(src + r8 * lds, lds, dst + r8, ldd, rows - r8, cols);
}
#endif

// x: nb images (C, H, W), image b at x + b * img -> P: nb images (rows, cols, C) of size
// (rows, cols) = (hp, wp) or more, input pixel (h, w) at (h + top, w + left), zeros elsewhere.
template <class T>
void to_channels_last(const T* x, int64_t img, int64_t nb, int64_t C, int64_t H, int64_t W, T* P, int64_t rows,
                      int64_t cols, int64_t top, int64_t left, bool parallel) {
  const int64_t h_end = std::min(H, rows - top), w_end = std::min(W, cols - left);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t br = 0; br < nb * rows; ++br) {
    const int64_t b = br / rows, r = br % rows, h = r - top;
    T* out = P + br * cols * C;
    if (h < 0 || h >= h_end) {
      std::fill(out, out + cols * C, T(0));
      continue;
    }
    std::fill(out, out + left * C, T(0));
    transpose(x + b * img + h * W, H * W, out + left * C, C, C, w_end);
    std::fill(out + (left + w_end) * C, out + cols * C, T(0));
  }
}

// w: (O, C, 3, 3) -> U: (16, O, C), G k G^T of the input gradient's kernel k[o][c], w[o][c]
// rotated by 180 degrees: the input gradient is a convolution from O channels to C. Computed in
// double, rounded once.
template <class T>
void rotated_weight_transform(const T* w, T* U, int64_t O, int64_t C) {
  const int64_t plane = O * C;
#pragma omp parallel for schedule(static) if (plane > 4096)
  for (int64_t at = 0; at < plane; ++at) {
    const T* g = w + at * 9;
    double k[3][3];
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) k[i][j] = g[(2 - i) * 3 + (2 - j)];
    double t[4][3];  // G k
    for (int j = 0; j < 3; ++j) {
      t[0][j] = k[0][j];
      t[1][j] = 0.5 * (k[0][j] + k[1][j] + k[2][j]);
      t[2][j] = 0.5 * (k[0][j] - k[1][j] + k[2][j]);
      t[3][j] = k[2][j];
    }
    for (int i = 0; i < 4; ++i) {  // (G k) G^T
      const double u[4] = {t[i][0], 0.5 * (t[i][0] + t[i][1] + t[i][2]), 0.5 * (t[i][0] - t[i][1] + t[i][2]),
                           t[i][2]};
      for (int j = 0; j < 4; ++j) U[(i * 4 + j) * plane + at] = static_cast<T>(u[j]);
    }
  }
}

// dU: (16, O, C) -> dw: (O, C, 3, 3) (=), dw = G^T dU G, in double, rounded once.
template <class T>
void weight_grad_transform(const T* dU, T* dw, int64_t O, int64_t C) {
  const int64_t plane = O * C;
#pragma omp parallel for schedule(static) if (plane > 4096)
  for (int64_t oc = 0; oc < plane; ++oc) {
    double u[4][4];
    for (int xi = 0; xi < 16; ++xi) u[xi / 4][xi % 4] = dU[xi * plane + oc];
    double t[3][4];  // G^T dU
    for (int j = 0; j < 4; ++j) {
      t[0][j] = u[0][j] + 0.5 * (u[1][j] + u[2][j]);
      t[1][j] = 0.5 * (u[1][j] - u[2][j]);
      t[2][j] = 0.5 * (u[1][j] + u[2][j]) + u[3][j];
    }
    T* g = dw + oc * 9;
    for (int i = 0; i < 3; ++i) {  // (G^T dU) G
      g[i * 3 + 0] = static_cast<T>(t[i][0] + 0.5 * (t[i][1] + t[i][2]));
      g[i * 3 + 1] = static_cast<T>(0.5 * (t[i][1] - t[i][2]));
      g[i * 3 + 2] = static_cast<T>(0.5 * (t[i][1] + t[i][2]) + t[i][3]);
    }
  }
}

// P: nb channels-last images (hp, wp, C) -> V: (16, ld, C), V = B^T d B per tile.
template <class T>
void input_transform(const T* P, int64_t nb, T* V, int64_t ld, const Plane& p, bool parallel) {
  const int64_t C = p.Cin, tw = p.tw, wp = p.wp(), img = p.hp() * wp * C, vplane = ld * C;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bi = 0; bi < nb * p.th; ++bi) {
    const int64_t b = bi / p.th, i = bi % p.th;
    for (int64_t k = 0; k < tw; ++k) {
      // Patch row r, column j: the channel vector at d + (r wp + j) C.
      const T* d = P + b * img + (2 * i * wp + 2 * k) * C;
      T* v = V + ((b * p.th + i) * tw + k) * C;
      const T* __restrict r0 = d;
      const T* __restrict r1 = d + wp * C;
      const T* __restrict r2 = d + 2 * wp * C;
      const T* __restrict r3 = d + 3 * wp * C;
      T* __restrict out = v;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T t[4][4];  // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3
        for (int j = 0; j < 4; ++j) {
          const T a0 = r0[j * C + c], a1 = r1[j * C + c], a2 = r2[j * C + c], a3 = r3[j * C + c];
          t[0][j] = a0 - a2;
          t[1][j] = a1 + a2;
          t[2][j] = a2 - a1;
          t[3][j] = a1 - a3;
        }
        for (int r = 0; r < 4; ++r) {  // (.) B: the same on columns
          out[(r * 4 + 0) * vplane + c] = t[r][0] - t[r][2];
          out[(r * 4 + 1) * vplane + c] = t[r][1] + t[r][2];
          out[(r * 4 + 2) * vplane + c] = t[r][2] - t[r][1];
          out[(r * 4 + 3) * vplane + c] = t[r][1] - t[r][3];
        }
      }
    }
  }
}

// M: (16, ld, Cout) -> Q: nb channels-last images (2 th, 2 tw, Cout) (=), Y = A^T M A per tile.
template <class T>
void output_transform(const T* M, int64_t ld, int64_t nb, T* Q, const Plane& p, bool parallel) {
  const int64_t C = p.Cout, tw = p.tw, wq = 2 * tw, img = 2 * p.th * wq * C, mplane = ld * C;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bi = 0; bi < nb * p.th; ++bi) {
    const int64_t b = bi / p.th, i = bi % p.th;
    for (int64_t k = 0; k < tw; ++k) {
      const T* __restrict m = M + ((b * p.th + i) * tw + k) * C;
      T* q = Q + b * img + (2 * i * wq + 2 * k) * C;
      T* __restrict y00 = q;
      T* __restrict y01 = q + C;
      T* __restrict y10 = q + wq * C;
      T* __restrict y11 = q + (wq + 1) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        T s0[4], s1[4];  // A^T M: rows 0 + 1 + 2 and 1 - 2 - 3
        for (int j = 0; j < 4; ++j) {
          const T m0 = m[(0 + j) * mplane + c], m1 = m[(4 + j) * mplane + c];
          const T m2 = m[(8 + j) * mplane + c], m3 = m[(12 + j) * mplane + c];
          s0[j] = m0 + m1 + m2;
          s1[j] = m1 - m2 - m3;
        }
        y00[c] = s0[0] + s0[1] + s0[2];  // (.) A: columns 0 + 1 + 2 and 1 - 2 - 3
        y01[c] = s0[1] - s0[2] - s0[3];
        y10[c] = s1[0] + s1[1] + s1[2];
        y11[c] = s1[1] - s1[2] - s1[3];
      }
    }
  }
}

// G: nb channels-last output gradients (2 th, 2 tw, Cout), zero past the plane's edge ->
// dM: (16, ld, Cout), dM = A dY A^T per tile.
template <class T>
void grad_output_transform(const T* G, int64_t nb, T* dM, int64_t ld, const Plane& p, bool parallel) {
  const int64_t C = p.Cout, tw = p.tw, wq = 2 * tw, img = 2 * p.th * wq * C, mplane = ld * C;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bi = 0; bi < nb * p.th; ++bi) {
    const int64_t b = bi / p.th, i = bi % p.th;
    for (int64_t k = 0; k < tw; ++k) {
      const T* g = G + b * img + (2 * i * wq + 2 * k) * C;
      const T* __restrict g00 = g;
      const T* __restrict g01 = g + C;
      const T* __restrict g10 = g + wq * C;
      const T* __restrict g11 = g + (wq + 1) * C;
      T* __restrict m = dM + ((b * p.th + i) * tw + k) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        // Rows of A dY: (a0, b0), (a0 + a1, b0 + b1), (a0 - a1, b0 - b1), (-a1, -b1); each row
        // (a, b) then becomes a, a + b, a - b, -b.
        const T a0 = g00[c], b0 = g01[c], a1 = g10[c], b1 = g11[c];
        const T r[4][2] = {{a0, b0}, {a0 + a1, b0 + b1}, {a0 - a1, b0 - b1}, {-a1, -b1}};
        for (int j = 0; j < 4; ++j) {
          m[(j * 4 + 0) * mplane + c] = r[j][0];
          m[(j * 4 + 1) * mplane + c] = r[j][0] + r[j][1];
          m[(j * 4 + 2) * mplane + c] = r[j][0] - r[j][1];
          m[(j * 4 + 3) * mplane + c] = -r[j][1];
        }
      }
    }
  }
}

// Q: nb channels-last images (rows, cols, C) -> y: nb images (C, H, W) (=), image b at
// y + b * img, from the top-left H x W corner of each.
template <class T>
void from_channels_last(const T* Q, int64_t rows, int64_t cols, int64_t nb, int64_t C, int64_t H, int64_t W, T* y,
                        int64_t img, bool parallel) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bh = 0; bh < nb * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    transpose(Q + (b * rows + h) * cols * C, C, y + b * img + h * W, H * W, W, C);
  }
}

}  // namespace siam::kernels::cpu::winograd
