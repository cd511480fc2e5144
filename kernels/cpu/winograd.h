#pragma once
// Winograd F(2x2, 3x3) transforms for 3x3 convolutions with stride 1 and dilation 1 (Lavin &
// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Each 2x2 output tile is
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A
// with g the 3x3 kernel and d the 4x4 input patch under the tile, so a convolution becomes 16
// independent GEMMs (one per position xi of the 4x4 transformed tile) over channels:
//   M[xi] (O, T) = U[xi] (O, C) @ V[xi] (C, T),  U = G g G^T,  V = B^T d B,  T = tiles.
// That is 16 multiply-adds per tile and channel pair where direct convolution needs 36. The
// weight gradient is the adjoint of the same algorithm (Y is linear in g):
//   dU[xi] (O, C) = dM[xi] (O, T) @ V[xi]^T,  dM = A dY A^T,  dg = G^T dU G.
// The input gradient is the forward algorithm applied to the output gradient with the kernel
// rotated by 180 degrees and its channel axes swapped, padding 2 - pad. siam uses the two
// backward passes (kernels/cpu/conv.cpp says why the forward pass does not).
//
// Layouts: U and dU are (16, Cout, Cin); V is (16, C, ld) and M, dM are (16, O, ld), where ld
// is the number of tile columns of a batch of images (image b owns columns [b tiles, (b + 1)
// tiles), tiles in row-major order). The transforms write (=) their outputs.
#include <algorithm>
#include <cstdint>
#include <vector>

