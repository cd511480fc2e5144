#include "nn/ema.h"

#include "autograd/ops.h"

namespace siam::nn {

static std::string only_in(const std::map<std::string, Tensor>& a, const std::map<std::string, Tensor>& b) {
  std::string s;
  for (const auto& [k, t] : a)
    if (!b.count(k)) s += (s.empty() ? "" : ", ") + k;
  return s;
}

EmaUpdater::EmaUpdater(const Module& target, const Module& online, bool ema_buffers) {
  std::map<std::string, Tensor> t = target.state_dict(), o = online.state_dict();
  std::string only_t = only_in(t, o), only_o = only_in(o, t);
  if (!only_t.empty() || !only_o.empty())
    fail("EMA: the target and online models have different state-dict keys; only in the target: [", only_t,
         "], only in the online model: [", only_o, "]");
  for (const auto& [k, tt] : t) {
    const Tensor& ot = o.at(k);
    if (tt.shape() != ot.shape() || tt.dtype() != ot.dtype())
      fail("EMA: '", k, "' is ", shape_str(tt.shape()), " ", dtype_name(tt.dtype()), " in the target and ",
           shape_str(ot.shape()), " ", dtype_name(ot.dtype()), " in the online model");
  }
  for (const auto& [k, p] : target.named_parameters()) {
    avg_target_.push_back(p);
    avg_online_.push_back(o.at(k));
  }
  for (const auto& [k, b] : target.named_buffers()) {
    bool avg = ema_buffers && is_floating(b.dtype());
    (avg ? avg_target_ : copy_target_).push_back(b);
    (avg ? avg_online_ : copy_online_).push_back(o.at(k));
  }
}

void EmaUpdater::update(double m) {
  if (!(m >= 0 && m <= 1)) fail("EMA: momentum must be in [0, 1], got ", m);
  ema_update(avg_target_, avg_online_, m);
  for (size_t i = 0; i < copy_target_.size(); ++i) copy_(copy_target_[i], copy_online_[i]);
}

}  // namespace siam::nn
