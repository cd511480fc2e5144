// Elementwise CPU kernels. Every kernel writes (=) a fresh output, except add_inplace and
// scale_inplace, which accumulate into / scale their first argument.
#include "kernels/elementwise.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/iter.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/elementwise.h"

namespace siam::kernels {

using cpu::broadcast_strides;
using cpu::for_each_row;

static Shape broadcast_pair(const Shape& a, const Shape& b, const char* name) {
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

static void require_cpu(const Tensor& t, const char* name) {
  if (!t.device().is_cpu())
    fail(name, ": no ", t.device().str(), " kernel yet (CUDA kernels arrive with the CUDA backend)");
}

static void same_dtype(const Tensor& a, const Tensor& b, const char* name) {
  if (a.dtype() != b.dtype())
    fail(name, ": dtype mismatch, ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
}

template <class T>
static T gelu_erf(T x) { return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2))); }
template <class T>
static T gelu_tanh(T x) {
  const T k = T(0.7978845608028654);  // sqrt(2/pi)
  return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
}

template <class T>
[[gnu::always_inline]] inline static T apply_unary(Unary op, T x, T a, T b) {
  switch (op) {
    case Unary::neg: return -x;
    case Unary::exp: return std::exp(x);
    case Unary::log: return std::log(x);
    case Unary::sqrt: return std::sqrt(x);
    case Unary::rsqrt: return T(1) / std::sqrt(x);
    case Unary::abs: return std::abs(x);
    case Unary::relu: return x > T(0) ? x : T(0);
    case Unary::sigmoid: return T(1) / (T(1) + std::exp(-x));
    case Unary::tanh: return std::tanh(x);
    case Unary::gelu_erf: return gelu_erf(x);
    case Unary::gelu_tanh: return gelu_tanh(x);
    case Unary::pow_scalar: return std::pow(x, a);
    case Unary::add_scalar: return x + a;
    case Unary::mul_scalar: return x * a;
    case Unary::clamp: return x < a ? a : (x > b ? b : x);
  }
  return x;
}

// d op(x) / dx, given x and y = op(x).
template <class T>
[[gnu::always_inline]] inline static T derivative(Unary op, T x, T y, T a, T b) {
  switch (op) {
    case Unary::neg: return T(-1);
    case Unary::exp: return y;
    case Unary::log: return T(1) / x;
    case Unary::sqrt: return T(0.5) / y;
    case Unary::rsqrt: return T(-0.5) * y * y * y;
    case Unary::abs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case Unary::relu: return x > T(0) ? T(1) : T(0);
    case Unary::sigmoid: return y * (T(1) - y);
    case Unary::tanh: return T(1) - y * y;
    case Unary::gelu_erf: {
      T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
      T pdf = std::exp(T(-0.5) * x * x) * T(0.3989422804014327);
      return cdf + x * pdf;
    }
    case Unary::gelu_tanh: {
      const T k = T(0.7978845608028654);
      T inner = k * (x + T(0.044715) * x * x * x);
      T t = std::tanh(inner);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3 * 0.044715) * x * x);
    }
    case Unary::pow_scalar: return a == T(0) ? T(0) : a * std::pow(x, a - T(1));
    case Unary::add_scalar: return T(1);
    case Unary::mul_scalar: return a;
    case Unary::clamp: return (x >= a && x <= b) ? T(1) : T(0);
  }
  return T(0);
}

// Calls body(std::integral_constant<Unary, op>{}): the loops in body see the op as a constant,
// so the switch in apply_unary / derivative folds away and the loop can vectorise.
template <class Body>
static void with_unary(Unary op, Body&& body) {
  using U = Unary;
  switch (op) {
    case U::neg: return body(std::integral_constant<U, U::neg>{});
    case U::exp: return body(std::integral_constant<U, U::exp>{});
    case U::log: return body(std::integral_constant<U, U::log>{});
    case U::sqrt: return body(std::integral_constant<U, U::sqrt>{});
    case U::rsqrt: return body(std::integral_constant<U, U::rsqrt>{});
    case U::abs: return body(std::integral_constant<U, U::abs>{});
    case U::relu: return body(std::integral_constant<U, U::relu>{});
    case U::sigmoid: return body(std::integral_constant<U, U::sigmoid>{});
    case U::tanh: return body(std::integral_constant<U, U::tanh>{});
    case U::gelu_erf: return body(std::integral_constant<U, U::gelu_erf>{});
    case U::gelu_tanh: return body(std::integral_constant<U, U::gelu_tanh>{});
    case U::pow_scalar: return body(std::integral_constant<U, U::pow_scalar>{});
    case U::add_scalar: return body(std::integral_constant<U, U::add_scalar>{});
    case U::mul_scalar: return body(std::integral_constant<U, U::mul_scalar>{});
    case U::clamp: return body(std::integral_constant<U, U::clamp>{});
  }
}

