#pragma once
// Module: a tree of named parameters, buffers and children with PyTorch's naming
// ("layer1.0.conv1.weight"), so state dicts round-trip with torchvision / timm. Parameters
// are leaf tensors with requires_grad; to(device/dtype) swaps their storage in place so the
// handles a layer holds stay valid.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace siam::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  // The default forward of a one-input module; containers and models override it.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  int64_t num_parameters() const;

  // Parameters and buffers by full name, PyTorch layouts.
  std::map<std::string, Tensor> state_dict() const;
  // strict: every key of the module must be present and no other; shapes must match.
  void load_state_dict(const std::map<std::string, Tensor>& sd, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void to(Device device);
  void to(DType dtype);  // floating parameters and buffers only
  void zero_grad();

 protected:
  Tensor register_parameter(const std::string& name, Tensor t);
  Tensor register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void collect(const std::string& prefix, bool params, NamedTensors* out) const;
  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

using ModulePtr = std::shared_ptr<Module>;

// Replaces t's storage, shape and dtype with src's in place; every handle on t sees it.
void set_data(const Tensor& t, const Tensor& src);

}  // namespace siam::nn
