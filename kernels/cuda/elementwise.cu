// Elementwise CUDA kernels, the twins of kernels/cpu/elementwise.cpp. Every kernel writes (=)
// a fresh contiguous output, except add_inplace and scale_inplace, which accumulate into /
// scale their first argument (which may be a strided view).
// Launch strategy (strided_iter.cuh): when every operand is contiguous over the output shape
// and 16-byte aligned, one thread handles 16 bytes per operand per step (float4 for f32,
// 8 x bf16, 2 x f64) with a scalar tail; otherwise a grid-stride loop computes each
// operand's offset from the flat index over the coalesced shape (broadcast dims have stride
// 0). bf16 is computed in f32 and rounded once on the store; f64 in f64.
#include "kernels/cuda/elementwise.h"

#include "kernels/cuda/strided_iter.cuh"

namespace siam::gpu {

using kernels::Binary;
using kernels::Compare;
using kernels::Unary;

namespace {

__device__ inline float m_exp(float x) { return expf(x); }
__device__ inline double m_exp(double x) { return exp(x); }
__device__ inline float m_log(float x) { return logf(x); }
__device__ inline double m_log(double x) { return log(x); }
__device__ inline float m_sqrt(float x) { return sqrtf(x); }
__device__ inline double m_sqrt(double x) { return sqrt(x); }
__device__ inline float m_abs(float x) { return fabsf(x); }
__device__ inline double m_abs(double x) { return fabs(x); }
__device__ inline float m_tanh(float x) { return tanhf(x); }
__device__ inline double m_tanh(double x) { return tanh(x); }
__device__ inline float m_erf(float x) { return erff(x); }
__device__ inline double m_erf(double x) { return erf(x); }
__device__ inline float m_pow(float x, float a) { return powf(x, a); }
__device__ inline double m_pow(double x, double a) { return pow(x, a); }

// The formulas of kernels/cpu/elementwise.cpp, in the accumulation type A.
template <class A>
__device__ inline A gelu_erf(A x) { return A(0.5) * x * (A(1) + m_erf(x * A(0.7071067811865476))); }
template <class A>
__device__ inline A gelu_tanh(A x) {
  const A k = A(0.7978845608028654);  // sqrt(2/pi)
  return A(0.5) * x * (A(1) + m_tanh(k * (x + A(0.044715) * x * x * x)));
}

template <class A>
__device__ inline A apply_unary(Unary op, A x, A a, A b) {
  switch (op) {
    case Unary::neg: return -x;
    case Unary::exp: return m_exp(x);
    case Unary::log: return m_log(x);
    case Unary::sqrt: return m_sqrt(x);
    case Unary::rsqrt: return A(1) / m_sqrt(x);
    case Unary::abs: return m_abs(x);
    case Unary::relu: return x > A(0) ? x : A(0);
    case Unary::sigmoid: return A(1) / (A(1) + m_exp(-x));
    case Unary::tanh: return m_tanh(x);
    case Unary::gelu_erf: return gelu_erf(x);
    case Unary::gelu_tanh: return gelu_tanh(x);
    case Unary::pow_scalar: return m_pow(x, a);
    case Unary::add_scalar: return x + a;
    case Unary::mul_scalar: return x * a;
    case Unary::clamp: return x < a ? a : (x > b ? b : x);
  }
  return x;
}

// d op(x) / dx, given x and y = op(x).
template <class A>
__device__ inline A derivative(Unary op, A x, A y, A a, A b) {
  switch (op) {
    case Unary::neg: return A(-1);
    case Unary::exp: return y;
    case Unary::log: return A(1) / x;
    case Unary::sqrt: return A(0.5) / y;
    case Unary::rsqrt: return A(-0.5) * y * y * y;
    case Unary::abs: return x > A(0) ? A(1) : (x < A(0) ? A(-1) : A(0));
    case Unary::relu: return x > A(0) ? A(1) : A(0);
    case Unary::sigmoid: return y * (A(1) - y);
    case Unary::tanh: return A(1) - y * y;
    case Unary::gelu_erf: {
      A cdf = A(0.5) * (A(1) + m_erf(x * A(0.7071067811865476)));
      A pdf = m_exp(A(-0.5) * x * x) * A(0.3989422804014327);
      return cdf + x * pdf;
    }
    case Unary::gelu_tanh: {
      const A k = A(0.7978845608028654);
      A inner = k * (x + A(0.044715) * x * x * x);
      A t = m_tanh(inner);
      return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * k * (A(1) + A(3 * 0.044715) * x * x);
    }
    case Unary::pow_scalar: return a == A(0) ? A(0) : a * m_pow(x, a - A(1));
    case Unary::add_scalar: return A(1);
    case Unary::mul_scalar: return a;
    case Unary::clamp: return (x >= a && x <= b) ? A(1) : A(0);
  }
  return A(0);
}

template <class T> struct UnaryF {
  using A = acc_t<T>;
  Unary op;
  A a, b;
  __device__ inline T operator()(T x) const { return from_acc<T>(apply_unary<A>(op, to_acc(x), a, b)); }
};

// What d op / dx reads: x, y = op(x), or neither. The backward loads only that, so relu's
// backward moves three streams (g, x, dx), not four.
enum class Needs { x, y, none };
Needs needs_of(Unary op) {
  switch (op) {
    case Unary::exp: case Unary::sqrt: case Unary::rsqrt: case Unary::sigmoid: case Unary::tanh: return Needs::y;
    case Unary::neg: case Unary::add_scalar: case Unary::mul_scalar: return Needs::none;
    default: return Needs::x;
  }
}

template <class T> struct UnaryBackwardF {  // (g, x) or (g, y) by `needs`
  using A = acc_t<T>;
  Unary op;
  A a, b;
  Needs needs;
  __device__ inline T operator()(T g, T v) const {
    const A va = to_acc(v);
    const A d = needs == Needs::y ? derivative<A>(op, A(0), va, a, b) : derivative<A>(op, va, A(0), a, b);
    return from_acc<T>(to_acc(g) * d);
  }
  __device__ inline T operator()(T g) const { return from_acc<T>(to_acc(g) * derivative<A>(op, A(0), A(0), a, b)); }
};

template <class T, Binary OP> struct BinaryF {
  __device__ inline T operator()(T x, T y) const {
    acc_t<T> a = to_acc(x), b = to_acc(y);
    switch (OP) {
      case Binary::add: return from_acc<T>(a + b);
      case Binary::sub: return from_acc<T>(a - b);
      case Binary::mul: return from_acc<T>(a * b);
      case Binary::div: return from_acc<T>(a / b);
      case Binary::maximum: return a > b ? x : y;
      case Binary::minimum: return a < b ? x : y;
    }
    return x;
  }
};

template <class T> struct AddScaledF {
  acc_t<T> s;
  __device__ inline T operator()(T a, T b) const { return from_acc<T>(to_acc(a) + s * to_acc(b)); }
};

template <class T> struct ScaleF {
  acc_t<T> s;
  __device__ inline T operator()(T a) const { return from_acc<T>(to_acc(a) * s); }
};

template <class T> __device__ inline double as_double(T v) { return static_cast<double>(v); }
template <> __device__ inline double as_double<__nv_bfloat16>(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}

// Compares through double, as the CPU kernel does (so i64 beyond 2^53 compares alike).
template <class T> struct CompareF {
  Compare op;
  bool* out;
  const T* a;
  const T* b;
  __device__ inline void operator()(int64_t, const int64_t (&off)[3]) const {
    double x = as_double(a[off[1]]), z = as_double(b[off[2]]);
    out[off[0]] = op == Compare::gt ? x > z : (op == Compare::lt ? x < z : x == z);
  }
};

template <class T> struct WhereF {
  T* out;
  const bool* c;
  const T* a;
  const T* b;
  __device__ inline void operator()(int64_t, const int64_t (&off)[4]) const {
    out[off[0]] = c[off[1]] ? a[off[2]] : b[off[3]];
  }
};

Shape broadcast_pair(const Shape& a, const Shape& b, const char* name) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      fail(name, ": shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast together");
    r[i] = da == 1 ? db : da;
  }
  return r;
}

