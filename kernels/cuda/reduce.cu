// Reduction CUDA kernels, the twins of kernels/cpu/reduce.cpp: outputs are written (=).
// f32 and bf16 accumulate in f32, f64 in f64.
//
// Deterministic: no atomics, and every partial result is combined in a fixed tree whose
// shape depends only on the tensor's shape (never on the GPU or on timing), so the same
// inputs give bit-identical outputs run to run.
//
// The input is seen as kept dims x reduced dims, each list coalesced (strides in elements).
// One of four launch strategies, by layout:
//   thread  reduced count <= 16: one thread per output, serial over its elements.
//   rows    the innermost reduced dim has stride 1 (sum over the last dims, softmax-like
//           rows): a warp per output for rows up to 4096 elements; longer rows get whole
//           blocks, split into chunks when there are few rows (64M elements to a scalar ->
//           1024 blocks of 64K), and a second kernel combines each output's chunk partials.
//           Contiguous runs of the row (the whole row, or each H*W plane of an NCHW batch-
//           norm reduction) are read 16 bytes at a time.
//   cols    the innermost kept dim has stride 1 (sum over dim 0 of (N, D), NHWC channel
//           sums): 2-D blocks, threads along the kept dim read coalesced, the reduced
//           elements are split over the block's other dimension (and over blocks when the
//           outputs are few), combined in shared memory.
//   other   neither: the view is first copied to (kept..., reduced...) contiguous, then rows.
#include "kernels/cuda/reduce.h"

#include <algorithm>

#include "kernels/cuda/copy.h"
#include "kernels/cuda/strided_iter.cuh"

