#pragma once
// Optimizers of the SSL recipes: SGD (MoCo, SimSiam), LARS (SimCLR, BYOL, VICReg, Barlow
// Twins) and AdamW (DINO), with PyTorch's update rules. Parameters come in groups with their
// own learning rate and weight decay; each group is updated by one fused kernel call
// (kernels/optim.h). The state (momentum buffers, Adam moments, step counts) is a map of
// named tensors, "<parameter name>.<slot>" with PyTorch's slot names, so it checkpoints as it is.
#include <map>
#include <string>
#include <vector>

#include "nn/module.h"

namespace siam::nn {

struct ParamGroup {
  std::string name;            // names the group in messages ("weights", "bias_and_norm", "predictor")
  NamedTensors params = {};    // (PyTorch name, parameter); a name may appear in one group only
  double lr = 0;               // the current learning rate
  double weight_decay = 0;
  // set_lr(v) gives this group v * lr_scale: Barlow Twins trains biases at 0.0048 / 0.2 of the rate.
  double lr_scale = 1;
  // The scheduler leaves lr alone: SimSiam trains its predictor at a fixed rate.
  bool fixed_lr = false;
  // Biases and normalisation parameters: no weight decay (whatever weight_decay says, and
  // set_weight_decay leaves the group alone) and no LARS trust ratio.
  bool exclude_wd_and_adaptation = false;
};

// The split of SimCLR / BYOL / Barlow Twins / DINO: parameters with fewer than 2 dimensions
// (biases, batch- and layer-norm scales and shifts) go to a group "bias_and_norm" with
// exclude_wd_and_adaptation and lr_scale = bias_lr_scale; the rest to "weights". Empty groups
// are left out.
std::vector<ParamGroup> bias_and_norm_groups(const NamedTensors& params, double lr, double weight_decay,
                                             double bias_lr_scale = 1);

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient. Parameters without one are skipped
  // (their state does not move), as in PyTorch: DINO freezes its last layer that way.
  void step();
  void zero_grad();  // drops the gradients
  // The scheduler's hooks: every group without fixed_lr gets lr * lr_scale; every group
  // without exclude_wd_and_adaptation gets the weight decay.
  void set_lr(double lr);
  void set_weight_decay(double weight_decay);

  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // The live state tensors by name (saving reads them; nothing is copied).
  const std::map<std::string, Tensor>& state_dict() const { return state_; }
  // Copies a saved state in. Strict: the same names, each with the same shape.
  void load_state_dict(const std::map<std::string, Tensor>& sd);

 protected:
  Optimizer(std::vector<ParamGroup> groups, const char* kind);
  // Adds a zero state tensor "<param name>.<slot>" beside every parameter (its shape, dtype, device).
  void add_slot(const std::string& slot);
  // Adds an i64 scalar "<param name>.<slot>" on the CPU (a step count read on the host).
  void add_counter(const std::string& slot);
  // The state tensors of `slot` for the given parameter names, in order.
  std::vector<Tensor> slot(const std::vector<std::string>& names, const std::string& slot) const;
  double weight_decay_of(const ParamGroup& g) const { return g.exclude_wd_and_adaptation ? 0 : g.weight_decay; }
  // Updates `params` (the group's parameters that have a gradient) with `grads`.
  virtual void update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
                      const std::vector<Tensor>& grads) = 0;

  const char* kind_;  // "SGD", "LARS", "AdamW": for messages
  std::vector<ParamGroup> groups_;
  std::map<std::string, Tensor> state_;
};

struct SgdOptions {
  double momentum = 0;  // PyTorch's defaults
  bool nesterov = false;
};

// torch.optim.SGD with dampening 0. State: "<name>.momentum_buffer" when momentum > 0.
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SgdOptions options = {});

 private:
  void update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
              const std::vector<Tensor>& grads) override;
  SgdOptions o_;
};

struct LarsOptions {
  double momentum = 0.9;
  double eta = 0.001;  // trust coefficient
};

// LARS of SimCLR / BYOL / Barlow Twins: weight decay joins the gradient, the sum is scaled by
// the trust ratio eta ||w|| / ||g + wd w|| (1 when either norm is 0), then heavy-ball momentum.
// Groups with exclude_wd_and_adaptation get plain momentum SGD. State: "<name>.momentum_buffer".
class LARS : public Optimizer {
 public:
  LARS(std::vector<ParamGroup> groups, LarsOptions options = {});

 private:
  void update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
              const std::vector<Tensor>& grads) override;
  LarsOptions o_;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
};

// torch.optim.AdamW (decoupled weight decay, bias correction, no amsgrad). State:
// "<name>.exp_avg", "<name>.exp_avg_sq" and "<name>.step" (i64 scalar, per parameter as in
// PyTorch, so a parameter frozen for a while gets its own bias correction).
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {});

 private:
  void update(const ParamGroup& g, const std::vector<std::string>& names, const std::vector<Tensor>& params,
              const std::vector<Tensor>& grads) override;
  AdamWOptions o_;
};

}  // namespace siam::nn
