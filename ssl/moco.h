#pragma once
// MoCo v2 (Chen et al. 2020; facebookresearch/moco): a query encoder trained with InfoNCE
// against its momentum key encoder's key for the other view and a queue of past keys.
//
// Batch norm on one device: the official code shuffles the batch across GPUs before the key
// encoder (shuffle-BN) so the query and key batch statistics come from different images and
// cannot leak which key is positive. On one device there is nothing to shuffle across: both
// encoders normalise over the whole batch. docs/ssl.md discusses it. Under data parallelism
// both encoders use SyncBN by default (so N ranks give one process's run); shuffle_bn = true
// is the official scheme: the key encoder's input is shuffled across the ranks with a
// permutation all ranks share, each rank normalises its shuffled share with its own statistics,
// and the keys are gathered and put back in order.
#include "nn/ema.h"
#include "ssl/heads.h"
#include "ssl/losses.h"
#include "ssl/method.h"

namespace siam::ssl {

struct MocoConfig {
  BackboneConfig backbone;
  MlpConfig projector{.dims = {2048, 128}, .hidden_bias = true, .hidden_batch_norm = false, .last_bias = true};
  double temperature = 0.2;
  int64_t queue_size = 65536;    // K negative keys
  double momentum = 0.999;       // key encoder EMA
  bool cosine_momentum = false;  // false: constant (MoCo v2); true: momentum -> 1 on BYOL's cosine
  uint64_t queue_seed = 0;       // the queue starts as random unit keys drawn from this seed
  bool shuffle_bn = false;       // data parallel: shuffle-BN for the key encoder instead of SyncBN
  OptimRecipe optim{.optimizer = "sgd", .base_lr = 0.03, .weight_decay = 1e-4, .final_weight_decay = 1e-4,
                    .momentum = 0.9, .warmup_epochs = 0};
  LossImpl loss_impl = LossImpl::fused;  // the fused op, or the composite of primitive ops
};

class MoCo : public Method {
 public:
  explicit MoCo(const MocoConfig& cfg, const BackboneFactory& make = make_backbone);
  const char* name() const override { return "MoCo"; }
  // One SGD group over every trainable parameter (the official code decays all of them).
  std::vector<nn::ParamGroup> param_groups(double lr, double weight_decay) const override;
  // Key encoder EMA with key_momentum(progress), then this step's keys enter the queue.
  void after_optimizer_step(const Progress& progress) override;
  double key_momentum(const Progress& progress) const;
  int64_t queue_pointer() const;  // the queue column the next key goes to
  // As Method's, except that with shuffle_bn the key encoder keeps per-rank batch norm.
  void set_process_group(dist::Group* group) override;

  MocoConfig cfg;
  std::shared_ptr<nn::Sequential> projector;
  nn::ModulePtr key_backbone;
  std::shared_ptr<nn::Sequential> key_projector;
  Tensor queue;      // (D, K) buffer "queue", unit keys in columns as the official code stores them
  Tensor queue_ptr;  // (1) i64 buffer "queue_ptr"

 private:
  // Query from view 0, key from view 1 (not symmetrised, as MoCo v2). Metrics: loss, embedding_std.
  StepOutput step(const std::vector<Tensor>& views, const Progress& progress, const Tensor& positives) override;
  // The normalised keys of x (this rank's images); with shuffle-BN across the ranks.
  Tensor keys(const Tensor& x, const Progress& progress);
  std::unique_ptr<nn::EmaUpdater> ema_backbone_, ema_projector_;
  Tensor keys_;  // (N, D) this step's normalised keys, enqueued after the optimizer step
};

}  // namespace siam::ssl