namespace siam::gpu {

namespace {

constexpr int kWarp = 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kThreadMax = 16;      // reduced count up to which one thread does an output
constexpr int64_t kWarpRowMax = 4096;   // row length up to which one warp does a row
constexpr int64_t kTargetBlocks = 1024; // blocks a split reduction aims for
constexpr int64_t kMaxSplit = 1024;     // most chunks one output is split into
constexpr int64_t kMinChunk = 4096;     // fewest elements of a row chunk

__device__ inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

template <class T> struct SumOp {
  using A = acc_t<T>;
  T* out;
  __device__ static inline A ident() { return A(0); }
  __device__ static inline A elem(T v, int64_t) { return to_acc(v); }
  __device__ static inline A combine(A a, A b) { return a + b; }
  __device__ static inline A shfl_down(A a, int d) { return __shfl_down_sync(kFull, a, d); }
  __device__ inline void write(int64_t o, A a) const { out[o] = from_acc<T>(a); }
};

template <class V> struct ValIdx {
  V v;
  int64_t i;  // -1: no element yet
};

// The CPU kernel scans a row keeping the first index whose value is greater than the best so
// far. That makes the answer: index 0 if the row starts with NaN, else the first index of the
// largest non-NaN value. Here each element becomes a candidate (NaN ones drop out, except at
// index 0, where NaN wins outright) and candidates combine by (value, then lower index):
// associative and commutative, so any tree gives the CPU's answer.
template <class T> struct ArgMaxOp {
  using V = acc_t<T>;
  using A = ValIdx<V>;
  T* values;
  int64_t* indices;
  __device__ static inline A ident() { return {V(0), -1}; }
  __device__ static inline bool nan_first(const A& a) { return a.i == 0 && a.v != a.v; }
  __device__ static inline A elem(T x, int64_t r) {
    V v = to_acc(x);
    if (v != v && r != 0) return ident();
    return {v, r};
  }
  __device__ static inline A combine(A a, A b) {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    if (nan_first(a)) return a;
    if (nan_first(b)) return b;
    if (b.v > a.v) return b;
    if (a.v > b.v) return a;
    return a.i < b.i ? a : b;
  }
  __device__ static inline A shfl_down(A a, int d) {
    A r;
    r.v = __shfl_down_sync(kFull, a.v, d);
    r.i = static_cast<int64_t>(__shfl_down_sync(kFull, static_cast<long long>(a.i), d));
    return r;
  }
  __device__ inline void write(int64_t o, A a) const {
    values[o] = from_acc<T>(a.v);
    indices[o] = a.i;
  }
};

// Lane 0 ends with the warp's combination, in a fixed order.
template <class Op, class A>
__device__ inline A warp_reduce(A a) {
#pragma unroll
  for (int d = kWarp / 2; d > 0; d >>= 1) a = Op::combine(a, Op::shfl_down(a, d));
  return a;
}

// Thread 0 ends with the block's combination. sm: kWarp slots. Every thread must call it.
template <class Op, class A>
__device__ inline A block_reduce(A a, A* sm) {
  const int lane = threadIdx.x % kWarp, w = threadIdx.x / kWarp;
  a = warp_reduce<Op>(a);
  if (lane == 0) sm[w] = a;
  __syncthreads();
  if (w == 0) {
    a = lane < static_cast<int>(blockDim.x / kWarp) ? sm[lane] : Op::ident();
    a = warp_reduce<Op>(a);
  }
  __syncthreads();
  return a;
}

// Adds to acc the elements r in [r0, r1) of a contiguous segment: seg[j] is element first + j.
// This thread takes r0 + lane, r0 + lane + step, ..., read 16 bytes at a time from the first
// aligned element.
template <class T, class Op>
__device__ inline typename Op::A segment_partial(typename Op::A acc, const T* seg, int64_t first, int64_t r0,
                                                 int64_t r1, int lane, int step) {
  constexpr int W = 16 / sizeof(T);
  const T* p = seg + (r0 - first);
  int64_t head = static_cast<int64_t>(((16 - reinterpret_cast<uintptr_t>(p) % 16) % 16) / sizeof(T));
  if (head > r1 - r0) head = r1 - r0;
  if (lane < head) acc = Op::combine(acc, Op::elem(p[lane], r0 + lane));
  const int64_t a0 = r0 + head, nvec = (r1 - a0) / W;
  const Pack<T, W>* pv = reinterpret_cast<const Pack<T, W>*>(p + head);
  for (int64_t v = lane; v < nvec; v += step) {
    Pack<T, W> q = pv[v];
#pragma unroll
    for (int j = 0; j < W; ++j) acc = Op::combine(acc, Op::elem(q.v[j], a0 + v * W + j));
  }
  for (int64_t r = a0 + nvec * W + lane; r < r1; r += step) acc = Op::combine(acc, Op::elem(seg[r - first], r));
  return acc;
}

// How a row's reduced elements are found. kSegments: the innermost reduced dim (inner_len
// long) has stride 1, so the row is a sequence of contiguous segments, read vectorised, at the
// offsets `outer` gives. kGeneric: `red` gives every element's offset.
enum RowMode : int { kSegments, kGeneric };

// Combines the elements r in [r0, r1) of one row, this thread taking r0 + lane, r0 + lane +
// step, ... (the group combines the threads' partials afterwards).
template <class T, class Op, class I>
__device__ inline typename Op::A row_partial(const T* row, const OffsetCalc<1, I>& red, const OffsetCalc<1, I>& outer,
                                             int64_t inner_len, int mode, int64_t r0, int64_t r1, int lane,
                                             int step) {
  using A = typename Op::A;
  A acc = Op::ident();
  if (mode == kSegments) {
    for (int64_t ro = r0 / inner_len; ro * inner_len < r1; ++ro) {
      const int64_t first = ro * inner_len;
      int64_t off[1];
      outer.get(static_cast<I>(ro), off);
      acc = segment_partial<T, Op>(acc, row + off[0], first, imax(r0, first), imin(r1, first + inner_len), lane, step);
    }
    return acc;
  }
  int64_t r = r0 + lane;
  for (; r + 3 * step < r1; r += 4 * step) {
    T v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      int64_t off[1];
      red.get(static_cast<I>(r + u * step), off);
      v[u] = row[off[0]];
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) acc = Op::combine(acc, Op::elem(v[u], r + u * step));
  }
  for (; r < r1; r += step) {
    int64_t off[1];
    red.get(static_cast<I>(r), off);
    acc = Op::combine(acc, Op::elem(row[off[0]], r));
  }
  return acc;
}

// rows: one group (a warp when kWarpGroup, else the block) per (output, chunk) item.
// part: [m][split] chunk partials when split > 1.
template <class T, class Op, class I, bool kWarpGroup>
__global__ void reduce_rows_kernel(const T* x, OffsetCalc<1, I> kept, OffsetCalc<1, I> red, OffsetCalc<1, I> outer,
                                   int64_t inner_len, int mode, int64_t m, int64_t rn, int64_t split, int64_t chunk,
                                   Op op, typename Op::A* part) {
  using A = typename Op::A;
  __shared__ alignas(16) unsigned char smraw[sizeof(A) * kWarp];
  A* sm = reinterpret_cast<A*>(smraw);
  const int lane = kWarpGroup ? threadIdx.x % kWarp : threadIdx.x;
  const int gsize = kWarpGroup ? kWarp : blockDim.x;
  const int64_t groups = kWarpGroup ? blockDim.x / kWarp : 1;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * groups + (kWarpGroup ? threadIdx.x / kWarp : 0);
  const int64_t items = m * split;
  for (int64_t item = first; item < items; item += static_cast<int64_t>(gridDim.x) * groups) {
    const int64_t o = item / split, s = item - o * split;
    int64_t base[1];
    kept.get(static_cast<I>(o), base);
    const int64_t r0 = s * chunk, r1 = imin(rn, r0 + chunk);
    A acc = row_partial<T, Op, I>(x + base[0], red, outer, inner_len, mode, r0, r1, lane, gsize);
    acc = kWarpGroup ? warp_reduce<Op>(acc) : block_reduce<Op>(acc, sm);
    if (lane == 0) {
      if (split == 1) op.write(o, acc);
      else part[item] = acc;
    }
  }
}

// cols: block (bx, by); threads along x take consecutive outputs of the innermost kept dim
// (stride 1), threads along y and blockIdx.z share out the reduced elements.
template <class T, class Op, class I>
__global__ void reduce_cols_kernel(const T* x, OffsetCalc<1, I> outer, int64_t b_n, OffsetCalc<1, I> red,
                                   int64_t a_n, int64_t rn, int64_t split, int64_t chunk, Op op,
                                   typename Op::A* part) {
  using A = typename Op::A;
  __shared__ alignas(16) unsigned char smraw[sizeof(A) * kBlock];
  A* sm = reinterpret_cast<A*>(smraw);
  const int tx = threadIdx.x, ty = threadIdx.y, bx = blockDim.x, by = blockDim.y;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * bx + tx;
  const int64_t s = blockIdx.z;
  const int64_t r0 = s * chunk, r1 = imin(rn, r0 + chunk);
  for (int64_t a = blockIdx.y; a < a_n; a += gridDim.y) {
    int64_t base[1];
    outer.get(static_cast<I>(a), base);
    A acc = Op::ident();
    if (b < b_n) {
      const T* col = x + base[0] + b;
#pragma unroll 4
      for (int64_t r = r0 + ty; r < r1; r += by) {
        int64_t off[1];
        red.get(static_cast<I>(r), off);
        acc = Op::combine(acc, Op::elem(col[off[0]], r));
      }
    }
    sm[ty * bx + tx] = acc;
    __syncthreads();
    for (int h = by / 2; h > 0; h >>= 1) {
      if (ty < h) sm[ty * bx + tx] = Op::combine(sm[ty * bx + tx], sm[(ty + h) * bx + tx]);
      __syncthreads();
    }
    if (ty == 0 && b < b_n) {
      const int64_t o = a * b_n + b;
      if (split == 1) op.write(o, sm[tx]);
      else part[o * split + s] = sm[tx];
    }
    __syncthreads();
  }
}

// thread: one thread per output, serial over its (few) reduced elements.
template <class T, class Op, class I>
__global__ void reduce_thread_kernel(const T* x, OffsetCalc<1, I> kept, OffsetCalc<1, I> red, int64_t m, int64_t rn,
                                     Op op) {
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; o < m;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t base[1];
    kept.get(static_cast<I>(o), base);
    typename Op::A acc = Op::ident();
    for (int64_t r = 0; r < rn; ++r) {
      int64_t off[1];
      red.get(static_cast<I>(r), off);
      acc = Op::combine(acc, Op::elem(x[base[0] + off[0]], r));
    }
    op.write(o, acc);
  }
}