Tensor unary(Unary op, const Tensor& x, double a, double b) {
  SIAM_ON_CUDA(x, gpu::unary(op, x, a, b));
  require_cpu(x, "unary op");
  Tensor y = empty(x.shape(), {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "unary op", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    scalar_t sa = static_cast<scalar_t>(a), sb = static_cast<scalar_t>(b);
    std::array<Shape, 2> st{contiguous_strides(x.shape()), x.strides()};
    with_unary(op, [&](auto c) {
      constexpr Unary kOp = decltype(c)::value;
      for_each_row<2>(x.shape(), st, [&](auto off, auto inner, int64_t n) {
        scalar_t* o = py + off[0];
        const scalar_t* i = px + off[1];
        if (inner[1] == 1)
          for (int64_t k = 0; k < n; ++k) o[k] = apply_unary(kOp, i[k], sa, sb);
        else
          for (int64_t k = 0; k < n; ++k) o[k] = apply_unary(kOp, i[k * inner[1]], sa, sb);
      });
    });
  });
  return y;
}

Tensor unary_backward(Unary op, const Tensor& g, const Tensor& x, const Tensor& y, double a, double b) {
  SIAM_ON_CUDA(g, gpu::unary_backward(op, g, x, y, a, b));
  require_cpu(g, "unary backward");
  SIAM_CHECK(g.shape() == x.shape() && y.shape() == x.shape(), "unary_backward shapes ",
             shape_str(g.shape()), " ", shape_str(x.shape()), " ", shape_str(y.shape()));
  Tensor dx = empty(x.shape(), {x.dtype(), x.device()});
  SIAM_DISPATCH_FLOAT(x.dtype(), "unary backward", [&] {
    const scalar_t* pg = g.data<scalar_t>();
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* py = y.data<scalar_t>();
    scalar_t* pd = dx.data<scalar_t>();
    scalar_t sa = static_cast<scalar_t>(a), sb = static_cast<scalar_t>(b);
    std::array<Shape, 4> st{contiguous_strides(x.shape()), g.strides(), x.strides(), y.strides()};
    with_unary(op, [&](auto c) {
      constexpr Unary kOp = decltype(c)::value;
      for_each_row<4>(x.shape(), st, [&](auto off, auto in, int64_t n) {
        scalar_t* d = pd + off[0];
        const scalar_t *gr = pg + off[1], *xr = px + off[2], *yr = py + off[3];
        if (in[1] == 1 && in[2] == 1 && in[3] == 1)
          for (int64_t k = 0; k < n; ++k) d[k] = gr[k] * derivative(kOp, xr[k], yr[k], sa, sb);
        else
          for (int64_t k = 0; k < n; ++k)
            d[k] = gr[k * in[1]] * derivative(kOp, xr[k * in[2]], yr[k * in[3]], sa, sb);
      });
    });
  });
  return dx;
}

template <class T>
[[gnu::always_inline]] inline static T apply_binary(Binary op, T a, T b) {
  switch (op) {
    case Binary::add: return a + b;
    case Binary::sub: return a - b;
    case Binary::mul: return a * b;
    case Binary::div: return a / b;
    case Binary::maximum: return a > b ? a : b;
    case Binary::minimum: return a < b ? a : b;
  }
  return a;
}

template <class Body>
static void with_binary(Binary op, Body&& body) {
  using B = Binary;
  switch (op) {
    case B::add: return body(std::integral_constant<B, B::add>{});
    case B::sub: return body(std::integral_constant<B, B::sub>{});
    case B::mul: return body(std::integral_constant<B, B::mul>{});
    case B::div: return body(std::integral_constant<B, B::div>{});
    case B::maximum: return body(std::integral_constant<B, B::maximum>{});
    case B::minimum: return body(std::integral_constant<B, B::minimum>{});
  }
}

Tensor binary(Binary op, const Tensor& a, const Tensor& b) {
  SIAM_ON_CUDA(a, gpu::binary(op, a, b));
  require_cpu(a, "binary op");
  require_cpu(b, "binary op");
  same_dtype(a, b, "binary op");
  Shape shape = broadcast_pair(a.shape(), b.shape(), "binary op");
  Tensor y = empty(shape, {a.dtype(), a.device()});
  SIAM_DISPATCH_FLOAT(a.dtype(), "binary op", [&] {
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    std::array<Shape, 3> st{contiguous_strides(shape), broadcast_strides(a, shape), broadcast_strides(b, shape)};
    with_binary(op, [&](auto c) {
      constexpr Binary kOp = decltype(c)::value;
      for_each_row<3>(shape, st, [&](auto off, auto in, int64_t n) {
        scalar_t* o = py + off[0];
        const scalar_t* x = pa + off[1];
        const scalar_t* z = pb + off[2];
        if (in[1] == 1 && in[2] == 1)
          for (int64_t k = 0; k < n; ++k) o[k] = apply_binary(kOp, x[k], z[k]);
        else if (in[1] == 1 && in[2] == 0)
          for (int64_t k = 0; k < n; ++k) o[k] = apply_binary(kOp, x[k], z[0]);
        else if (in[1] == 0 && in[2] == 1)
          for (int64_t k = 0; k < n; ++k) o[k] = apply_binary(kOp, x[0], z[k]);
        else
          for (int64_t k = 0; k < n; ++k) o[k] = apply_binary(kOp, x[k * in[1]], z[k * in[2]]);
      });
    });
  });
  return y;
}