// t's strides seen through a broadcast to `shape` (0 on broadcast and missing dims).
Shape bstrides(const Tensor& t, const Shape& shape) {
  Shape st(shape.size(), 0);
  int64_t off = static_cast<int64_t>(shape.size()) - t.dim();
  for (int64_t i = 0; i < t.dim(); ++i) st[off + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return st;
}

void same_dtype(const Tensor& a, const Tensor& b, const char* name) {
  if (a.dtype() != b.dtype())
    fail(name, ": dtype mismatch, ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
}

template <class T>
void run_binary(Binary op, const Tensor& a, const Tensor& b, const Tensor& y) {
  const Shape& shape = y.shape();
  std::array<const T*, 2> in{dptr<T>(a), dptr<T>(b)};
  std::array<Shape, 2> st{bstrides(a, shape), bstrides(b, shape)};
  T* out = dptr<T>(y);
  const Shape ys = y.strides();
  switch (op) {
    case Binary::add: return launch_map<T, 2>(BinaryF<T, Binary::add>{}, out, shape, ys, in, st);
    case Binary::sub: return launch_map<T, 2>(BinaryF<T, Binary::sub>{}, out, shape, ys, in, st);
    case Binary::mul: return launch_map<T, 2>(BinaryF<T, Binary::mul>{}, out, shape, ys, in, st);
    case Binary::div: return launch_map<T, 2>(BinaryF<T, Binary::div>{}, out, shape, ys, in, st);
    case Binary::maximum: return launch_map<T, 2>(BinaryF<T, Binary::maximum>{}, out, shape, ys, in, st);
    case Binary::minimum: return launch_map<T, 2>(BinaryF<T, Binary::minimum>{}, out, shape, ys, in, st);
  }
}

}  // namespace

Tensor unary(Unary op, const Tensor& x, double a, double b) {
  require_same_device("unary op", x, {});
  use_device(x);
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "unary op", [&] {
    using A = acc_t<scalar_t>;
    UnaryF<scalar_t> f{op, static_cast<A>(a), static_cast<A>(b)};
    launch_map<scalar_t, 1>(f, dptr<scalar_t>(y), x.shape(), y.strides(), {dptr<scalar_t>(x)}, {x.strides()});
  });
  return y;
}