// Second pass of a split reduction: a warp per output combines its `split` partials.
template <class Op>
__global__ void reduce_finish_kernel(const typename Op::A* part, int64_t m, int64_t split, Op op) {
  const int lane = threadIdx.x % kWarp;
  const int64_t groups = blockDim.x / kWarp;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * groups + threadIdx.x / kWarp; o < m;
       o += static_cast<int64_t>(gridDim.x) * groups) {
    typename Op::A acc = Op::ident();
    for (int64_t s = lane; s < split; s += kWarp) acc = Op::combine(acc, part[o * split + s]);
    acc = warp_reduce<Op>(acc);
    if (lane == 0) op.write(o, acc);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Layout<1> layout_of(const Shape& shape, const Shape& strides) { return coalesce<1>(shape, {strides}); }

template <class Op>
void finish(const Tensor& part, int64_t m, int64_t split, const Op& op) {
  reduce_finish_kernel<Op><<<grid_for(m * kWarp), kBlock, 0, stream()>>>(
      reinterpret_cast<const typename Op::A*>(part.raw_data()), m, split, op);
  SIAM_CUDA_LAUNCHED();
}

// Rows of at least this many contiguous elements are read as segments (kSegments).
constexpr int64_t kMinSegment = 256;

template <class T, class Op, class I>
void launch_rows(const T* x, const Layout<1>& kl, const Layout<1>& rl, int64_t m, int64_t rn, const Op& op,
                 Device dev) {
  using A = typename Op::A;
  const int64_t inner_len = rl.shape.back();
  const int mode = inner_len >= kMinSegment || inner_len == rn ? kSegments : kGeneric;
  Layout<1> ol;  // the reduced dims but the innermost
  ol.shape.assign(rl.shape.begin(), rl.shape.end() - 1);
  ol.strides[0].assign(rl.strides[0].begin(), rl.strides[0].end() - 1);
  OffsetCalc<1, I> kept(kl), red(rl), outer(ol);
  if (rn <= kWarpRowMax) {
    const int64_t blocks = ceil_div(m, kBlock / kWarp);
    reduce_rows_kernel<T, Op, I, true><<<grid_for(blocks, 1), kBlock, 0, stream()>>>(
        x, kept, red, outer, inner_len, mode, m, rn, 1, rn, op, nullptr);
    SIAM_CUDA_LAUNCHED();
    return;
  }
  int64_t split = std::min({ceil_div(kTargetBlocks, m), ceil_div(rn, kMinChunk), kMaxSplit});
  split = std::max<int64_t>(split, 1);
  const int64_t chunk = ceil_div(rn, split);
  split = ceil_div(rn, chunk);
  Tensor part;
  if (split > 1) part = empty({m * split * static_cast<int64_t>(sizeof(A))}, {DType::u8, dev});
  A* pp = split > 1 ? reinterpret_cast<A*>(part.raw_data()) : nullptr;
  reduce_rows_kernel<T, Op, I, false><<<grid_for(m * split, 1), kBlock, 0, stream()>>>(
      x, kept, red, outer, inner_len, mode, m, rn, split, chunk, op, pp);
  SIAM_CUDA_LAUNCHED();
  if (split > 1) finish(part, m, split, op);
}

template <class T, class Op, class I>
void launch_cols(const T* x, const Layout<1>& kl, const Layout<1>& rl, int64_t m, int64_t rn, const Op& op,
                 Device dev) {
  using A = typename Op::A;
  const int64_t b_n = kl.shape.back();
  const int64_t a_n = m / b_n;
  Layout<1> ol;
  ol.shape.assign(kl.shape.begin(), kl.shape.end() - 1);
  ol.strides[0].assign(kl.strides[0].begin(), kl.strides[0].end() - 1);
  int bx = 1;
  while (bx < b_n && bx < kWarp) bx *= 2;
  const int by = kBlock / bx;
  const int64_t gx = ceil_div(b_n, bx);
  const int64_t gy = std::min<int64_t>(a_n, 65535);
  if (gx > 0x7fffffff) fail("sum/max: ", b_n, " outputs along one dimension is more than a CUDA grid holds");
  int64_t split = std::min({ceil_div(kTargetBlocks, gx * a_n), ceil_div(rn, by * 16), kMaxSplit});
  split = std::max<int64_t>(split, 1);
  const int64_t chunk = ceil_div(rn, split);
  split = ceil_div(rn, chunk);
  Tensor part;
  if (split > 1) part = empty({m * split * static_cast<int64_t>(sizeof(A))}, {DType::u8, dev});
  A* pp = split > 1 ? reinterpret_cast<A*>(part.raw_data()) : nullptr;
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(split));
  reduce_cols_kernel<T, Op, I><<<grid, dim3(bx, by), 0, stream()>>>(x, OffsetCalc<1, I>(ol), b_n,
                                                                    OffsetCalc<1, I>(rl), a_n, rn, split, chunk, op, pp);
  SIAM_CUDA_LAUNCHED();
  if (split > 1) finish(part, m, split, op);
}