Tensor compare(Compare op, const Tensor& a, const Tensor& b) {
  SIAM_ON_CUDA(a, gpu::compare(op, a, b));
  require_cpu(a, "compare");
  require_cpu(b, "compare");
  same_dtype(a, b, "compare");
  Shape shape = broadcast_pair(a.shape(), b.shape(), "compare");
  Tensor y = empty(shape, {DType::b8, a.device()});
  SIAM_DISPATCH_ALL(a.dtype(), "compare", [&] {
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    bool* py = y.data<bool>();
    std::array<Shape, 3> st{contiguous_strides(shape), broadcast_strides(a, shape), broadcast_strides(b, shape)};
    for_each_row<3>(shape, st, [&](auto off, auto in, int64_t n) {
      for (int64_t k = 0; k < n; ++k) {
        double x = static_cast<double>(pa[off[1] + k * in[1]]);
        double z = static_cast<double>(pb[off[2] + k * in[2]]);
        py[off[0] + k] = op == Compare::gt ? x > z : (op == Compare::lt ? x < z : x == z);
      }
    });
  });
  return y;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  SIAM_ON_CUDA(a, gpu::where(cond, a, b));
  require_cpu(a, "where");
  same_dtype(a, b, "where");
  if (cond.dtype() != DType::b8) fail("where: condition must be bool, got ", dtype_name(cond.dtype()));
  Shape shape = broadcast_pair(broadcast_pair(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor y = empty(shape, {a.dtype(), a.device()});
  SIAM_DISPATCH_FLOAT(a.dtype(), "where", [&] {
    const bool* pc = cond.data<bool>();
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    std::array<Shape, 4> st{contiguous_strides(shape), broadcast_strides(cond, shape),
                            broadcast_strides(a, shape), broadcast_strides(b, shape)};
    for_each_row<4>(shape, st, [&](auto off, auto in, int64_t n) {
      for (int64_t k = 0; k < n; ++k)
        py[off[0] + k] = pc[off[1] + k * in[1]] ? pa[off[2] + k * in[2]] : pb[off[3] + k * in[3]];
    });
  });
  return y;
}

void add_inplace(const Tensor& a, const Tensor& b, double alpha) {
  SIAM_ON_CUDA(a, gpu::add_inplace(a, b, alpha));
  require_cpu(a, "add_");
  same_dtype(a, b, "add_");
  if (broadcast_pair(a.shape(), b.shape(), "add_") != a.shape())
    fail("add_: ", shape_str(b.shape()), " does not broadcast to ", shape_str(a.shape()));
  SIAM_DISPATCH_FLOAT(a.dtype(), "add_", [&] {
    scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    scalar_t s = static_cast<scalar_t>(alpha);
    std::array<Shape, 2> st{a.strides(), broadcast_strides(b, a.shape())};
    for_each_row<2>(a.shape(), st, [&](auto off, auto in, int64_t n) {
      scalar_t* x = pa + off[0];
      const scalar_t* z = pb + off[1];
      if (in[0] == 1 && in[1] == 1)
        for (int64_t k = 0; k < n; ++k) x[k] += s * z[k];
      else
        for (int64_t k = 0; k < n; ++k) x[k * in[0]] += s * z[k * in[1]];
    });
  });
}

void scale_inplace(const Tensor& a, double s) {
  SIAM_ON_CUDA(a, gpu::scale_inplace(a, s));
  require_cpu(a, "mul_");
  SIAM_DISPATCH_FLOAT(a.dtype(), "mul_", [&] {
    scalar_t* pa = a.data<scalar_t>();
    scalar_t f = static_cast<scalar_t>(s);
    std::array<Shape, 1> st{a.strides()};
    for_each_row<1>(a.shape(), st, [&](auto off, auto in, int64_t n) {
      scalar_t* x = pa + off[0];
      if (in[0] == 1)
        for (int64_t k = 0; k < n; ++k) x[k] *= f;
      else
        for (int64_t k = 0; k < n; ++k) x[k * in[0]] *= f;
    });
  });
}

}  // namespace siam::kernels
