#include "tensor/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "tensor/cuda_runtime.h"
#include "tensor/host_alloc.h"
#if defined(SIAM_HAS_CUDA) && SIAM_HAS_CUDA
#include "kernels/cuda/copy.h"
#endif

namespace siam {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: case DType::i32: return 4;
    case DType::f64: case DType::i64: return 8;
    case DType::bf16: return 2;
    case DType::u8: case DType::b8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::b8: return "bool";
  }
  return "?";
}

DType dtype_from_name(const std::string& n) {
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64, DType::u8, DType::b8})
    if (n == dtype_name(t)) return t;
  fail("unknown dtype '", n, "': expected one of f32, f64, bf16, i32, i64, u8, bool");
}

bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    char* end = nullptr;
    long i = std::strtol(s.c_str() + 5, &end, 10);
    if (end != s.c_str() + 5 && *end == '\0' && i >= 0) return cuda(static_cast<int>(i));
  }
  fail("bad device '", s, "': expected cpu, cuda or cuda:N");
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

// ---------------------------------------------------------------- storage

Storage::Storage(size_t n, Device dev) : nbytes(n), device(dev) {
  if (n == 0) return;
  if (dev.is_cpu()) {
    data = host::alloc(n);
    if (!data) fail("out of host memory: could not allocate ", n, " bytes");
  } else {
    data = cuda::device_alloc(n, dev.index);
  }
}

Storage::~Storage() {
  if (!data) return;
  if (device.is_cpu()) host::release(data, nbytes);
  else cuda::device_free(data, device.index);
}

// ---------------------------------------------------------------- tensor

static int64_t wrap_dim(int64_t d, int64_t n) {
  int64_t w = d < 0 ? d + n : d;
  if (w < 0 || w >= n) fail("dimension ", d, " out of range for a tensor of ", n, " dimensions");
  return w;
}

int64_t Tensor::size(int64_t d) const { return impl().shape[wrap_dim(d, dim())]; }
int64_t Tensor::stride(int64_t d) const { return impl().strides[wrap_dim(d, dim())]; }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl().shape[i] == 1) continue;
    if (impl().strides[i] != expect) return false;
    expect *= impl().shape[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl().storage->data) + impl().offset * dtype_size(dtype());
}

Tensor Tensor::as_strided(Shape shape, Shape strides, int64_t offset) const {
  SIAM_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape_str(shape),
             " and strides ", shape_str(strides), " differ in rank");
  auto r = std::make_shared<TensorImpl>();
  r->storage = impl().storage;
  r->shape = std::move(shape);
  r->strides = std::move(strides);
  r->offset = offset;
  r->dtype = impl().dtype;
  return Tensor(r);
}

Tensor& Tensor::requires_grad_(bool on) {
  if (on && !is_floating(dtype()))
    fail("requires_grad on a ", dtype_name(dtype()), " tensor: only floating tensors have gradients");
  if (!is_leaf()) fail("requires_grad_() on a non-leaf tensor: call detach() first");
  impl().requires_grad = on;
  return *this;
}

static double load(const char* base, DType t) {
  switch (t) {
    case DType::f32: return *reinterpret_cast<const float*>(base);
    case DType::f64: return *reinterpret_cast<const double*>(base);
    case DType::bf16: return static_cast<float>(*reinterpret_cast<const bf16*>(base));
    case DType::i32: return *reinterpret_cast<const int32_t*>(base);
    case DType::i64: return static_cast<double>(*reinterpret_cast<const int64_t*>(base));
    case DType::u8: return *reinterpret_cast<const uint8_t*>(base);
    case DType::b8: return *reinterpret_cast<const bool*>(base) ? 1.0 : 0.0;
  }
  return 0;
}