// Reduces x over the dims marked in `red` (outputs in row-major order of the kept dims).
// Needs numel(kept) >= 1 and numel(reduced) >= 1.
template <class T, class Op>
void run_reduce(const Tensor& x, const std::vector<bool>& red, const Op& op) {
  Shape ks, kst, rs, rst;
  for (int64_t d = 0; d < x.dim(); ++d) {
    (red[d] ? rs : ks).push_back(x.shape()[d]);
    (red[d] ? rst : kst).push_back(x.strides()[d]);
  }
  const int64_t m = shape_numel(ks), rn = shape_numel(rs);
  // The reduced dims in memory order (decreasing stride): the order elements are combined in
  // does not change a sum, and max reduces one dim, so a reduction over every dim of a
  // transposed tensor is one contiguous row.
  {
    std::array<Shape, 1> st{rst};
    order_by_first<1>(rs, st);
    rst = st[0];
  }
  Layout<1> kl = layout_of(ks, kst), rl = layout_of(rs, rst);
  const bool red_inner = !rl.shape.empty() && rl.strides[0].back() == 1;
  const bool kept_inner = !kl.shape.empty() && kl.strides[0].back() == 1;
  if (rn > kThreadMax && !red_inner && !kept_inner) {
    // Neither side is contiguous: lay the view out as (kept..., reduced...) first.
    Shape ps = ks, pst = kst;
    ps.insert(ps.end(), rs.begin(), rs.end());
    pst.insert(pst.end(), rst.begin(), rst.end());
    Tensor c = empty(ps, {x.dtype(), x.device()});
    copy_strided(c, x.as_strided(ps, pst, x.offset()));
    std::vector<bool> pred(ps.size(), false);
    for (size_t d = ks.size(); d < ps.size(); ++d) pred[d] = true;
    run_reduce<T>(c, pred, op);
    return;
  }
  const T* px = dptr<T>(x);
  auto go = [&](auto idx) {
    using I = decltype(idx);
    if (rn <= kThreadMax) {
      reduce_thread_kernel<T, Op, I><<<grid_for(m), kBlock, 0, stream()>>>(px, OffsetCalc<1, I>(kl),
                                                                           OffsetCalc<1, I>(rl), m, rn, op);
      SIAM_CUDA_LAUNCHED();
    } else if (red_inner) {
      launch_rows<T, Op, I>(px, kl, rl, m, rn, op, x.device());
    } else {
      launch_cols<T, Op, I>(px, kl, rl, m, rn, op, x.device());
    }
  };
  if (fits_u32(m) && fits_u32(rn)) go(uint32_t{});
  else go(uint64_t{});
}