namespace siam::kernels::cpu::winograd {

// One convolution seen by the transforms: input planes (Cin, H, W) padded by (ph, pw) into
// output planes (Cout, Ho, Wo), Ho = H + 2 ph - 2, covered by th x tw tiles of 2x2.
struct Plane {
  int64_t Cin, H, W, Cout, ph, pw, Ho, Wo, th, tw;
  int64_t tiles() const { return th * tw; }
};

inline Plane plane(int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t ph, int64_t pw) {
  Plane p{Cin, H, W, Cout, ph, pw, H + 2 * ph - 2, W + 2 * pw - 2, 0, 0};
  p.th = (p.Ho + 1) / 2;
  p.tw = (p.Wo + 1) / 2;
  return p;
}

// w: (O, C, 3, 3) -> U: (16, C, O), G k G^T of the input gradient's kernel k[c][o], w[o][c]
// rotated by 180 degrees. Computed in double, rounded once.
template <class T>
void rotated_weight_transform(const T* w, T* U, int64_t O, int64_t C) {
  const int64_t plane = O * C;
  // In the order of U's planes, so that the 16 streams of writes run forward.
#pragma omp parallel for schedule(static) if (plane > 4096)
  for (int64_t at = 0; at < plane; ++at) {
    const int64_t o = at % O, c = at / O;
    const T* g = w + (o * C + c) * 9;
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

// V = B^T d B for the tiles k in [lo, hi) of one tile row: k's 4x4 patch starts at column
// 2 k + c0 of the rows x0..x3 (the tile row's four input rows), and position xi of tile k goes
// to v[xi * vplane + k]. One pass with unit-stride writes, so it vectorises.
template <class T>
void input_tiles_inside(const T* __restrict x0, const T* __restrict x1, const T* __restrict x2,
                        const T* __restrict x3, int64_t c0, int64_t lo, int64_t hi, T* __restrict v, int64_t vplane) {
#pragma omp simd
  for (int64_t k = lo; k < hi; ++k) {
    const int64_t q = 2 * k + c0;
    T t[4][4];
    for (int j = 0; j < 4; ++j) {
      t[0][j] = x0[q + j] - x2[q + j];
      t[1][j] = x1[q + j] + x2[q + j];
      t[2][j] = x2[q + j] - x1[q + j];
      t[3][j] = x1[q + j] - x3[q + j];
    }
    for (int r = 0; r < 4; ++r) {
      v[(r * 4 + 0) * vplane + k] = t[r][0] - t[r][2];
      v[(r * 4 + 1) * vplane + k] = t[r][1] + t[r][2];
      v[(r * 4 + 2) * vplane + k] = t[r][2] - t[r][1];
      v[(r * 4 + 3) * vplane + k] = t[r][1] - t[r][3];
    }
  }
}

// x: nb images (Cin, H, W), image b at x + b * img -> V: (16, Cin, ld), V = B^T d B per tile.
// Each plane is first copied into a zero-bordered one that every tile's patch lies inside
// (padding, and the far side of the last tiles on an odd plane), so that all tiles take the
// same one-pass path.
template <class T>
void input_transform(const T* x, int64_t img, int64_t nb, T* V, int64_t ld, const Plane& p, bool parallel) {
  const int64_t tw = p.tw, tiles = p.tiles(), vplane = p.Cin * ld;
  const int64_t hp = 2 * p.th + 2, wp = 2 * tw + 2;  // the bordered plane
  // Input columns [0, W) land at [pw, pw + W) of a bordered row, clipped to it.
  const int64_t cols = std::max<int64_t>(0, std::min(p.W, wp - p.pw));
#pragma omp parallel if (parallel)
  {
    std::vector<T> padded(hp * wp);
#pragma omp for schedule(static)
    for (int64_t bc = 0; bc < nb * p.Cin; ++bc) {
      const int64_t b = bc / p.Cin, c = bc % p.Cin;
      const T* xp = x + b * img + c * p.H * p.W;
      for (int64_t r = 0; r < hp; ++r) {
        T* __restrict pr = padded.data() + r * wp;
        const int64_t ih = r - p.ph;
        if (ih < 0 || ih >= p.H) {
          for (int64_t q = 0; q < wp; ++q) pr[q] = T(0);
          continue;
        }
        const T* __restrict xr = xp + ih * p.W;
        for (int64_t q = 0; q < p.pw; ++q) pr[q] = T(0);
        for (int64_t q = 0; q < cols; ++q) pr[p.pw + q] = xr[q];
        for (int64_t q = p.pw + cols; q < wp; ++q) pr[q] = T(0);
      }
      T* v = V + c * ld + b * tiles;
      for (int64_t i = 0; i < p.th; ++i) {
        const T* pr = padded.data() + 2 * i * wp;
        input_tiles_inside(pr, pr + wp, pr + 2 * wp, pr + 3 * wp, 0, 0, tw, v + i * tw, vplane);
      }
    }
  }
}

// M: (16, Cout, ld) -> y: nb images (Cout, Ho, Wo) (=), image b at y + b * img, Y = A^T M A
// per tile. Whole tiles are written in one pass; the last tile column and row, when the plane
// is odd, keep only their part inside.
template <class T>
void output_transform(const T* M, int64_t ld, int64_t nb, T* y, int64_t img, const Plane& p, bool parallel) {
  const int64_t tw = p.tw, tiles = p.tiles(), mplane = p.Cout * ld;
  const int64_t full_w = p.Wo / 2;  // tiles whose two columns are both inside
#pragma omp parallel if (parallel)
  {
    // Where the lower half of the last tile row goes when the plane has no row for it: the
    // loop stays one piece, and the two rows it writes never alias.
    std::vector<T> spare(2 * tw);
#pragma omp for schedule(static)
    for (int64_t bo = 0; bo < nb * p.Cout; ++bo) {
      const int64_t b = bo / p.Cout, o = bo % p.Cout;
      const T* m = M + o * ld + b * tiles;
      T* yp = y + b * img + o * p.Ho * p.Wo;
      for (int64_t i = 0; i < p.th; ++i) {
        const T* __restrict mi = m + i * tw;
        T* __restrict y0 = yp + 2 * i * p.Wo;
        T* __restrict y1 = 2 * i + 1 < p.Ho ? y0 + p.Wo : spare.data();
        auto tile = [&](int64_t k, T (&out)[4]) {
          T s0[4], s1[4];  // A^T M: rows 0 + 1 + 2 and 1 - 2 - 3
          for (int j = 0; j < 4; ++j) {
            const T m0 = mi[(0 + j) * mplane + k], m1 = mi[(4 + j) * mplane + k];
            const T m2 = mi[(8 + j) * mplane + k], m3 = mi[(12 + j) * mplane + k];
            s0[j] = m0 + m1 + m2;
            s1[j] = m1 - m2 - m3;
          }
          out[0] = s0[0] + s0[1] + s0[2];  // (.) A: columns 0 + 1 + 2 and 1 - 2 - 3
          out[1] = s0[1] - s0[2] - s0[3];
          out[2] = s1[0] + s1[1] + s1[2];
          out[3] = s1[1] - s1[2] - s1[3];
        };
#pragma omp simd
        for (int64_t k = 0; k < full_w; ++k) {
          T out[4];
          tile(k, out);
          y1[2 * k] = out[2];
          y1[2 * k + 1] = out[3];
          y0[2 * k] = out[0];
          y0[2 * k + 1] = out[1];
        }
        if (full_w < tw) {
          T out[4];
          tile(full_w, out);
          y1[2 * full_w] = out[2];
          y0[2 * full_w] = out[0];
        }
      }
    }
  }
}

// gy: nb images (Cout, Ho, Wo), image b at gy + b * img -> dM: (16, Cout, ld), dM = A dY A^T per
// tile, dY zero past the plane's edge.
template <class T>
void grad_output_transform(const T* gy, int64_t img, int64_t nb, T* dM, int64_t ld, const Plane& p,
                           bool parallel) {
  const int64_t tw = p.tw, tiles = p.tiles(), mplane = p.Cout * ld;
  const int64_t full_w = p.Wo / 2;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bo = 0; bo < nb * p.Cout; ++bo) {
    const int64_t b = bo / p.Cout, o = bo % p.Cout;
    const T* gp = gy + b * img + o * p.Ho * p.Wo;
    T* m = dM + o * ld + b * tiles;
    for (int64_t i = 0; i < p.th; ++i) {
      const T* __restrict g0 = gp + 2 * i * p.Wo;
      const T* __restrict g1 = g0 + p.Wo;
      const bool two_rows = 2 * i + 1 < p.Ho;
      T* __restrict mi = m + i * tw;
      // A dY A^T for the tile with gradient rows (a0, b0), (a1, b1): rows of A dY are
      // (a0, b0), (a0 + a1, b0 + b1), (a0 - a1, b0 - b1), (-a1, -b1); each row (a, b) then
      // becomes a, a + b, a - b, -b.
      auto tile = [&](int64_t k, T a0, T b0, T a1, T b1) {
        const T r[4][2] = {{a0, b0}, {a0 + a1, b0 + b1}, {a0 - a1, b0 - b1}, {-a1, -b1}};
        for (int j = 0; j < 4; ++j) {
          mi[(j * 4 + 0) * mplane + k] = r[j][0];
          mi[(j * 4 + 1) * mplane + k] = r[j][0] + r[j][1];
          mi[(j * 4 + 2) * mplane + k] = r[j][0] - r[j][1];
          mi[(j * 4 + 3) * mplane + k] = -r[j][1];
        }
      };
      if (two_rows) {
#pragma omp simd
        for (int64_t k = 0; k < full_w; ++k) tile(k, g0[2 * k], g0[2 * k + 1], g1[2 * k], g1[2 * k + 1]);
      } else {
#pragma omp simd
        for (int64_t k = 0; k < full_w; ++k) tile(k, g0[2 * k], g0[2 * k + 1], T(0), T(0));
      }
      if (full_w < tw) tile(full_w, g0[2 * full_w], T(0), two_rows ? g1[2 * full_w] : T(0), T(0));
    }
  }
}

}  // namespace siam::kernels::cpu::winograd