Tensor unary_backward(Unary op, const Tensor& g, const Tensor& x, const Tensor& y, double a, double b) {
  require_same_device("unary backward", g, {&x, &y});
  SIAM_CHECK(g.shape() == x.shape() && y.shape() == x.shape(), "unary_backward shapes ",
             shape_str(g.shape()), " ", shape_str(x.shape()), " ", shape_str(y.shape()));
  same_dtype(g, x, "unary backward");
  same_dtype(g, y, "unary backward");
  use_device(g);
  Tensor dx = empty(x.shape(), {x.dtype(), x.device()});
  SIAM_CUDA_DISPATCH_FLOAT(x.dtype(), "unary backward", [&] {
    using A = acc_t<scalar_t>;
    const Needs needs = needs_of(op);
    UnaryBackwardF<scalar_t> f{op, static_cast<A>(a), static_cast<A>(b), needs};
    scalar_t* out = dptr<scalar_t>(dx);
    if (needs == Needs::none) {
      launch_map<scalar_t, 1>(f, out, x.shape(), dx.strides(), {dptr<scalar_t>(g)}, {g.strides()});
      return;
    }
    const Tensor& v = needs == Needs::x ? x : y;
    launch_map<scalar_t, 2>(f, out, x.shape(), dx.strides(), {dptr<scalar_t>(g), dptr<scalar_t>(v)},
                            {g.strides(), v.strides()});
  });
  return dx;
}

Tensor binary(Binary op, const Tensor& a, const Tensor& b) {
  require_same_device("binary op", a, {&b});
  same_dtype(a, b, "binary op");
  Shape shape = broadcast_pair(a.shape(), b.shape(), "binary op");
  use_device(a);
  Tensor y = empty(shape, {a.dtype(), a.device()});
  SIAM_CUDA_DISPATCH_FLOAT(a.dtype(), "binary op", [&] { run_binary<scalar_t>(op, a, b, y); });
  return y;
}

Tensor compare(Compare op, const Tensor& a, const Tensor& b) {
  require_same_device("compare", a, {&b});
  same_dtype(a, b, "compare");
  Shape shape = broadcast_pair(a.shape(), b.shape(), "compare");
  use_device(a);
  Tensor y = empty(shape, {DType::b8, a.device()});
  SIAM_CUDA_DISPATCH_ALL(a.dtype(), "compare", [&] {
    CompareF<scalar_t> f{op, dptr<bool>(y), dptr<scalar_t>(a), dptr<scalar_t>(b)};
    strided_apply<3>(shape, {y.strides(), bstrides(a, shape), bstrides(b, shape)}, f);
  });
  return y;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  require_same_device("where", a, {&b, &cond});
  same_dtype(a, b, "where");
  if (cond.dtype() != DType::b8) fail("where: condition must be bool, got ", dtype_name(cond.dtype()));
  Shape shape = broadcast_pair(broadcast_pair(cond.shape(), a.shape(), "where"), b.shape(), "where");
  use_device(a);
  Tensor y = empty(shape, {a.dtype(), a.device()});
  SIAM_CUDA_DISPATCH_FLOAT(a.dtype(), "where", [&] {
    WhereF<scalar_t> f{dptr<scalar_t>(y), dptr<bool>(cond), dptr<scalar_t>(a), dptr<scalar_t>(b)};
    strided_apply<4>(shape, {y.strides(), bstrides(cond, shape), bstrides(a, shape), bstrides(b, shape)}, f);
  });
  return y;
}

void add_inplace(const Tensor& a, const Tensor& b, double alpha) {
  require_same_device("add_", a, {&b});
  same_dtype(a, b, "add_");
  if (broadcast_pair(a.shape(), b.shape(), "add_") != a.shape())
    fail("add_: ", shape_str(b.shape()), " does not broadcast to ", shape_str(a.shape()));
  use_device(a);
  SIAM_CUDA_DISPATCH_FLOAT(a.dtype(), "add_", [&] {
    AddScaledF<scalar_t> f{static_cast<acc_t<scalar_t>>(alpha)};
    launch_map<scalar_t, 2>(f, dptr<scalar_t>(a), a.shape(), a.strides(), {dptr<scalar_t>(a), dptr<scalar_t>(b)},
                            {a.strides(), bstrides(b, a.shape())});
  });
}

void scale_inplace(const Tensor& a, double s) {
  require_same_device("mul_", a, {});
  use_device(a);
  SIAM_CUDA_DISPATCH_FLOAT(a.dtype(), "mul_", [&] {
    ScaleF<scalar_t> f{static_cast<acc_t<scalar_t>>(s)};
    launch_map<scalar_t, 1>(f, dptr<scalar_t>(a), a.shape(), a.strides(), {dptr<scalar_t>(a)}, {a.strides()});
  });
}

}  // namespace siam::gpu
