#include "nn/module.h"

#include <set>

namespace siam::nn {

Tensor Module::forward(const Tensor&) {
  fail("this module has no one-input forward(); call its own forward method");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  if (t.defined() && !t.requires_grad()) t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, t);
  return t;
}

void Module::collect(const std::string& prefix, bool params, NamedTensors* out) const {
  for (const auto& [n, t] : params ? params_ : buffers_)
    if (t.defined()) out->emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", params, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors r;
  collect("", true, &r);
  return r;
}

NamedTensors Module::named_buffers() const {
  NamedTensors r;
  collect("", false, &r);
  return r;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> r;
  for (auto& [n, t] : named_parameters()) r.push_back(t);
  return r;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [k, t] : named_parameters()) n += t.numel();
  return n;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> sd;
  for (auto& [n, t] : named_parameters()) sd[n] = t;
  for (auto& [n, t] : named_buffers()) sd[n] = t;
  return sd;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& sd, bool strict) {
  std::map<std::string, Tensor> mine = state_dict();
  std::string missing, unexpected;
  for (auto& [n, t] : mine) {
    auto it = sd.find(n);
    if (it == sd.end()) {
      missing += (missing.empty() ? "" : ", ") + n;
      continue;
    }
    if (it->second.shape() != t.shape())
      fail("load_state_dict: '", n, "' has shape ", shape_str(it->second.shape()), ", the model expects ",
           shape_str(t.shape()));
    NoGradGuard ng;
    copy_(t, it->second);
  }
  for (auto& [n, t] : sd)
    if (!mine.count(n)) unexpected += (unexpected.empty() ? "" : ", ") + n;
  if (strict && (!missing.empty() || !unexpected.empty()))
    fail("load_state_dict: keys do not match the model; missing: [", missing, "], unexpected: [", unexpected, "]");
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void set_data(const Tensor& t, const Tensor& src) {
  TensorImpl& d = t.impl();
  const TensorImpl& s = src.impl();
  d.storage = s.storage;
  d.shape = s.shape;
  d.strides = s.strides;
  d.offset = s.offset;
  d.dtype = s.dtype;
  d.grad.reset();
}

void Module::to(Device device) {
  for (auto* list : {&params_, &buffers_})
    for (auto& [n, t] : *list)
      if (t.defined() && t.device() != device) set_data(t, copy_to(t, device, t.dtype()));
  for (auto& [n, c] : children_) c->to(device);
}

void Module::to(DType dtype) {
  for (auto* list : {&params_, &buffers_})
    for (auto& [n, t] : *list)
      if (t.defined() && is_floating(t.dtype()) && t.dtype() != dtype) set_data(t, copy_to(t, t.device(), dtype));
  for (auto& [n, c] : children_) c->to(dtype);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.set_grad(Tensor());
}

}  // namespace siam::nn