static void store(char* base, DType t, double v) {
  switch (t) {
    case DType::f32: *reinterpret_cast<float*>(base) = static_cast<float>(v); break;
    case DType::f64: *reinterpret_cast<double*>(base) = v; break;
    case DType::bf16: *reinterpret_cast<bf16*>(base) = bf16(static_cast<float>(v)); break;
    case DType::i32: *reinterpret_cast<int32_t*>(base) = static_cast<int32_t>(v); break;
    case DType::i64: *reinterpret_cast<int64_t*>(base) = static_cast<int64_t>(v); break;
    case DType::u8: *reinterpret_cast<uint8_t*>(base) = static_cast<uint8_t>(v); break;
    case DType::b8: *reinterpret_cast<bool*>(base) = v != 0; break;
  }
}

double Tensor::item() const {
  if (numel() != 1) fail("item() needs a tensor of one element, got shape ", shape_str(shape()));
  if (!device().is_cpu()) return copy_to(*this, Device::cpu(), dtype()).item();
  return load(static_cast<const char*>(raw_data()), dtype());
}

double Tensor::at(std::initializer_list<int64_t> idx) const {
  SIAM_CHECK(static_cast<int64_t>(idx.size()) == dim(), "at(): ", idx.size(), " indices for ",
             dim(), " dimensions");
  SIAM_CHECK(device().is_cpu(), "at() on a ", device().str(), " tensor");
  int64_t off = 0, i = 0;
  for (int64_t v : idx) {
    SIAM_CHECK(v >= 0 && v < shape()[i], "at(): index ", v, " out of range for size ", shape()[i]);
    off += v * strides()[i++];
  }
  return load(static_cast<const char*>(raw_data()) + off * dtype_size(dtype()), dtype());
}

