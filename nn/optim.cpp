#include "nn/optim.h"

#include <cmath>

#include "autograd/ops.h"

namespace siam::nn {

std::vector<ParamGroup> bias_and_norm_groups(const NamedTensors& params, double lr, double weight_decay,
                                             double bias_lr_scale) {
  ParamGroup weights{.name = "weights", .lr = lr, .weight_decay = weight_decay};
  ParamGroup bias{.name = "bias_and_norm", .lr = lr * bias_lr_scale, .weight_decay = 0,
                  .lr_scale = bias_lr_scale, .exclude_wd_and_adaptation = true};
  for (const auto& [name, p] : params) (p.dim() < 2 ? bias : weights).params.emplace_back(name, p);
  std::vector<ParamGroup> out;
  for (auto* g : {&weights, &bias})
    if (!g->params.empty()) out.push_back(std::move(*g));
  return out;
}

static void check_hyper(const char* kind, const char* what, double v, double lo, double hi, bool hi_open) {
  if (!(v >= lo && (hi_open ? v < hi : v <= hi)))
    fail(kind, ": ", what, " must be in [", lo, ", ", hi, hi_open ? ")" : "]", ", got ", v);
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, const char* kind) : kind_(kind), groups_(std::move(groups)) {
  if (groups_.empty()) fail(kind_, ": no parameter groups");
  std::map<std::string, std::string> owner;  // parameter name -> group name
  for (const auto& g : groups_) {
    std::string what = std::string("group '") + g.name + "'";
    check_hyper(kind_, (what + " lr").c_str(), g.lr, 0, INFINITY, false);
    check_hyper(kind_, (what + " weight_decay").c_str(), g.weight_decay, 0, INFINITY, false);
    check_hyper(kind_, (what + " lr_scale").c_str(), g.lr_scale, 0, INFINITY, false);
    for (const auto& [name, p] : g.params) {
      if (!p.defined()) fail(kind_, ": parameter '", name, "' of group '", g.name, "' is an undefined tensor");
      auto [it, fresh] = owner.emplace(name, g.name);
      if (!fresh)
        fail(kind_, ": parameter '", name, "' appears twice (groups '", it->second, "' and '", g.name,
             "'); each parameter belongs to one group");
    }
  }
}

void Optimizer::add_slot(const std::string& slot) {
  for (const auto& g : groups_)
    for (const auto& [name, p] : g.params) state_[name + "." + slot] = zeros(p.shape(), {p.dtype(), p.device()});
}

void Optimizer::add_counter(const std::string& slot) {
  for (const auto& g : groups_)
    for (const auto& [name, p] : g.params) state_[name + "." + slot] = zeros({}, {DType::i64});
}

std::vector<Tensor> Optimizer::slot(const std::vector<std::string>& names, const std::string& slot) const {
  std::vector<Tensor> out;
  out.reserve(names.size());
  for (const auto& n : names) out.push_back(state_.at(n + "." + slot));
  return out;
}

void Optimizer::step() {
  for (const auto& g : groups_) {
    std::vector<std::string> names;
    std::vector<Tensor> params, grads;
    for (const auto& [name, p] : g.params) {
      Tensor gr = p.grad();
      if (!gr.defined()) continue;
      names.push_back(name);
      params.push_back(p);
      grads.push_back(gr);
    }
    if (!params.empty()) update(g, names, params, grads);
  }
}

void Optimizer::zero_grad() {
  for (const auto& g : groups_)
    for (const auto& [name, p] : g.params) p.set_grad(Tensor());
}

void Optimizer::set_lr(double lr) {
  check_hyper(kind_, "lr", lr, 0, INFINITY, false);
  for (auto& g : groups_)
    if (!g.fixed_lr) g.lr = lr * g.lr_scale;
}

void Optimizer::set_weight_decay(double weight_decay) {
  check_hyper(kind_, "weight_decay", weight_decay, 0, INFINITY, false);
  for (auto& g : groups_)
    if (!g.exclude_wd_and_adaptation) g.weight_decay = weight_decay;
}

void Optimizer::load_state_dict(const std::map<std::string, Tensor>& sd) {
  std::string missing, unexpected;
  for (const auto& [n, t] : state_)
    if (!sd.count(n)) missing += (missing.empty() ? "" : ", ") + n;
  for (const auto& [n, t] : sd)
    if (!state_.count(n)) unexpected += (unexpected.empty() ? "" : ", ") + n;
  if (!missing.empty() || !unexpected.empty())
    fail(kind_, " load_state_dict: state names do not match this optimizer; missing: [", missing,
         "], unexpected: [", unexpected, "]");
  for (const auto& [n, t] : state_) {
    const Tensor& src = sd.at(n);
    if (src.shape() != t.shape() || src.dtype() != t.dtype())
      fail(kind_, " load_state_dict: '", n, "' is ", shape_str(src.shape()), " ", dtype_name(src.dtype()),
           ", this optimizer expects ", shape_str(t.shape()), " ", dtype_name(t.dtype()));
    copy_(t, src);
  }
}

// ---------------------------------------------------------------- SGD

SGD::SGD(std::vector<ParamGroup> groups, SgdOptions o) : Optimizer(std::move(groups), "SGD"), o_(o) {
  check_hyper(kind_, "momentum", o_.momentum, 0, 1, true);
  if (o_.nesterov && o_.momentum == 0) fail("SGD: nesterov needs momentum > 0, got momentum 0");
  if (o_.momentum != 0) add_slot("momentum_buffer");
}

void SGD::update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
                 const std::vector<Tensor>& grads) {
  SgdHyper h{.lr = g.lr, .momentum = o_.momentum, .weight_decay = weight_decay_of(g),
                      .nesterov = o_.nesterov};
  sgd_update(params, grads, o_.momentum != 0 ? slot(names, "momentum_buffer") : std::vector<Tensor>{},
                      h);
}