// Marks reduced dims and builds the output shape as the CPU kernel does.
std::vector<bool> reduced_dims(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, Shape* out_shape) {
  std::vector<bool> red(x.dim(), dims.empty());
  for (int64_t d : dims) {
    SIAM_CHECK(d >= 0 && d < x.dim(), "reduction dim ", d, " for a tensor of ", x.dim(), " dimensions");
    red[d] = true;
  }
  out_shape->clear();
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (!red[d]) out_shape->push_back(x.shape()[d]);
    else if (keepdim) out_shape->push_back(1);
  }
  return red;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  require_same_device("sum", x, {});
  use_device(x);
  Shape out_shape;
  std::vector<bool> red = reduced_dims(x, dims, keepdim, &out_shape);
  Tensor y = empty(out_shape, {x.dtype(), x.device()});
  if (y.numel() == 0) return y;
  if (x.numel() == 0) {
    fill(y, 0.0);
    return y;
  }
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "sum", [&] { run_reduce<scalar_t>(x, red, SumOp<scalar_t>{dptr<scalar_t>(y)}); });
  return y;
}

std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim) {
  require_same_device("max", x, {});
  SIAM_CHECK(dim >= 0 && dim < x.dim(), "max: dim ", dim, " for a tensor of ", x.dim(), " dimensions");
  if (x.shape()[dim] == 0) fail("max: dimension ", dim, " has size 0");
  use_device(x);
  Shape out_shape;
  std::vector<bool> red = reduced_dims(x, {dim}, keepdim, &out_shape);
  Tensor y = empty(out_shape, {x.dtype(), x.device()});
  Tensor idx = empty(out_shape, {DType::i64, x.device()});
  if (y.numel() == 0) return {y, idx};
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "max", [&] {
    run_reduce<scalar_t>(x, red, ArgMaxOp<scalar_t>{dptr<scalar_t>(y), dptr<int64_t>(idx)});
  });
  return {y, idx};
}

}  // namespace siam::gpu
