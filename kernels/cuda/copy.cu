// Device copies and fills for the tensor layer (kernels/cuda/copy.h). Everything is queued on
// siam's stream with no host synchronisation.
//
// Conversions are tensor.cpp's: value -> double -> destination type (so f64 -> bf16 rounds
// twice, through f32, exactly as the host does), with bf16 produced by the same integer
// round-to-nearest-even as tensor/dtype.h (NaN kept, made quiet). f32 <-> bf16, f32 -> f64 and
// same-type copies skip the trip through double; they give the same bits.
//
// Launch strategy: a contiguous same-dtype copy is one cudaMemcpyAsync. A same-dtype copy
// whose source is unit-stride along one dim and whose destination is unit-stride along
// another (a transpose / permute, e.g. NCHW <-> NHWC) goes through 32x32 tiles in shared
// memory so that both the reads and the writes are coalesced. Anything else runs the strided
// indexer (strided_iter.cuh) over the coalesced shape, walking the destination in its memory
// order: one element per thread, offsets of both operands from the flat index. A fill of a
// contiguous tensor whose bytes are all equal is a cudaMemsetAsync; other fills are a
// strided store kernel.
#include "kernels/cuda/copy.h"

#include <cstring>

#include "kernels/cuda/strided_iter.cuh"

namespace siam::gpu {

namespace {

// bf16 as its bits, so conversions are written out exactly (not the intrinsics', whose NaN
// differs from tensor/dtype.h's).
struct Bf16Bits {
  uint16_t bits;
};

__device__ inline Bf16Bits bf16_of(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<uint16_t>(u >> 16)};
}
__device__ inline float float_of(Bf16Bits b) { return __uint_as_float(static_cast<uint32_t>(b.bits) << 16); }

template <class S> __device__ inline double load_f64(S v) { return static_cast<double>(v); }
template <> __device__ inline double load_f64<Bf16Bits>(Bf16Bits v) { return static_cast<double>(float_of(v)); }
template <> __device__ inline double load_f64<bool>(bool v) { return v ? 1.0 : 0.0; }

template <class D> __device__ inline D store_f64(double v) { return static_cast<D>(v); }
template <> __device__ inline Bf16Bits store_f64<Bf16Bits>(double v) { return bf16_of(static_cast<float>(v)); }
template <> __device__ inline bool store_f64<bool>(double v) { return v != 0; }

template <class D, class S> struct Convert {
  __device__ static inline D run(S v) { return store_f64<D>(load_f64<S>(v)); }
};
template <class T> struct Convert<T, T> {
  __device__ static inline T run(T v) { return v; }
};
template <> struct Convert<Bf16Bits, float> {
  __device__ static inline Bf16Bits run(float v) { return bf16_of(v); }
};
template <> struct Convert<float, Bf16Bits> {
  __device__ static inline float run(Bf16Bits v) { return float_of(v); }
};
template <> struct Convert<double, float> {
  __device__ static inline double run(float v) { return static_cast<double>(v); }
};

template <class D, class S> struct CopyF {
  D* dst;
  const S* src;
  __device__ inline void operator()(int64_t, const int64_t (&off)[2]) const {
    dst[off[0]] = Convert<D, S>::run(src[off[1]]);
  }
};

template <class U> struct FillF {
  U* dst;
  U value;
  __device__ inline void operator()(int64_t, const int64_t (&off)[1]) const { dst[off[0]] = value; }
};

// Calls f(T{}) with T the device storage type of dtype t.
template <class F>
void with_storage_type(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(Bf16Bits{});
    case DType::i32: return f(int32_t{});
    case DType::i64: return f(int64_t{});
    case DType::u8: return f(uint8_t{});
    case DType::b8: return f(bool{});
  }
  fail("copy: unsupported dtype");
}

// Calls f(U{}) with U an unsigned integer of t's element size: same-dtype copies move bits.
template <class F>
void with_unit_type(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: return f(uint8_t{});
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
  }
  fail("copy: unsupported element size ", dtype_size(t));
}

constexpr int kTile = 32, kTileRows = 8;

// Tiles of kTile x kTile elements of the (A, B) plane, one plane per batch index: A is the
// dim along which src is unit-stride, B the one along which dst is. Reads walk A, writes walk
// B, through a padded shared tile.
template <class U, class I>
__global__ void transpose_copy_kernel(U* dst, const U* src, OffsetCalc<2, I> batch, int64_t n_batch, int64_t la,
                                      int64_t lb, int64_t dst_sa, int64_t src_sb) {
  __shared__ U tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t a0 = static_cast<int64_t>(blockIdx.y) * kTile, b0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int64_t z = blockIdx.z; z < n_batch; z += gridDim.z) {
    int64_t base[2];
    batch.get(static_cast<I>(z), base);
#pragma unroll
    for (int r = ty; r < kTile; r += kTileRows) {
      const int64_t a = a0 + tx, b = b0 + r;
      if (a < la && b < lb) tile[r][tx] = src[base[1] + a + b * src_sb];
    }
    __syncthreads();
#pragma unroll
    for (int r = ty; r < kTile; r += kTileRows) {
      const int64_t a = a0 + r, b = b0 + tx;
      if (a < la && b < lb) dst[base[0] + a * dst_sa + b] = tile[tx][r];
    }
    __syncthreads();
  }
}

