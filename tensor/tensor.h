#pragma once
// Tensor: a shared handle to (storage, shape, strides, offset, dtype) plus the autograd
// fields. tensor/ knows nothing above it: grad_fn points at an autograd::Node that this
// layer only holds. Every op (views included) is a free function in autograd/ops.h;
// this class offers metadata, raw data access and the non-differentiable view primitive.
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/error.h"

namespace siam {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

namespace autograd { struct Node; }

// A block of memory on one device. Frees itself through the allocator that made it.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  Storage(size_t nbytes, Device device);  // allocates (64-byte aligned on the host)
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape, strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;     // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t offset() const { return impl().offset; }
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  bool is_contiguous() const;
  size_t nbytes() const { return numel() * dtype_size(dtype()); }

  // Raw element pointer at the tensor's offset. T must match the dtype.
  template <class T> T* data() const {
    SIAM_CHECK(dtype_of<T>() == dtype(), "data<", dtype_name(dtype_of<T>()), ">() on a ",
               dtype_name(dtype()), " tensor");
    return static_cast<T*>(raw_data());
  }
  void* raw_data() const;
  // Reads one element (any dtype, CPU only) as double; for tests and printing.
  double item() const;  // numel must be 1
  double at(std::initializer_list<int64_t> idx) const;
  std::vector<double> to_vector() const;  // row-major values (CPU), for tests

  // A new tensor sharing storage with this one (no autograd link).
  Tensor as_strided(Shape shape, Shape strides, int64_t offset) const;

  // Autograd fields.
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& g) const { impl().grad = g.impl_; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }

  TensorImpl& impl() const {
    SIAM_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  std::string str(int64_t max_per_dim = 6) const;  // shape, dtype, device, abridged values

 private:
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Factories (no autograd history; requires_grad off).
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
};
Tensor empty(const Shape& shape, TensorOptions o = {});
Tensor zeros(const Shape& shape, TensorOptions o = {});
Tensor ones(const Shape& shape, TensorOptions o = {});
Tensor full(const Shape& shape, double value, TensorOptions o = {});
Tensor arange(double start, double end, double step = 1, TensorOptions o = {});
Tensor linspace(double start, double end, int64_t steps, TensorOptions o = {});
Tensor eye(int64_t n, TensorOptions o = {});
// Copies host values (converted to the dtype) into a new tensor.
Tensor from_vector(const std::vector<double>& values, const Shape& shape, TensorOptions o = {});
Tensor from_host(const void* data, const Shape& shape, DType dtype, Device device = Device::cpu());
Tensor scalar_tensor(double value, TensorOptions o = {});

// Fills (in place, any dtype, any strides).
void fill_(const Tensor& t, double value);
// Copies src into dst elementwise (same shape; dtypes converted; devices may differ only
// when both are contiguous). No autograd.
void copy_(const Tensor& dst, const Tensor& src);
// A contiguous copy on `device` with `dtype` (no autograd).
Tensor copy_to(const Tensor& src, Device device, DType dtype);

}  // namespace siam
