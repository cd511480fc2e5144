#pragma once
// ssl::Method: the one interface of every SSL method (SimCLR, MoCo v2, BYOL, SimSiam, DINO,
// VICReg, Barlow Twins). A method is an nn::Module holding its online network, heads, targets
// and state buffers (queue, centre), so its state dict is its checkpoint. A training loop is:
//
//   optimizer.zero_grad();                                   // over method.param_groups(...)
//   StepOutput out = method.training_step(views, progress);  // forward, builds the graph
//   autograd::backward(out.loss);
//   optimizer.step();
//   method.after_optimizer_step(progress);                   // EMA target, queue, centre
//
// Schedules inside a method (EMA momentum, teacher temperature, frozen last layer) are pure
// functions of the Progress passed in, so resuming only needs the step.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/optim.h"
#include "ssl/backbone.h"

namespace siam::dist {
class Group;
}

namespace siam::ssl {

struct Progress {
  int64_t step = 0;             // this optimizer step's index in the run, from 0
  int64_t steps_per_epoch = 1;
  int64_t total_steps = 1;      // steps in the whole run (epochs x steps_per_epoch)
  int64_t epoch() const { return step / steps_per_epoch; }
};

struct StepOutput {
  Tensor loss;  // (), carries the graph: the caller runs backward on it
  // (), detached, on the loss's device (read them when logging; reading forces a sync):
  // "loss", the method's loss terms, schedule values, and "embedding_std", the collapse
  // signal (ssl::embedding_std of the embeddings the loss sees).
  std::map<std::string, Tensor> metrics;
};

// The official optimizer recipe of a method (methods.md); a config-file layer fills it, the
// training loop applies the warm-up and cosine schedules (nn/schedule.h).
struct OptimRecipe {
  std::string optimizer = "sgd";     // "sgd", "lars" or "adamw"
  double base_lr = 0.05;             // per 256 images: the run's lr is base_lr x batch / 256
  double weight_decay = 1e-4;
  double final_weight_decay = 1e-4;  // cosine end value of the weight decay (DINO 0.04 -> 0.4)
  double momentum = 0.9;             // SGD and LARS
  int64_t warmup_epochs = 0;         // linear learning-rate warm-up before the cosine decay
};

class Method : public nn::Module {
 public:
  virtual const char* name() const = 0;

  // The trainable parameters in optimizer groups with learning rate `lr` and weight decay
  // `weight_decay` (the method adds its own rules: no decay on biases, a fixed-lr predictor,
  // a bias learning-rate scale). Targets, queues, centres and frozen parameters are in none.
  virtual std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const = 0;

  // One forward pass over a batch. views[v]: (N, C, H, W), the v-th view of the same N images
  // (two views, or DINO's global crops followed by its local crops). positives: optional bool
  // (V N, V N) mask of extra positive pairs over the stacked views (SimCLR only; see nt_xent).
  StepOutput training_step(const std::vector<Tensor>& views, const Progress& progress,
                           const Tensor& positives = Tensor());

  // Updates that follow the optimizer step with the same `progress`: EMA targets, the MoCo
  // queue, DINO's centre. Methods without such state do nothing.
  virtual void after_optimizer_step(const Progress& progress) {}

  // The encoder to evaluate and export (torchvision / timm names): the online backbone, or
  // DINO's teacher backbone, which the official code evaluates.
  virtual nn::Module& backbone() const { return *online_.module; }
  nn::Module& online_backbone() const { return *online_.module; }  // the one the optimizer trains
  int64_t feature_dim() const { return online_.feature_dim; }
  Tensor forward(const Tensor& x) override;  // x: (N, C, H, W) -> backbone() features (N, feature_dim)

  // Named parameters that take gradients (requires_grad), in state-dict order.
  nn::NamedTensors trainable_parameters() const;

  // Data-parallel training: the ranks whose batches make up the global batch (null or one
  // rank: this process alone). Every BatchNorm becomes synchronised over the group; losses
  // that need the whole batch (NT-Xent, VICReg's variance and covariance, Barlow Twins'
  // cross-correlation) gather its embeddings; the MoCo queue takes every rank's keys and
  // DINO's centre the mean over ranks. The caller averages the gradients (nn::GradReducer).
  virtual void set_process_group(dist::Group* group);

  // A method that learns from labels (the supervised baseline) gets each batch's labels, (N)
  // i64, before its training_step. SSL methods need none.
  virtual bool needs_labels() const { return false; }
  void set_labels(const Tensor& labels) { labels_ = labels; }
  dist::Group* process_group() const { return group_; }

 protected:
  // Registers the online backbone as child "backbone".
  explicit Method(Backbone online);
  virtual StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) = 0;
  virtual bool accepts_positives() const { return false; }
  // Throws unless there are between lo and hi views.
  void require_views(const std::vector<Tensor>& views, size_t lo, size_t hi) const;

  // z: (n, ...) -> the rows of every rank, rank-major (n W, ...), differentiably; z alone
  // without a group.
  Tensor gather(const Tensor& z) const;
  // In place: t becomes its mean over the ranks (no autograd).
  void average(Tensor& t) const;

  Backbone online_;
  dist::Group* group_ = nullptr;
  Tensor labels_;  // set_labels
};

// The optimizer of `recipe` over method.param_groups(base_lr x batch_size / 256, weight_decay).
std::unique_ptr<nn::Optimizer> make_optimizer(const Method& method, const OptimRecipe& recipe, int64_t batch_size);

// A target network's copy of `online`: `target` gets online's values and loses requires_grad
// (it is only ever moved by the EMA).
void init_target(nn::Module& target, const nn::Module& online);

}  // namespace siam::ssl