// ---------------------------------------------------------------- LARS

LARS::LARS(std::vector<ParamGroup> groups, LarsOptions o) : Optimizer(std::move(groups), "LARS"), o_(o) {
  check_hyper(kind_, "momentum", o_.momentum, 0, 1, true);
  if (!(o_.eta > 0)) fail("LARS: trust coefficient eta must be > 0, got ", o_.eta);
  add_slot("momentum_buffer");
}

void LARS::update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
                  const std::vector<Tensor>& grads) {
  LarsHyper h{.lr = g.lr, .momentum = o_.momentum, .weight_decay = weight_decay_of(g), .eta = o_.eta,
                       .adapt = !g.exclude_wd_and_adaptation};
  lars_update(params, grads, slot(names, "momentum_buffer"), h);
}

// ---------------------------------------------------------------- AdamW

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions o) : Optimizer(std::move(groups), "AdamW"), o_(o) {
  check_hyper(kind_, "beta1", o_.beta1, 0, 1, true);
  check_hyper(kind_, "beta2", o_.beta2, 0, 1, true);
  if (!(o_.eps > 0)) fail("AdamW: eps must be > 0, got ", o_.eps);
  add_slot("exp_avg");
  add_slot("exp_avg_sq");
  add_counter("step");
}

void AdamW::update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
                   const std::vector<Tensor>& grads) {
  std::vector<Tensor> counters = slot(names, "step");
  std::vector<int64_t> steps;
  for (const Tensor& t : counters) steps.push_back(*t.data<int64_t>() + 1);
  AdamWHyper h{.lr = g.lr, .beta1 = o_.beta1, .beta2 = o_.beta2, .eps = o_.eps,
                        .weight_decay = weight_decay_of(g)};
  adamw_update(params, grads, slot(names, "exp_avg"), slot(names, "exp_avg_sq"), steps, h);
  // Counted only once the update went through, so a rejected step leaves the state as it was.
  for (size_t i = 0; i < counters.size(); ++i) *counters[i].data<int64_t>() = steps[i];
}

}  // namespace siam::nn