// The tiled path when the coalesced layout has a src-unit dim A and a different dst-unit
// dim B; false when it does not apply.
bool try_transpose(const Tensor& dst, const Tensor& src, const Layout<2>& l) {
  const int nd = static_cast<int>(l.shape.size());
  int a = -1, b = -1;
  for (int d = 0; d < nd; ++d) {
    if (l.strides[1][d] == 1 && a < 0) a = d;
    if (l.strides[0][d] == 1 && b < 0) b = d;
  }
  if (a < 0 || b < 0 || a == b) return false;
  const int64_t la = l.shape[a], lb = l.shape[b];
  if (la < 8 || lb < 8 || (la + kTile - 1) / kTile > 65535) return false;  // thin planes: the strided path
  Layout<2> bl;
  for (int d = 0; d < nd; ++d) {
    if (d == a || d == b) continue;
    bl.shape.push_back(l.shape[d]);
    for (int k = 0; k < 2; ++k) bl.strides[k].push_back(l.strides[k][d]);
  }
  const int64_t n_batch = shape_numel(bl.shape);
  const int64_t dst_sa = l.strides[0][a], src_sb = l.strides[1][b];
  dim3 grid(static_cast<unsigned>((lb + kTile - 1) / kTile), static_cast<unsigned>((la + kTile - 1) / kTile),
            static_cast<unsigned>(std::min<int64_t>(n_batch, 65535)));
  with_unit_type(dst.dtype(), [&](auto zero) {
    using U = decltype(zero);
    U* pd = static_cast<U*>(dst.raw_data());
    const U* ps = static_cast<const U*>(src.raw_data());
    if (fits_u32(n_batch))
      transpose_copy_kernel<U, uint32_t><<<grid, dim3(kTile, kTileRows), 0, stream()>>>(
          pd, ps, OffsetCalc<2, uint32_t>(bl), n_batch, la, lb, dst_sa, src_sb);
    else
      transpose_copy_kernel<U, uint64_t><<<grid, dim3(kTile, kTileRows), 0, stream()>>>(
          pd, ps, OffsetCalc<2, uint64_t>(bl), n_batch, la, lb, dst_sa, src_sb);
    SIAM_CUDA_LAUNCHED();
  });
  return true;
}

// The bytes of `value` stored as dtype t, converted exactly as tensor.cpp's host store().
uint64_t fill_bits(DType t, double v) {
  uint64_t bits = 0;
  auto put = [&](auto x) { std::memcpy(&bits, &x, sizeof(x)); };
  switch (t) {
    case DType::f32: put(static_cast<float>(v)); break;
    case DType::f64: put(v); break;
    case DType::bf16: put(bf16(static_cast<float>(v)).bits); break;
    case DType::i32: put(static_cast<int32_t>(v)); break;
    case DType::i64: put(static_cast<int64_t>(v)); break;
    case DType::u8: put(static_cast<uint8_t>(v)); break;
    case DType::b8: put(static_cast<uint8_t>(v != 0)); break;
  }
  return bits;
}

}  // namespace

void copy_strided(const Tensor& dst, const Tensor& src) {
  if (dst.shape() != src.shape())
    fail("copy_: destination shape ", shape_str(dst.shape()), " differs from source shape ", shape_str(src.shape()));
  require_same_device("copy_", dst, {&src});
  if (dst.numel() == 0) return;
  use_device(dst);
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    SIAM_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  const Shape& shape = dst.shape();
  if (dst.dtype() == src.dtype()) {
    Layout<2> l = coalesce<2>(shape, {dst.strides(), src.strides()});
    if (try_transpose(dst, src, l)) return;
    with_unit_type(dst.dtype(), [&](auto zero) {
      using U = decltype(zero);
      strided_apply<2>(shape, {dst.strides(), src.strides()},
                       CopyF<U, U>{static_cast<U*>(dst.raw_data()), static_cast<const U*>(src.raw_data())}, true);
    });
    return;
  }
  with_storage_type(dst.dtype(), [&](auto d0) {
    with_storage_type(src.dtype(), [&](auto s0) {
      using D = decltype(d0);
      using S = decltype(s0);
      strided_apply<2>(shape, {dst.strides(), src.strides()},
                       CopyF<D, S>{static_cast<D*>(dst.raw_data()), static_cast<const S*>(src.raw_data())}, true);
    });
  });
}

void fill(const Tensor& t, double value) {
  require_same_device("fill_", t, {});
  if (t.numel() == 0) return;
  use_device(t);
  const uint64_t bits = fill_bits(t.dtype(), value);
  const size_t es = dtype_size(t.dtype());
  if (t.is_contiguous()) {
    const unsigned char b0 = static_cast<unsigned char>(bits & 0xff);
    bool uniform = true;
    for (size_t k = 1; k < es; ++k) uniform = uniform && ((bits >> (8 * k)) & 0xff) == b0;
    if (uniform) {
      SIAM_CUDA_CHECK(cudaMemsetAsync(t.raw_data(), b0, t.nbytes(), stream()));
      return;
    }
  }
  with_unit_type(t.dtype(), [&](auto zero) {
    using U = decltype(zero);
    U v;
    std::memcpy(&v, &bits, sizeof(U));
    strided_apply<1>(t.shape(), {t.strides()}, FillF<U>{static_cast<U*>(t.raw_data()), v}, true);
  });
}

}  // namespace siam::gpu