// Visits every element offset (in elements, relative to the tensor's offset) in row-major order.
template <class F>
static void for_each_offset(const Shape& shape, const Shape& strides, F&& f) {
  int64_t n = shape_numel(shape);
  if (n == 0) return;
  size_t nd = shape.size();
  std::vector<int64_t> idx(nd, 0);
  int64_t off = 0;
  for (int64_t k = 0; k < n; ++k) {
    f(k, off);
    for (int64_t d = static_cast<int64_t>(nd) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) { off += strides[d]; break; }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

std::vector<double> Tensor::to_vector() const {
  if (!device().is_cpu()) return copy_to(*this, Device::cpu(), dtype()).to_vector();
  std::vector<double> v(numel());
  const char* base = static_cast<const char*>(raw_data());
  size_t es = dtype_size(dtype());
  for_each_offset(shape(), strides(), [&](int64_t k, int64_t off) { v[k] = load(base + off * es, dtype()); });
  return v;
}

void fill_(const Tensor& t, double value) {
  if (!t.device().is_cpu()) {
#if defined(SIAM_HAS_CUDA) && SIAM_HAS_CUDA
    gpu::fill(t, value);  // on the device, asynchronous
    return;
#else
    fail("fill_ on a ", t.device().str(), " tensor in a build without CUDA");
#endif
  }
  char* base = static_cast<char*>(t.raw_data());
  size_t es = dtype_size(t.dtype());
  if (t.is_contiguous() && t.dtype() == DType::f32) {
    float* p = t.data<float>();
    std::fill(p, p + t.numel(), static_cast<float>(value));
    return;
  }
  for_each_offset(t.shape(), t.strides(), [&](int64_t, int64_t off) { store(base + off * es, t.dtype(), value); });
}

#if defined(SIAM_HAS_CUDA) && SIAM_HAS_CUDA
// copy_ where a GPU is involved. Strides and dtype conversions are handled on the device
// (gpu::copy_strided); bytes cross between host and device only as contiguous blocks, and
// a copy within one device never waits for the host.
static void copy_with_device(const Tensor& dst, const Tensor& src, bool same_layout) {
  const Device dd = dst.device(), sd = src.device();
  if (dd.is_cuda() && sd.is_cuda()) {
    if (dd == sd) {
      if (same_layout) cuda::copy_d2d(dst.raw_data(), src.raw_data(), dst.nbytes(), dd.index);
      else gpu::copy_strided(dst, src);
      return;
    }
    // Across devices: dst's dtype, contiguous, on the source device; the bytes; then dst's
    // layout on the destination device. The two devices' streams are not ordered with each
    // other, hence the synchronisations on this (rare) path.
    Tensor s = src.is_contiguous() && src.dtype() == dst.dtype() ? src : copy_to(src, sd, dst.dtype());
    Tensor d = dst.is_contiguous() ? dst : empty(dst.shape(), {dst.dtype(), dd});
    cuda::synchronize(sd.index);
    cuda::copy_d2d(d.raw_data(), s.raw_data(), d.nbytes(), dd.index);
    cuda::synchronize(dd.index);
    if (!d.same(dst)) gpu::copy_strided(dst, d);
    return;
  }
  if (dd.is_cuda()) {  // host -> device: contiguous bytes up, then converted / laid out there
    Tensor h = src.is_contiguous() ? src : copy_to(src, Device::cpu(), src.dtype());
    if (dst.is_contiguous() && dst.dtype() == src.dtype()) {
      cuda::copy_h2d(dst.raw_data(), h.raw_data(), dst.nbytes(), dd.index);
      return;
    }
    Tensor d = empty(src.shape(), {src.dtype(), dd});
    cuda::copy_h2d(d.raw_data(), h.raw_data(), d.nbytes(), dd.index);
    gpu::copy_strided(dst, d);
    return;
  }
  // device -> host: converted to dst's dtype and made contiguous on the device, then down.
  Tensor s = src.is_contiguous() && src.dtype() == dst.dtype() ? src : copy_to(src, sd, dst.dtype());
  if (dst.is_contiguous()) {
    cuda::copy_d2h(dst.raw_data(), s.raw_data(), dst.nbytes(), sd.index);
    return;
  }
  Tensor h = empty(dst.shape(), {dst.dtype(), Device::cpu()});
  cuda::copy_d2h(h.raw_data(), s.raw_data(), h.nbytes(), sd.index);
  copy_(dst, h);
}
#else
static void copy_with_device(const Tensor& dst, const Tensor& src, bool) {
  fail("copy_ between ", src.device().str(), " and ", dst.device().str(), " in a build without CUDA");
}
#endif

void copy_(const Tensor& dst, const Tensor& src) {
  if (dst.shape() != src.shape())
    fail("copy_: destination shape ", shape_str(dst.shape()), " differs from source shape ",
         shape_str(src.shape()));
  if (dst.numel() == 0) return;
  bool same_layout = dst.is_contiguous() && src.is_contiguous() && dst.dtype() == src.dtype();
  if (!dst.device().is_cpu() || !src.device().is_cpu()) {
    copy_with_device(dst, src, same_layout);
    return;
  }
  if (same_layout) {
    std::memcpy(dst.raw_data(), src.raw_data(), dst.nbytes());
    return;
  }
  // General strided, converting copy: gather source offsets in row-major order.
  std::vector<int64_t> soff(src.numel());
  for_each_offset(src.shape(), src.strides(), [&](int64_t k, int64_t off) { soff[k] = off; });
  const char* sb = static_cast<const char*>(src.raw_data());
  char* db = static_cast<char*>(dst.raw_data());
  size_t ses = dtype_size(src.dtype()), des = dtype_size(dst.dtype());
  if (src.dtype() == dst.dtype()) {
    for_each_offset(dst.shape(), dst.strides(), [&](int64_t k, int64_t off) {
      std::memcpy(db + off * des, sb + soff[k] * ses, des);
    });
  } else {
    for_each_offset(dst.shape(), dst.strides(), [&](int64_t k, int64_t off) {
      store(db + off * des, dst.dtype(), load(sb + soff[k] * ses, src.dtype()));
    });
  }
}

Tensor copy_to(const Tensor& src, Device device, DType dtype) {
  Tensor r = empty(src.shape(), {dtype, device});
  copy_(r, src);
  return r;
}

// ---------------------------------------------------------------- factories

Tensor empty(const Shape& shape, TensorOptions o) {
  for (int64_t d : shape)
    if (d < 0) fail("empty: negative dimension in shape ", shape_str(shape));
  if (o.device.is_cuda() && !cuda::available())
    fail("cannot allocate on ", o.device.str(), ": ", cuda::unavailable_reason());
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(o.dtype), o.device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = o.dtype;
  return Tensor(impl);
}

Tensor zeros(const Shape& shape, TensorOptions o) { return full(shape, 0.0, o); }
Tensor ones(const Shape& shape, TensorOptions o) { return full(shape, 1.0, o); }

Tensor full(const Shape& shape, double value, TensorOptions o) {
  Tensor t = empty(shape, o);
  fill_(t, value);
  return t;
}

Tensor scalar_tensor(double value, TensorOptions o) { return full({}, value, o); }

Tensor from_vector(const std::vector<double>& v, const Shape& shape, TensorOptions o) {
  if (static_cast<int64_t>(v.size()) != shape_numel(shape))
    fail("from_vector: ", v.size(), " values for shape ", shape_str(shape), " (", shape_numel(shape), " elements)");
  Tensor h = empty(shape, {o.dtype, Device::cpu()});
  char* b = static_cast<char*>(h.raw_data());
  for (size_t i = 0; i < v.size(); ++i) store(b + i * dtype_size(o.dtype), o.dtype, v[i]);
  return o.device.is_cpu() ? h : copy_to(h, o.device, o.dtype);
}

Tensor from_host(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, {dtype, device});
  if (t.nbytes() == 0) return t;
  if (device.is_cpu()) std::memcpy(t.raw_data(), data, t.nbytes());
  else cuda::copy_h2d(t.raw_data(), data, t.nbytes(), device.index);
  return t;
}

Tensor arange(double start, double end, double step, TensorOptions o) {
  if (step == 0 || (end - start) / step < 0) fail("arange: bad range start=", start, " end=", end, " step=", step);
  int64_t n = static_cast<int64_t>(std::ceil((end - start) / step));
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = start + i * step;
  return from_vector(v, {n}, o);
}

Tensor linspace(double start, double end, int64_t steps, TensorOptions o) {
  if (steps < 0) fail("linspace: steps must be >= 0, got ", steps);
  std::vector<double> v(steps);
  for (int64_t i = 0; i < steps; ++i) v[i] = steps == 1 ? start : start + (end - start) * i / (steps - 1);
  return from_vector(v, {steps}, o);
}

Tensor eye(int64_t n, TensorOptions o) {
  std::vector<double> v(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) v[i * n + i] = 1;
  return from_vector(v, {n, n}, o);
}

// ---------------------------------------------------------------- printing

std::string Tensor::str(int64_t max_per_dim) const {
  std::ostringstream os;
  if (!defined()) return "Tensor(undefined)";
  os << "Tensor(shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype())
     << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")\n";
  Tensor h = device().is_cpu() ? *this : copy_to(*this, Device::cpu(), dtype());
  const char* base = static_cast<const char*>(h.raw_data());
  size_t es = dtype_size(dtype());
  os << std::setprecision(5);
  // Recursive abridged print: first and last max/2 entries of each dimension.
  auto rec = [&](auto&& self, int64_t d, int64_t off) -> void {
    if (d == dim()) { os << load(base + off * es, dtype()); return; }
    os << "[";
    int64_t n = shape()[d], half = max_per_dim / 2;
    for (int64_t i = 0; i < n; ++i) {
      if (n > max_per_dim && i == half) { os << "..., "; i = n - half; }
      self(self, d + 1, off + i * h.strides()[d]);
      if (i + 1 < n) os << (d + 1 == dim() ? ", " : ",\n" + std::string(d + 1, ' '));
    }
    os << "]";
  };
  rec(rec, 0, 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace siam
